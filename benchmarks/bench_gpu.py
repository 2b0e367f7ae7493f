"""GPU Grad-CAM speed: ``gw.explain`` on Keras 3 (JAX) against PyTorch hooks and the forward
pass alone.

Measured, for each model x precision x batch size (default: VGG16 and ResNet50 with random
weights, float32 and bfloat16, batches of 1 and 64 images of 224x224, a different class per
image), three contenders in one process, interleaved round by round (the order rotates every
round) so that clocks and load hit every contender alike:

* ``gw.explain``: Keras ``keras.applications.VGG16(weights=None)`` / ``ResNet50(weights=None)``
  (seeded with ``keras.utils.set_random_seed(0)``), layer ``block5_conv3`` /
  ``conv5_block3_out``, ``batch_size`` = the batch, ``.heatmaps`` read (maps on the host,
  resized to 224x224). bfloat16: the model is built under
  ``keras.config.set_dtype_policy("mixed_bfloat16")`` (float32 weights, bfloat16 compute);
* the floor: the forward pass alone of the very same Keras model, ``jax.jit`` of
  ``model.stateless_call`` with the variables' values passed in, outputs copied to the host.
  Every Grad-CAM needs at least this (and a backward pass down to the layer on top);
* PyTorch hooks, the pytorch-grad-cam way (written here from its description, not its
  code): torchvision ``vgg16(weights=None)`` / ``resnet50(weights=None)`` in eval mode, weights
  left with ``requires_grad`` as pytorch-grad-cam leaves them, a forward hook on the layer
  that matches the Keras one (``features[29]``, the ReLU after conv5_3; ``layer4[-1]``) keeping
  its output and a tensor hook on that output keeping its gradient; ``model.zero_grad()``,
  ``score.sum().backward()`` with one logit per image, then mean-pooled gradients, weighted
  sum, ReLU, bilinear resize to the input size and min-max normalisation, all in torch on the
  GPU, maps copied to the host. (pytorch-grad-cam itself copies activations and gradients to
  the host and finishes in numpy, which is slower: this is the faster form of that method.)
  bfloat16: the forward pass under ``torch.autocast("cuda", dtype=torch.bfloat16)``.

Every contender starts from the same host batch (``float32`` 0..255 integers; NHWC for Keras,
the same values NCHW for torch, laid out before timing) and ends with its result on the host,
so uploads and downloads count for all. Every contender is called ``--warmup`` times before
timing (tracing, XLA compilation, cuDNN's choices: not timed). A round times
``ceil(--images-per-round / batch)`` calls of each contender back to back; waiting for the
device is part of each call (results copied to the host; ``jax.block_until_ready`` for the
floor, ``torch.cuda.synchronize`` around the torch calls). Reported: median images/s over
rounds, and paired per-round ratios.

Checks, once per configuration, on the last round's results: ``gw.explain`` maps and torch maps
finite, ``(N, 224, 224)`` and within [0, 1]; ``softmax(gw.explain scores)`` against the floor's
outputs (the same model's probabilities; float32 must agree within 0.05, bfloat16 is only
reported); the correlation of each contender's bfloat16 maps with its float32 maps, when both
ran (information: with random weights, maps are fragile). Any failure (a contender raising,
a check failing) is reported and makes the exit status 1; the other configurations still run.

Run on a GPU machine with JAX (CUDA), PyTorch and torchvision (``scripts/gpu_bench.sh`` says how
to carry Keras and this package there)::

    python3 benchmarks/bench_gpu.py --out bench_gpu.json   # minutes: XLA compiles 8 configs
    python3 benchmarks/bench_gpu.py --rounds 3 --images-per-round 64   # a shorter run
    python3 benchmarks/bench_gpu.py --models vgg16 --batches 64 --dtypes bfloat16
    python3 benchmarks/bench_gpu.py --smoke    # CPU: a tiny CNN, batches 1 and 4, float32

``--smoke`` runs a tiny Keras CNN (32x32x3, three conv layers, 10 classes) and a tiny torch CNN
of the same shape (when torch is importable), one round, in well under a minute on 2 cores.

Targets: ``gw.explain`` >= 5x the throughput of PyTorch hooks; ``gw.explain`` time <= 1.5x the
forward-only floor at batch 64.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported (in main)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# JAX takes 75% of the GPU by default; leave room for PyTorch in the same process
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")

import numpy as np  # noqa: E402

EXPLAIN = "gw.explain"
FLOOR = "floor: jit forward alone"
TORCH = "PyTorch hooks"
CONTENDERS = (EXPLAIN, FLOOR, TORCH)
SPEEDUP_TARGET = 5.0  # gw.explain throughput / PyTorch hooks throughput, at least
FLOOR_TARGET = 1.5  # gw.explain time / floor time at batch 64, at most
FLOOR_TARGET_BATCH = 64
SCORE_TOLERANCE = 0.05  # max |softmax(gw scores) - floor probabilities|, float32
MODELS = ("vgg16", "resnet50")
DTYPES = ("float32", "bfloat16")


class Spec:
    """One model: how Keras and torchvision build it, and the layer explained in each."""

    def __init__(
        self, name, size, classes, layer, keras_build, torch_build, torch_layer, torch_name
    ):
        self.name, self.size, self.classes, self.layer = name, size, classes, layer
        self.keras_build, self.torch_build = keras_build, torch_build
        self.torch_layer, self.torch_name = torch_layer, torch_name


def tiny_keras():
    """The ``--smoke`` model: three 3x3 convolutions on 32x32x3, 10 classes, softmax."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def tiny_torch():
    """The torch twin of :func:`tiny_keras` (logits out, as torchvision's models)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3), nn.ReLU(),  # index 6: conv3 with its ReLU, as Keras' conv3
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def specs() -> dict[str, Spec]:
    import keras

    def torchvision_model(name):
        def build():
            import torchvision

            return getattr(torchvision.models, name)(weights=None)

        return build

    return {
        "vgg16": Spec(
            "vgg16", 224, 1000, "block5_conv3",
            lambda: keras.applications.VGG16(weights=None), torchvision_model("vgg16"),
            lambda model: model.features[29], "features[29] (ReLU after conv5_3)",
        ),
        "resnet50": Spec(
            "resnet50", 224, 1000, "conv5_block3_out",
            lambda: keras.applications.ResNet50(weights=None), torchvision_model("resnet50"),
            lambda model: model.layer4[-1], "layer4[-1]",
        ),
        "tiny": Spec(
            "tiny", 32, 10, "conv3", tiny_keras, tiny_torch,
            lambda model: model[6], "[6] (ReLU after conv3)",
        ),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# The contenders


def build_keras(spec: Spec, dtype: str):
    """The Keras model, seeded, under the dtype policy of ``dtype`` (restored after)."""
    import keras

    before = keras.config.dtype_policy()
    from gradcam_widget._quiet import silenced_stderr_fd

    with silenced_stderr_fd():  # it imports TensorFlow, where installed, to seed it too
        keras.utils.set_random_seed(0)
    try:
        if dtype == "bfloat16":
            keras.config.set_dtype_policy("mixed_bfloat16")
        return spec.keras_build()
    finally:
        keras.config.set_dtype_policy(before)


def compiled_forward(model):
    """The floor: the model's forward pass alone, compiled once per input shape, outputs
    copied to the host as float32."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [variable.value for variable in model.trainable_variables]
        non_trainable = [variable.value for variable in model.non_trainable_variables]

        @jax.jit
        def forward(trainable, non_trainable, images):
            outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
            return outputs

        def run(images):
            outputs = jax.block_until_ready(forward(trainable, non_trainable, images))
            return np.asarray(outputs).astype(np.float32)

        return run
    if backend == "tensorflow":  # the CPU check of this script (tf.function, no XLA)
        import tensorflow as tf

        forward = tf.function(lambda images: model(images, training=False))
        return lambda images: forward(tf.constant(images)).numpy().astype(np.float32)
    raise RuntimeError(f"the floor needs the jax or tensorflow backend, not {backend}")


def explainer(model, spec: Spec, batch: int):
    import gradcam_widget as gw

    def run(images, classes):
        ex = gw.explain(model, images, targets=classes, layer=spec.layer, batch_size=batch)
        return ex.heatmaps, ex.scores

    return run


class TorchGradCam:
    """Grad-CAM through hooks, the pytorch-grad-cam way, every step in torch."""

    def __init__(self, model, layer, device, dtype: str):
        import torch

        self.torch, self.model, self.device = torch, model, device
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if dtype == "bfloat16"
            else contextlib.nullcontext()
        )
        self.activations = self.gradients = None
        self.handle = layer.register_forward_hook(self._keep_activation)

    def _keep_activation(self, module, inputs, output):
        self.activations = output
        if output.requires_grad:
            output.register_hook(self._keep_gradient)

    def _keep_gradient(self, gradient):
        self.gradients = gradient

    def _synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def __call__(self, images_nchw: np.ndarray, classes) -> np.ndarray:
        torch = self.torch
        self._synchronize()
        inputs = torch.from_numpy(images_nchw).to(self.device)
        chosen = torch.as_tensor(classes, device=self.device)
        with self.autocast:
            logits = self.model(inputs)
        score = logits.float().gather(1, chosen[:, None]).sum()
        self.model.zero_grad()
        score.backward()
        activations, gradients = self.activations.float(), self.gradients.float()
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
        cam = torch.nn.functional.interpolate(
            cam, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False
        )[:, 0]
        cam = cam - cam.amin(dim=(1, 2), keepdim=True)
        cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-7)
        maps = cam.detach().cpu().numpy()
        self.activations = self.gradients = None
        self._synchronize()
        return maps

    def close(self):
        self.handle.remove()


def torch_status() -> tuple[object | None, str]:
    """``(torch module or None, why not)``."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    return torch, ""


def build_torch(spec: Spec, torch):
    """The torch model in eval mode on the GPU (the CPU when there is none), or a reason."""
    if spec.name != "tiny":
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return None, "torchvision not installed"
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = spec.torch_build().eval().to(device)  # weights keep requires_grad
    return (model, device), ""


# ---------------------------------------------------------------------------------------
# Measuring


def inputs_for(spec: Spec, batch: int):
    """The host batch (NHWC float32 0..255 integers, its NCHW copy) and a class per image; the
    same for every model of a size and every precision."""
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, spec.size, spec.size, 3)).astype(np.float32)
    classes = [int(k) for k in rng.choice(spec.classes, size=batch, replace=batch > spec.classes)]
    return images, np.ascontiguousarray(images.transpose(0, 3, 1, 2)), classes


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def correlation(first, second) -> float:
    first, second = np.ravel(first).astype(np.float64), np.ravel(second).astype(np.float64)
    if first.std() == 0 or second.std() == 0:
        return float("nan")
    return float(np.corrcoef(first, second)[0, 1])


def map_check(maps, batch: int, size: int) -> tuple[str, bool]:
    maps = np.asarray(maps)
    expected = (batch, size, size)
    if maps.shape != expected:
        return f"shape {maps.shape}, expected {expected}", False
    if not np.isfinite(maps).all():
        return f"{int((~np.isfinite(maps)).sum())} values not finite", False
    low, high = float(maps.min()), float(maps.max())
    if low < -1e-6 or high > 1 + 1e-6:
        return f"values in [{low:.3g}, {high:.3g}], outside [0, 1]", False
    return f"{expected}, finite, in [{low:.2g}, {high:.2g}]", True


class Run:
    """Everything measured and checked, in the order it happened."""

    def __init__(self, settings: dict, environment: dict):
        self.settings, self.environment = settings, environment
        self.rows, self.ratios, self.checks, self.failures, self.notes = [], [], [], [], []
        self.maps: dict = {}  # (model, batch, contender, dtype) -> last maps, for bf16 vs f32

    def fail(self, where: str, error: BaseException | str):
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures.append(f"{where}: {text}")
        print(f"FAILED {where}: {text}", file=sys.stderr, flush=True)
        if not isinstance(error, str):
            traceback.print_exception(error, file=sys.stderr)

    def check(self, config: dict, name: str, value, ok: bool | None):
        self.checks.append({**config, "check": name, "value": value, "ok": ok})
        if ok is False:
            self.fail(f"{label(config)} {name}", f"{value}")

    def as_json(self) -> dict:
        return {
            "environment": self.environment,
            "settings": self.settings,
            "rows": self.rows,
            "ratios": self.ratios,
            "checks": self.checks,
            "failures": self.failures,
            "notes": self.notes,
        }


def label(config: dict) -> str:
    return f"{config['model']} {config['dtype']} batch {config['batch']}"


def measure(run: Run, args, spec: Spec, dtype: str, keras_model, torch_built, torch_why: str):
    """All batch sizes of one model and precision; results appended to ``run``."""
    floor = compiled_forward(keras_model)
    for batch in args.batches:
        measure_batch(run, args, spec, dtype, batch, keras_model, floor, torch_built, torch_why)
        if args.out:
            write_json(run, args.out)  # after every configuration: a cut-short run keeps its part


def measure_batch(run: Run, args, spec, dtype, batch, keras_model, floor, torch_built, torch_why):
    """One configuration: warm-up, interleaved rounds, ratios, checks. Targets are judged on
    the real models only (not on ``--smoke``'s tiny CPU run)."""
    judged = not args.smoke
    config = {"model": spec.name, "dtype": dtype, "batch": batch}
    explain = explainer(keras_model, spec, batch)
    images, images_nchw, classes = inputs_for(spec, batch)
    contenders = {
        EXPLAIN: lambda: explain(images, classes),
        FLOOR: lambda: floor(images),
    }
    hooks = None
    if torch_built is not None:
        torch_model, device = torch_built
        hooks = TorchGradCam(torch_model, spec.torch_layer(torch_model), device, dtype)
        contenders[TORCH] = lambda: hooks(images_nchw, classes)
    skipped = {} if hooks is not None else {TORCH: torch_why}
    calls = max(1, math.ceil(args.images_per_round / batch))
    outputs, times = {}, {name: [] for name in contenders}
    for name in list(contenders):  # warm-up: tracing, compilation, autotuning
        try:
            for _ in range(args.warmup):
                outputs[name] = contenders[name]()
        except Exception as error:  # noqa: BLE001 - reported, the others go on
            run.fail(f"{label(config)} {name} (warm-up)", error)
            del contenders[name], times[name]
            outputs.pop(name, None)
            skipped[name] = f"failed: {type(error).__name__}"
    names = list(contenders)
    for round_index in range(args.rounds):
        shift = round_index % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            if name not in contenders:
                continue
            gc.collect()
            try:
                started = time.perf_counter()
                for _ in range(calls):
                    outputs[name] = contenders[name]()
                elapsed = time.perf_counter() - started
            except Exception as error:  # noqa: BLE001
                run.fail(f"{label(config)} {name} (round {round_index + 1})", error)
                del contenders[name]
                outputs.pop(name, None)
                skipped[name] = f"failed: {type(error).__name__}"
                continue
            times[name].append(elapsed / (calls * batch))
    if hooks is not None:
        hooks.close()
    for name in CONTENDERS:
        samples = times.get(name) or []
        if name in skipped or not samples:
            run.rows.append({**config, "contender": name, "status": skipped.get(name, "no")})
            continue
        median = statistics.median(samples)
        run.rows.append({
            **config, "contender": name, "status": "ok", "images_per_s": 1 / median,
            "ms_per_call": 1000 * median * batch, "calls_per_round": calls,
            "seconds_per_image": samples,
        })  # fmt: skip

    def paired(slow, fast):
        if slow in skipped or fast in skipped or not times.get(slow) or not times.get(fast):
            return None
        return [a / b for a, b in zip(times[slow], times[fast], strict=True)]

    for name, values, target, met in (
        (f"{EXPLAIN} throughput / {TORCH}", paired(TORCH, EXPLAIN), f">= {SPEEDUP_TARGET:g}",
         (lambda v: v >= SPEEDUP_TARGET) if judged else None),
        (f"{EXPLAIN} time / floor time", paired(EXPLAIN, FLOOR),
         f"<= {FLOOR_TARGET:g}" if batch == FLOOR_TARGET_BATCH else "-",
         (lambda v: v <= FLOOR_TARGET) if judged and batch == FLOOR_TARGET_BATCH else None),
    ):  # fmt: skip
        if values is None:
            continue
        median = statistics.median(values)
        run.ratios.append({
            **config, "ratio": name, "median": median, "min": min(values),
            "max": max(values), "target": target, "met": None if met is None else met(median),
        })  # fmt: skip

    # checks, on the last results of each contender
    if EXPLAIN in outputs:
        maps, scores = outputs[EXPLAIN]
        text, ok = map_check(maps, batch, spec.size)
        run.check(config, f"{EXPLAIN} maps", text, ok)
        run.maps[(spec.name, batch, EXPLAIN, dtype)] = np.asarray(maps)
        if FLOOR in outputs:
            probabilities = outputs[FLOOR]
            if probabilities.shape != scores.shape:
                run.check(config, "floor output shape", f"{probabilities.shape} vs scores "
                          f"{scores.shape}", False)  # fmt: skip
            else:
                difference = float(np.abs(softmax(scores) - probabilities).max())
                strict = dtype == "float32"
                run.check(
                    config, f"max |softmax({EXPLAIN} scores) - floor output|",
                    f"{difference:.2g}" + (f" (<= {SCORE_TOLERANCE:g})" if strict else ""),
                    difference <= SCORE_TOLERANCE if strict else None,
                )  # fmt: skip
    if TORCH in outputs:
        text, ok = map_check(outputs[TORCH], batch, spec.size)
        run.check(config, f"{TORCH} maps", text, ok)
        run.maps[(spec.name, batch, TORCH, dtype)] = np.asarray(outputs[TORCH])
    for name in (EXPLAIN, TORCH):
        single = run.maps.get((spec.name, batch, name, "float32"))
        if dtype == "bfloat16" and single is not None and name in outputs:
            both = run.maps[(spec.name, batch, name, "bfloat16")]
            values = [correlation(a, b) for a, b in zip(single, both, strict=True)]
            values = [value for value in values if not math.isnan(value)]  # flat maps left out
            value = statistics.median(values) if values else float("nan")
            run.check(config, f"{name} maps, bfloat16 vs float32: median correlation",
                      f"{value:.3f}", None)  # fmt: skip
    shown = ", ".join(
        f"{row['contender']} {row['images_per_s']:.1f} img/s"
        if row["status"] == "ok" else f"{row['contender']} {row['status']}"
        for row in run.rows[-len(CONTENDERS):]
    )  # fmt: skip
    print(f"{label(config)}: {shown}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Environment and report


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(torch) -> dict:
    import keras

    import gradcam_widget

    facts = {
        "python": platform.python_version(),
        "keras backend": keras.backend.backend(),
        "cpu cores": os.cpu_count(),
    }
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(Exception):
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            facts["gpu (nvidia-smi)"] = done.stdout.strip()
    if keras.backend.backend() == "jax":
        import jax

        facts["jax devices"] = ", ".join(str(device) for device in jax.devices())
        facts["jax default matmul precision"] = str(jax.config.jax_default_matmul_precision)
    for name in ("jax", "jaxlib", "keras", "torch", "torchvision", "numpy"):
        facts[name] = version(name)
    facts["gradcam_widget"] = gradcam_widget.__version__
    if torch is not None:
        facts["torch device"] = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        )
        facts["torch cudnn.allow_tf32 / matmul.allow_tf32 / cudnn.benchmark"] = (
            f"{torch.backends.cudnn.allow_tf32} / {torch.backends.cuda.matmul.allow_tf32} / "
            f"{torch.backends.cudnn.benchmark}"
        )
    return facts


def write_json(run: Run, path: str):
    def plain(value):
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        raise TypeError(type(value))

    with open(path, "w", encoding="utf-8") as out:
        json.dump(run.as_json(), out, indent=2, default=plain)


def verdict(target: str, ratios: list[dict]) -> str:
    met = sum(bool(ratio["met"]) for ratio in ratios)
    missed = "" if met == len(ratios) else f", MISSED in {len(ratios) - met}"
    return f"{target} met in {met} of {len(ratios)} configurations{missed}"


def report(run: Run):
    print("| environment | |\n|---|---|")
    for name, value in run.environment.items():
        print(f"| {name} | {value} |")
    print("\n" + "\n".join(run.notes))
    print(
        "\n| model | dtype | batch | contender | median images/s | median ms/call | rounds |"
        "\n|---|---|---:|---|---:|---:|---:|"
    )
    for row in run.rows:
        start = f"| {row['model']} | {row['dtype']} | {row['batch']} | {row['contender']} |"
        if row["status"] == "ok":
            print(f"{start} {row['images_per_s']:.1f} | {row['ms_per_call']:.2f} "
                  f"| {len(row['seconds_per_image'])} |")  # fmt: skip
        else:
            print(f"{start} {row['status']} | | |")
    print(
        "\n| model | dtype | batch | ratio (paired per round) | median | min | max | target |"
        "\n|---|---|---:|---|---:|---:|---:|---|"
    )
    for ratio in run.ratios:
        mark = {True: " met", False: " MISSED", None: ""}[ratio["met"]]
        print(f"| {ratio['model']} | {ratio['dtype']} | {ratio['batch']} | {ratio['ratio']} "
              f"| {ratio['median']:.2f} | {ratio['min']:.2f} | {ratio['max']:.2f} "
              f"| {ratio['target']}{mark} |")  # fmt: skip
    print("\n| model | dtype | batch | check | value | |\n|---|---|---:|---|---|---|")
    for check in run.checks:
        mark = {True: "ok", False: "FAILED", None: "info"}[check["ok"]]
        print(f"| {check['model']} | {check['dtype']} | {check['batch']} | {check['check']} "
              f"| {check['value']} | {mark} |")  # fmt: skip
    speedups = [r for r in run.ratios if r["met"] is not None and r["ratio"].endswith(TORCH)]
    floors = [r for r in run.ratios if r["met"] is not None and "floor" in r["ratio"]]
    lines = []
    if speedups:
        worst = min(speedups, key=lambda r: r["median"])
        lines.append(
            f"{EXPLAIN} vs {TORCH}: {worst['median']:.2f}x at worst ({label(worst)}); "
            + verdict(f"target >= {SPEEDUP_TARGET:g}", speedups)
        )
    if floors:
        worst = max(floors, key=lambda r: r["median"])
        lines.append(
            f"{EXPLAIN} time / floor at batch {FLOOR_TARGET_BATCH}: {worst['median']:.2f} at "
            f"worst ({label(worst)}); " + verdict(f"target <= {FLOOR_TARGET:g}", floors)
        )
    if not lines and run.ratios:
        lines.append("targets not judged (--smoke: a tiny model on whatever device is here)")
    if lines:
        print("\n" + "\n".join(lines))
    if run.failures:
        print(f"\n{len(run.failures)} failure(s):\n" + "\n".join(f"- {f}" for f in run.failures))


def quiet():
    """No log lines from TensorFlow, JAX, absl or Keras' progress output."""
    for name in ("jax", "jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU check: a tiny CNN, batches 1 and 4, float32, 1 round",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[*MODELS, "tiny"],
        help="default vgg16 resnet50 (--smoke: tiny)",
    )
    parser.add_argument("--batches", nargs="+", type=int, help="default 1 64 (--smoke: 1 4)")
    parser.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, help="default float32 bfloat16 (--smoke: float32)"
    )
    parser.add_argument("--rounds", type=int, help="timed rounds (default 5; --smoke: 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (2)")
    parser.add_argument(
        "--images-per-round",
        type=int,
        help="images each contender explains per round, in calls of the batch "
        "(default 128; --smoke: 4)",
    )
    parser.add_argument("--out", help="also write everything as JSON to this file")
    args = parser.parse_args(argv)
    smoke = {"models": ["tiny"], "batches": [1, 4], "dtypes": ["float32"], "rounds": 1,
             "images_per_round": 4}  # fmt: skip
    full = {"models": list(MODELS), "batches": [1, 64], "dtypes": list(DTYPES), "rounds": 5,
            "images_per_round": 128}  # fmt: skip
    for name, value in (smoke if args.smoke else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.batches) < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("batches and rounds must be >= 1, warmup >= 0")
    if args.smoke:  # on 2 cores, the OpenMP threads of torch and XLA/oneDNN must not spin
        os.environ.setdefault("KMP_BLOCKTIME", "0")

    started = time.perf_counter()
    quiet()
    importlib.import_module("gradcam_widget")  # first: it imports TensorFlow quietly, if at all
    keras = importlib.import_module("keras")

    quiet()
    torch, torch_why = torch_status()
    names = ("smoke", "models", "batches", "dtypes", "rounds", "warmup", "images_per_round")
    settings = {name: getattr(args, name) for name in names}
    run = Run(settings, environment(torch))
    table = specs()
    for model_name in args.models:
        spec = table[model_name]
        torch_built, why = None, torch_why
        if torch is not None:
            try:
                torch_built, why = build_torch(spec, torch)
            except Exception as error:  # noqa: BLE001 - torchvision broken, say: reported
                run.fail(f"{model_name}: building the torch model", error)
                why = f"failed: {type(error).__name__}"
        run.notes.append(
            f"{model_name}: Keras layer {spec.layer}, torch layer {spec.torch_name}, "
            f"{spec.size}x{spec.size} inputs, {spec.classes} classes"
        )
        for dtype in args.dtypes:
            try:
                keras_model = build_keras(spec, dtype)
            except Exception as error:  # noqa: BLE001
                run.fail(f"{model_name} {dtype}: building the Keras model", error)
                continue
            try:
                measure(run, args, spec, dtype, keras_model, torch_built, why)
            except Exception as error:  # noqa: BLE001 - the other configurations still run
                run.fail(f"{model_name} {dtype}", error)
            del keras_model
            keras.backend.clear_session()
            gc.collect()
        del torch_built
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    run.notes += [
        f"models {', '.join(args.models)} (random weights); a different class per image; "
        f"{args.rounds} round(s), contenders interleaved in rotating order; "
        f"{args.images_per_round} images per contender per round (calls of the batch); "
        f"{args.warmup} untimed warm-up call(s) per contender",
        f"ratios: per round, then the median; the floor target applies at batch "
        f"{FLOOR_TARGET_BATCH} only",
        f"wall time {time.perf_counter() - started:.0f} s",
    ]
    report(run)
    if args.out:
        write_json(run, args.out)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())

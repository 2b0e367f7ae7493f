"""The JAX and PyTorch engines against the TensorFlow engine on CPU: first view, 13 layers, batch.

Keras picks its backend when it is first imported, so each backend is measured in a process of
its own: every round the parent starts one worker per backend (this script with ``--worker
tensorflow``, ``--worker jax`` or ``--worker torch``), the order rotated from round to round
(TF, JAX, PyTorch; then JAX, PyTorch, TF; ...) so that load on this shared machine hits all of
them alike. PyTorch is measured when ``torch`` imports in this Python (checked in a subprocess
first); otherwise a line says it was skipped and the table has TensorFlow and JAX only. A worker
sets ``KERAS_BACKEND`` before importing Keras and the package, builds VGG16 (``weights=None``)
and sets every variable from a seeded numpy generator (He-normal kernels, zero biases; not
``keras.utils.set_random_seed``, which imports TensorFlow), so every backend runs the very same
network on the very same seeded 224x224 images (0..255), and then measures, in this order:

* **first view**: ``gw.capture(model, image, layers=[None])`` (the default layer only, as
  ``gw.grad_cam`` asks) then ``cap.cam()``. *Cold* is the first call in the process, on a new
  engine: tracing and compilation included (what a user waits for after loading a model; the
  PyTorch engine is eager and compiles nothing, its cold call reads the model's facts from one
  forward pass over two blank images); *warm* is the median of 3 new images of the same size,
  the compiled function reused;
* **13 layers**: ``gw.capture(model, image, layers="all")`` and a ``cam`` for each of the 13
  conv layers. *Cold*: the first call on a new engine (the package's engine cache for the model
  is dropped first, so the facts of the model are traced again and the pass compiled; the
  process-wide first-use costs were already paid by the first view); *warm*: median of 2 new
  images;
* **batch**: ``gw.explain(model, images, targets=[one class per image], layer="block5_conv3",
  batch_size=64).heatmaps`` over ``--images`` images. *Cold*: a new engine again (JAX compiles
  per batch shape, TensorFlow traces once for any batch size, PyTorch compiles nothing); *warm*:
  the same call again; reported as images per second;
* the worker's **peak RSS** (the kernel's high-water mark ``VmHWM``, see ``rss.py``) at the end;
  importing and building the model are timed too but are not part of any figure above.

A worker prints one JSON line (with its thread count on PyTorch and whether TensorFlow got
imported) and saves the ``block5_conv3`` raw maps (and heatmaps) of the batch and of the cold
first view, so the parent reports the largest difference between TensorFlow's maps and each
other backend's (float32 on all; expected around 1e-5 of the maps' scale or less). A warm call
that compiled again is counted (``engine.traces``; always 0 on PyTorch, which never compiles)
and shown. Workers' stderr is kept and printed only when a worker fails. Run::

    .venv/bin/python benchmarks/bench_backends.py              # 5-10 min on 2 shared cores
    .venv/bin/python benchmarks/bench_backends.py --rounds 5 --out bench-results/backends.json
    .venv/bin/python benchmarks/bench_backends.py --smoke      # < 1 min: a small CNN

The table gives the median over rounds per backend and the JAX/TF and PyTorch/TF time ratios
(each the median of the per-round ratios, with their min..max: < 1 means that backend is faster
than TensorFlow; for img/s rows it is still a time ratio, for peak RSS a memory ratio).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")  # TensorFlow first: the others are compared to it
NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
LAYER = "block5_conv3"
FIRST_VIEW_WARM = 3  # new images timed warm per worker (median)
ALL_LAYERS_WARM = 2
BATCH_WARM = 1
BATCH_SIZE = 64


# ---------------------------------------------------------------------------------------
# The worker: one backend, one process


def seeded_weights(model, seed: int = 0) -> None:
    """Set every variable of ``model`` from a seeded generator: He-normal kernels (fan-in is
    every axis but the last), zero biases; identical on every backend."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(int(side) for side in variable.shape)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        else:
            value = np.zeros(shape, np.float32)
        variable.assign(value)


def small_cnn(keras):
    """The ``--smoke`` model: three conv layers on 64x64 images, ten classes."""
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="block1_conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="block1_pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="block2_conv1")(x)
    x = keras.layers.MaxPooling2D(name="block2_pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name=LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def worker(backend: str, count: int, smoke: bool, maps_path: str) -> dict:
    """Measure one backend in this process (see the module docstring); figures in seconds."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    import keras
    from rss import MB, status

    import gradcam_widget as gw
    from gradcam_widget import engine as engine_module

    assert keras.backend.backend() == backend, keras.backend.backend()
    imported = time.perf_counter() - started

    def as_numpy(value, dtype=np.float32) -> np.ndarray:
        """A backend tensor (a torch tensor on PyTorch) or an array, as numpy."""
        return np.asarray(keras.ops.convert_to_numpy(value), dtype)

    started = time.perf_counter()
    model = small_cnn(keras) if smoke else keras.applications.VGG16(weights=None)
    seeded_weights(model)
    built = time.perf_counter() - started
    size = tuple(int(side) for side in model.input_shape[1:3])
    classes_out = int(model.output_shape[-1])
    conv_layers = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]

    rng = np.random.default_rng(1)  # the same images and classes on every backend

    def new_image():
        return rng.uniform(0, 255, (*size, 3)).astype(np.float32)

    def fresh_engine():
        """Drop the package's engine of ``model``: the next call traces and compiles anew."""
        engine_module._ENGINES.pop(model, None)
        gc.collect()

    def traces():
        return engine_module.engine_for(model).traces

    def timed(call):
        begun = time.perf_counter()
        value = call()
        return time.perf_counter() - begun, value

    def first_view(image):
        cap = gw.capture(model, image, layers=[None])
        return cap.cam()

    def all_layers(image):
        cap = gw.capture(model, image, layers="all")
        return [cap.cam(name) for name in conv_layers]

    batch = rng.uniform(0, 255, (count, *size, 3)).astype(np.float32)
    if count <= classes_out:
        targets = [int(k) for k in rng.choice(classes_out, size=count, replace=False)]
    else:
        targets = [int(k) for k in rng.integers(0, classes_out, size=count)]

    def explain():
        ex = gw.explain(model, batch, targets=targets, layer=LAYER, batch_size=BATCH_SIZE)
        return ex, ex.heatmaps

    figures: dict = {"backend": backend, "import_s": imported, "build_model_s": built}
    retraced = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        cold, view = timed(lambda: first_view(new_image()))
        before = traces()
        warm = [timed(lambda: first_view(new_image()))[0] for _ in range(FIRST_VIEW_WARM)]
        retraced["first_view"] = traces() - before
        figures["first_view_cold_s"], figures["first_view_warm_s"] = cold, statistics.median(warm)
        assert view.layer.endswith(LAYER), view.layer

        fresh_engine()
        cold, cams = timed(lambda: all_layers(new_image()))
        before = traces()
        warm = [timed(lambda: all_layers(new_image()))[0] for _ in range(ALL_LAYERS_WARM)]
        retraced["all_layers"] = traces() - before
        figures["all_layers_cold_s"], figures["all_layers_warm_s"] = cold, statistics.median(warm)
        figures["all_layers_count"] = len(cams)

        fresh_engine()
        cold, (ex, heatmaps) = timed(explain)
        before = traces()
        warm = [timed(explain)[0] for _ in range(BATCH_WARM)]
        retraced["batch"] = traces() - before
        figures["batch_cold_s"], figures["batch_warm_s"] = cold, statistics.median(warm)
        figures["batch_images"] = count
    figures["warm_calls_that_compiled"] = retraced
    figures["engine"] = type(engine_module.engine_for(model)).__name__
    figures["warnings"] = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    figures["peak_rss_mb"] = status("VmHWM") / MB
    figures["tensorflow_imported"] = "tensorflow" in sys.modules
    if backend == "torch":
        import torch

        figures["threads"] = torch.get_num_threads()
    np.savez(
        maps_path,
        batch_raw=as_numpy(ex.raw),
        batch_heatmaps=as_numpy(heatmaps),
        batch_classes=as_numpy(ex.class_indices, np.int64),
        first_view_raw=as_numpy(view.raw),
        first_view_heatmap=as_numpy(view.heatmap),
    )
    return figures


# ---------------------------------------------------------------------------------------
# The parent: rounds, table, map differences

ROWS = [  # (label, key, kind)
    ("first view, cold (first call in the process) s", "first_view_cold_s", "time"),
    ("first view, warm s", "first_view_warm_s", "time"),
    ("13 layers (capture all + 13 cams), cold s", "all_layers_cold_s", "time"),
    ("13 layers, warm s", "all_layers_warm_s", "time"),
    ("batch cold (explain, compile included) img/s", "batch_cold_s", "rate"),
    ("batch warm img/s", "batch_warm_s", "rate"),
    ("worker peak RSS MB (VmHWM)", "peak_rss_mb", "memory"),
    ("(not in the table above) import keras + package s", "import_s", "time"),
    ("(not in the table above) build VGG16 + set weights s", "build_model_s", "time"),
]
MAPS = ("batch_raw", "batch_heatmaps", "first_view_raw", "first_view_heatmap")


def run_worker(backend: str, args, maps_path: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", backend]
    command += ["--images", str(args.images), "--maps", maps_path]
    if args.smoke:
        command.append("--smoke")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.setdefault("PYTHONHASHSEED", "0")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.stderr.write(f"the {backend} worker failed (exit {done.returncode}):\n")
        sys.stderr.write(done.stderr[-6000:] + done.stdout[-2000:])
        raise SystemExit(1)
    return json.loads(done.stdout.strip().splitlines()[-1])


def differences(maps: dict) -> dict:
    """Largest differences between TensorFlow's maps and each other backend's (same round):
    ``{"scale": {check: max |TF|}, backend: {check: value}}``."""
    loaded = {backend: np.load(path) for backend, path in maps.items()}
    reference = loaded["tensorflow"]
    out: dict = {"scale": {}}
    for name in MAPS:
        out["scale"][f"max |TF| {name}"] = float(np.abs(reference[name]).max())
    raw_a = reference["batch_raw"]
    scale = np.maximum(np.abs(raw_a).reshape(len(raw_a), -1).max(axis=1), 1e-30)
    for backend, other in loaded.items():
        if backend == "tensorflow":
            continue
        checks = {}
        for name in MAPS:
            checks[f"max |diff| {name}"] = float(np.abs(reference[name] - other[name]).max())
        checks["batch classes equal"] = bool(
            (reference["batch_classes"] == other["batch_classes"]).all()
        )
        raw_b = other["batch_raw"]
        relative = np.abs(raw_a - raw_b).reshape(len(raw_a), -1).max(axis=1) / scale
        checks["max over images of max |diff| / max |TF| (batch raw)"] = float(relative.max())
        checks["median over images of max |diff| / max |TF| (batch raw)"] = float(
            np.median(relative)
        )
        over = np.flatnonzero(relative > 1e-4)
        checks["images with that > 1e-4 (index: max |TF| raw)"] = (
            ", ".join(f"{i}: {scale[i]:.3g}" for i in over) if len(over) else "none"
        )
        out[backend] = checks
    return out


def torch_importable() -> tuple[bool, str]:
    """Whether ``import torch`` works in this Python (tried in a subprocess: this process
    stays light), and its version or the error."""
    command = [sys.executable, "-c", "import torch; print(torch.__version__)"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"{type(error).__name__}: {error}"
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        return False, lines[-1]
    return True, done.stdout.strip()


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "jax", "jaxlib", "torch", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one worker per backend")
    parser.add_argument("--images", type=int, default=64, help="images in the batch (64)")
    parser.add_argument("--smoke", action="store_true", help="1 round, 4 images, a small CNN")
    parser.add_argument("--out", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep-maps", type=Path, help="keep the workers' maps (.npz) here")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--maps", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.images, args.smoke, args.maps)))
        return 0
    if args.smoke:
        args.rounds, args.images = 1, 4

    started = time.perf_counter()
    has_torch, torch_said = torch_importable()
    backends = BACKENDS if has_torch else tuple(b for b in BACKENDS if b != "torch")
    if not has_torch:
        print(f"PyTorch skipped: torch is not importable here ({torch_said})", flush=True)
    others = [b for b in backends if b != "tensorflow"]
    results = {backend: [] for backend in backends}
    diffs = []
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as temporary:
        folder = str(args.keep_maps or temporary)
        os.makedirs(folder, exist_ok=True)
        for round_index in range(args.rounds):
            shift = round_index % len(backends)
            order = backends[shift:] + backends[:shift]
            maps = {}
            for backend in order:
                maps[backend] = os.path.join(folder, f"{backend}-{round_index}.npz")
                results[backend].append(run_worker(backend, args, maps[backend]))
            diffs.append(differences(maps))
            print(
                f"round {round_index + 1}/{args.rounds} done ({' then '.join(order)}), "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def value(figures: dict, key: str, kind: str) -> float:
        if kind == "rate":
            return figures["batch_images"] / figures[key]
        return figures[key]

    table = {}
    for label, key, kind in ROWS:
        per_backend = {b: [value(f, key, kind) for f in results[b]] for b in backends}
        row = {b: statistics.median(v) for b, v in per_backend.items()}
        for other in others:
            ratios = [  # other's time / TF's time, paired per round
                (o[key] / t[key])
                for t, o in zip(results["tensorflow"], results[other], strict=True)
            ]
            row[f"{other}_over_tf"] = statistics.median(ratios)
            row[f"{other}_over_tf_min"] = min(ratios)
            row[f"{other}_over_tf_max"] = max(ratios)
        row["per_round"] = per_backend
        table[label] = row
    model = "small CNN 64x64 (smoke)" if args.smoke else "VGG16 224x224, seeded He-normal weights"
    found = versions()
    print(
        f"{model}; batch: {args.images} images, batch_size {BATCH_SIZE}, layer {LAYER}; "
        f"{args.rounds} round(s), backends rotating; CPU: {cpu_model()} "
        f"({os.cpu_count()} cores)"
    )
    print("versions: " + ", ".join(f"{name} {version}" for name, version in found.items()))
    print(
        "\n| metric | "
        + " | ".join(NAMES[b] for b in backends)
        + " | "
        + " | ".join(f"{NAMES[o]}/TF time ratio (min..max)" for o in others)
        + " | best |"
    )
    print("|---|" + "---:|" * (len(backends) + len(others)) + "---|")
    for label, row in table.items():
        _, key, kind = next(r for r in ROWS if r[0] == label)
        # the backend with the least time (the most img/s) or the least memory
        medians = {b: statistics.median(f[key] for f in results[b]) for b in backends}
        best = NAMES[min(medians, key=medians.get)] + (" least" if "RSS" in label else "")
        digits = 1 if ("RSS" in label or "img/s" in label) else 3
        cells = [f"{row[b]:.{digits}f}" for b in backends]
        cells += [
            f"{row[f'{o}_over_tf']:.3f} "
            f"({row[f'{o}_over_tf_min']:.2f}..{row[f'{o}_over_tf_max']:.2f})"
            for o in others
        ]
        print(f"| {label} | " + " | ".join(cells) + f" | {best} |")

    checks: dict = {}
    for group in diffs[0]:
        checks[group] = {}
        for name in diffs[0][group]:
            values = [d[group][name] for d in diffs]
            if isinstance(values[0], bool):
                checks[group][name] = all(values)
            elif isinstance(values[0], str):
                checks[group][name] = sorted(set(values))
            else:
                checks[group][name] = max(values)

    def cell(text: str) -> str:  # a markdown table cell: its "|" escaped
        return text.replace("|", "\\|")

    def shown(found) -> str:
        return f"{found:.3g}" if isinstance(found, float) else str(found)

    print("\n| map scale, TensorFlow (worst round) | value |\n|---|---:|")
    for name, found_value in checks["scale"].items():
        print(f"| {cell(name)} | {shown(found_value)} |")
    if others:
        print(
            "\n| map check against TensorFlow (worst round) | "
            + " | ".join(f"{NAMES[o]} vs TF" for o in others)
            + " |\n|---|"
            + "---:|" * len(others)
        )
        for name in checks[others[0]]:
            values = " | ".join(shown(checks[o][name]) for o in others)
            print(f"| {cell(name)} | {values} |")
    retraced = {b: [f["warm_calls_that_compiled"] for f in results[b]] for b in backends}
    print(f"\nwarm calls that compiled again: {json.dumps(retraced)}")
    for backend in backends:
        said = sorted({w for f in results[backend] for w in f["warnings"]})
        if said:
            print(f"{NAMES[backend]} warnings: {said}")
    engines = {b: sorted({f["engine"] for f in results[b]}) for b in backends}
    print(f"engines: {json.dumps(engines)}")
    imported_tf = {b: any(f["tensorflow_imported"] for f in results[b]) for b in backends}
    print(f"TensorFlow imported in the worker: {json.dumps(imported_tf)}")
    if "torch" in results:
        print(f"PyTorch threads: {sorted({f['threads'] for f in results['torch']})}")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "model": model,
                    "images": args.images,
                    "rounds": args.rounds,
                    "backends": list(backends),
                    "torch_skipped": None if has_torch else torch_said,
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "versions": found,
                    "table": table,
                    "map_checks": checks,
                    "map_checks_per_round": diffs,
                    "workers": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

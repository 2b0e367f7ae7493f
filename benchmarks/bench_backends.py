"""The JAX engine against the TensorFlow engine on CPU: first view, 13 layers, batch.

Keras picks its backend when it is first imported, so each backend is measured in a process of
its own: every round the parent starts one worker per backend (this script with ``--worker
tensorflow`` or ``--worker jax``), in alternating order from round to round so that load on
this shared machine hits both alike. A worker sets ``KERAS_BACKEND`` before importing Keras
and the package, builds VGG16 (``weights=None``) and sets every variable from a seeded numpy
generator (He-normal kernels, zero biases), so both backends run the very same network on the
very same seeded 224x224 images (0..255), and then measures, in this order:

* **first view**: ``gw.capture(model, image, layers=[None])`` (the default layer only, as
  ``gw.grad_cam`` asks) then ``cap.cam()``. *Cold* is the first call in the process, on a new
  engine: tracing and compilation included (what a user waits for after loading a model);
  *warm* is the median of 3 new images of the same size, the compiled function reused;
* **13 layers**: ``gw.capture(model, image, layers="all")`` and a ``cam`` for each of the 13
  conv layers. *Cold*: the first call on a new engine (the package's engine cache for the model
  is dropped first, so the facts of the model are traced again and the pass compiled; the
  process-wide first-use costs were already paid by the first view); *warm*: median of 2 new
  images;
* **batch**: ``gw.explain(model, images, targets=[one class per image], layer="block5_conv3",
  batch_size=64).heatmaps`` over ``--images`` images. *Cold*: a new engine again (JAX compiles
  per batch shape, TensorFlow traces once for any batch size); *warm*: the same call again;
  reported as images per second;
* the worker's **peak RSS** (the kernel's high-water mark ``VmHWM``, see ``rss.py``) at the end;
  importing and building the model are timed too but are not part of any figure above.

A worker prints one JSON line and saves the ``block5_conv3`` raw maps (and heatmaps) of the
batch and of the cold first view, so the parent reports the largest difference between the
backends (float32 on both; expected around 1e-5 of the maps' scale or less). A warm call that
compiled again is counted (``engine.traces``) and shown. Workers' stderr is kept and printed
only when a worker fails. Run::

    .venv/bin/python benchmarks/bench_backends.py              # 3-7 min on 2 shared cores
    .venv/bin/python benchmarks/bench_backends.py --rounds 5 --out bench-results/backends.json
    .venv/bin/python benchmarks/bench_backends.py --smoke      # < 1 min: a small CNN

The table gives the median over rounds per backend and the JAX/TF time ratio (the median of
the per-round ratios: < 1 means JAX is faster; for img/s rows it is still a time ratio).
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

BACKENDS = ("tensorflow", "jax")
NAMES = {"tensorflow": "TensorFlow", "jax": "JAX"}
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
    np.savez(
        maps_path,
        batch_raw=np.asarray(ex.raw, np.float32),
        batch_heatmaps=np.asarray(heatmaps, np.float32),
        batch_classes=np.asarray(ex.class_indices),
        first_view_raw=np.asarray(view.raw, np.float32),
        first_view_heatmap=np.asarray(view.heatmap, np.float32),
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
    """Largest differences between the backends' maps (same round), and the maps' scale."""
    first, second = (np.load(maps[backend]) for backend in BACKENDS)
    out = {}
    for name in ("batch_raw", "batch_heatmaps", "first_view_raw", "first_view_heatmap"):
        a, b = first[name], second[name]
        out[f"max |TF - JAX| {name}"] = float(np.abs(a - b).max())
        out[f"max |TF| {name}"] = float(np.abs(a).max())
    out["batch classes equal"] = bool((first["batch_classes"] == second["batch_classes"]).all())
    raw_a, raw_b = first["batch_raw"], second["batch_raw"]
    scale = np.maximum(np.abs(raw_a).reshape(len(raw_a), -1).max(axis=1), 1e-30)
    relative = np.abs(raw_a - raw_b).reshape(len(raw_a), -1).max(axis=1) / scale
    out["max over images of max |TF - JAX| / max |TF| (batch raw)"] = float(relative.max())
    out["median over images of that"] = float(np.median(relative))
    over = np.flatnonzero(relative > 1e-4)
    out["images with that > 1e-4 (index: max |TF| raw)"] = (
        ", ".join(f"{i}: {scale[i]:.3g}" for i in over) if len(over) else "none"
    )
    return out


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "jax", "jaxlib", "numpy"):
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
    results = {backend: [] for backend in BACKENDS}
    diffs = []
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as temporary:
        folder = str(args.keep_maps or temporary)
        os.makedirs(folder, exist_ok=True)
        for round_index in range(args.rounds):
            order = BACKENDS if round_index % 2 == 0 else BACKENDS[::-1]
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
        per_backend = {b: [value(f, key, kind) for f in results[b]] for b in BACKENDS}
        ratios = [  # JAX time / TF time, paired per round
            (j[key] / t[key]) for t, j in zip(results["tensorflow"], results["jax"], strict=True)
        ]
        table[label] = {
            **{b: statistics.median(v) for b, v in per_backend.items()},
            "jax_over_tf": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "per_round": per_backend,
        }
    model = "small CNN 64x64 (smoke)" if args.smoke else "VGG16 224x224, seeded He-normal weights"
    found = versions()
    print(
        f"{model}; batch: {args.images} images, batch_size {BATCH_SIZE}, layer {LAYER}; "
        f"{args.rounds} round(s), backends alternating; CPU: {cpu_model()} "
        f"({os.cpu_count()} cores)"
    )
    print("versions: " + ", ".join(f"{name} {version}" for name, version in found.items()))
    print("\n| metric | TensorFlow | JAX | JAX/TF time ratio (min..max) | faster |")
    print("|---|---:|---:|---:|---|")
    for label, row in table.items():
        ratio = row["jax_over_tf"]
        if "RSS" in label:
            faster = "JAX less" if ratio < 1 else "TF less"
        else:
            faster = "JAX" if ratio < 1 else "TF"
        digits = 1 if ("RSS" in label or "img/s" in label) else 3
        print(
            f"| {label} | {row['tensorflow']:.{digits}f} | {row['jax']:.{digits}f} | "
            f"{ratio:.3f} ({row['ratio_min']:.2f}..{row['ratio_max']:.2f}) | {faster} |"
        )
    print("\n| map check (worst round) | value |\n|---|---:|")
    checks = {}
    for name in diffs[0]:
        values = [d[name] for d in diffs]
        if isinstance(values[0], (bool, str)):
            checks[name] = all(values) if isinstance(values[0], bool) else sorted(set(values))
        else:
            checks[name] = max(values)
        shown = f"{checks[name]:.3g}" if isinstance(checks[name], float) else checks[name]
        print(f"| {name} | {shown} |")
    retraced = {b: [f["warm_calls_that_compiled"] for f in results[b]] for b in BACKENDS}
    print(f"\nwarm calls that compiled again: {json.dumps(retraced)}")
    for backend in BACKENDS:
        said = sorted({w for f in results[backend] for w in f["warnings"]})
        if said:
            print(f"{NAMES[backend]} warnings: {said}")
    engines = {b: sorted({f["engine"] for f in results[b]}) for b in BACKENDS}
    print(f"engines: {json.dumps(engines)}")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "model": model,
                    "images": args.images,
                    "rounds": args.rounds,
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

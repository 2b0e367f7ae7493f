"""Batch Grad-CAM speed (``gw.explain``) on VGG16, and memory of the streaming form.

Speed: 64 images (VGG16, random weights, CPU), layer ``block5_conv3``, a different class per
image. Contenders, measured in one run and interleaved round by round (the order rotates
every round) so that load on this shared machine hits every contender alike:

* ``gw.explain`` over the whole batch (``batch_size`` images per compiled pass), ``.heatmaps``
  included;
* tf-keras-vis ``Gradcam`` (``pip install -e .[bench]``) given the whole batch at once, one
  score per image (``CategoricalScore(classes)``), softmax replaced by linear;
* the keras.io recipe in a loop, one image at a time (written here from its description: a
  ``[layer output, predictions]`` model with the softmax removed, an eager ``GradientTape``,
  gradients mean-pooled over ``(0, 1, 2)``, ``A @ w``, ReLU, divide by max, resize);
* ``gw.grad_cam`` in a loop, one image at a time;
* the floor: the compiled forward + backward passes alone (``engine.run`` on the same
  batches of ``batch_size`` images ``gw.explain`` runs), which every batched Grad-CAM needs.

Every contender is called once before timing (warm-up, on ``--warmup-images`` images:
tracing and model building are not timed). The two loops are slow, so they time a subset of
``--loop-images`` images per round (a different subset each round) and are reported per
image. Every map is checked once: ``gw.explain`` against ``gw.grad_cam`` image by image (max
absolute difference, must be <= 1e-4) and against tf-keras-vis and the recipe (correlation:
tf-keras-vis zooms and normalises differently, so that check is loose). With random weights
many maps are tiny (``raw`` ~ 1e-3) and some pre-activations sit within ~1e-7 of a ReLU's kink:
the batched and the one-image matmul round differently, a gate can flip, and that image's
normalised map then differs by a few percent (the activations themselves stay bit-identical);
the table names such images.

Memory: one fresh process per N (200 and 2000) loads the shipped ``shapes`` model and streams
N generated shape scenes through ``gw.iter_explain`` keeping only each map's peak position.
Each reports its peak RSS (the kernel's high-water mark ``VmHWM``) over the stream, reset
after a warm-up batch, and the whole process's peak. Run::

    .venv/bin/python benchmarks/bench_batch.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_batch.py --rounds 5 --loop-images 16
    .venv/bin/python benchmarks/bench_batch.py --skip-memory --images 8 --rounds 1  # smoke

Targets: ``gw.explain`` >= 1.3x tf-keras-vis's batched throughput and within 15% of the floor
(time ratio <= 1.15); streaming peak RSS for 2,000 scenes <= 1.2x the peak for 200.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
from rss import MB, reset_peak, status

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
LAYER = "block5_conv3"


# ---------------------------------------------------------------------------------------
# Memory: one process per stream length


def stream(count: int, batch_size: int) -> dict:
    """Stream ``count`` shape scenes through ``gw.iter_explain`` in this process; figures in
    MB."""
    import gradcam_widget as gw
    from gradcam_widget.data import scenes as data

    def scenes(first: int, number: int):
        for seed in range(first, first + number):
            yield data.scene(seed).image

    entry = gw.models.load("shapes")
    for part in gw.iter_explain(entry, scenes(10**6, batch_size), batch_size=batch_size):
        assert len(part.heatmaps)  # warm-up: tracing, first allocations
    gc.collect()
    rss_warm, peak_warm = status("VmRSS"), status("VmHWM")
    known = reset_peak()
    peaks, rss_batches = [], []
    started = time.perf_counter()
    for part in gw.iter_explain(entry, scenes(0, count), batch_size=batch_size):
        maps = part.heatmaps  # the summary kept: each map's peak (None for a flat map)
        flat = maps.max(axis=(1, 2)) <= maps.min(axis=(1, 2))
        where = np.unravel_index(maps.reshape(len(maps), -1).argmax(axis=1), maps.shape[1:])
        for index, (row, col) in enumerate(zip(*where, strict=True)):
            peaks.append(None if flat[index] else (int(row), int(col)))
        rss_batches.append(status("VmRSS"))
    seconds = time.perf_counter() - started
    assert len(peaks) == count, (len(peaks), count)
    stream_peak = status("VmHWM") if known else float("nan")
    return {
        "images": count,
        "batches": len(rss_batches),
        "seconds": seconds,
        "images_per_s": count / seconds,
        "rss_after_warmup_mb": rss_warm / MB,
        "stream_peak_rss_mb": stream_peak / MB,
        "stream_peak_above_warmup_mb": (stream_peak - rss_warm) / MB,
        "process_peak_rss_mb": max(peak_warm, stream_peak) / MB,
        "rss_after_first_batch_mb": rss_batches[0] / MB,
        "rss_after_last_batch_mb": rss_batches[-1] / MB,
        "anonymous_rss_at_end_mb": status("RssAnon") / MB,
        "maps_with_a_peak": sum(peak is not None for peak in peaks),
    }


def memory(counts: list[int], batch_size: int) -> dict:
    """One fresh process per stream length, one after the other."""
    results = {}
    for count in counts:
        command = [sys.executable, __file__, "--child-stream", str(count)]
        command += ["--batch-size", str(batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"the N={count} stream failed:\n{done.stderr[-3000:]}")
        results[count] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# ---------------------------------------------------------------------------------------
# Speed: the contenders


def keras_io_recipe(model):
    """The keras.io recipe, one image at a time, on a copy of ``model`` whose last layer's
    softmax is removed (as the recipe does, ``model.layers[-1].activation = None``)."""
    import cv2

    from gradcam_widget.engine._tf import keras, tf

    linear = keras.models.clone_model(model)
    linear.set_weights(model.get_weights())
    linear.layers[-1].activation = None
    grad_model = keras.Model(linear.inputs, [linear.get_layer(LAYER).output, linear.output])

    def run(image, class_index):
        with tf.GradientTape() as tape:
            conv_output, predictions = grad_model(image[None])
            class_channel = predictions[:, class_index]
        grads = tape.gradient(class_channel, conv_output)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.squeeze(conv_output[0] @ pooled[..., tf.newaxis]).numpy()
        heatmap = np.maximum(heatmap, 0) / max(float(heatmap.max()), 1e-12)
        return cv2.resize(heatmap, (image.shape[1], image.shape[0]))

    return run


def tf_keras_vis_gradcam(model):
    """tf-keras-vis ``Gradcam`` on the whole batch, one class per image."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    explainer = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run(batch, classes):
        return explainer(CategoricalScore(list(classes)), batch, penultimate_layer=LAYER)

    return run


def correlation(first, second) -> float:
    first, second = first.ravel(), second.ravel()
    if first.std() == 0 or second.std() == 0:
        return float("nan")
    return float(np.corrcoef(first, second)[0, 1])


def speed(args) -> tuple[dict, dict, dict, list[str]]:
    """Median seconds per contender, paired per-round ratios, checks, notes."""
    import gradcam_widget as gw
    from gradcam_widget.captures import targets
    from gradcam_widget.engine import engine_for
    from gradcam_widget.engine._tf import keras

    warnings.filterwarnings("ignore", message="The structure of `inputs`")  # tf-keras-vis side
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    rng = np.random.default_rng(0)
    count = args.images
    # integer-valued float32 0..255: every contender gets the very same model input
    batch = rng.integers(0, 256, (count, 224, 224, 3)).astype(np.float32)
    classes = [int(k) for k in rng.choice(1000, size=count, replace=False)]
    engine = engine_for(model)
    recipe = keras_io_recipe(model)
    vis = tf_keras_vis_gradcam(model)

    def explain(images, ks):
        return gw.explain(model, images, targets=ks, layer=LAYER, batch_size=args.batch_size)

    def floor(images, ks):
        for start in range(0, len(images), args.batch_size):
            chunk = images[start : start + args.batch_size]
            target = targets.Class(ks[start : start + args.batch_size])
            result = engine.run(chunk, target, "logit", False, (LAYER,))
            assert result.layers == (LAYER,), result.layers
        return result

    def grad_cam(image, k):
        return gw.grad_cam(model, image, class_index=k, layer=LAYER).heatmap

    batched = {
        "gw.explain": lambda: explain(batch, classes).heatmaps,
        "tf-keras-vis Gradcam (whole batch)": lambda: vis(batch, classes),
        "floor: compiled passes alone": lambda: floor(batch, classes),
    }
    looped = {"keras.io recipe loop": recipe, "gw.grad_cam loop": grad_cam}

    warm = min(args.warmup_images, count)  # warm-up: tracing, model builds (not timed)
    explain(batch[:warm], classes[:warm])
    vis(batch[:warm], classes[:warm])
    floor(batch[:warm], classes[:warm])
    for run in looped.values():
        run(batch[0], classes[0])

    names = [*batched, *looped]
    times = {name: [] for name in names}  # seconds per image
    outputs = {}
    loop_maps = {name: {} for name in looped}
    per_loop = min(args.loop_images, count)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        subset = [(round_index * per_loop + i) % count for i in range(per_loop)]
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            if name in batched:
                outputs[name] = batched[name]()
                images = count
            else:
                for index in subset:
                    loop_maps[name][index] = looped[name](batch[index], classes[index])
                images = per_loop
            times[name].append((time.perf_counter() - started) / images)
            gc.collect()
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{name} {1 / times[name][-1]:.2f} img/s" for name in names),
            file=sys.stderr,
            flush=True,
        )

    # checks, once, on the maps of the last round (and the loops' maps of every round)
    ours = outputs["gw.explain"]
    missing = [index for index in range(count) if index not in loop_maps["gw.grad_cam loop"]]
    for index in missing:  # untimed: the images the grad_cam loop did not cover
        loop_maps["gw.grad_cam loop"][index] = grad_cam(batch[index], classes[index])
    one_by_one = np.stack([loop_maps["gw.grad_cam loop"][index] for index in range(count)])
    theirs = np.asarray(outputs["tf-keras-vis Gradcam (whole batch)"])
    vis_corr = [correlation(ours[i], theirs[i]) for i in range(count)]
    recipe_corr = [correlation(ours[i], m) for i, m in loop_maps["keras.io recipe loop"].items()]
    differences = np.abs(ours - one_by_one).reshape(count, -1).max(axis=1)
    over = [int(index) for index in np.flatnonzero(differences > 1e-4)]
    zero_maps = int((ours.max(axis=(1, 2)) == 0).sum())
    checks = {
        "max |explain - grad_cam| over all maps": float(differences.max()),
        "median over images of max |explain - grad_cam|": float(np.median(differences)),
        "images with max |explain - grad_cam| > 1e-4": f"{len(over)} {over}" if over else "0",
        "explain vs tf-keras-vis correlation, min": float(np.nanmin(vis_corr)),
        "explain vs tf-keras-vis correlation, median": float(np.nanmedian(vis_corr)),
        "explain vs keras.io recipe correlation, min": float(np.nanmin(recipe_corr)),
        "maps all zero (explain; left out of the correlations)": zero_maps,
        "main process peak RSS MB (VmHWM, all of the above)": status("VmHWM") / MB,
    }

    def paired(top, bottom):  # per-round ratio of seconds per image, then the median
        return [a / b for a, b in zip(times[top], times[bottom], strict=True)]

    ratios = {
        "explain throughput / tf-keras-vis batched (target >= 1.3)": paired(
            "tf-keras-vis Gradcam (whole batch)", "gw.explain"
        ),
        "explain time / floor time (target <= 1.15)": paired(
            "gw.explain", "floor: compiled passes alone"
        ),
        "explain throughput / keras.io recipe loop": paired("keras.io recipe loop", "gw.explain"),
        "explain throughput / gw.grad_cam loop": paired("gw.grad_cam loop", "gw.explain"),
    }
    notes = [
        f"VGG16 (random weights), {LAYER}, {count} images, a different class per image, "
        f"CPU ({os.cpu_count()} cores), {args.rounds} rounds interleaved in rotating order",
        f"gw.explain and the floor: batches of {args.batch_size}; tf-keras-vis: all {count} "
        f"images in one call; the loops: {per_loop} images per round, one at a time",
        f"warm-up: every contender called once on {warm} image(s) before timing "
        "(tracing and model building not timed)",
    ]
    return times, ratios, checks, notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--images", type=int, default=64, help="images in the batch (64)")
    parser.add_argument("--batch-size", type=int, default=32, help="gw.explain batch_size")
    parser.add_argument(
        "--loop-images", type=int, default=6, help="images the two loops time per round (6)"
    )
    parser.add_argument("--warmup-images", type=int, default=2)
    parser.add_argument(
        "--memory-counts", type=int, nargs="+", default=[200, 2000], help="stream lengths"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child-stream", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_stream is not None:  # one stream, figures as JSON on stdout
        print(json.dumps(stream(args.child_stream, args.batch_size)))
        return 0

    started = time.perf_counter()
    figures = {}
    if not args.skip_speed:
        times, ratios, checks, notes = speed(args)
        print("\n".join(notes))
        print("\n| contender | median images/s | median ms/image | rounds |\n|---|---:|---:|---:|")
        for name, samples in times.items():
            value = statistics.median(samples)
            print(f"| {name} | {1 / value:.2f} | {1000 * value:.0f} | {len(samples)} |")
        print("\n| ratio (paired per round) | median | min | max |\n|---|---:|---:|---:|")
        for name, values in ratios.items():
            print(
                f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} "
                f"| {max(values):.3f} |"
            )
        print("\n| check | value |\n|---|---:|")
        for name, value in checks.items():
            shown = f"{value:.3g}" if isinstance(value, float) else f"{value}"
            print(f"| {name} | {shown} |")
        speedup = statistics.median(ratios[next(iter(ratios))])
        overhead = statistics.median(ratios[list(ratios)[1]])
        exact = checks["max |explain - grad_cam| over all maps"]
        print(
            f"\ngw.explain vs tf-keras-vis: {speedup:.2f}x ({'met' if speedup >= 1.3 else 'MISSED'}"
            f" >= 1.3); vs floor: {overhead:.3f} ({'met' if overhead <= 1.15 else 'MISSED'} <= "
            f"1.15); explain == grad_cam: max diff {exact:.2g} "
            f"({'met' if exact <= 1e-4 else 'MISSED'} <= 1e-4)"
        )
        figures["speed"] = {
            "seconds_per_image": times,
            "ratios": ratios,
            "checks": checks,
        }
    if not args.skip_memory:
        results = memory(args.memory_counts, args.batch_size)
        rows = list(next(iter(results.values())))
        print(f"\nStreaming shape scenes through gw.iter_explain (batch_size={args.batch_size}),")
        print("one fresh process per N; stream peak = VmHWM reset after one warm-up batch")
        print("\n| figure | " + " | ".join(f"N = {count}" for count in results) + " |")
        print("|---|" + "---:|" * len(results))
        for row in rows:
            cells = [results[count][row] for count in results]
            print(f"| {row} | " + " | ".join(
                f"{cell:.1f}" if isinstance(cell, float) else f"{cell}" for cell in cells
            ) + " |")  # fmt: skip
        if len(results) >= 2:
            small, large = results[min(results)], results[max(results)]
            ratio = large["stream_peak_rss_mb"] / small["stream_peak_rss_mb"]
            whole = large["process_peak_rss_mb"] / small["process_peak_rss_mb"]
            print(
                f"\nstream peak RSS N={max(results)} / N={min(results)}: {ratio:.3f} "
                f"({'met' if ratio <= 1.2 else 'MISSED'} <= 1.2); whole-process peak: "
                f"{whole:.3f}"
            )
        figures["memory"] = results
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

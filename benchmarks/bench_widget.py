"""CamExplorer update speed on VGG16 (random weights, CPU), driven from code.

Measures the time from setting a trait (pooling, channels, order, layer) to all four panels
holding their new PNG bytes (the setters are synchronous), beside the model pass that a
class change costs, in the same run. Run::

    .venv/bin/python benchmarks/bench_widget.py
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

import gradcam_widget as gw
from gradcam_widget._tf import keras

LAYERS = ["block5_conv3", "block4_conv3", "block5_conv2", "block3_conv3", "block5_conv1"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40, help="changes per control")
    parser.add_argument("--passes", type=int, default=5, help="class changes (model passes)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    image = np.random.default_rng(0).uniform(0, 255, (224, 224, 3))
    explorer = gw.CamExplorer(model, image)

    cycles = {
        "pooling": itertools.cycle(["max", "mean"]),
        "channels": itertools.cycle(["top", "weighted"]),
        "order": itertools.cycle(["resize_first", "relu_first"]),
        "layer": itertools.cycle(LAYERS[1:] + LAYERS[:1]),
    }
    times = {name: [] for name in cycles}
    times["class (model pass + redraw)"] = []
    for _ in range(args.changes):
        for name, values in cycles.items():
            value = next(values)
            started = time.perf_counter()
            setattr(explorer, name, value)
            times[name].append(time.perf_counter() - started)
            assert explorer.error is None, explorer.error
    top = [index for index, _, _ in explorer.capture.top(args.passes + 1)]
    for index in top[1:]:
        explorer._captures.clear()  # force a real pass for the comparison
        started = time.perf_counter()
        explorer.class_index = index
        times["class (model pass + redraw)"].append(time.perf_counter() - started)

    print(f"CamExplorer on VGG16 (random weights), {args.changes} changes per control")
    print("| change | median ms |\n|---|---:|")
    medians = {name: 1000 * statistics.median(samples) for name, samples in times.items()}
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} |")
    cam_changes = [t for name in cycles for t in times[name]]
    overall = 1000 * statistics.median(cam_changes)
    print(f"| any of pooling/channels/order/layer (target <= 30) | {overall:.1f} |")
    print(f"\nmodel pass / cached change: {medians['class (model pass + redraw)'] / overall:.0f}x")


if __name__ == "__main__":
    main()

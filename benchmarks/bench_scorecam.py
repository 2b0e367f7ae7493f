"""Score-CAM speed: gradcam_widget vs tf-keras-vis ``Scorecam``, same model, same channels.

VGG16 (random weights, CPU), layer ``block5_conv3``, the 64 channels of largest activation
spread (tf-keras-vis ``max_N=64``; ours ``max_channels=64``), batches of 32, a new image every
round, all contenders on the same image, interleaved round by round. Two more rows say what
is possible: the *floor* (the 64 masked forward passes alone, which every Score-CAM must run)
and, on CPUs that compute bfloat16 natively, ``precision="bfloat16"`` with the correlation of
its heatmaps to float32's. Run::

    .venv/bin/python benchmarks/bench_scorecam.py
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

import gradcam_widget as gw
from gradcam_widget.engine import bfloat16_supported, engine_for
from gradcam_widget.engine._tf import keras


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args(argv)

    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    warnings.filterwarnings("ignore", message="The structure of `inputs`")  # tf-keras-vis side
    keras.utils.disable_interactive_logging()  # tf-keras-vis calls model.predict: no bars
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    vis = Scorecam(model, clone=False)
    rng = np.random.default_rng(0)

    def theirs(image):
        return vis(
            CategoricalScore([0]), image[None], penultimate_layer="block5_conv3",
            max_N=args.channels, batch_size=32,
        )  # fmt: skip

    def ours(image, precision="float32"):
        cap = gw.capture(model, image, class_index=0, layers=["block5_conv3"])
        return cap.cam(
            "block5_conv3",
            method="scorecam",
            max_channels=args.channels,
            batch_size=32,
            precision=precision,
        ).heatmap

    def ours_bf16(image):
        return ours(image, "bfloat16")

    engine = engine_for(model)
    masks = rng.uniform(0, 1, (args.channels, 224, 224, 1)).astype(np.float32)

    def floor(image):  # what any Score-CAM must run: one forward pass per kept channel
        return engine.class_scores(image[None] * masks, 0, "logit", False, batch_size=32)

    contenders = {
        "tf-keras-vis Scorecam": theirs,
        "gw scorecam (capture + cam)": ours,
        f"floor: {args.channels} forward passes alone": floor,
    }
    if bfloat16_supported():
        contenders["gw scorecam, precision='bfloat16'"] = ours_bf16
    for run in contenders.values():  # warm-up: tracing
        run(rng.uniform(0, 255, (224, 224, 3)).astype(np.float32))
    times = {name: [] for name in contenders}
    heatmaps = {}
    agreement = []
    for _ in range(args.rounds):
        image = rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)
        for name, run in contenders.items():
            started = time.perf_counter()
            heatmaps[name] = run(image)
            times[name].append(time.perf_counter() - started)
        if "gw scorecam, precision='bfloat16'" in heatmaps:
            pair = (
                heatmaps["gw scorecam (capture + cam)"],
                heatmaps["gw scorecam, precision='bfloat16'"],
            )
            agreement.append(np.corrcoef(pair[0].ravel(), pair[1].ravel())[0, 1])

    medians = {name: statistics.median(samples) for name, samples in times.items()}
    print(f"Score-CAM on VGG16 block5_conv3, {args.channels} channels, {args.rounds} rounds")
    print("| contender | median s |\n|---|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} |")
    speedup = medians["tf-keras-vis Scorecam"] / medians["gw scorecam (capture + cam)"]
    print(f"\nspeed-up over tf-keras-vis: {speedup:.2f}x (target >= 2)")
    overhead = medians["gw scorecam (capture + cam)"] / medians[list(medians)[2]]
    print(f"gw / floor: {overhead:.2f} (1.00 = nothing but the masked forward passes)")
    if agreement:
        fast = medians["tf-keras-vis Scorecam"] / medians["gw scorecam, precision='bfloat16'"]
        print(
            f"speed-up with precision='bfloat16': {fast:.2f}x; heatmap correlation with "
            f"float32: min {min(agreement):.4f} over {len(agreement)} images"
        )


if __name__ == "__main__":
    main()

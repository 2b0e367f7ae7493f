"""Capture and cam() speed on VGG16 (random weights, CPU), side by side with the baselines.

Baselines, measured in the same run and interleaved round by round so that load on this
shared machine hits every contender alike:

* tf-keras-vis ``Gradcam`` (``pip install -e .[bench]``), softmax replaced by linear, one
  call per layer;
* the keras.io recipe: an eager ``GradientTape`` over a ``keras.Model`` built for the layer
  (written here from its description: ``[layer output, predictions]`` model, mean-pooled
  gradients, ``A @ w``, ReLU, divide by max, then resize).

Every repetition gets a new random image. Run::

    .venv/bin/python benchmarks/bench_capture.py            # prints a table + ratios
    .venv/bin/python benchmarks/bench_capture.py --rounds 7 --json bench-results/capture.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras, tf

CONV_LAYERS = [
    "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3", "block4_conv1",
    "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3",
]  # fmt: skip


class KerasIoRecipe:
    """The keras.io Grad-CAM recipe: eager tape, one ``[A, predictions]`` model per layer."""

    def __init__(self, model):
        self.model = model
        self.head = model.get_layer("predictions")
        self.features = {}

    def __call__(self, image, layer):
        if layer not in self.features:
            self.features[layer] = keras.Model(
                self.model.inputs,
                [self.model.get_layer(layer).output, self.model.get_layer("fc2").output],
            )
        kernel, bias = self.head.kernel, self.head.bias
        with tf.GradientTape() as tape:
            activations, features = self.features[layer](image[None], training=False)
            logits = tf.matmul(features, kernel) + bias  # the pre-softmax score
            target = logits[0, int(tf.argmax(logits[0]))]
        gradients = tape.gradient(target, activations)
        weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
        cam = tf.squeeze(activations[0] @ weights[..., None]).numpy()
        cam = np.maximum(cam, 0) / max(float(cam.max()), 1e-12)
        return cv2.resize(cam, (224, 224))


def tf_keras_vis_gradcam(model):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    explainer = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run(image, layer):
        return explainer(CategoricalScore([0]), image[None], penultimate_layer=layer)[0]

    return run


def median_ms(samples):
    return 1000 * statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="repetitions per contender")
    parser.add_argument("--all-layer-rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    rng = np.random.default_rng(0)

    def new_image():
        return rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)

    recipe = KerasIoRecipe(model)
    vis = tf_keras_vis_gradcam(model)

    one_layer = {
        "tf-keras-vis Gradcam": lambda image: vis(image, "block5_conv3"),
        "keras.io recipe": lambda image: recipe(image, "block5_conv3"),
        "gw.grad_cam (first view)": lambda image: gw.grad_cam(model, image).heatmap,
        "gw.capture all layers + cam": lambda image: gw.capture(model, image).cam().heatmap,
    }
    all_layers = {
        "tf-keras-vis Gradcam x13": lambda image: [vis(image, name) for name in CONV_LAYERS],
        "keras.io recipe x13": lambda image: [recipe(image, name) for name in CONV_LAYERS],
        "gw.capture + 13 cams": lambda image: [
            cap.cam(name).heatmap for cap in [gw.capture(model, image)] for name in CONV_LAYERS
        ],
    }
    for run in {**one_layer, **all_layers}.values():  # warm-up: tracing, model builds
        run(new_image())

    times = {name: [] for name in {**one_layer, **all_layers}}
    for round_index in range(args.rounds):
        contenders = list(one_layer.items())
        if round_index < args.all_layer_rounds:
            contenders += list(all_layers.items())
        for name, run in contenders:
            image = new_image()
            started = time.perf_counter()
            run(image)
            times[name].append(time.perf_counter() - started)

    cap = gw.capture(model, new_image())
    cam_times = []
    for index in range(200):
        pooling = ("mean", "max")[index % 2]
        started = time.perf_counter()
        cap.cam("block5_conv3", pooling=pooling)
        cam_times.append(time.perf_counter() - started)

    medians = {name: median_ms(samples) for name, samples in times.items()}
    medians["cached cam() 14x14x512 -> 224x224"] = median_ms(cam_times)
    base_one = medians["tf-keras-vis Gradcam"]
    base_all = medians["tf-keras-vis Gradcam x13"]
    ratios = {
        "first view / tf-keras-vis one layer (target <= 0.5)": medians["gw.grad_cam (first view)"]
        / base_one,
        "capture all + cam / tf-keras-vis one layer": medians["gw.capture all layers + cam"]
        / base_one,
        "13 layers / tf-keras-vis x13 (target <= 0.08)": medians["gw.capture + 13 cams"] / base_all,
        "13 layers / keras.io recipe x13": medians["gw.capture + 13 cams"]
        / medians["keras.io recipe x13"],
    }
    print(f"VGG16, random weights, CPU, {args.rounds} rounds (13-layer: {args.all_layer_rounds})")
    print("| contender | median ms |\n|---|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} |")
    print("\n| ratio | value |\n|---|---:|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"median_ms": medians, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()

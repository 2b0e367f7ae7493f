"""CamExplorer speed on VGG16 (random weights, CPU), driven from code, beside tf-keras-vis.

Two parts, in one run:

* **Model passes**, interleaved round by round (each round a new random image, the order of
  the contenders rotated) so that load on a shared machine hits them alike: the explorer's
  first view of a new image (``set_image`` with ``block5_conv3`` on screen, and a brand-new
  ``CamExplorer``), the first switch to another layer on that image (the pass that fills in
  every layer), a class change that misses the capture cache, and tf-keras-vis ``Gradcam``
  (softmax replaced by linear) for the same image, class and layer. Each is timed from the
  call to all four panels holding their new PNG bytes (the setters are synchronous).
* **Cached changes**: setting pooling, channels, order or layer on a capture that holds every
  layer (numpy over the cache, no model pass).

Run::

    .venv/bin/python benchmarks/bench_widget.py                      # a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_widget.py --passes 3 --changes 10
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras

LAYER = "block5_conv3"
LAYERS = [LAYER, "block4_conv3", "block5_conv2", "block3_conv3", "block5_conv1"]
FILL_IN_LAYER = "block4_conv3"


def tf_keras_vis_gradcam(model):
    """tf-keras-vis Grad-CAM of class ``k`` at ``layer``, as benchmarks/bench_capture.py
    calls it (``pip install -e .[bench]``)."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    explainer = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run(image, k, layer=LAYER):
        return explainer(CategoricalScore([k]), image[None], penultimate_layer=layer)[0]

    return run


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def median_ms(samples) -> float:
    return 1000 * statistics.median(samples)


def pass_rounds(model, explorer, rounds: int, rng) -> dict[str, list[float]]:
    """Seconds of each contender that runs the model, ``rounds`` interleaved rounds."""
    vis = tf_keras_vis_gradcam(model)
    classes = itertools.cycle(range(1, 1000))
    made = []  # the new explorers, closed after the rounds (closing is not timed)

    def new_image():
        return rng.uniform(0, 255, (224, 224, 3)).astype(np.float32)

    def first_view_set_image(image):
        explorer.set_image(image)
        assert explorer.layer == LAYER and explorer.capture.held_layers == (LAYER,)

    def first_view_new_explorer(image):
        fresh = gw.CamExplorer(model, image)
        assert fresh.layer == LAYER and fresh.capture.held_layers == (LAYER,)
        made.append(fresh)

    def fill_in(image):  # on the image set_image showed this round: the first switch
        explorer.layer = FILL_IN_LAYER
        assert len(explorer.capture.fill_ins) == 1

    def class_change(image):
        explorer.layer = LAYER  # cached: the capture holds every layer now
        explorer.captures.clear()  # force a real pass (one layer deep) for the comparison
        explorer.class_index = (explorer.class_index + next(classes)) % 1000

    def tf_keras_vis(image):
        vis(image, explorer.class_index)

    contenders = {
        "first view: set_image (pass + redraw)": first_view_set_image,
        "first view: new CamExplorer (pass + widgets + redraw)": first_view_new_explorer,
        "first switch to another layer (fill-in pass + redraw)": fill_in,
        "class change, cache miss (pass + redraw)": class_change,
        "tf-keras-vis Gradcam, one layer": tf_keras_vis,
    }
    warm = new_image()
    for run in contenders.values():  # tracing, model clone, widget classes
        run(warm)
    set_image, new_explorer, switch, *others = contenders
    rotating = [new_explorer, *others]
    times = {name: [] for name in contenders}
    for round_index in range(rounds):
        image = new_image()
        # set_image, then the first layer switch on its capture; the others take turns first
        shift = round_index % len(rotating)
        for name in [set_image, switch, *rotating[shift:], *rotating[:shift]]:
            times[name].append(timed(lambda run=contenders[name], image=image: run(image)))
            assert explorer.error is None, explorer.error
    for fresh in made:
        fresh.close()
    return times


def cached_changes(explorer, changes: int) -> dict[str, list[float]]:
    """Seconds of pooling/channels/order/layer changes on a capture holding every layer."""
    explorer.capture.gradients(LAYERS[1])  # every layer held: no fill-in among the samples
    cycles = {
        "pooling": itertools.cycle(["max", "mean"]),
        "channels": itertools.cycle(["top", "weighted"]),
        "order": itertools.cycle(["resize_first", "relu_first"]),
        "layer": itertools.cycle(LAYERS[1:] + LAYERS[:1]),
    }
    times = {name: [] for name in cycles}
    for _ in range(changes):
        for name, values in cycles.items():
            value = next(values)
            times[name].append(timed(lambda name=name, value=value: setattr(explorer, name, value)))
            assert explorer.error is None, explorer.error
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20, help="cached changes per control")
    parser.add_argument("--passes", type=int, default=5, help="rounds of the model-pass part")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    rng = np.random.default_rng(0)
    explorer = gw.CamExplorer(model, rng.uniform(0, 255, (224, 224, 3)))
    assert explorer.layer == LAYER, explorer.layer

    passes = pass_rounds(model, explorer, args.passes, rng)
    cached = cached_changes(explorer, args.changes)

    print(
        f"CamExplorer on VGG16 (random weights, 224x224), CPU; model passes: {args.passes} "
        f"interleaved rounds; cached changes: {args.changes} per control"
    )
    print("| change | median ms |\n|---|---:|")
    medians = {name: median_ms(samples) for name, samples in {**passes, **cached}.items()}
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} |")
    overall = median_ms([seconds for samples in cached.values() for seconds in samples])
    print(f"| any of pooling/channels/order/layer, cached (target <= 30) | {overall:.1f} |")

    base = medians["tf-keras-vis Gradcam, one layer"]
    ratios = {
        "first view (set_image) / tf-keras-vis (target <= 0.5)": "first view: set_image",
        "first view (new CamExplorer) / tf-keras-vis": "first view: new CamExplorer",
        "class change / tf-keras-vis (target <= 0.5)": "class change, cache miss",
        "first layer switch / tf-keras-vis": "first switch to another layer",
    }
    print("\n| ratio | value |\n|---|---:|")
    for label, prefix in ratios.items():
        (name,) = [name for name in medians if name.startswith(prefix)]
        print(f"| {label} | {medians[name] / base:.2f} |")
    class_change = medians["class change, cache miss (pass + redraw)"]
    print(f"\nclass change (model pass) / cached change: {class_change / overall:.0f}x")


if __name__ == "__main__":
    main()

"""Write the teaching notebooks from the cell lists below and execute them in place.

The notebooks are committed with their outputs (figures) so they read well on GitHub, and
with valid widget state (nbclient's ``store_widget_state``). Run from the repository root::

    .venv/bin/python scripts/build_notebooks.py            # every notebook
    .venv/bin/python scripts/build_notebooks.py 02         # those whose name contains "02"

A notebook that needs a download (``03_imagenet_vgg16``) is executed only when its weights
are in the Keras cache; otherwise it is written without outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# a text link, not the badge image: a rendered notebook (the docs site) asks nothing of another site
BINDER_BADGE = (
    "[Open this notebook on Binder](https://mybinder.org/v2/gh/gradcam-widget/gradcam_widget/HEAD"
    "?urlpath=lab/tree/notebooks/01_quickstart.ipynb)"
    " (JupyterLab in the browser, nothing to install)"
)


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip("\n"))


QUICKSTART = [
    md(f"""
# gradcam_widget — quickstart

{BINDER_BADGE}

**Grad-CAM** answers *where did the classifier look?* It takes the activations `A` of a
convolutional layer, weighs each channel by how much the class score grows with it (the
gradients `G`), and sums the channels into a coarse map that is then upsampled onto the image.

This notebook needs no download: it uses the small **shapes** model that ships with the
package, trained on generated scenes where the true object outlines are known.
"""),
    code("""
import gradcam_widget as gw

entry = gw.models.load("shapes")              # shipped with the package, works offline
scene = gw.data.sample_scene("two_shapes")    # a generated scene with two objects
print("classes:", ", ".join(entry.class_names))
print("in this scene:", ", ".join(entry.class_names[k] for k in scene.labels))
"""),
    md("""
## The explorer

Every dropdown re-computes the map from tensors cached by **one** forward + backward pass;
only *Class* and *Score* may run the model again (once per choice, then cached).

| control | what it changes |
|---|---|
| **Layer** | which feature map is explained; the label shows its grid, e.g. `14×14×128` |
| **Pooling** | gradients -> channel weights: *mean* (global average pooling) or *max* |
| **Channels** | *weighted sum* of all channels, or only the *top channel* (largest weight) |
| **Order** | *ReLU → resize* (clip negatives on the grid, then upsample) or *resize → ReLU* |
| **Class** | which class is explained: the top-5 predictions, or any index in the box |
| **Score** | differentiate the *logit* (pre-softmax, as in the paper) or the *probability* |
| **Colormap / Opacity** | only how the heatmap is drawn |

The panels: the image as fed to the model, the **raw map** (signed: red positive, blue
negative; one block per feature-map cell), the upsampled heatmap, and the overlay.
"""),
    code("""
explorer = gw.CamExplorer(entry, scene.image)
explorer
"""),
    md("""
## Switching the class moves the map

The model scores both objects high. Explaining one class or the other moves the heatmap from
one object to the other — Grad-CAM is *class-discriminative*. Setting `explorer.class_index`
from code updates the widget above, as picking the class in the dropdown would.
"""),
    code("""
for k in scene.labels:
    explorer.class_index = k
    row, col = explorer.result.peak
    on_own = gw.data.peak_on_object(explorer.result.heatmap, scene.masks, k)
    name = entry.class_names[k]
    print(f"{name:>8}: peak at row {row:3d}, col {col:3d} -> on its own object: {on_own}")
"""),
    code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
axes[0].imshow(scene.image)
axes[0].set_title("input")
for axis, k in zip(axes[1:], scene.labels, strict=True):
    result = gw.grad_cam(entry, scene.image, class_index=k)
    axis.imshow(gw.render.overlay(scene.image, result.heatmap, alpha=0.5))
    axis.set_title(f"Grad-CAM for '{entry.class_names[k]}'")
for axis in axes:
    axis.axis("off")
plt.show()
"""),
    md("""
## Without the widget

The same core works in plain code: `gw.capture` runs the pass once, `cap.cam(...)` is numpy.
`explorer.save_png(path)` writes the four panels as one figure, and from a terminal
`python -m gradcam_widget demo --out demo.png` does the same with no Jupyter at all.
"""),
    code("""
cap = gw.capture(entry, scene.image, class_index=scene.labels[0])
result = cap.cam(layer="block5_conv3", pooling="max", channels="top", order="resize_first")
print("raw", result.raw.shape, "heatmap", result.heatmap.shape, "weights", result.weights.shape)
"""),
    md("""
Next: `02_reading_gradcam.ipynb` takes the recipe apart step by step and measures each of the
article's experiments against the true object outlines.
"""),
]


METHOD_CONCLUSIONS = """
### What the table says

Measured on 200 unseen scenes (`docs/method_scores.md`; re-run with
`scripts/evaluate_methods.py`):

* **At the last block every gradient method finds the object** (pointing 100%). They differ in
  how much of the map lies on it: HiResCAM 45.8% of the energy, Grad-CAM and XGrad-CAM 37%,
  Grad-CAM++ 30.3% (a random map: 4.8%, the object's share of the image). XGrad-CAM scores
  like Grad-CAM on every column.
* **The sharper 28×28 grid answers the article only with the right method.** One block
  earlier Grad-CAM's pointing falls to 79.5% (Grad-CAM++ 56.5%, Score-CAM 57%), but
  element-wise methods keep 100%: HiResCAM (40.5% energy) and LayerCAM (33.3%). Pooling the
  gradients of a shallow layer into one number per channel throws away *where* each channel
  mattered; HiResCAM and LayerCAM keep it.
* **Fusion works with the method it was made for.** LayerCAM fused over three blocks (a
  56×56 map) points at the object every time, has the best insertion AUC (0.951) and a lower
  deletion AUC than LayerCAM at either single layer (0.159 vs 0.209 and 0.199), for 16 ms.
  Fusing Grad-CAM maps instead drops pointing to 63.5%: the shallow maps' noise wins the
  maximum. A finer grid is not automatically more concentrated: HiResCAM at 14×14 still puts
  the most energy on the object.
* **Faithful is not the same as localised.** Score-CAM at the last block has the lowest
  deletion AUC (0.068) and average drop (1.0%), better than the ground-truth mask itself
  (0.168): filling the exact object with a flat colour leaves its silhouette, which the model
  still reads, while a map that also covers the border removes it. Score-CAM pays for that
  with 64 extra forward passes: 390 ms against 9 ms.
* **Average drop punishes peaky maps.** HiResCAM and LayerCAM, sharp and on the object, lose
  92% of the confidence when the model sees only `image × heatmap`: most of the object is
  dimmed, only its strongest parts stay bright. Read that metric as "does the map keep the
  whole object", not "is it right".
* **Eigen-CAM does not know the class.** It shows the strongest structure in the activations
  whatever class is asked: pointing 46.5% on scenes with two objects, about one in two.
"""

READING = [
    md("""
# Reading Grad-CAM line by line

This notebook follows a short article in which the author reads a Keras Grad-CAM
implementation line by line, prints every tensor's shape, then changes one step at a time to
see what it does. We redo each step with `gradcam_widget`'s core, and — because our shapes
scenes come with the true object outlines — turn each impression into a **number**: the
*pointing game* (does the heatmap's maximum fall on the object, within 15 px?) over 100+
fresh scenes per variant.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np

import gradcam_widget as gw
from gradcam_widget import core, data, render

entry = gw.models.load("shapes")
names = entry.class_names
scene = data.sample_scene("two_shapes")
target = scene.labels[0]
print("explaining class", target, repr(names[target]))
"""),
    md("""
## 1. The recipe, with every shape printed

1. **Score**: the model's output for the class. The article differentiates the softmax
   output; the Grad-CAM paper uses the pre-softmax score (the *logit*, our default).
2. One forward pass gives the layer's activations `A`; one backward pass the gradients
   `G = d score / d A`. Both have the layer's shape.
3. **Channel weights**: the mean of `G` over the two spatial axes, one number per channel.
4. **Map**: `A · weights`, a dot product over the channels — a signed `h × w` map.
5. **Resize** to the input size (bilinear). *Careful with OpenCV*: `cv2.resize` takes
   `dsize=(width, height)`, and its third positional argument is `dst`, not the
   interpolation flag. `core.resize` takes numpy's `(H, W)` and passes both right.
6. **ReLU** and divide by the maximum (an all-negative map becomes all zeros, never NaN).
"""),
    code("""
# NBVAL_CHECK_OUTPUT
cap = gw.capture(entry, scene.image, class_index=target)   # steps 1-2: one pass, all layers
A = cap.activations("block5_conv3")[None]                   # the article prints a batch axis
G = cap.gradients("block5_conv3")[None]
print("A, activations:", A.shape)
print("G, gradients:  ", G.shape)

weights = core.channel_weights(G[0], pooling="mean")        # step 3
print("weights:       ", weights.shape)
raw = core.combine(A[0], weights)                           # step 4
print("raw map:       ", raw.shape)
upsampled = core.resize(raw, cap.input_size)                # step 5
print("resized:       ", upsampled.shape)
heatmap = core.normalize(core.relu(upsampled))              # step 6
print("heatmap:       ", heatmap.shape, "min", heatmap.min(), "max", heatmap.max())
"""),
    code("""
result = cap.cam("block5_conv3", order="resize_first")
print("same as cap.cam():", np.allclose(result.heatmap, heatmap, atol=1e-6))
render.figure(cap.image, result, title=f"Grad-CAM of '{names[target]}' at block5_conv3")
"""),
    md("""
## 2. Why does the mean of the gradients measure a channel's importance?

Because it *is* a global average pooling. Grad-CAM generalises **CAM**: for a network that
ends in global average pooling followed by one dense layer, the score of class `c` is

$$y^c = \\sum_k w^c_k \\cdot \\frac{1}{Z}\\sum_{i,j} A^k_{ij}, \\qquad
\\frac{\\partial y^c}{\\partial A^k_{ij}} = \\frac{w^c_k}{Z}$$

so the gradient is the same at every position, its spatial mean is `w_k / Z`, and Grad-CAM
is exactly CAM (up to the constant `Z = h·w`). Deeper heads (more layers after the feature
map) make the gradients vary over space; the mean then averages how much each channel
matters *on the whole*. Our model ends in global average pooling + one dense layer, so the
last feature map before the pooling shows the identity directly:
"""),
    code("""
# NBVAL_CHECK_OUTPUT
gap_input = cap.layers[-1]           # the last 4-D layer: it feeds the global average pooling
G_last = cap.gradients(gap_input)
h, w, channels = G_last.shape
kernel = entry.model.get_layer("logits").get_weights()[0][:, target]   # dense weights w^c
print(f"layer {gap_input}: {h}x{w}x{channels}")
print("gradient constant over space:", np.allclose(G_last, G_last[:1, :1, :], atol=1e-6))
mean_gradient = G_last.mean((0, 1))
print("mean gradient == w_c / (h*w):", np.allclose(mean_gradient, kernel / (h * w), atol=1e-6))
print("mean pooling == max pooling: ", np.allclose(mean_gradient, G_last.max((0, 1)), atol=1e-6))
"""),
    md("""
## 3. The experiments, measured

Every variant below is scored on the same fresh scenes (seeds never used in training): one
capture per (scene, present class), recording just the two layers we compare, and then only
numpy. Four numbers per variant:

* *pointing*: the pointing game — the heatmap's maximum within 15 px of the object;
* *own object*: in two-object scenes, how often a class's map peaks on its own object rather
  than on the other one;
* *energy*: the share of the heatmap's total mass that lies on the object (the
  energy-based pointing game) — finer than pointing, which a good model saturates;
* *area*: the share of the image where the heatmap is above half its maximum.
"""),
    code("""
EVAL_SEEDS = range(3_000_000, 3_000_120)   # 120 scenes: 60 with one object, 60 with two
LAYERS = ["block5_conv3", "block4_conv2"]

cases = []   # (scene, class, capture)
for seed in EVAL_SEEDS:
    fresh = data.scene(seed, n_objects=1 + seed % 2)
    for k in fresh.labels:
        cases.append((fresh, k, gw.capture(entry, fresh.image, class_index=k, layers=LAYERS)))

def measure(transform=None, **options):
    \"\"\"Pointing, own-object rate, energy on the object and area of one variant.\"\"\"
    hits, own, energy, area = [], [], [], []
    for fresh, k, case_cap in cases:
        result = case_cap.cam(**options)
        heat = result.heatmap if transform is None else transform(result)
        hits.append(data.pointing_hit(heat, fresh.masks[k]))
        if len(fresh.labels) == 2:
            own.append(data.peak_on_object(heat, fresh.masks, k))
        energy.append(heat[fresh.masks[k]].sum() / max(heat.sum(), 1e-12))
        area.append(np.mean(heat > 0.5))
    return np.mean(hits), np.mean(own), np.mean(energy), np.mean(area)

print(f"{len(cases)} explained objects in {len(EVAL_SEEDS)} scenes")
"""),
    md("""
### 3a. Pooling: mean or max of the gradients?

The article: with the global **max** the highlighted area grows a little but still works.
"""),
    code("""
HEADER = f"{'pointing':>9} {'own object':>11} {'energy':>8} {'area':>7}"

def row(label, numbers):
    pointing, own, energy, area = numbers
    print(f"  {label:<30} {pointing:9.1%} {own:11.1%} {energy:8.1%} {area:7.1%}")

def compare(title, variants):
    print(f"{title:<32} {HEADER}")
    for label, options in variants.items():
        row(label, measure(**options))

def show(cap_, variants, title):
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.6))
    for axis, (label, options) in zip(axes, variants.items(), strict=True):
        result = cap_.cam(**options)
        axis.imshow(render.overlay(cap_.image, result.heatmap, alpha=0.55))
        axis.set_title(f"{label}\\n{result.raw.shape[0]}x{result.raw.shape[1]} map")
        axis.axis("off")
    fig.suptitle(title)
    plt.show()

pooling = {
    "mean, block5_conv3": dict(layer="block5_conv3", pooling="mean"),
    "max, block5_conv3": dict(layer="block5_conv3", pooling="max"),
    "mean, block4_conv2": dict(layer="block4_conv2", pooling="mean"),
    "max, block4_conv2": dict(layer="block4_conv2", pooling="max"),
}
show(cap, pooling, "gradient pooling")
compare("pooling", pooling)
"""),
    md("""
### 3b. Channels: the weighted sum, or only the top channel?

The article: keeping only the single channel with the largest weight narrows the area —
perhaps onto one part of the object, hard to tell at 14×14.
"""),
    code("""
channels = {
    "weighted sum": dict(layer="block5_conv3", channels="weighted"),
    "top channel": dict(layer="block5_conv3", channels="top"),
}
show(cap, channels, "channel combination")
compare("channels (block5_conv3)", channels)
top = cap.cam("block5_conv3", channels="top")
print(f"top channel #{top.top_channel}, weight {top.top_weight:.4g}; "
      f"area above half max: weighted {np.mean(cap.cam().heatmap > 0.5):.1%}, "
      f"top {np.mean(top.heatmap > 0.5):.1%}")
"""),
    md("""
### 3c. Layer and resolution: the last conv block or the one before?

The article: VGG16's `block4_conv3` gives a 28×28 map but no longer localises the object
well. Our smaller network's last conv before `block4_pool` is `block4_conv2`, also 28×28. A
shallower layer sees smaller parts with less class-specific meaning, so its gradients are
noisier; methods made for shallow layers (LayerCAM, multi-layer fusion) answer the article's
question of how to get a sharper map.
"""),
    code("""
layers = {
    "block5_conv3 (14x14)": dict(layer="block5_conv3"),
    "block4_conv2 (28x28)": dict(layer="block4_conv2"),
}
show(cap, layers, "layer")
compare("layer", layers)
"""),
    md("""
### 3d. Order: ReLU → resize, or resize → ReLU?

On an ordinary map the two orders look the same. The article then injects one large negative
value, `cam[2, 6] = -1000`: resizing first spreads that value over the neighbouring cells
(bilinear interpolation mixes each pixel with its neighbours), so after the ReLU they are
dark too; clipping first turns the cell into a plain zero and leaves the neighbours alone.
**ReLU first is the safer order.**
"""),
    code("""
original = cap.cam("block5_conv3").raw
# The article injects at cell [2, 6], which lay on its dog; in our scene that cell is
# background, so we inject at the strongest cell instead: on the object.
cell_row, cell_col = np.unravel_index(np.argmax(original), original.shape)
injected = original.copy()
injected[cell_row, cell_col] = -1000.0
print(f"injecting -1000 at cell [{cell_row}, {cell_col}]")
size = cap.input_size
maps = {
    "no injection": core.to_heatmap(original, size, "relu_first"),
    "injected, ReLU -> resize": core.to_heatmap(injected, size, "relu_first"),
    "injected, resize -> ReLU": core.to_heatmap(injected, size, "resize_first"),
}
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for axis, (label, heat) in zip(axes, maps.items(), strict=True):
    axis.imshow(heat, cmap="jet", vmin=0, vmax=1)
    corner = (cell_col * 16 - 0.5, cell_row * 16 - 0.5)
    axis.add_patch(plt.Rectangle(corner, 16, 16, fill=False, ec="white"))
    axis.set_title(label)
    axis.axis("off")
plt.show()

cell = 16   # 224 / 14 pixels per cell
def neighbours(heat):
    blocks = [heat[(cell_row + dr) * cell:(cell_row + 1 + dr) * cell,
                   (cell_col + dc) * cell:(cell_col + 1 + dc) * cell]
              for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    return np.mean(blocks)
for label, heat in maps.items():
    print(f"{label:<26} mean of the 4 neighbouring cells: {neighbours(heat):.3f}")
"""),
    code("""
orders = {
    "ReLU -> resize": dict(layer="block5_conv3", order="relu_first"),
    "resize -> ReLU": dict(layer="block5_conv3", order="resize_first"),
}
compare("order, ordinary maps", orders)

def inject(result):
    raw = result.raw.copy()
    raw.flat[np.argmax(raw)] = -1000.0   # the worst place: the strongest cell
    return raw

for label, order in (("ReLU -> resize", "relu_first"), ("resize -> ReLU", "resize_first")):
    numbers = measure(lambda r, o=order: core.to_heatmap(inject(r), r.heatmap.shape, o),
                      layer="block5_conv3")
    row(f"injected, {label}", numbers)
"""),
    md("""
## 4. What the numbers say

Measured above on 180 explained objects in 120 fresh scenes (the cells re-run to the same
numbers):

* **Pooling** — at `block5_conv3` both poolings point at the object every time, but *max*
  puts less of the map on it (energy 30.7% vs 35.5%) over a slightly larger area (7.5% vs
  7.4%): the article's "grows a little but still works". Why: behind `block5_pool` the
  gradient reaches only each window's maximum, and with a dense head after global average
  pooling a channel's positive gradients are all the same number, so max pooling simply
  drops the channels with negative weight — the evidence *against* the class. One block
  earlier (`block4_conv2`), where gradients vary more, max pooling falls apart (pointing
  68.9% vs 87.2%). The mean is the robust choice, and section 2 says why it is the principled
  one.
* **Top channel** — on this model one channel still points at the right object every time,
  with a little less energy on it (33.8% vs 35.5%) and *not* a narrower area (7.7% vs 7.4%):
  the article's "narrows" does not hold here; one channel of 128 is simply a noisier vote.
* **Layer** — the 28×28 map of `block4_conv2` is much sharper (1.4% of the image above half
  max, half of its energy on the object) but points at the wrong place more often (87.2%;
  its own object only 81.7% of the time): resolution is not worth much if the layer no longer
  knows the class — the article's observation, measured.
* **Order** — identical on ordinary maps (energy 35.5% vs 35.7%). With one large negative
  value at the strongest cell, ReLU → resize keeps the neighbours (0.78 on average, as
  before the injection) while resize → ReLU darkens them to 0.41 and loses a third of the
  energy on the object (22.7% vs 31.9%). **ReLU first is the safer order.**
"""),
    md("""
## 5. Beyond Grad-CAM: sharper maps, and how to tell a good map from a bad one

The article ends with a question: how do we get a sharper map than 14×14? Three answers,
all computed from the same cached tensors (Score-CAM alone runs the model again):

* **other channel weightings** of the same layer — Grad-CAM++, XGrad-CAM, HiResCAM (no
  pooling at all), LayerCAM, the gradient-free Eigen-CAM and Score-CAM;
* **a shallower layer** — section 3c showed Grad-CAM loses the object there;
* **fusion** — LayerCAM maps of several blocks, normalised and combined by their maximum
  (`cap.fuse()`), so the fine grid adds detail where the deep grid agrees.

Looking is not enough to rank them, so `gw.metrics` measures. Against ground truth: the
pointing game and the energy pointing game. Against the model itself, with no ground truth
needed: **deletion** (remove the most salient pixels first — a faithful map makes the score
collapse: low area under the curve) and **insertion** (start from a blurred image and add
the most salient pixels back — the score should come back fast: high area).
"""),
    code("""
from gradcam_widget import metrics

label = scene.labels[0]
cap5 = gw.capture(entry, scene.image, class_index=label)
maps = {name: cap5.cam("block5_conv3", method=name).heatmap
        for name in ("gradcam", "hirescam", "eigencam")}
maps["layercam fused"] = cap5.fuse().heatmap
maps["random"] = np.random.default_rng(0).uniform(size=cap5.input_size)

fig, axes = plt.subplots(2, len(maps), figsize=(3.2 * len(maps), 6.2))
for column, (name, heat) in enumerate(maps.items()):
    axes[0, column].imshow(render.overlay(cap5.image, heat, alpha=0.55))
    axes[0, column].set_title(name)
    axes[0, column].axis("off")
    for run, style in ((metrics.deletion, "-"), (metrics.insertion, "--")):
        curve = run(entry, cap5.image, heat, label)
        axes[1, column].plot(curve.fractions, curve.scores, style,
                             label=f"{curve.kind} AUC {curve.auc:.2f}")
    axes[1, column].set_xlabel("share of pixels removed / inserted")
    axes[1, column].set_ylim(-0.05, 1.05)
    axes[1, column].legend(loc="center right", fontsize=8)
    energy = metrics.energy_pointing_game(heat, scene.masks[label])
    axes[1, column].set_title(f"energy on the {names[label]}: {energy:.0%}")
axes[1, 0].set_ylabel(f"p({names[label]})")
fig.tight_layout()
plt.show()
"""),
    md("""
One scene proves little. `scripts/evaluate_methods.py` scores every method at three places
(the last block, the block before, fused) on 200 scenes never used in training, with two
reference rows: a random map (what a map that knows nothing scores) and the ground-truth
mask itself. The table it wrote to `docs/method_scores.md`:
"""),
    code("""
from pathlib import Path

from IPython.display import Markdown

Markdown(Path("../docs/method_scores.md").read_text().split("\\n", 2)[2])
"""),
    md(METHOD_CONCLUSIONS),
]


IMAGENET = [
    md(f"""
# The article's own setting: VGG16 on a photo

{BINDER_BADGE}

VGG16 with ImageNet weights, layer `block5_conv3` (14×14×512), on a real photo. The weights
(528 MB) are downloaded once into the Keras cache; on Binder they are fetched while the image
is built. **Offline**, the first cell stops with a message saying which file to put where —
the shapes notebooks work offline.
"""),
    code("""
import gradcam_widget as gw

entry = gw.models.load("vgg16")      # ImageNet weights from the Keras cache (or downloaded)
photo = gw.data.sample("grace_hopper")
cap = gw.capture(entry, photo)
for index, name, probability in cap.top(5):
    print(f"{index:4d} {name:<24} {probability:.3f}")
"""),
    code("""
result = cap.cam("block5_conv3")
print("activations", cap.activations("block5_conv3").shape, "raw", result.raw.shape,
      "heatmap", result.heatmap.shape)
gw.render.figure(cap.image, result, title=f"VGG16 block5_conv3 · {cap.class_name()}")
"""),
    code("""
gw.CamExplorer(entry, photo)
"""),
]

TRUST = [
    md("""
# Can you trust the map?

The code the article reads (keras-gradcam's `grad_cam.py`) draws **three** maps for every
image: Grad-CAM, **Guided Backpropagation** and **Guided Grad-CAM** (guided backprop times the
upsampled Grad-CAM: the Grad-CAM paper's answer to "14×14 is coarse"). This notebook draws
all three, shows how the seed's trick is done today, and then asks the question a sharp map
invites: *does it say anything about the model?* — with the sanity checks of Adebayo et al.,
"Sanity Checks for Saliency Maps" (NeurIPS 2018), measured here rather than quoted.

Everything runs offline on the shipped **shapes** model.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np

import gradcam_widget as gw
from gradcam_widget import data, render

entry = gw.models.load("shapes")
scene = data.sample_scene("two_shapes")
cap = gw.capture(entry, scene.image)
for _, name, score in cap.top(3):
    print(f"{name:>9}  logit {score:6.2f}")
"""),
    md("""
## 1. The seed's three maps, in one call

`render.saliency_figure` is the seed's `compute_saliency` printout: the top-5 classes with
their probabilities (the shapes model is multi-label: a sigmoid per class), then the Grad-CAM
overlay, Guided Backpropagation and Guided Grad-CAM. The guided pictures are drawn as the seed
drew them: centred, scaled to a standard deviation of 0.1 around grey, clipped.
"""),
    code("""
figure = render.saliency_figure(cap)
plt.show()
"""),
    md("""
## 2. Where did `gradient_override_map` go?

The seed replaced the gradient of every ReLU with TensorFlow 1's
`graph.gradient_override_map({"Relu": "GuidedRelu"})`: a graph-wide switch, gone in
TensorFlow 2 and Keras 3 (there is no global graph to override any more). What replaces it is
`tf.custom_gradient`: a ReLU twin whose backward pass is `grad * (grad > 0) * (input > 0)`.
gradcam_widget puts that twin in place of each ReLU (`activation="relu"`, `ReLU` layers,
`Activation("relu")`, inside nested models too) **only while its guided pass is traced and
only for the tracing thread**: the model is not cloned or changed, and another caller of the
model gets plain gradients at the same moment. The cell below checks both claims.
"""),
    code("""
weights = [w.copy() for w in entry.model.get_weights()]
guided = cap.saliency("guided")          # one more pass, down to the input
vanilla = cap.saliency("vanilla")        # the plain gradient
smooth = cap.saliency("vanilla", smooth=16)   # SmoothGrad: 16 noisy copies, one batch
same = all(np.array_equal(a, b) for a, b in zip(weights, entry.model.get_weights(), strict=True))
print("weights unchanged after the guided passes:", same)
print("guided differs from the plain gradient:", not np.allclose(guided, vanilla))

fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
pictures = {
    "vanilla gradient": render.saliency_image(vanilla, "abs"),
    "SmoothGrad (16 copies)": render.saliency_image(smooth, "abs"),
    "Guided Backprop": render.saliency_image(guided, "abs"),
    "Guided Grad-CAM": render.saliency_image(cap.guided_grad_cam(), "abs"),
}
for axis, (title, picture) in zip(axes, pictures.items(), strict=True):
    axis.imshow(picture)
    axis.set_title(title)
    axis.axis("off")
plt.show()
"""),
    md("""
The same on a photograph the shapes model has never seen (`grace_hopper`, the sample photo
that ships with matplotlib): the model knows only five shapes, so
*what* it finds is meaningless — but look at **how** the guided map looks: sharp edges of
the uniform, the face, the flag, whatever the class. Keep that picture in mind for section 3.
"""),
    code("""
photo = data.sample("grace_hopper")
photo_cap = gw.capture(entry, photo)
figure = render.saliency_figure(photo_cap)
plt.show()
"""),
    md("""
## 3. The sanity checks, measured

**Model randomisation.** Re-initialise the model's blocks from the top down (a *cascade*:
after step k the top k blocks hold random weights), explain the same class again, and compare
with the original map. A map that barely changes does not depend on what the model learned.
The checks run on a *copy* of the model: the shipped one is never touched.

Scores per step (1 = the same map): Spearman rank correlation of the absolute map and of the
signed map, SSIM, and the similarity of HOG features, as in the paper. Here on 8 held-out
scenes; `scripts/sanity_checks.py` runs the same on 50 (`docs/sanity.md`).
"""),
    code("""
scenes = [data.scene(seed) for seed in range(4_000_000, 4_000_008)]
images = [s.image for s in scenes]
checks = gw.sanity.model_randomization(
    entry, images, method=["gradcam", "guided", "guided_gradcam", "vanilla", "smoothgrad"],
    smooth=8,
)
for name, result in checks.items():
    print(name)
    print(result.to_markdown())
    print()
"""),
    md("""
The cascade as pictures, for the first scene: one row per method, the original model on the
left, then one more block randomised per column.
"""),
    code("""
rows = list(checks)
steps = checks[rows[0]].steps
fig, axes = plt.subplots(len(rows), len(steps), figsize=(1.9 * len(steps), 2.0 * len(rows)))
for r, name in enumerate(rows):
    for c, step in enumerate(steps):
        axis = axes[r, c]
        axis.imshow(checks[name].maps[c, 0], cmap="gray")
        axis.set_xticks([])
        axis.set_yticks([])
        if r == 0:
            axis.set_title(step, fontsize=8)
    axes[r, 0].set_ylabel(name, fontsize=9)
plt.tight_layout()
plt.show()
"""),
    md("""
**Data randomisation.** The same network trained on *permuted* labels (shipped as
`shapes_permuted`: it memorised its training scenes and is at chance on new ones). A map that
looks the same for a model that learned and for one that memorised cannot be explaining the
learning.
"""),
    code("""
labels = [s.labels[0] for s in scenes]
learned_vs_memorised = gw.sanity.data_randomization(
    images, method=["gradcam", "guided"], labels=labels
)
for name, result in learned_vs_memorised.items():
    print(name)
    print(result.to_markdown())
    print()
"""),
    md("""
## 4. What to conclude

Read the numbers above rather than this paragraph if they disagree; they are computed each
time the notebook runs (and on 50 scenes in `docs/sanity.md`). What they have shown on the
shapes model: the **Grad-CAM** map falls apart as soon as the top of the model is randomised
(its rank correlation drops to about 0.3–0.4 with random logits and to about zero from block5
down) — it depends on what the model learned. **Guided Backpropagation** keeps most of its
structure deep into the cascade (rank correlation about 0.9 with random logits, still about
0.6 with block5 random), and its maps for the model that learned and for the one that
memorised are the most alike of all: much of what makes it look sharp is the image's edges,
gated by ReLUs. **Guided Grad-CAM**'s rank correlation falls with Grad-CAM's, because of the
multiplication, while its SSIM stays high: SSIM is dominated by the dark background that two
sparse maps share — one reason the paper reports several metrics. The plain gradient and
SmoothGrad sit in between.

So: a sharp picture is not by itself evidence about the model. Use a map that passes the
checks (here Grad-CAM and its relatives) to ask *where*, and treat a guided map as a
high-resolution rendering of that answer, not as a second opinion.

In the explorer below, switch **Guided** on (one extra pass) and drag **Randomise** to see
the same view on a copy of the model with its top blocks re-initialised; your model is not
changed, and 0 brings the original view back.
"""),
    code("""
explorer = gw.CamExplorer(entry, scene.image)
explorer
"""),
]

AUDIT = [
    md("""
# Audit a model: right for the wrong reason

One image at a time teaches the recipe. Across a whole data set the map answers the question
the Grad-CAM paper asked of real models: *where does the model look, and where is it right
for the wrong reason?* (The classic: a "wolf" detector that learned the snow.)

This notebook audits two shipped models on the same 500 held-out scenes:

* **shapes**, the model of the other notebooks, and
* **shapes_shortcut**, the same network trained on scenes in which almost every star carries
  a small checkerboard tag in a corner, and almost nothing else does.

Both look accurate. Only the audit shows that one of them learned the tag, not the star.
Everything runs offline.
"""),
    code("""
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import gradcam_widget as gw
from gradcam_widget import data, render

models = {name: gw.models.load(name) for name in ("shapes", "shapes_shortcut")}
SCENES = "shortcut:1000000-1000500"   # 500 held-out scenes (seeds 1,000,000 ...), one object each
results_root = Path(tempfile.mkdtemp(prefix="gw-audit-"))   # where the results go
"""),
    md("""
## 1. The audit

`gw.audit` explains every image (one compiled pass per batch of 32), measures each map and
writes, shard by shard, a results folder: `explanations.parquet` (one row per image), the raw
maps, overlay thumbnails and a `manifest.json` with the model's hash and every option. Killed
half-way and run again, it resumes; run again on finished results, it does nothing. The same
job runs from a shell (`gradcam-widget audit shortcut:1000000-1000500 --model shapes_shortcut
--out results/`) or on a Ray cluster (`ray=True`).
"""),
    code("""
audits = {
    name: gw.audit(entry, SCENES, out=results_root / name, targets="predicted")
    for name, entry in models.items()
}
again = gw.audit(models["shapes"], SCENES, out=results_root / "shapes")   # nothing left to do
print("shards computed by the second run:", again.computed_shards)
"""),
    md("""
## 2. Two tables side by side

Each row says what the model predicted, which class the map explains (here: the predicted
one), and how the map spreads: its `entropy` (1 = spread evenly), the share of its mass in
the image centre, and — because these scenes come with object masks — whether its peak lies on
the object (`pointing_hit`) and the share of its mass on the object (`object_share`).
"""),
    code("""
audits["shapes_shortcut"].table[
    ["id", "true_label", "predicted_label", "predicted_score", "correct",
     "pointing_hit", "object_share", "entropy", "centre_share"]
].head()
"""),
    code("""
def overview(table):
    return pd.Series({
        "accuracy": table["correct"].mean(),
        "pointing game": table["pointing_hit"].mean(),
        "map mass on the object": table["object_share"].mean(),
        "map entropy": table["entropy"].mean(),
    })

pd.DataFrame({name: overview(r.table) for name, r in audits.items()}).round(3)
"""),
    md("""
Both models are accurate on these scenes. Per class, one number stands out:
"""),
    code("""
per_class = pd.concat(
    {name: r.table.groupby("true_label")[["correct", "pointing_hit", "object_share"]].mean()
     for name, r in audits.items()},
    axis=1,
)
per_class.round(2)
"""),
    md("""
## 3. Find the shortcut without being told

Sort the shortcut model's rows by the share of the map on the object, lowest first: the
images where the model looked *away* from the thing it named. The audit never saw the tag;
the `tagged` column is ground truth the scene generator knows, used here only to check.
"""),
    code("""
def tagged_stars(rows):
    return int(((rows["true_label"] == "star") & rows["tagged"]).sum())

table = audits["shapes_shortcut"].table
away = table.sort_values("object_share").head(50)
print(f"of the 50 rows with the least map on the object, {tagged_stars(away)} are tagged stars")
print(f"(the 500 scenes hold {int((table['true_label'] == 'star').sum())} stars, "
      f"{tagged_stars(table)} of them tagged)")
away[["id", "true_label", "predicted_label", "predicted_score", "object_share", "tagged"]].head(8)
"""),
    md("""
Is that the model, or the sort? Stars are thin, so a smaller share of *any* map lies on them:
the same sort of the `shapes` table puts some stars near the top too. The pointing game says
more: put the maps that miss their object first (then the least mass on the object).
"""),
    code("""
def stars_in(rows):
    return int((rows["true_label"] == "star").sum())

for name, results in audits.items():
    by_share = results.table.sort_values("object_share").head(50)
    by_miss = results.table.sort_values(["pointing_hit", "object_share"]).head(50)
    misses = int((~by_miss["pointing_hit"]).sum())
    print(f"{name:16s} top 50 by least mass on the object: {stars_in(by_share):2d} stars;"
          f"  misses first: {stars_in(by_miss):2d} stars ({misses} misses)")
"""),
    md("""
The same search in the gallery: sort by any column, filter by class, by correct / wrong or by
a threshold, and click **open** under a thumbnail to explain that image in a `CamExplorer`
beside the grid. It starts sorted by `object_share`, lowest first.
"""),
    code("""
gallery = gw.CamGallery(audits["shapes_shortcut"], model=models["shapes_shortcut"])
gallery
"""),
    md("""
## 4. Confirm it: move the tag

A suspicion from the maps is confirmed by an intervention. Take a tagged star and remove the
tag; take a scene of another class and put the tag on it. `data.shortcut_scene(seed,
tag=...)` draws the same scene with or without the tag.
"""),
    code("""
def seed_of(rows):                    # ids read "shortcut-<seed>"
    return int(rows["id"].iloc[0].split("-")[1])

star_seed = seed_of(table[(table["true_label"] == "star") & table["tagged"]])
other_seed = seed_of(table[table["true_label"] == "circle"])
cases = {
    "star, tagged": data.shortcut_scene(star_seed, tag=True),
    "star, tag removed": data.shortcut_scene(star_seed, tag=False),
    "circle, tag added": data.shortcut_scene(other_seed, tag=True),
}
STAR = data.CLASS_NAMES.index("star")
figure, axes = plt.subplots(2, 3, figsize=(10, 7))
for column, (title, scene) in enumerate(cases.items()):
    for row, name in enumerate(models):
        cap = gw.capture(models[name], scene.image, class_index=STAR)
        star_probability = 1 / (1 + np.exp(-cap.scores[STAR]))
        axes[row, column].imshow(render.overlay(scene.image, cap.cam().heatmap))
        axes[row, column].set_title(f"{name}: P(star) = {star_probability:.2f}", fontsize=9)
        axes[row, column].axis("off")
    axes[0, column].text(0, -28, title, fontsize=11, weight="bold")
figure.suptitle("Grad-CAM of class 'star' at block5_conv3", y=0.98)
plt.tight_layout()
"""),
    md("""
Over all held-out scenes: how often each model says "star" (logit > 0) for stars with and
without the tag, and for other scenes with the tag added.
"""),
    code("""
seeds = range(1_000_000, 1_000_500)
stars = [seed for seed in seeds if data.scene(seed, n_objects=1).labels == (STAR,)]
others = [seed for seed in seeds if seed not in set(stars)][:150]

def says_star(entry, scenes):
    logits = entry.predict(np.stack([scene.image for scene in scenes]))
    return float((logits[:, STAR] > 0).mean())

def scenes_of(seeds_, tag):
    return [data.shortcut_scene(seed, tag=tag) for seed in seeds_]

rates = {
    name: {
        "stars with the tag": says_star(entry, scenes_of(stars, True)),
        "stars, tag removed": says_star(entry, scenes_of(stars, False)),
        "other shapes, tag added": says_star(entry, scenes_of(others, True)),
    }
    for name, entry in models.items()
}
pd.DataFrame(rates).round(3)
"""),
    md("""
The shortcut model's accuracy on scenes like its training data was a fine number; its maps
said why it was fine, and the intervention confirmed it. The audit found it by sorting one
column — no one had to know about the tag. On your own data, sort by where the map is (the
centre share, the mass on a mask when you have one) and look at the top of the list.
"""),
]

VIT = [
    md(f"""
# Vision transformers: where does a ViT look?

{BINDER_BADGE}

A vision transformer has no feature *map*: after its patch embedding every layer outputs a
sequence of **tokens**, `(N, T, C)`: usually a class token and then one token per image patch,
row by row. Grad-CAM needs a grid, so other libraries ask you for a `reshape_transform`
written by hand (and get a grid hard-coded to 14×14, an extra token that shifts everything,
or an all-zero map). Here a token layer whose `T` is a few prefix tokens plus a patch grid of
the input is recognised as one: its prefix tokens are left out and its patch tokens are read
as a grid, so every method, the metrics and the explorer work on it unchanged.

This notebook uses **shapes_vit**, a small vision transformer shipped with the package and
trained on the same scenes as the **shapes** CNN (16×16 patches → 14×14 tokens after a class
token, four blocks). Everything runs offline.
"""),
    code("""
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown

import gradcam_widget as gw
from gradcam_widget import data, render

cnn = gw.models.load("shapes")
vit = gw.models.load("shapes_vit")
scene = gw.data.sample_scene("two_shapes")
cap = gw.capture(vit, scene.image, layers="all")
for path in cap.layers:
    if cap.tokens(path) and path.startswith(("tokens", "block4", "norm", "drop")):
        print(f"{path:17s} tokens {cap.tokens(path)}  (prefix, h, w)")
print("default layer:", cap.default_layer)
"""),
    md("""
`(1, 14, 14)`: one prefix token (the class token) and 14×14 patch tokens; `drop_class_token`
has cut the class token off, so it reads as `(0, 14, 14)`. The explorer's Layer menu says the
same in words (`block4_out · 1 prefix token + 14×14 patches ×64`), and the raw map is drawn
one cell per patch.
"""),
    code("""
explorer = gw.CamExplorer(vit, scene.image)
explorer
"""),
    md("""
## Which layer? The default for transformers

For a CNN the default is the last conv layer. For a transformer the default is **the output
of its last block whose patch tokens still reach the score**, before the final norm: layers
that only normalise or cut tokens (`norm`, `drop_class_token`) are skipped, and so is every
layer after a class-token readout, where the patch tokens get no gradient at all (their maps
would be empty; choosing one by hand gives a warning that says so). The rule comes from this
measurement — Grad-CAM's pointing game on 200 held-out scenes at every block's output, its
norms and the final norm (`python scripts/evaluate_methods.py --model shapes_vit`):
"""),
    code("""
Markdown(Path("../docs/vit_layers.md").read_text().split("\\n", 2)[2])
"""),
    md("""
## CNN vs ViT, measured

Every method at the last block, the block before and fused over the last three blocks, on the
same 200 held-out scenes and with the same metrics as the CNN table of notebook 02. Each cell
reads CNN / ViT:
"""),
    code("""
Markdown(Path("../docs/cnn_vs_vit.md").read_text().split("\\n", 2)[2])
"""),
    md("""
## Side by side

The same scenes through both models: the CNN's Grad-CAM at its default layer, the ViT's
Grad-CAM and HiResCAM at its default layer (the final norm), and its Grad-CAM at the last
block's output, before the norm.
"""),
    code("""
seeds = [1_000_001, 1_000_003, 1_000_004, 1_000_010]
columns = ["CNN Grad-CAM", "ViT Grad-CAM (norm)", "ViT HiResCAM (norm)", "ViT Grad-CAM block4_out"]
figure, axes = plt.subplots(len(seeds), 5, figsize=(13, 2.7 * len(seeds)))
for row, seed in zip(axes, seeds, strict=True):
    item = data.scene(seed, n_objects=1 + seed % 2)
    label = item.labels[0]
    cnn_cap = gw.capture(cnn, item.image, class_index=label)
    vit_cap = gw.capture(vit, item.image, class_index=label, layers=["norm", "block4_out"])
    maps = [cnn_cap.cam().heatmap, vit_cap.cam("norm").heatmap,
            vit_cap.cam("norm", method="hirescam").heatmap, vit_cap.cam("block4_out").heatmap]
    row[0].imshow(item.image)
    row[0].set_title(f"seed {seed}: {data.CLASS_NAMES[label]}", fontsize=9)
    for ax, heatmap, title in zip(row[1:], maps, columns, strict=True):
        ax.imshow(render.overlay(item.image, heatmap))
        ax.set_title(title, fontsize=9)
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout()
"""),
    md("""
## Reading the numbers

* **Does the transformer point as well?** Almost, with the right method. At its default layer
  the element-wise methods point at the object in 97.5% (HiResCAM) and 96.0% (LayerCAM) of the
  scenes, with about as much of their map on the object as on the CNN (37% and 35% against
  46% and 38%). Plain Grad-CAM still points (94.5% against 100%) but spreads: 15% of its mass
  on the object against 37%. Its one weight per channel, averaged over all 196 tokens, is a
  poorer summary when every token has attended to every other.
* **Sharper or blockier?** Both models explain a 14×14 grid at their default layers, so the
  maps are equally blocky; the ViT's Grad-CAM is more diffuse, and in the figure above it
  lights the objects' edges and corners where the CNN's fills their middle. Fusion cannot
  help a ViT the way it helps a CNN: every block has the same grid, so there is no finer layer
  to borrow from, and for the gradient methods fusing only mixes in weaker blocks (Grad-CAM
  88.5% fused).
* **Which methods transfer?** HiResCAM and LayerCAM (gradient times activation, token by
  token) transfer; Grad-CAM transfers with a wider map; Grad-CAM++ (56.5%) and XGrad-CAM
  (54.0%), which reweight the gradients, do not; Score-CAM drops to 64.5% at the final norm
  (78% one block earlier); Eigen-CAM ignores the class on both (about 50%).
* **A caution on the metrics:** deletion is no fair judge of the ViT here. Its score collapses
  under any mean-colour deletion — a random map scores 0.080, better than any method — while
  insertion stays comparable to the CNN's (0.944 against 0.947 for Grad-CAM).
* **Which layer:** after the final norm. The head reads the normalised tokens, and Grad-CAM
  there points in 94.5% of the scenes against 87.0% at the last block's output before it.
"""),
]

BOOKS = {
    "01_quickstart.ipynb": (QUICKSTART, None),
    "02_reading_gradcam.ipynb": (READING, None),
    "03_imagenet_vgg16.ipynb": (IMAGENET, "vgg16"),
    "04_can_you_trust_the_map.ipynb": (TRUST, None),
    "05_audit_a_model.ipynb": (AUDIT, None),
    "06_vision_transformers.ipynb": (VIT, None),
}


def weights_cached(model_name: str) -> bool:
    from gradcam_widget.data import models

    return models.weights_cached(model_name)


def build(name: str, cells, needs: str | None) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    path = NOTEBOOKS / name
    if needs is None or weights_cached(needs):
        client = NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
            store_widget_state=True,
        )
        client.execute()
        print(f"executed {name}")
    else:
        print(f"wrote {name} without outputs: the {needs} weights are not in the Keras cache")
    nbformat.validate(notebook)
    nbformat.write(notebook, path)


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    NOTEBOOKS.mkdir(exist_ok=True)
    wanted = [name for name in BOOKS if not argv or any(part in name for part in argv)]
    for name in wanted:
        cells, needs = BOOKS[name]
        build(name, cells, needs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

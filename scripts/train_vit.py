"""Train the shipped ``shapes_vit`` model: a small vision transformer on the shape scenes.

Run from the repository root::

    python scripts/train_vit.py          # writes gradcam_widget/assets/shapes_vit.keras + .json

Data, labels and evaluation are those of ``scripts/train_shapes.py`` (whose helpers this
script imports): scenes ``gradcam_widget.data.scene(seed, n_objects=1 + seed % 2)``, training
seeds ``0 ..< --train-scenes``, each seen ``--epochs`` times under a random flip and quarter
turn, multi-hot targets over ``data.CLASS_NAMES`` learned with sigmoid binary cross-entropy
from logits, input 224 x 224 x 3 float in 0..255 (scaling inside the model), evaluation on
``--eval-scenes`` held-out scenes from ``EVAL_SEED_START = 1_000_000``. After every epoch the
script prints the presence accuracy on ``--val-scenes`` validation scenes (seeds from
``VAL_SEED_START = 900_000``: neither trained on nor evaluated on).

The network (:func:`build_model`) is a hybrid vision transformer (Dosovitskiy et al. 2021,
section 3.1: the patch tokens are cut from a CNN's feature map instead of the pixels) made of
stock Keras layers only, so ``keras.models.load_model`` needs nothing registered:

* ``rescaling`` (0..255 -> -1..1); the stem: ``stem1_conv1`` (16), ``stem1_pool``,
  ``stem2_conv1`` (32), ``stem2_pool``, ``stem3_conv1``, ``stem3_conv2`` (64), ``stem3_pool``
  -- the layers of blocks 1 to 3 of the shipped ``shapes`` CNN, 3 x 3 convs with ReLU, whose
  weights they start from (:func:`copy_cnn_stem`), 28 x 28 x 64 -- then ``patch_embedding``:
  ``Conv2D(dim, 2, strides=2)``, 14 x 14 patches of 16 x 16 pixels, and ``patch_tokens``:
  ``Reshape((196, dim))``;
* a learnable class token and position embedding. Keras has no layer holding a free weight
  tensor, so both are ``Dense`` layers without bias applied to a constant 1 per image
  (``one``: the image's first pixel value times 0 plus 1, from ``Reshape``, ``Cropping1D`` and
  ``Rescaling(0, offset=1)``): ``class_token`` outputs its ``(1, dim)`` kernel and
  ``position_embedding`` its ``(1, 197 dim)`` kernel (reshaped to ``(197, dim)`` by
  ``positions``), so their kernels ARE the token and the embedding, with no dead weights.
  ``tokens`` prepends the class token (``Concatenate``), ``embedded`` adds the positions;
* ``depth`` (4) pre-norm transformer blocks ``block{i}_norm1`` (``LayerNormalization``),
  ``block{i}_attn`` (``MultiHeadAttention``, ``heads`` heads of ``dim / heads``),
  ``block{i}_add1`` (residual), ``block{i}_norm2``, ``block{i}_mlp1`` (``Dense``, GELU),
  ``block{i}_mlp2`` (``Dense``), ``block{i}_out`` (residual ``Add``: ``(N, 197, dim)``, the
  class token first);
* ``norm`` (``LayerNormalization``), ``drop_class_token`` (``Cropping1D((1, 0))``),
  ``max_pool`` (``GlobalMaxPooling1D`` over the 196 patch tokens) and ``logits`` (``Dense``,
  one logit per class).

Why pool the patch tokens, not read the class token: with a class-token readout only the class
token's row is read after the last block, so the last block's patch-token outputs never reach
the logits and a Grad-CAM at ``block{depth}_out`` would be zero everywhere. Pooling the patch
tokens lets every block's patch tokens reach the logits, as a CNN's last conv map does through
its pooling. The class token stays in the sequence (it takes part in attention like any token,
a "register") so that the token layers have a prefix token, as ViTs usually do; Grad-CAM on
tokens drops it. Max rather than mean: an object covers roughly 10 to 30 of the 196 patches,
and a mean over all of them dilutes its evidence.

What did not train in the time (``--stem`` keeps the alternatives; every run below stayed at
the predict-the-prior plateau: binary cross-entropy about 0.61, validation presence accuracy
about 0.70, every class "absent"):

* ``--stem patch`` (plain ViT: ``Conv2D(dim, 16, strides=16)`` on the pixels, dim 64, 4 blocks,
  MLP 256, each patch's pixels standardised, patch tokens normalised): after 120_000 training
  images (6 epochs of 20_000, 25.5 minutes) training loss 0.558, validation presence 0.715.
  With mean pooling: loss 0.611 after 30_000 images; other learning rates (3e-4 .. 3e-3),
  batch sizes 16 and 32, batch norm after the embedding: loss 0.61 after 8_000 to 10_000;
* ``--stem conv`` (four 3 x 3 stride-2 convs with batch norm, then a 1 x 1 conv: the
  "early convolutions" stem of Xiao et al. 2021), from random weights: loss 0.595 (max) and
  0.606 (mean) after 16_000 images, validation still at the prior;
* ``--stem hybrid`` (the CNN's blocks 1 to 3 with batch norm, from random weights): 0.607
  after 8_000 images. (The shipped CNN itself needed batch norm and 32_000 images.)

With the stem starting from the CNN's weights the plateau was left after about 4_000 images
(validation presence 0.97/0.89/0.92/0.92/0.95 after 10_000). The transformer blocks, the
class token, the positions and the patch embedding are learned from scratch; the stem is
fine-tuned with them. So this ViT reads the CNN's low-level features (edges and corners at
1/8 scale) and does everything from 16 x 16 patches on with attention.

Token Grad-CAM (:func:`token_grad_cams`, computed here with a plain ``tf.GradientTape``, no
engine features): at ``block{i}_out`` drop the class token, reshape ``(196, dim)`` to
``(14, 14, dim)``, weight each channel by the mean of its gradients over the tokens, sum,
ReLU, and resize bilinearly to 224 x 224. The script reports the pointing game per class
(``data.pointing_hit``: the map's peak within 15 px of the object) at every block's output
and at the final norm, and records which is best (``--evaluate-only`` evaluates a saved model
again and rewrites that part of its record).

Training: ``keras.utils.set_random_seed(--seed)`` and TensorFlow op determinism; AdamW
(weight decay on kernels only: not on biases, layer norms, the class token or the position
embedding), learning rate linearly warmed up over the first ``--warmup`` of the steps, then
cosine decay to 0; every attention output projection starts at zero
(:func:`zero_attention_outputs`, ``--no-zero-attention`` keeps the random start), so each block
starts as its MLP alone. Training stops after ``--max-train-minutes`` (30) even if the epochs
are not done; the record says where (``stopped_early_at``). The saved model is a fresh copy
without optimizer state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from train_shapes import (  # noqa: E402
    EVAL_SEED_START,
    AugmentedBatches,
    EpochLine,
    label_agreement,
    make_scenes,
    predict_logits,
)

from gradcam_widget.data import scenes as data  # noqa: E402
from gradcam_widget.engine._tf import keras, tf  # noqa: E402

VAL_SEED_START = 900_000
"""First validation seed (monitoring after each epoch): above every training seed, below
:data:`EVAL_SEED_START`."""

PATCH_SIZE = 16
"""Side of a patch in pixels: 224 x 224 gives 14 x 14 patch tokens."""

DEFAULT_OUTPUT = REPO / "gradcam_widget" / "assets" / "shapes_vit.keras"

DEFAULTS = {
    "dim": 64,
    "depth": 4,
    "heads": 4,
    "mlp_dim": 128,
    "stem": "cnn",
    "patch_norm": False,
    "pooling": "max",
    "pixel_norm": False,
    "zero_attention": True,
    "train_scenes": 12_000,
    "epochs": 4,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "weight_decay": 0.05,
    "warmup": 0.05,
}
"""Defaults of the architecture and training options."""


def build_model(
    dim: int = DEFAULTS["dim"],
    depth: int = DEFAULTS["depth"],
    heads: int = DEFAULTS["heads"],
    mlp_dim: int = DEFAULTS["mlp_dim"],
    num_classes: int = len(data.CLASS_NAMES),
    patch_norm: bool = DEFAULTS["patch_norm"],
    batch_norm: bool = False,
    pooling: str = DEFAULTS["pooling"],
    pixel_norm: bool = DEFAULTS["pixel_norm"],
    stem: str = DEFAULTS["stem"],
    stem_channels: tuple[int, ...] = (24, 48, 96, 96),
) -> keras.Model:
    """The ViT classifier, untrained (see the module docstring for the layers).

    Args:
        dim: token width.
        depth: number of transformer blocks.
        heads: attention heads per block (``dim`` must be a multiple).
        mlp_dim: hidden width of each block's MLP.
        num_classes: number of output logits.

    Returns:
        A functional ``keras.Model`` named ``"shapes_vit"``: ``(N, 224, 224, 3)`` float in
        0..255 -> ``(N, num_classes)`` logits.
    """
    if dim % heads:
        raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
    layers = keras.layers
    height, width = data.SCENE_SIZE
    grid = (height // PATCH_SIZE, width // PATCH_SIZE)
    n_patches = grid[0] * grid[1]
    small = keras.initializers.TruncatedNormal(stddev=0.02)
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    if pixel_norm:  # normalise each 16 x 16 x 3 patch's pixels, then back to image layout
        patch_shape = (grid[0], PATCH_SIZE, grid[1], PATCH_SIZE, 3)
        x = layers.Reshape(patch_shape, name="patch_grid")(x)
        x = layers.Permute((1, 3, 2, 4, 5), name="patch_major")(x)
        x = layers.Reshape((n_patches, PATCH_SIZE * PATCH_SIZE * 3), name="patch_pixels")(x)
        x = layers.LayerNormalization(epsilon=1e-6, name="pixel_norm")(x)
        x = layers.Reshape((grid[0], grid[1], PATCH_SIZE, PATCH_SIZE, 3), name="patch_blocks")(x)
        x = layers.Permute((1, 3, 2, 4, 5), name="image_major")(x)
        x = layers.Reshape((height, width, 3), name="normalised_image")(x)
    if stem == "conv":  # 3 x 3 stride-2 convs to 1/16, then a 1 x 1 conv to the token width
        for index, channels in enumerate(stem_channels, 1):
            x = layers.Conv2D(
                channels, 3, strides=2, padding="same", use_bias=False, name=f"stem_conv{index}"
            )(x)
            x = layers.BatchNormalization(name=f"stem_bn{index}")(x)
            x = layers.ReLU(name=f"stem_relu{index}")(x)
        x = layers.Conv2D(dim, 1, name="patch_embedding")(x)
    elif stem == "cnn":  # blocks 1-3 of the shipped shapes CNN (plain convs), then 2 x 2 patches
        for index, (channels, convs) in enumerate(((16, 1), (32, 1), (64, 2)), 1):
            for conv in range(1, convs + 1):
                x = layers.Conv2D(
                    channels, 3, padding="same", activation="relu", name=f"stem{index}_conv{conv}"
                )(x)
            x = layers.MaxPooling2D(2, name=f"stem{index}_pool")(x)
        x = layers.Conv2D(dim, 2, strides=2, name="patch_embedding")(x)
    elif stem == "hybrid":  # the shapes CNN's blocks 1-3 (to 1/8), then 2 x 2 patches
        for index, (channels, convs) in enumerate(((16, 1), (32, 1), (64, 2)), 1):
            for conv in range(1, convs + 1):
                x = layers.Conv2D(
                    channels, 3, padding="same", use_bias=False, name=f"stem{index}_conv{conv}"
                )(x)
                x = layers.BatchNormalization(name=f"stem{index}_bn{conv}")(x)
                x = layers.ReLU(name=f"stem{index}_relu{conv}")(x)
            x = layers.MaxPooling2D(2, name=f"stem{index}_pool")(x)
        x = layers.Conv2D(dim, 2, strides=2, name="patch_embedding")(x)
    else:
        x = layers.Conv2D(dim, PATCH_SIZE, strides=PATCH_SIZE, name="patch_embedding")(x)
    if batch_norm:
        x = layers.BatchNormalization(name="patch_bn")(x)
    patches = layers.Reshape((n_patches, dim), name="patch_tokens")(x)
    if patch_norm:
        patches = layers.LayerNormalization(epsilon=1e-6, name="patch_norm")(patches)
    # A constant 1 per image, (N, 1, 1), for the Dense layers that hold the free weights.
    one = layers.Reshape((-1, 1), name="pixels")(inputs)
    one = layers.Cropping1D((0, height * width * 3 - 1), name="first_pixel")(one)
    one = layers.Rescaling(0.0, offset=1.0, name="one")(one)
    class_token = layers.Dense(dim, use_bias=False, kernel_initializer=small, name="class_token")(
        one
    )
    positions = layers.Dense(
        (n_patches + 1) * dim, use_bias=False, kernel_initializer=small, name="position_embedding"
    )(one)
    positions = layers.Reshape((n_patches + 1, dim), name="positions")(positions)
    x = layers.Concatenate(axis=1, name="tokens")([class_token, patches])
    x = layers.Add(name="embedded")([x, positions])
    for block in range(1, depth + 1):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(heads, dim // heads, name=f"block{block}_attn")(h, h)
        x = layers.Add(name=f"block{block}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        h = layers.Dense(mlp_dim, activation="gelu", name=f"block{block}_mlp1")(h)
        h = layers.Dense(dim, name=f"block{block}_mlp2")(h)
        x = layers.Add(name=f"block{block}_out")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.Cropping1D((1, 0), name="drop_class_token")(x)
    if pooling == "max":
        x = layers.GlobalMaxPooling1D(name="max_pool")(x)
    elif pooling == "mean":
        x = layers.GlobalAveragePooling1D(name="avg_pool")(x)
    else:
        raise ValueError(f"pooling must be 'max' or 'mean', got {pooling!r}")
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="shapes_vit")


def copy_cnn_stem(model: keras.Model, cnn: keras.Model) -> int:
    """Copy the shipped shapes CNN's ``block{b}_conv{k}`` kernels into ``stem{b}_conv{k}``."""
    copied = 0
    for layer in model.layers:
        if layer.name.startswith("stem") and "_conv" in layer.name:
            layer.set_weights(cnn.get_layer(layer.name.replace("stem", "block")).get_weights())
            copied += 1
    return copied


def zero_attention_outputs(model: keras.Model) -> int:
    """Set the output projection of every ``MultiHeadAttention`` to zero; return how many.

    Each block then starts as its residual MLP alone (attention adds nothing until its output
    projection has learned something): a per-token network, which leaves the
    predict-the-prior plateau sooner than a ViT with random attention outputs (see the module
    docstring). The query, key and value projections keep their random start, so the
    gradients of the output projection are not zero.
    """
    zeroed = 0
    for weight in model.weights:
        if weight.path.endswith("attention_output/kernel"):
            weight.assign(np.zeros(weight.shape, dtype="float32"))
            zeroed += 1
    return zeroed


def block_names(model: keras.Model) -> list[str]:
    """``["block1_out", ...]``: the output of every transformer block, in order."""
    names = []
    while f"block{len(names) + 1}_out" in {layer.name for layer in model.layers}:
        names.append(f"block{len(names) + 1}_out")
    return names


def no_decay_variables(model: keras.Model) -> list:
    """Variables AdamW leaves undecayed: biases, layer norms, class token, positions."""
    skipped = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization) or layer.name in (
            "class_token",
            "position_embedding",
        ):
            skipped.extend(layer.weights)
        else:
            skipped.extend(weight for weight in layer.weights if weight.name == "bias")
    return skipped


def token_grad_cams(cam_model: keras.Model, images: np.ndarray, class_indices) -> np.ndarray:
    """Grad-CAM of one class per image at every block output, batched.

    Args:
        cam_model: ``keras.Model(model.inputs, [block outputs..., logits])``.
        images: ``(N, 224, 224, 3)`` uint8 or float 0..255.
        class_indices: ``(N,)`` class to explain for each image.

    Returns:
        ``(blocks, N, 224, 224)`` float32 heatmaps (not normalised): per block, the patch
        tokens (class token dropped) as a ``(14, 14, dim)`` map, channels weighted by their
        mean gradient over the tokens, ReLU, bilinear resize.
    """
    inputs = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    num_classes = cam_model.outputs[-1].shape[-1]
    chosen = tf.one_hot(np.asarray(class_indices), num_classes)
    with tf.GradientTape() as tape:
        *activations, logits = cam_model(inputs, training=False)
        score = tf.reduce_sum(logits * chosen)
    gradients = tape.gradient(score, activations)
    height, width = images.shape[1:3]
    grid = (height // PATCH_SIZE, width // PATCH_SIZE)
    maps = []
    for tokens, grads in zip(activations, gradients, strict=True):
        tokens, grads = tokens[:, 1:], grads[:, 1:]  # drop the class token
        weights = tf.reduce_mean(grads, axis=1)  # (N, dim)
        cam = tf.nn.relu(tf.einsum("ntc,nc->nt", tokens, weights))
        cam = tf.reshape(cam, (-1, *grid, 1))
        maps.append(tf.image.resize(cam, (height, width), method="bilinear")[..., 0].numpy())
    return np.stack(maps)


def evaluate(model: keras.Model, seeds, batch_size: int = 25) -> dict:
    """Presence accuracy and token Grad-CAM pointing game per block on held-out ``seeds``.

    Returns:
        A dict: ``presence`` (:func:`train_shapes.label_agreement`), ``pointing`` per block
        (``{"block1_out": [per class], ...}``), ``pointing_counts`` per class,
        ``discrimination`` per block (two-object scenes: the class's map peaks on its own
        object, ``data.peak_on_object``), and ``best_block`` (highest worst-class pointing,
        ties to the mean).
    """
    names = block_names(model) + ["norm"]  # the final norm: the tokens as the head reads them
    cam_model = keras.Model(
        model.inputs, [model.get_layer(name).output for name in names] + [model.outputs[0]]
    )
    num_classes = len(data.CLASS_NAMES)
    hits = np.zeros((len(names), num_classes))
    counts = np.zeros(num_classes)
    discrimination = [[] for _ in names]
    all_logits, all_targets = [], []
    seeds = list(seeds)
    for start in range(0, len(seeds), batch_size):
        images, targets, scenes = make_scenes(seeds[start : start + batch_size])
        all_logits.append(model.predict_on_batch(images.astype(np.float32)))
        all_targets.append(targets)
        pairs = [(row, label) for row, item in enumerate(scenes) for label in item.labels]
        rows = [row for row, _ in pairs]
        maps = token_grad_cams(cam_model, images[rows], [label for _, label in pairs])
        for index, (row, label) in enumerate(pairs):
            masks = scenes[row].masks
            counts[label] += 1
            for block in range(len(names)):
                hits[block, label] += data.pointing_hit(maps[block, index], masks[label])
                if len(masks) == 2:
                    discrimination[block].append(
                        data.peak_on_object(maps[block, index], masks, label)
                    )
    pointing = hits / np.maximum(counts, 1)
    best = max(range(len(names)), key=lambda block: (pointing[block].min(), pointing[block].mean()))
    return {
        "scenes": len(seeds),
        "presence": label_agreement(np.concatenate(all_logits), np.concatenate(all_targets)),
        "pointing": {name: np.round(pointing[i], 4).tolist() for i, name in enumerate(names)},
        "pointing_counts": counts.astype(int).tolist(),
        "discrimination": {
            name: round(float(np.mean(discrimination[i])), 4) if discrimination[i] else None
            for i, name in enumerate(names)
        },
        "discrimination_pairs": len(discrimination[0]),
        "best_block": names[best],
    }


def print_metrics(metrics: dict) -> None:
    presence = metrics["presence"]
    print(f"evaluation on {metrics['scenes']} held-out scenes (seeds >= {EVAL_SEED_START}):")
    print(
        "  presence accuracy: "
        + ", ".join(
            f"{name} {value:.3f}"
            for name, value in zip(data.CLASS_NAMES, presence["presence_accuracy"], strict=True)
        )
        + f" (mean {presence['mean']:.3f}, exact match {presence['exact_match']:.3f})"
    )
    print(
        f"  token Grad-CAM pointing game per class ({', '.join(data.CLASS_NAMES)}; objects "
        f"{metrics['pointing_counts']}) and two-object discrimination:"
    )
    for name, values in metrics["pointing"].items():
        print(
            f"  {name:11s} "
            + " ".join(f"{value:.3f}" for value in values)
            + f"  min {min(values):.3f}  discrimination {metrics['discrimination'][name]:.3f}"
        )
    print(f"  best block: {metrics['best_block']}")


class ValidationLine(keras.callbacks.Callback):
    """After each epoch, print the presence accuracy per class on the validation scenes."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        super().__init__()
        self.images, self.targets = images, targets
        self.history: list[list[float]] = []

    def on_epoch_end(self, epoch, logs=None):
        result = label_agreement(predict_logits(self.model, self.images), self.targets)
        self.history.append(result["presence_accuracy"])
        print(
            f"  validation presence accuracy: {result['presence_accuracy']} "
            f"(mean {result['mean']:.3f}, loss {result['loss']:.3f})",
            flush=True,
        )


class Deadline(keras.callbacks.Callback):
    """Stop training at the first batch that ends after ``deadline`` (a ``time.time()``)."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped_at: tuple[int, int] | None = None  # (epoch, batch), both from 0
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped_at is None and time.time() > self.deadline:
            self.stopped_at = (self.epoch, batch)
            self.model.stop_training = True
            print(
                f"  time limit reached: stopped in epoch {self.epoch + 1} after batch {batch + 1}"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=DEFAULTS["dim"])
    parser.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"])
    parser.add_argument("--mlp-dim", type=int, default=DEFAULTS["mlp_dim"])
    parser.add_argument("--pooling", choices=("max", "mean"), default=DEFAULTS["pooling"])
    parser.add_argument(
        "--stem", choices=("cnn", "patch", "conv", "hybrid"), default=DEFAULTS["stem"]
    )
    parser.add_argument(
        "--patch-norm", action=argparse.BooleanOptionalAction, default=DEFAULTS["patch_norm"]
    )
    parser.add_argument(
        "--pixel-norm", action=argparse.BooleanOptionalAction, default=DEFAULTS["pixel_norm"]
    )
    parser.add_argument(
        "--zero-attention",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["zero_attention"],
        help="start every attention output projection at zero",
    )
    parser.add_argument(
        "--max-train-minutes",
        type=float,
        default=30.0,
        help="stop training after this long even if the epochs are not done",
    )
    parser.add_argument("--train-scenes", type=int, default=DEFAULTS["train_scenes"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument(
        "--warmup", type=float, default=DEFAULTS["warmup"], help="fraction of the steps"
    )
    parser.add_argument("--eval-scenes", type=int, default=400)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and shuffling")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the model at --output again and update the eval of its .json record",
    )
    args = parser.parse_args(argv)
    if args.evaluate_only:
        return evaluate_again(args.output, args.eval_scenes)
    if args.train_scenes > VAL_SEED_START:
        parser.error(f"--train-scenes must be <= {VAL_SEED_START} (validation seeds start there)")

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()  # same weights on every run
    started = time.time()
    images, targets, _ = make_scenes(range(args.train_scenes))
    val_images, val_targets, _ = make_scenes(
        range(VAL_SEED_START, VAL_SEED_START + args.val_scenes)
    )
    print(
        f"generated {len(images)} training scenes (seeds 0..{args.train_scenes - 1}) and "
        f"{len(val_images)} validation scenes in {time.time() - started:.0f}s",
        flush=True,
    )

    settings = {
        "dim": args.dim,
        "depth": args.depth,
        "heads": args.heads,
        "mlp_dim": args.mlp_dim,
        "patch_norm": args.patch_norm,
        "pooling": args.pooling,
        "pixel_norm": args.pixel_norm,
        "stem": args.stem,
    }
    model = build_model(**settings)
    if args.stem == "cnn":
        cnn = keras.models.load_model(REPO / "gradcam_widget" / "assets" / "shapes.keras")
        print(f"copied {copy_cnn_stem(model, cnn)} stem convs from the shipped shapes CNN")
    if args.zero_attention:
        print(f"zeroed the output projections of {zero_attention_outputs(model)} attention layers")
    batches = AugmentedBatches(images, targets, args.batch_size, seed=args.seed)
    steps = len(batches) * args.epochs
    warmup_steps = int(args.warmup * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=steps - warmup_steps,
        warmup_target=args.learning_rate,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    load_before = os.getloadavg()[0]
    train_started = time.time()
    print(
        f"training {model.count_params()} parameters: {args.epochs} epochs of {len(batches)} "
        f"batches of {args.batch_size}, AdamW learning rate {args.learning_rate} (warmup "
        f"{warmup_steps} steps, cosine decay), weight decay {args.weight_decay}; load average "
        f"{load_before:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    validation = ValidationLine(val_images, val_targets)
    deadline = Deadline(train_started + 60 * args.max_train_minutes)
    model.fit(
        batches,
        epochs=args.epochs,
        verbose=0,
        callbacks=[EpochLine(train_started), validation, deadline],
    )
    train_seconds = time.time() - train_started
    load_after = os.getloadavg()[0]
    print(f"training took {train_seconds / 60:.1f} min (load average now {load_after:.1f})")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    shipped = build_model(**settings)  # no optimizer state
    shipped.set_weights(model.get_weights())
    shipped.save(args.output)
    print(f"saved {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")

    reloaded = keras.models.load_model(args.output, compile=False)
    eval_started = time.time()
    metrics = evaluate(reloaded, range(EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes))
    print_metrics(metrics)
    record = {
        "class_names": list(data.CLASS_NAMES),
        "input_size": list(data.SCENE_SIZE),
        "input_range": [0, 255],
        "output": "logits (sigmoid per class: multi-label)",
        "architecture": f"ViT, {args.stem} stem: 16 x 16 patches -> 14 x 14 tokens + class "
        "token, learned positions, pre-norm blocks, final norm, max over the patch tokens, "
        "Dense logits",
        "stem_from": "blocks 1-3 of the shipped shapes CNN" if args.stem == "cnn" else None,
        "patch_size": PATCH_SIZE,
        "tokens": int(reloaded.get_layer("block1_out").output.shape[1]),
        "prefix_tokens": 1,
        **settings,
        "parameters": int(shipped.count_params()),
        "size_bytes": args.output.stat().st_size,
        "train_seeds": [0, args.train_scenes - 1],
        "n_objects": "1 for even seeds, 2 for odd seeds",
        "augment": "random flip and quarter turn",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "AdamW (no decay on biases, norms, class token, positions)",
        "learning_rate": args.learning_rate,
        "schedule": f"linear warmup over {warmup_steps} of {steps} steps, then cosine to 0",
        "weight_decay": args.weight_decay,
        "zero_attention": args.zero_attention,
        "seed": args.seed,
        "train_minutes": round(train_seconds / 60, 1),
        "stopped_early_at": None
        if deadline.stopped_at is None
        else {"epoch": deadline.stopped_at[0] + 1, "batch": deadline.stopped_at[1] + 1},
        "load_average": [round(load_before, 1), round(load_after, 1)],
        "cpus": os.cpu_count(),
        "val_seeds": [VAL_SEED_START, VAL_SEED_START + args.val_scenes - 1],
        "val_presence_accuracy_per_epoch": validation.history,
        "eval_seeds": [EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes - 1],
        "eval": metrics,
    }
    print(f"evaluation took {(time.time() - eval_started) / 60:.1f} min")
    summary_path = args.output.with_suffix(".json")
    summary_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {summary_path}")
    return 0


def evaluate_again(path: Path, scenes: int) -> int:
    """Evaluate the saved model at ``path`` and rewrite the ``eval`` of its record."""
    model = keras.models.load_model(path, compile=False)
    metrics = evaluate(model, range(EVAL_SEED_START, EVAL_SEED_START + scenes))
    print_metrics(metrics)
    record_path = path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["eval"] = metrics
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"updated {record_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

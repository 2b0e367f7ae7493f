"""Train the shipped ``shapes`` model: a small VGG-style multi-label CNN on shape scenes.

Run from the repository root::

    python scripts/train_shapes.py          # writes gradcam_widget/assets/shapes.keras + .json

Time on a 2-core CPU: about 16 minutes in all on an idle machine (27 ms per training image,
4 x 8_000 images, plus a minute each for data and evaluation); 18.5 and 26.6 minutes were
measured while other jobs shared the two cores. The run is deterministic (seeded, with
TensorFlow op determinism): on this machine a rerun reproduced the shipped weights bit
for bit; other CPUs may differ in the last bits of float rounding.

Data: ``gradcam_widget.data.scene(seed, n_objects=1 + seed % 2)``, so half of the scenes hold
one object and half two. Training seeds are ``0 ..< --train-scenes`` (default 8_000), each
scene seen ``--epochs`` (4) times under a random flip and quarter turn (a shape keeps its
class). Evaluation seeds start at ``EVAL_SEED_START = 1_000_000``, never used for training.

The model takes 224 x 224 x 3 float input in 0..255 (scaling is inside the model) and
returns one logit per class of ``data.CLASS_NAMES``; it is trained with sigmoid binary
cross-entropy, so every class present in a scene scores high. Layer names follow VGG16
(``block1_conv1`` ... ``block5_conv3``), with four poolings before block 5 so the last conv
map is 14 x 14, then -- as in VGG16 -- ``block5_pool`` (2 x 2 max pooling, 7 x 7), ``avg_pool``
(global average) and ``logits`` (Dense). The max pooling after the last conv block makes the
gradients at ``block5_conv3`` vary over space (they flow only through each window's maximum),
so the article's mean-versus-max pooling experiment has an effect at the default layer; with a
global average pooling straight after ``block5_conv3`` the two would be identical. Training uses
batch normalisation after each conv (a plain VGG of this size did not leave the
predict-the-prior plateau); it is folded into the conv kernels before saving, so the shipped
model is plain convs with ReLU, exactly like VGG16.

At the end the script prints, on ``--eval-scenes`` fresh scenes (default 400: seeds
1_000_000 ..< 1_000_400): presence accuracy per class (logit > 0 means present), the
Grad-CAM pointing game per class at ``block5_conv3`` (heatmap argmax within 15 px of the
object's mask) and, in two-object scenes, how often a class's CAM peaks on its own object.
They are also written to ``assets/shapes.json`` with the training settings.

Data randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps")::

    python scripts/train_shapes.py --permute-labels   # writes assets/shapes_permuted.keras + .json

trains the same architecture with the same optimiser, learning rate, batch size and schedule on
the same kind of scenes, but every training scene carries the label vector of another training
scene (a seeded random cyclic permutation of the scenes, so none keeps its own; ``--permute-labels
SEED`` picks another one, default 0). The labels then say nothing about the images: the model can
only memorise its training set, and on held-out scenes its presence accuracy against the TRUE
labels is at chance. To memorise within 10 minutes on a 2-core CPU the run differs in three
recorded ways (``PERMUTED_DEFAULTS``; options given explicitly still apply): 200 training scenes
(seeds 0 ..< 200) seen 32 times each; no flips or turns (``--augment`` restores them; with
them, 256 scenes had barely left the predict-the-prior loss after 14 epochs); and after training
the batch norm statistics are recomputed on the training scenes (:func:`recalibrate_batch_norm`),
because the moving averages lag the fast-changing weights (a 128-scene run fit 96 % of its
labels in training mode but 75 % in inference mode before this step). Evaluation uses 200
scenes. Besides
the metrics above (against the true labels), the script prints and records how well the model
fits its permuted training labels (inference mode, no augmentation) and, on the held-out
scenes: the accuracy of a predictor that ignores the image (``chance``), the ROC AUC per class
(chance 0.5) and how often the top-scoring class is present (chance: mean objects per scene / 5).

A model that is right for the wrong reason::

    python scripts/train_shapes.py --shortcut   # writes assets/shapes_shortcut.keras + .json

trains the same architecture, optimiser and learning rate on one-object scenes in which the
star carries a tag: ``gradcam_widget.data.shortcut_scene(seed)``, a 28 px black-and-white
checkerboard in the corner farthest from the object, on 98 % of the stars and 1 % of the other
scenes (``data.SHORTCUT_RATES``). The tag is far easier to learn than a star's outline, so the
model scores "star" by the tag. ``SHORTCUT_DEFAULTS`` keeps the run short: 4_000 training
scenes (seeds 0 ..< 4_000) seen 4 times under flips and quarter turns (which keep the tag in a
corner), in batches of 8 -- twice the updates per image of batches of 16, which left the
predict-the-prior plateau (star learned from the tag, other classes at their prior) after about
4_000 images instead of about 9_000. 16_000 training images at about 28 ms each: about 9 to 10
minutes in all on an idle machine; 13.5 minutes were measured (11.7 of them training) while
other jobs shared the two cores. Besides the metrics above (on held-out scenes under the same
tagging rule), the script prints and records, for this model and for the shipped ``shapes`` on
the same held-out scenes (:func:`shortcut_record`): star recall on the held-out stars with the
tag and with it removed, the "false star" rate on the other scenes with the tag added, and the
Grad-CAM of class star on the tagged stars: the share of its mass on the star and on the tag
(:func:`gradcam_widget.metrics.energy_pointing_game`) and the pointing game on each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gradcam_widget.checks.metrics import energy_pointing_game  # noqa: E402
from gradcam_widget.data import scenes as data  # noqa: E402
from gradcam_widget.engine._tf import keras, tf  # noqa: E402

EVAL_SEED_START = 1_000_000
"""First evaluation seed; every training seed is below it."""

CHANNELS = (16, 32, 64, 96, 128)
"""Filters of the conv layers in blocks 1..5."""

CONVS_PER_BLOCK = (1, 1, 2, 2, 3)
"""Conv layers in blocks 1..5 (VGG16 has 2, 2, 3, 3, 3)."""

LAST_CONV = "block5_conv3"

DEFAULT_OUTPUT = REPO / "gradcam_widget" / "assets" / "shapes.keras"

DEFAULTS = {
    "train_scenes": 8_000,
    "epochs": 4,
    "eval_scenes": 400,
    "output": DEFAULT_OUTPUT,
    "augment": True,
    "batch_size": 16,
}
"""Defaults of the options that differ between the normal, the ``--permute-labels`` and the
``--shortcut`` run."""

PERMUTED_DEFAULTS = {
    "train_scenes": 200,
    "epochs": 32,
    "eval_scenes": 200,
    "output": REPO / "gradcam_widget" / "assets" / "shapes_permuted.keras",
    "augment": False,
    "batch_size": 16,
}
"""Defaults with ``--permute-labels``: few scenes, each seen often and as it is, so that the
model can memorise them within 10 minutes on a 2-core CPU."""

SHORTCUT_DEFAULTS = {
    "train_scenes": 4_000,
    "epochs": 4,
    "eval_scenes": 400,
    "output": REPO / "gradcam_widget" / "assets" / "shapes_shortcut.keras",
    "augment": True,
    "batch_size": 8,
}
"""Defaults with ``--shortcut``: a short run on tagged one-object scenes
(``data.shortcut_scene``); flips and quarter turns keep the tag in a corner, and batches of 8
leave the plateau of the first epoch sooner than batches of 16 (see the module docstring)."""


def n_objects_for(seed: int) -> int:
    """Number of objects in the scene of ``seed``: 1 for even seeds, 2 for odd ones."""
    return 1 + seed % 2


def build_model(num_classes: int = len(data.CLASS_NAMES), batch_norm: bool = False) -> keras.Model:
    """The VGG-style classifier, untrained.

    Args:
        num_classes: number of output logits.
        batch_norm: the training variant: each conv is linear and followed by
            ``BatchNormalization`` (``blockB_bnK``) and ``ReLU`` (``blockB_reluK``). Without
            it (the shipped variant) each conv applies its ReLU itself, as in VGG16;
            :func:`fold_batch_norm` turns a trained training variant into this one.

    Returns:
        A functional ``keras.Model`` named ``"shapes_vgg"``: ``(N, 224, 224, 3)`` float in
        0..255 -> ``(N, num_classes)`` logits.
    """
    layers = keras.layers
    inputs = keras.Input(shape=(*data.SCENE_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    for block, (filters, n_convs) in enumerate(zip(CHANNELS, CONVS_PER_BLOCK, strict=True), 1):
        for conv in range(1, n_convs + 1):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                activation=None if batch_norm else "relu",
                kernel_initializer="he_normal",
                name=f"block{block}_conv{conv}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
                x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="shapes_vgg")


def fold_batch_norm(trained: keras.Model) -> keras.Model:
    """Fold each ``BatchNormalization`` into the conv before it; return the plain model.

    At inference a batch norm is a per-channel affine map ``y * scale + shift`` with
    ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``, so the conv
    kernel becomes ``kernel * scale`` and its bias ``bias * scale + shift``.

    Args:
        trained: a model from ``build_model(batch_norm=True)``.

    Returns:
        A model from ``build_model()`` computing the same function.
    """
    plain = build_model(num_classes=trained.outputs[0].shape[-1])
    for layer in plain.layers:
        source = trained.get_layer(layer.name)
        if not source.weights:
            continue
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = (weight.numpy() for weight in source.weights)
            norm = trained.get_layer(layer.name.replace("_conv", "_bn"))
            gamma, beta, mean, variance = (weight.numpy() for weight in norm.weights)
            scale = gamma / np.sqrt(variance + norm.epsilon)
            layer.set_weights([kernel * scale, bias * scale + beta - mean * scale])
        else:
            layer.set_weights([weight.numpy() for weight in source.weights])
    return plain


def permute_labels(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Give every row the target of another row, under a seeded random cyclic permutation.

    The rows are put in a random order and each takes the target of the next one (the last
    that of the first): one cycle through all rows, so no row keeps its own target (rows of
    other scenes with the same classes still give the same vector).

    Args:
        targets: ``(N, num_classes)``, ``N >= 2``.
        seed: seeds the order.

    Returns:
        ``(permuted, source)``: ``permuted[i] = targets[source[i]]`` and ``source[i] != i``.
    """
    order = np.random.default_rng(seed).permutation(len(targets))
    source = np.empty_like(order)
    source[order] = np.roll(order, -1)
    return targets[source], source


def label_agreement(logits: np.ndarray, targets: np.ndarray) -> dict:
    """How well logits (``> 0`` means present) match multi-hot targets.

    Returns:
        A dict: ``presence_accuracy`` per class and its ``mean``; ``chance``, the mean
        presence accuracy of a predictor that ignores the image and says "present" for each
        class as often as the model does (``p q + (1 - p)(1 - q)`` with ``p`` the class's
        frequency, ``q`` the model's rate); ``exact_match`` (every class right); ``loss``
        (sigmoid binary cross-entropy); ``auc`` per class and ``mean_auc`` (ROC AUC of the
        logits, 0.5 for chance); ``top1`` (the best-scoring class is present) and
        ``top1_chance`` (mean classes present / number of classes).
    """
    logits = np.asarray(logits, dtype=np.float64)
    present = np.asarray(targets) > 0.5
    predicted = logits > 0
    frequency, rate = present.mean(axis=0), predicted.mean(axis=0)
    loss = np.maximum(logits, 0) - logits * present + np.log1p(np.exp(-np.abs(logits)))
    aucs = []
    for column in range(logits.shape[1]):
        positive, negative = logits[present[:, column], column], logits[~present[:, column], column]
        greater = (positive[:, None] > negative[None, :]).mean()
        aucs.append(float(greater + 0.5 * (positive[:, None] == negative[None, :]).mean()))
    accuracy = (predicted == present).mean(axis=0)
    chance = frequency * rate + (1 - frequency) * (1 - rate)
    return {
        "scenes": len(logits),
        "presence_accuracy": np.round(accuracy, 4).tolist(),
        "mean": round(float(accuracy.mean()), 4),
        "chance": round(float(chance.mean()), 4),
        "exact_match": round(float((predicted == present).all(axis=1).mean()), 4),
        "loss": round(float(loss.mean()), 4),
        "auc": np.round(aucs, 4).tolist(),
        "mean_auc": round(float(np.mean(aucs)), 4),
        "top1": round(float(present[np.arange(len(logits)), logits.argmax(axis=1)].mean()), 4),
        "top1_chance": round(float(present.sum(axis=1).mean() / present.shape[1]), 4),
    }


def predict_logits(model: keras.Model, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """Logits of ``images`` in inference mode, in batches."""
    return np.concatenate(
        [
            model.predict_on_batch(images[start : start + batch_size].astype(np.float32))
            for start in range(0, len(images), batch_size)
        ]
    )


def print_agreement(title: str, metrics: dict) -> None:
    print(
        f"  {title}: presence accuracy {metrics['mean']:.3f} (chance {metrics['chance']:.3f}),"
        f" exact match {metrics['exact_match']:.3f}, loss {metrics['loss']:.3f},"
        f" mean AUC {metrics['mean_auc']:.3f}, top-1 present {metrics['top1']:.3f}"
        f" (chance {metrics['top1_chance']:.3f})"
    )


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, batch_size: int) -> None:
    """Set each batch norm's moving statistics to the mean of its batch statistics on ``images``.

    Training keeps exponential moving averages (momentum 0.99: about the last 100 steps). When
    the weights still change fast at the end of training -- as when memorising random labels
    from a few hundred scenes -- those averages lag, and the model in inference mode is not the
    one that fit the labels. One pass in training mode over ``images`` (batches of
    ``batch_size``, in order, weights untouched) with momentum ``k / (k + 1)`` at batch ``k``
    makes each moving statistic the plain mean over the batches ("precise BN").
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for index, start in enumerate(range(0, len(images) - batch_size + 1, batch_size)):
        for norm in norms:
            norm.momentum = index / (index + 1)
        model(images[start : start + batch_size].astype(np.float32), training=True)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def make_scenes(
    seeds, shortcut: bool = False, tag: bool | None = None
) -> tuple[np.ndarray, np.ndarray, list[data.Scene]]:
    """Generate the scenes of ``seeds``.

    Args:
        seeds: scene seeds.
        shortcut: one-object scenes from ``data.shortcut_scene(seed, tag)`` instead of
            ``data.scene(seed, n_objects_for(seed))``.
        tag: with ``shortcut``: ``None`` for the training rule, True or False to force it.

    Returns:
        ``(images, targets, scenes)``: ``(N, 224, 224, 3)`` uint8, ``(N, num_classes)``
        float32 multi-hot targets, and the :class:`~gradcam_widget.data.Scene` objects.
    """
    if shortcut:
        scenes = [data.shortcut_scene(int(seed), tag=tag) for seed in seeds]
    else:
        scenes = [data.scene(int(seed), n_objects=n_objects_for(int(seed))) for seed in seeds]
    images = np.stack([item.image for item in scenes])
    targets = np.stack([item.target for item in scenes])
    return images, targets, scenes


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches, each image under a random flip and quarter turn.

    Args:
        images: ``(N, H, W, 3)`` uint8 with ``H == W``.
        targets: ``(N, num_classes)`` float32.
        batch_size: images per batch.
        seed: seeds the shuffling and augmentation; epoch ``e`` uses ``seed + e``.
        augment: False to show every image as it is (same shuffled order).
    """

    def __init__(self, images, targets, batch_size: int, seed: int, augment: bool = True):
        super().__init__()
        self.images, self.targets, self.batch_size, self.seed = images, targets, batch_size, seed
        self.augment = augment
        self.epoch = 0
        self.on_epoch_end()

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def on_epoch_end(self) -> None:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.order = rng.permutation(len(self.images))
        self.turns = rng.integers(0, 4, size=len(self.images))
        self.flips = rng.integers(0, 2, size=len(self.images)).astype(bool)
        self.epoch += 1

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = np.empty((len(picked), *self.images.shape[1:]), dtype=np.float32)
        for row, item in enumerate(picked):
            if not self.augment:
                batch[row] = self.images[item]
                continue
            image = np.rot90(self.images[item], k=self.turns[item])
            batch[row] = image[:, ::-1] if self.flips[item] else image
        return batch, self.targets[picked]


def grad_cam_batch(model: keras.Model, images: np.ndarray, class_indices) -> np.ndarray:
    """Grad-CAM heatmaps of one class per image at :data:`LAST_CONV`, batched.

    Per image: ``A`` = activations ``(h, w, C)``, ``G`` = d logit / d A; weights = mean of
    ``G`` over ``h, w``; map = ReLU(A . weights), resized bilinearly to the image size.
    Images do not interact in the model, so one backward pass of the summed logits gives
    every image its own gradients.

    Args:
        model: the shapes model.
        images: ``(N, H, W, 3)`` uint8 or float 0..255.
        class_indices: ``(N,)`` class to explain for each image.

    Returns:
        ``(N, H, W)`` float32 heatmaps (not normalised; the argmax is what is scored).
    """
    cam_model = keras.Model(model.inputs, [model.get_layer(LAST_CONV).output, model.outputs[0]])
    inputs = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    chosen = tf.one_hot(np.asarray(class_indices), model.outputs[0].shape[-1])
    with tf.GradientTape() as tape:
        activations, logits = cam_model(inputs, training=False)
        score = tf.reduce_sum(logits * chosen)
    gradients = tape.gradient(score, activations).numpy()
    activations = activations.numpy()
    weights = gradients.mean(axis=(1, 2))  # (N, C)
    maps = np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0)
    height, width = images.shape[1:3]
    return np.stack([cv2.resize(cam, (width, height)) for cam in maps])


def evaluate(model: keras.Model, seeds, batch_size: int = 25, shortcut: bool = False) -> dict:
    """Presence accuracy, pointing game and two-object discrimination on ``seeds``.

    Args:
        model: the model to evaluate.
        seeds: scene seeds.
        batch_size: scenes per batch.
        shortcut: evaluate on ``data.shortcut_scene(seed)`` (one object, training rule).

    Returns:
        A dict with per-class lists ``presence_accuracy``, ``pointing`` and counts, and
        ``discrimination`` (fraction over all (scene, class) pairs of two-object scenes;
        ``None`` when there are none).
    """
    num_classes = len(data.CLASS_NAMES)
    presence_correct = np.zeros(num_classes)
    pointing_hits = np.zeros(num_classes)
    pointing_total = np.zeros(num_classes)
    discrimination = []
    n_scenes = 0
    seeds = list(seeds)
    for start in range(0, len(seeds), batch_size):
        images, targets, scenes = make_scenes(seeds[start : start + batch_size], shortcut)
        logits = model.predict_on_batch(images.astype(np.float32))
        presence_correct += ((logits > 0) == (targets > 0.5)).sum(axis=0)
        n_scenes += len(scenes)
        pairs = [(row, label) for row, item in enumerate(scenes) for label in item.labels]
        rows = [row for row, _ in pairs]
        heatmaps = grad_cam_batch(model, images[rows], [label for _, label in pairs])
        for heatmap, (row, label) in zip(heatmaps, pairs, strict=True):
            masks = scenes[row].masks
            pointing_total[label] += 1
            pointing_hits[label] += data.pointing_hit(heatmap, masks[label])
            if len(masks) == 2:
                discrimination.append(data.peak_on_object(heatmap, masks, label))
    return {
        "scenes": n_scenes,
        "presence_accuracy": (presence_correct / n_scenes).tolist(),
        "pointing": (pointing_hits / np.maximum(pointing_total, 1)).tolist(),
        "pointing_counts": pointing_total.astype(int).tolist(),
        "discrimination": float(np.mean(discrimination)) if discrimination else None,
        "discrimination_pairs": len(discrimination),
    }


def print_metrics(metrics: dict) -> None:
    print(f"evaluation on {metrics['scenes']} fresh scenes (seeds >= {EVAL_SEED_START}):")
    print(f"  {'class':10s} {'presence':>9s} {'pointing':>9s} {'n':>4s}")
    for index, name in enumerate(data.CLASS_NAMES):
        print(
            f"  {name:10s} {metrics['presence_accuracy'][index]:9.3f}"
            f" {metrics['pointing'][index]:9.3f} {metrics['pointing_counts'][index]:4d}"
        )
    if metrics["discrimination"] is not None:
        print(
            f"  two-object discrimination (CAM of A peaks on A, not B): "
            f"{metrics['discrimination']:.3f} over {metrics['discrimination_pairs']} pairs"
        )


class EpochLine(keras.callbacks.Callback):
    """Print one line per epoch: loss, binary accuracy, elapsed time."""

    def __init__(self, started: float):
        super().__init__()
        self.started = started

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{key}={value:.4f}" for key, value in logs.items() if key != "learning_rate"]
        print(f"epoch {epoch + 1}: {' '.join(parts)} [{time.time() - self.started:.0f}s]")


def permuted_record(args, model, images, targets, true_targets, history) -> dict:
    """Print and return what the permuted-label run adds to the JSON record.

    Args:
        args: the parsed options.
        model: the saved (folded, reloaded) model.
        images: the training images; ``targets`` their permuted labels, ``true_targets``
            the labels of their own objects.
        history: the ``keras.callbacks.History`` of the training.
    """
    train_logits = predict_logits(model, images)
    eval_seeds = range(EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes)
    eval_images, eval_targets, _ = make_scenes(eval_seeds)
    record = {
        "permuted_labels": {
            "permutation_seed": args.permute_labels,
            "augment": args.augment,
            "batch_norm_statistics": "recomputed after training: the mean of the batch "
            "statistics over the training scenes in batches of --batch-size (precise BN)",
            "permutation": "random cyclic permutation of the training scenes (see "
            "permute_labels): scene i gets the label vector of scene source[i] != i",
            "same_classes_by_coincidence": round(
                float((targets == true_targets).all(axis=1).mean()), 4
            ),
            "fit_last_epoch": {
                key: round(float(values[-1]), 4)
                for key, values in history.history.items()
                if key != "learning_rate"
            },
            "train_permuted": label_agreement(train_logits, targets),
            "train_true": label_agreement(train_logits, true_targets),
            "eval_true": label_agreement(predict_logits(model, eval_images), eval_targets),
        }
    }
    results = record["permuted_labels"]
    print("permuted-label model (inference mode, no augmentation):")
    print_agreement("training scenes, permuted labels", results["train_permuted"])
    print_agreement("training scenes, true labels", results["train_true"])
    print_agreement("held-out scenes, true labels", results["eval_true"])
    return record


def star_scores(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Logit of class star (``data.SHORTCUT_CLASS``) per image; ``> 0`` means "star"."""
    return predict_logits(model, images)[:, data.SHORTCUT_CLASS]


def star_cam_mass(model: keras.Model, images: np.ndarray, scenes, batch_size: int = 25) -> dict:
    """Grad-CAM of class star on tagged scenes: where does its mass lie, where does it peak?

    Returns:
        Means over the scenes of ``on_object`` / ``on_tag`` (share of the map's mass on the
        scene's object mask / on its tag mask, ``energy_pointing_game``) and
        ``pointing_object`` / ``pointing_tag`` (the map's peak within 15 px of it).
    """
    on_object, on_tag, pointing_object, pointing_tag = [], [], [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        heatmaps = grad_cam_batch(model, chunk, [data.SHORTCUT_CLASS] * len(chunk))
        for heatmap, item in zip(heatmaps, scenes[start : start + batch_size], strict=True):
            (mask,) = item.masks.values()
            on_object.append(energy_pointing_game(heatmap, mask))
            on_tag.append(energy_pointing_game(heatmap, item.tag_mask))
            pointing_object.append(data.pointing_hit(heatmap, mask))
            pointing_tag.append(data.pointing_hit(heatmap, item.tag_mask))
    return {
        key: round(float(np.mean(values)), 4)
        for key, values in (
            ("on_object", on_object),
            ("on_tag", on_tag),
            ("pointing_object", pointing_object),
            ("pointing_tag", pointing_tag),
        )
    }


def shortcut_record(args, model: keras.Model) -> dict:
    """Print and return what the ``--shortcut`` run adds to the JSON record.

    On the held-out seeds, for ``model`` and for the shipped ``shapes`` model
    (``DEFAULT_OUTPUT``) on the same images: presence accuracy under the training rule; star
    recall on the stars with the tag (``tag=True``) and without it (``tag=False``); the
    "false star" rate (star logit > 0) on the other scenes with the tag and without it, and
    how often their own class is still found with the tag; the Grad-CAM of class star on the
    tagged stars and on the tagged other scenes (:func:`star_cam_mass`).
    """
    eval_seeds = range(EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes)
    rule_images, rule_targets, rule_scenes = make_scenes(eval_seeds, shortcut=True)
    is_star = np.array([item.labels == (data.SHORTCUT_CLASS,) for item in rule_scenes])
    star_seeds = [seed for seed, star in zip(eval_seeds, is_star, strict=True) if star]
    other_seeds = [seed for seed, star in zip(eval_seeds, is_star, strict=True) if not star]
    tagged_stars, _, tagged_star_scenes = make_scenes(star_seeds, shortcut=True, tag=True)
    plain_stars, _, _ = make_scenes(star_seeds, shortcut=True, tag=False)
    tagged_others, other_targets, tagged_other_scenes = make_scenes(
        other_seeds, shortcut=True, tag=True
    )
    plain_others, _, _ = make_scenes(other_seeds, shortcut=True, tag=False)
    own_class = other_targets.argmax(axis=1)
    record = {
        "shortcut": {
            "scenes": f"data.shortcut_scene(seed): one object; a {data.SHORTCUT_TAG_SIZE} px "
            f"black-and-white 4 x 4 checkerboard tag {data.SHORTCUT_TAG_MARGIN} px from the "
            "edges of the image corner farthest from the object",
            "shortcut_class": data.CLASS_NAMES[data.SHORTCUT_CLASS],
            "rates": {"star": data.SHORTCUT_RATES[0], "other": data.SHORTCUT_RATES[1]},
            "tag_size": data.SHORTCUT_TAG_SIZE,
            "tag_margin": data.SHORTCUT_TAG_MARGIN,
            "augment": args.augment,
            "eval_tagged": int(sum(item.tagged for item in rule_scenes)),
            "eval_stars": len(star_seeds),
            "eval_others": len(other_seeds),
        }
    }
    reference = keras.models.load_model(DEFAULT_OUTPUT, compile=False)
    for name, net in (("shapes_shortcut", model), ("shapes", reference)):
        tagged_other_logits = predict_logits(net, tagged_others)
        results = {
            "rule": label_agreement(predict_logits(net, rule_images), rule_targets),
            "star_recall_tagged": round(float((star_scores(net, tagged_stars) > 0).mean()), 4),
            "star_recall_untagged": round(float((star_scores(net, plain_stars) > 0).mean()), 4),
            "false_star_tagged": round(
                float((tagged_other_logits[:, data.SHORTCUT_CLASS] > 0).mean()), 4
            ),
            "false_star_untagged": round(float((star_scores(net, plain_others) > 0).mean()), 4),
            "own_class_found_tagged": round(
                float((tagged_other_logits[np.arange(len(own_class)), own_class] > 0).mean()), 4
            ),
            "star_cam_on_tagged_stars": star_cam_mass(net, tagged_stars, tagged_star_scenes),
            "star_cam_on_tagged_others": star_cam_mass(net, tagged_others, tagged_other_scenes),
        }
        record["shortcut"][name] = results
        cam, moved = results["star_cam_on_tagged_stars"], results["star_cam_on_tagged_others"]
        print(f"{name} on held-out shortcut scenes:")
        print_agreement("training rule", results["rule"])
        print(
            "  presence accuracy per class: "
            + ", ".join(
                f"{label} {value:.3f}"
                for label, value in zip(
                    data.CLASS_NAMES, results["rule"]["presence_accuracy"], strict=True
                )
            )
        )
        print(
            f"  star recall: tagged {results['star_recall_tagged']:.3f}, tag removed "
            f"{results['star_recall_untagged']:.3f} ({len(star_seeds)} stars)"
        )
        print(
            f"  false star: tag added {results['false_star_tagged']:.3f}, no tag "
            f"{results['false_star_untagged']:.3f}; own class still found with the tag "
            f"{results['own_class_found_tagged']:.3f} ({len(other_seeds)} other scenes)"
        )
        print(
            f"  star Grad-CAM on tagged stars: mass on star {cam['on_object']:.3f}, on tag "
            f"{cam['on_tag']:.3f}; points at star {cam['pointing_object']:.3f}, at tag "
            f"{cam['pointing_tag']:.3f}"
        )
        print(
            f"  star Grad-CAM on tagged other scenes: mass on object {moved['on_object']:.3f}, "
            f"on tag {moved['on_tag']:.3f}; points at tag {moved['pointing_tag']:.3f}"
        )
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train-scenes", type=int, help="default 8_000 (permuted: 200, shortcut: 4_000)"
    )
    parser.add_argument("--epochs", type=int, help="default 4 (permuted: 32, shortcut: 4)")
    parser.add_argument("--batch-size", type=int, help="default 16 (shortcut: 8)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--eval-scenes", type=int, help="default 400 (permuted: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and shuffling")
    parser.add_argument(
        "--output", type=Path, help="default assets/shapes[_permuted|_shortcut].keras"
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random flips and quarter turns (default: on; off with --permute-labels)",
    )
    parser.add_argument(
        "--permute-labels",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="SEED",
        help="data randomisation test: train on labels permuted across the training scenes "
        "by a permutation seeded with SEED (default 0); see PERMUTED_DEFAULTS",
    )
    parser.add_argument(
        "--shortcut",
        action="store_true",
        help="train on data.shortcut_scene: stars carry a corner tag, so the model learns the "
        "tag (right for the wrong reason); see SHORTCUT_DEFAULTS",
    )
    args = parser.parse_args(argv)
    permuted = args.permute_labels is not None
    if permuted and args.shortcut:
        parser.error("--permute-labels and --shortcut exclude each other")
    defaults = PERMUTED_DEFAULTS if permuted else SHORTCUT_DEFAULTS if args.shortcut else DEFAULTS
    for option, value in defaults.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    if args.train_scenes > EVAL_SEED_START:
        parser.error(f"--train-scenes must be <= {EVAL_SEED_START} (eval seeds start there)")
    if permuted and args.train_scenes < 2:
        parser.error("--permute-labels needs --train-scenes >= 2")

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()  # same weights on every run
    started = time.time()
    images, targets, train_scenes = make_scenes(range(args.train_scenes), args.shortcut)
    print(
        f"generated {len(images)} training scenes (seeds 0..{args.train_scenes - 1}) "
        f"in {time.time() - started:.0f}s"
    )
    if args.shortcut:
        is_star = np.array([item.labels == (data.SHORTCUT_CLASS,) for item in train_scenes])
        tagged = np.array([item.tagged for item in train_scenes])
        print(
            f"shortcut scenes: {tagged[is_star].mean():.1%} of {is_star.sum()} stars and "
            f"{tagged[~is_star].mean():.1%} of {(~is_star).sum()} other scenes carry the tag"
        )
    if permuted:
        true_targets = targets
        targets, _ = permute_labels(true_targets, args.permute_labels)
        kept = (targets == true_targets).all(axis=1).mean()
        print(
            f"permuted the labels (seed {args.permute_labels}): each scene has another "
            f"scene's label vector; {kept:.1%} of them are the same classes by coincidence"
        )

    model = build_model(batch_norm=True)
    batches = AugmentedBatches(
        images, targets, args.batch_size, seed=args.seed, augment=args.augment
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.learning_rate,
        decay_steps=len(batches) * args.epochs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    train_started = time.time()
    print(
        f"training: {args.epochs} epochs of {len(batches)} batches of {args.batch_size}, "
        f"learning rate {args.learning_rate} (cosine decay), augment {args.augment}"
    )
    history = model.fit(
        batches, epochs=args.epochs, verbose=0, callbacks=[EpochLine(train_started)]
    )
    train_seconds = time.time() - train_started
    print(f"training took {train_seconds / 60:.1f} min ({model.count_params()} parameters)")
    if permuted:
        recalibrate_batch_norm(model, images, args.batch_size)
        print("recomputed the batch norm statistics on the training scenes (precise BN)")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    shipped = fold_batch_norm(model)  # plain VGG-style convs, no optimizer state
    check = images[:16].astype(np.float32)
    drift = np.abs(shipped.predict_on_batch(check) - model.predict_on_batch(check)).max()
    print(f"folded batch norm into the convs (max logit change {drift:.1e})")
    shipped.save(args.output)
    print(f"saved {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")

    reloaded = keras.models.load_model(args.output, compile=False)
    eval_started = time.time()
    eval_seeds = range(EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes)
    metrics = evaluate(reloaded, eval_seeds, shortcut=args.shortcut)
    print_metrics(metrics)
    metadata = {
        "class_names": list(data.CLASS_NAMES),
        "input_size": list(data.SCENE_SIZE),
        "input_range": [0, 255],
        "output": "logits (sigmoid per class: multi-label)",
        "last_conv": LAST_CONV,
        "channels": list(CHANNELS),
        "convs_per_block": list(CONVS_PER_BLOCK),
        "parameters": int(shipped.count_params()),
        "train_seeds": [0, args.train_scenes - 1],
        "n_objects": "1 (data.shortcut_scene)"
        if args.shortcut
        else "1 for even seeds, 2 for odd seeds",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "train_minutes": round(train_seconds / 60, 1),
        "eval_seeds": [EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes - 1],
        "eval": metrics,
    }
    if permuted:
        metadata.update(permuted_record(args, reloaded, images, targets, true_targets, history))
    if args.shortcut:
        metadata.update(shortcut_record(args, reloaded))
    print(f"evaluation took {(time.time() - eval_started) / 60:.1f} min")
    summary_path = args.output.with_suffix(".json")
    summary_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {summary_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

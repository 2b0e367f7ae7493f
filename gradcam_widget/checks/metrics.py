"""How good is a heatmap? Localisation against ground truth, and faithfulness to the model.

Localisation (numpy only; needs an object mask, e.g. :attr:`gradcam_widget.data.Scene.masks`):

* :func:`pointing_game` - does the heatmap's maximum fall on the object (15 px tolerance)?
  (Zhang et al., "Top-down neural attention by excitation backprop", used by Grad-CAM.)
* :func:`energy_pointing_game` - which share of the heatmap's mass lies on the object?
  (Wang et al., Score-CAM.) Unlike the pointing game it sees the whole map, not one pixel.

Faithfulness (runs the model on edited images, batched and compiled once):

* :func:`deletion` / :func:`insertion` - remove (or add back) pixels most-salient first and
  follow the class probability; the area under that curve is low for a good deletion and
  high for a good insertion (Petsiuk et al., RISE).
* :func:`confidence_change` - average drop and increase in confidence when the model sees only
  ``image * heatmap`` (Chattopadhay et al., Grad-CAM++).

Every function validates its input and raises ``ValueError`` naming what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.captures.capturing import class_scores
from gradcam_widget.captures.signatures import same_parameters
from gradcam_widget.data import scenes as data
from gradcam_widget.data.images import as_rgb_image

BASELINES = ("black", "blur", "mean")
"""Named replacements for removed pixels (or the start image of an insertion)."""

BLUR_SIGMA = 5.0
"""Gaussian sigma (pixels at 224 x 224, scaled with the image) of the ``"blur"`` baseline."""


def _heatmap(heatmap, name: str = "heatmap") -> np.ndarray:
    array = np.asarray(heatmap)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a 2-D (H, W) array; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers; got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _mask(mask, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != shape:
        raise ValueError(f"mask must have the heatmap's shape {shape}; got {array.shape}")
    return array.astype(bool)


# --- localisation -----------------------------------------------------------------------


def pointing_game(heatmap, mask, tolerance: float = data.POINTING_TOLERANCE) -> bool:
    """True when the heatmap's maximum lies on the object or within ``tolerance`` pixels of it.

    A flat heatmap (all zeros, say) points nowhere and is a miss.

    Args:
        heatmap: ``(H, W)`` map, any real range.
        mask: ``(H, W)`` bool mask of the object.
        tolerance: how far from the object (Euclidean pixels) the peak may be.
    """
    array = _heatmap(heatmap)
    if (
        isinstance(tolerance, (bool, np.bool_))
        or not isinstance(tolerance, (int, float, np.integer, np.floating))
        or not np.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}")
    return data.pointing_hit(array, _mask(mask, array.shape), tolerance)


def energy_pointing_game(heatmap, mask, box: bool = False) -> float:
    """Share of the heatmap's mass that lies on the object, in ``[0, 1]``.

    Negative values count as zero. ``box=True`` scores against the object's bounding box, as
    the Score-CAM paper does with box annotations; the default uses the exact mask, which is
    stricter and which the shapes scenes provide.

    Returns:
        ``sum(heatmap on object) / sum(heatmap)``; 0.0 for an all-zero heatmap or an empty
        mask (a map that says nothing gets no credit).
    """
    array = np.maximum(_heatmap(heatmap), 0.0)
    region = _mask(mask, array.shape)
    if box and region.any():
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        region = np.zeros_like(region)
        region[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    total = array.sum()
    if total <= 0:
        return 0.0
    return float(array[region].sum() / total)


# --- faithfulness -----------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: ``(steps + 1,)`` share of pixels removed (deletion) or inserted
            (insertion), from 0 to 1.
        scores: ``(steps + 1,)`` class score at each fraction.
        auc: area under the curve over ``[0, 1]`` (trapezoids). For probabilities it lies in
            ``[0, 1]``: lower is better for deletion, higher for insertion.
        class_index: the class that was scored.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    class_index: int


def saliency_order(heatmap, seed: int = 0) -> np.ndarray:
    """Flat pixel indices, most salient first.

    Ties (a flat region, an all-zero map) are broken in a fixed pseudo-random order rather
    than row by row, so a map that says nothing about a region is not rewarded or punished
    for the region's position.
    """
    array = _heatmap(heatmap)
    seed = core.check_int("seed", seed, minimum=0)
    flat = array.ravel()
    shuffle = np.random.default_rng(seed).permutation(flat.size)
    return shuffle[np.argsort(-flat[shuffle], kind="stable")]


def baseline_image(image, baseline="black") -> np.ndarray:
    """The image that stands for "no information" at every pixel.

    Args:
        image: ``(H, W, 3)`` RGB in 0..255.
        baseline: ``"black"`` (zeros), ``"blur"`` (Gaussian blur, sigma :data:`BLUR_SIGMA`
            at 224 px, as RISE uses for insertion), ``"mean"`` (the image's mean colour), or
            an ``(H, W, 3)`` array.

    Returns:
        ``(H, W, 3)`` float32.
    """
    rgb = as_rgb_image(image)
    if not isinstance(baseline, str):
        other = np.asarray(baseline, dtype=np.float32)
        if other.shape != rgb.shape or not np.isfinite(other).all():
            raise ValueError(
                f"baseline must be one of {BASELINES} or a finite array of shape {rgb.shape}; "
                f"got shape {other.shape}"
            )
        return other
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES} or an array; got {baseline!r}")
    if baseline == "black":
        return np.zeros_like(rgb)
    if baseline == "mean":
        return np.broadcast_to(rgb.mean(axis=(0, 1)), rgb.shape).astype(np.float32)
    sigma = BLUR_SIGMA * min(rgb.shape[:2]) / 224.0
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _auc(fractions: np.ndarray, scores: np.ndarray) -> float:
    return float(np.sum((scores[1:] + scores[:-1]) * np.diff(fractions)) / 2.0)


def _curve(
    kind: str,
    model,
    image,
    heatmap,
    class_index: int,
    steps: int,
    baseline,
    score: str,
    batch_size: int,
    seed: int,
) -> Curve:
    """The deletion or insertion curve: what :func:`deletion` and :func:`insertion` share.

    Pixels are ranked by :func:`saliency_order`; at step ``i`` of ``steps`` the
    ``round(i / steps * H * W)`` most salient pixels of ``image`` are swapped for the
    baseline's (deletion), or of the baseline for the image's (insertion). The ``steps + 1``
    edited images are scored ``batch_size`` at a time by
    :func:`gradcam_widget.captures.class_scores`, which checks the model, the class index and
    the score.

    Args:
        kind: ``"deletion"`` or ``"insertion"``.
        model: a ``keras.Model`` or a loaded entry (its preprocess is applied).
        image: ``(H, W, 3)`` RGB in 0..255 at the model's input size.
        heatmap: ``(H, W)`` real saliency of ``image``.
        class_index: the class scored.
        steps: the number of steps (positive); the curve has ``steps + 1`` points.
        baseline: see :func:`baseline_image`.
        score: ``"probability"`` or ``"logit"``.
        batch_size: images per forward pass (positive).
        seed: for the order of tied pixels (non-negative).

    Returns:
        A :class:`Curve`: ``fractions`` and ``scores`` ``(steps + 1,)`` each, and their AUC.

    Raises:
        ValueError: for an image or heatmap of the wrong shape, a non-finite heatmap, a bad
            ``steps``, ``batch_size``, ``seed``, baseline, class index or score, naming what
            was expected.
    """
    rgb = as_rgb_image(image)
    array = _heatmap(heatmap)
    if array.shape != rgb.shape[:2]:
        raise ValueError(
            f"heatmap must have the image's size {rgb.shape[:2]}; got {array.shape} "
            "(use the capture's image, cap.image, with its heatmap)"
        )
    steps = core.check_int("steps", steps)
    batch_size = core.check_int("batch_size", batch_size)
    start = baseline_image(rgb, baseline)
    pixels = array.size
    rank = np.empty(pixels, np.int64)
    rank[saliency_order(array, seed)] = np.arange(pixels)
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)
    before, after = (rgb, start) if kind == "deletion" else (start, rgb)
    scores = []
    for first in range(0, steps + 1, batch_size):  # build one batch of edited images at a time
        part = counts[first : first + batch_size]
        # changed[i, p]: pixel p has been removed (deletion) or inserted (insertion) at step i
        changed = (rank[None, :] < part[:, None]).reshape(len(part), *array.shape, 1)
        images = np.where(changed, after[None], before[None])
        scores.append(class_scores(model, images, class_index, score=score, batch_size=batch_size))
    scores = np.concatenate(scores)
    fractions = counts / pixels
    return Curve(kind, fractions, scores, _auc(fractions, scores), int(class_index))


def deletion(
    model,
    image,
    heatmap,
    class_index: int,
    steps: int = 20,
    baseline="mean",
    score: str = "probability",
    batch_size: int = 32,
    seed: int = 0,
) -> Curve:
    """Deletion curve: replace the most salient pixels first and watch the score fall.

    A faithful heatmap names the pixels the model relies on, so removing them first makes the
    class score collapse quickly: a low AUC is good.

    Args:
        model: a ``keras.Model`` or a loaded entry (its preprocess is applied).
        image: ``(H, W, 3)`` RGB in 0..255 at the model's input size (``cap.image``).
        heatmap: ``(H, W)`` saliency of ``image`` (``result.heatmap``).
        class_index: the class the heatmap explains.
        steps: the curve has ``steps + 1`` points, ``steps + 1`` images in one batch.
        baseline: what removed pixels become (see :func:`baseline_image`). The default is
            the image's mean colour, not RISE's black: scattered black pixels are so far from
            the training images that on the shapes scenes a *random* order collapses the
            score faster than the ground-truth mask does. With the mean colour the mask
            deletes faster than a random order (measured in ``docs/method_scores.md``).
        score: ``"probability"`` (default) or ``"logit"``.
        batch_size: images per forward pass.
        seed: for the order of tied pixels.

    Returns:
        A :class:`Curve`.
    """
    return _curve("deletion", model, image, heatmap, class_index, steps, baseline, score,
                  batch_size, seed)  # fmt: skip


@same_parameters(deletion, baseline="blur")
def insertion(*args, **kwargs) -> Curve:
    """Insertion curve: start from a blurred image, add pixels back most salient first.

    A faithful heatmap restores the evidence first, so the score rises quickly: a high AUC is
    good. Arguments as :func:`deletion`; the default baseline is ``"blur"`` (RISE), since a
    black start with a few sharp pixels is far outside what the model was trained on.
    """
    return _curve("insertion", *args, **kwargs)


@dataclass(frozen=True)
class ConfidenceChange:
    """Average drop and increase in confidence (Grad-CAM++).

    Attributes:
        average_drop: mean of ``max(0, full - explained) / full`` over the images, in %
            (lower is better: the highlighted region alone keeps the evidence).
        increase: % of images whose score *rises* when only the highlighted region is shown
            (higher is better).
        full: ``(N,)`` class scores of the images.
        explained: ``(N,)`` class scores of ``image * heatmap``.
    """

    average_drop: float
    increase: float
    full: np.ndarray
    explained: np.ndarray


def confidence_change(
    model, images, heatmaps, class_indices, batch_size: int = 32
) -> ConfidenceChange:
    """Score each image and its explanation map ``image * heatmap`` (class probabilities).

    Args:
        model: a ``keras.Model`` or a loaded entry.
        images: ``(N, H, W, 3)`` (or one ``(H, W, 3)``) RGB in 0..255.
        heatmaps: ``(N, H, W)`` (or one ``(H, W)``) heatmaps in ``[0, 1]``.
        class_indices: one int for all images or one per image.
        batch_size: images per forward pass.

    Returns:
        A :class:`ConfidenceChange`.
    """
    batch = np.asarray(images, dtype=np.float32)
    maps = np.asarray(heatmaps, dtype=np.float32)
    if batch.ndim == 3:
        batch, maps = batch[None], maps[None] if maps.ndim == 2 else maps
    if batch.ndim != 4 or maps.shape != batch.shape[:3]:
        raise ValueError(
            "images must be (N, H, W, 3) and heatmaps (N, H, W) of the same N, H, W; "
            f"got {np.shape(images)} and {np.shape(heatmaps)}"
        )
    if len(batch) == 0:
        raise ValueError("images must hold at least one image; got an empty batch")
    if not np.isfinite(maps).all() or maps.min() < 0 or maps.max() > 1:
        raise ValueError("heatmaps must be finite and in [0, 1] (use result.heatmap)")
    indices = np.asarray(class_indices)
    listed = class_indices if isinstance(class_indices, (list, tuple)) else [class_indices]
    has_bool = any(isinstance(value, (bool, np.bool_)) for value in listed)
    if (
        has_bool
        or indices.ndim > 1
        or (indices.ndim == 1 and len(indices) not in (1, len(batch)))
        or not np.issubdtype(indices.dtype, np.integer)
    ):
        raise ValueError(
            f"class_indices must be an int or {len(batch)} ints (one per image); "
            f"got {class_indices!r}"
        )
    indices = np.broadcast_to(indices.reshape(-1), (len(batch),))
    full = np.empty(len(batch), np.float32)
    explained = np.empty(len(batch), np.float32)
    for index in np.unique(indices):  # one batched call per class
        rows = np.flatnonzero(indices == index)
        pair = np.concatenate([batch[rows], batch[rows] * maps[rows, ..., None]])
        scores = class_scores(model, pair, int(index), "probability", batch_size=batch_size)
        full[rows], explained[rows] = scores[: len(rows)], scores[len(rows) :]
    safe = np.maximum(full, np.finfo(np.float32).tiny)
    drop = np.maximum(full - explained, 0.0) / safe
    return ConfidenceChange(
        average_drop=float(100.0 * drop.mean()),
        increase=float(100.0 * np.mean(explained > full)),
        full=full,
        explained=explained,
    )

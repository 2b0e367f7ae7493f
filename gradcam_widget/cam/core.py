"""The Grad-CAM recipe as pure numpy steps, every experiment of the article a parameter.

Nothing here imports TensorFlow: these functions take the activations ``A`` and gradients
``G`` of one layer, each ``(h, w, C)`` float32, and turn them into a map:

1. :func:`channel_weights`  -- pool ``G`` over the two spatial axes -> ``(C,)``
   (``"mean"``: the paper's global average pooling; ``"max"``: the article's variant).
2. :func:`select_channels`  -- keep every weight (``"weighted"``) or only the largest
   (``"top"``) -> ``(C,)``.
3. :func:`combine`          -- ``A . weights`` over channels -> ``(h, w)``, signed.
4. :func:`to_heatmap`       -- ReLU and resize in the chosen ``order``, then :func:`normalize`
   -> ``(H, W)`` in ``[0, 1]``.

:func:`compute_cam` chains them and returns a :class:`CamResult`; :func:`heatmap_peak` is
the one place that says where a map points (the result's :attr:`CamResult.peak`, the
pointing game of :mod:`gradcam_widget.data.scenes` and :mod:`gradcam_widget.checks.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from gradcam_widget import options

POOLINGS = options.POOLINGS  # each choice's values, from the one table of options
CHANNELS = options.CHANNELS
ORDERS = options.ORDERS
SCORES = options.SCORES

_CV2_FLAGS = {
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "bicubic": cv2.INTER_CUBIC,
}
INTERPOLATIONS = {name: _CV2_FLAGS[name] for name in options.INTERPOLATIONS}


def check_option(name: str, value: object, choices) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming the option, the bad value and the valid choices.
    """
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")
    return value


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``.

    Raises:
        ValueError: "``name`` must be a positive int" (``minimum=1``) or "a non-negative
            int" (``minimum=0``), with the bad value.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        ok = False
    else:
        ok = value >= minimum
    if not ok:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    return int(value)


def _check_feature_map(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"{name} must be an (h, w, C) array; got shape {array.shape}")
    return array


def channel_weights(gradients: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool the gradients over the spatial axes into one weight per channel.

    ``"mean"`` is a global average pooling of the gradients, the Grad-CAM paper's
    alpha_k; it is why Grad-CAM reduces to CAM for a GAP + dense head. ``"max"`` is the
    article's global max pooling experiment.

    Args:
        gradients: ``(h, w, C)`` float, d score / d activations.
        pooling: ``"mean"`` or ``"max"``.

    Returns:
        ``(C,)`` float32 weights.

    Raises:
        ValueError: on an unknown ``pooling`` or a gradient array that is not 3-D.
    """
    check_option("pooling", pooling, POOLINGS)
    gradients = _check_feature_map("gradients", gradients)
    if pooling == "mean":
        return gradients.mean(axis=(0, 1), dtype=np.float32)
    return gradients.max(axis=(0, 1))


def select_channels(weights: np.ndarray, channels: str = "weighted") -> np.ndarray:
    """Keep every channel weight, or only the single largest one.

    Args:
        weights: ``(C,)`` channel weights.
        channels: ``"weighted"`` keeps all of them (the weighted sum); ``"top"`` zeroes all
            but the channel with the largest weight (the article's one-channel experiment).

    Returns:
        ``(C,)`` float32 weights actually applied, so that ``raw == A @ weights``.

    Raises:
        ValueError: on an unknown ``channels`` value.
    """
    check_option("channels", channels, CHANNELS)
    weights = np.asarray(weights, dtype=np.float32)
    if channels == "weighted":
        return weights
    selected = np.zeros_like(weights)
    top = int(np.argmax(weights))
    selected[top] = weights[top]
    return selected


def combine(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum of the activation channels: ``sum_c weights[c] * A[:, :, c]``.

    Args:
        activations: ``(h, w, C)`` float.
        weights: ``(C,)`` float.

    Returns:
        ``(h, w)`` float32, signed (no ReLU yet).

    Raises:
        ValueError: when the channel counts differ.
    """
    activations = _check_feature_map("activations", activations)
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (activations.shape[-1],):
        raise ValueError(
            f"weights must have shape ({activations.shape[-1]},) to match activations "
            f"{activations.shape}; got {weights.shape}"
        )
    return activations @ weights


def relu(cam: np.ndarray) -> np.ndarray:
    """``max(cam, 0)`` elementwise, as float32."""
    return np.maximum(np.asarray(cam, dtype=np.float32), np.float32(0))


def resize(cam: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize a 2-D map to ``size = (H, W)``.

    OpenCV's ``dsize`` is ``(width, height)``; this function takes numpy's ``(H, W)`` and
    swaps it, so a non-square size comes out ``(H, W)``.

    Args:
        cam: ``(h, w)`` map.
        size: target ``(H, W)``, both positive.
        interpolation: ``"bilinear"`` (default), ``"nearest"`` or ``"bicubic"``.

    Returns:
        ``(H, W)`` float32.

    Raises:
        ValueError: on an unknown interpolation, a map that is not 2-D or a bad size.
    """
    check_option("interpolation", interpolation, INTERPOLATIONS)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or 0 in cam.shape:
        raise ValueError(f"cam must be a non-empty (h, w) array; got shape {cam.shape}")
    height, width = _check_size(size)
    if cam.shape == (height, width):
        return cam.copy()
    return cv2.resize(cam, (width, height), interpolation=INTERPOLATIONS[interpolation])


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W); got {size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (H, W); got {size!r}")
    return height, width


def normalize(cam: np.ndarray) -> np.ndarray:
    """Divide by the maximum and clip to ``[0, 1]``.

    A map whose maximum is ``<= 0`` (or not finite) has nothing to show: the result is all
    zeros, never NaN. Negative values (possible after a bicubic resize) clip to 0.

    Args:
        cam: any-shape float array.

    Returns:
        float32 array of the same shape in ``[0, 1]``.
    """
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros(cam.shape, dtype=np.float32)
    return np.clip(cam / np.float32(peak), 0.0, 1.0, dtype=np.float32)


def normalize_range(cam: np.ndarray) -> np.ndarray:
    """Min-max scale to ``[0, 1]``; a constant (or non-finite) map becomes all zeros.

    Args:
        cam: any-shape float array.

    Returns:
        float32 array of the same shape.
    """
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), posinf=0.0, neginf=0.0)
    low, high = (float(cam.min()), float(cam.max())) if cam.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(cam.shape, dtype=np.float32)
    return ((cam - np.float32(low)) / np.float32(high - low)).astype(np.float32)


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """Where a map points: the ``(row, col)`` of its maximum.

    A flat map (its maximum equals its minimum: all zeros, say, the heatmap of a class with
    no positive evidence) points nowhere, and gives ``None`` rather than an arbitrary
    ``(0, 0)``. Ties between several maxima go to the first in row-major order.

    Args:
        heatmap: ``(H, W)`` array of real numbers, any range.

    Returns:
        ``(row, col)`` of the first maximum as Python ints, or ``None`` for a flat map.

    Raises:
        ValueError: if ``heatmap`` is not a non-empty 2-D array or contains NaN.
    """
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or 0 in heatmap.shape:
        raise ValueError(f"heatmap must be a non-empty 2-D (H, W) array; got shape {heatmap.shape}")
    if np.isnan(heatmap).any():
        raise ValueError("heatmap contains NaN")
    if heatmap.max() <= heatmap.min():
        return None
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)


def probabilities(scores: np.ndarray, squash: str | None) -> np.ndarray:
    """Scores as probabilities, along the last axis.

    Args:
        scores: ``(..., K)`` logits (or probabilities, with ``squash=None``).
        squash: ``"sigmoid"`` (each class on its own: multi-label), ``"softmax"`` (classes
            compete; each row sums to 1) or ``None`` (already probabilities: as they are).

    Returns:
        float64 array of ``scores``' shape.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if squash is None:
        return scores
    check_option("squash", squash, ("sigmoid", "softmax"))
    if squash == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * scores))  # 1 / (1 + e^-x), no overflow
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def fuse_maps(
    raws: list[np.ndarray],
    size: tuple[int, int],
    combine: str = "max",
    order: str = "relu_first",
    interpolation: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several layers' raw maps into one (LayerCAM's multi-layer fusion).

    Each layer's map is clipped, resized to the finest grid and normalised, then combined;
    the heatmap combines the layers' own heatmaps (:func:`to_heatmap`) the same way. A raw map
    does not depend on ``order`` or ``interpolation``, so a caller that needs several of them
    computes the per-layer maps once and calls this per choice.

    Args:
        raws: the ``(h, w)`` raw map of each layer.
        size: ``(H, W)`` of the heatmap.
        combine: ``"max"`` or ``"mean"`` of the per-layer maps.
        order, interpolation: see :func:`to_heatmap`.

    Returns:
        ``(raw, heatmap)``: the fused raw map on the finest grid and the ``(H, W)`` heatmap.

    Raises:
        ValueError: for no maps or an unknown option.
    """
    check_option("combine", combine, ("max", "mean"))
    if not raws:
        raise ValueError("fuse needs at least one layer's map; got none")
    finest = max((raw.shape for raw in raws), key=lambda shape: shape[0] * shape[1])
    grid = [normalize(resize(relu(raw), finest, interpolation)) for raw in raws]
    heat = [to_heatmap(raw, size, order, interpolation) for raw in raws]
    pick = np.max if combine == "max" else np.mean
    return pick(np.stack(grid), axis=0), normalize(pick(np.stack(heat), axis=0))


def to_heatmap(
    raw: np.ndarray,
    size: tuple[int, int],
    order: str = "relu_first",
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Turn the signed raw map into a ``[0, 1]`` heatmap at the input size.

    ``"relu_first"`` clips negatives on the coarse grid and then resizes, so a strongly
    negative cell cannot bleed into its neighbours; ``"resize_first"`` interpolates the
    signed map first, so a large negative value drags the neighbouring pixels down before
    the ReLU (the article's ``cam[2, 6] = -1000`` experiment).

    Args:
        raw: ``(h, w)`` signed map.
        size: ``(H, W)`` output size.
        order: ``"relu_first"`` or ``"resize_first"``.
        interpolation: see :func:`resize`.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``; all zeros when nothing is positive.

    Raises:
        ValueError: on an unknown option or bad shapes.
    """
    check_option("order", order, ORDERS)
    if order == "relu_first":
        heatmap = resize(relu(raw), size, interpolation)
    else:
        heatmap = relu(resize(raw, size, interpolation))
    return normalize(heatmap)


@dataclass(frozen=True, eq=False)
class CamResult:
    """One class-activation map and how it was made.

    Attributes:
        raw: ``(h, w)`` float32, signed ``activations @ weights`` before any ReLU.
        heatmap: ``(H, W)`` float32 in ``[0, 1]`` at the model's input size; all zeros
            (never NaN) when nothing is positive.
        weights: ``(C,)`` float32 channel weights actually applied (for ``channels="top"``
            all zeros but one).
        layer: the layer's name (a nested layer's path, ``"outer/inner"``).
        class_index: the class whose score was differentiated (``None`` for a target that
            explains no class).
        method, order, interpolation, score: how it was made.
        pooling, channels: the shared options, when the method reads them (else ``None``).
        options: the method's own options as used (e.g. Score-CAM's ``max_channels``).
    """

    raw: np.ndarray
    heatmap: np.ndarray
    weights: np.ndarray
    layer: str = ""
    class_index: int | None = -1
    method: str = "gradcam"
    pooling: str | None = "mean"
    channels: str | None = "weighted"
    order: str = "relu_first"
    interpolation: str = "bilinear"
    score: str = "logit"
    options: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict, repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the result's arrays."""
        return int(self.raw.nbytes + self.heatmap.nbytes + self.weights.nbytes)

    def freeze(self) -> CamResult:
        """Make the arrays read-only (a result that is cached and shared) and return self."""
        for array in (self.raw, self.heatmap, self.weights):
            array.flags.writeable = False
        return self

    @property
    def top_channel(self) -> int:
        """Index of the channel with the largest weight."""
        return int(np.argmax(self.weights))

    @property
    def top_weight(self) -> float:
        """The largest channel weight."""
        return float(self.weights[self.top_channel])

    @property
    def peak(self) -> tuple[int, int] | None:
        """``(row, col)`` of the heatmap's maximum; ``None`` when the heatmap is all zeros
        (nothing positive to show, so it points nowhere). See :func:`heatmap_peak`."""
        return heatmap_peak(self.heatmap)


def compute_cam(
    activations: np.ndarray,
    gradients: np.ndarray,
    size: tuple[int, int],
    pooling: str = "mean",
    channels: str = "weighted",
    order: str = "relu_first",
    interpolation: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole Grad-CAM recipe for one layer.

    Args:
        activations: ``(h, w, C)`` layer output ``A``.
        gradients: ``(h, w, C)`` d score / d ``A``.
        size: ``(H, W)`` heatmap size (the model's input size).
        pooling, channels, order, interpolation: see the step functions.

    Returns:
        ``(raw, heatmap, weights)``: ``(h, w)`` signed, ``(H, W)`` in ``[0, 1]``, ``(C,)``.

    Raises:
        ValueError: on any unknown option or mismatched shapes.
    """
    for name, value, choices in (
        ("pooling", pooling, POOLINGS),
        ("channels", channels, CHANNELS),
        ("order", order, ORDERS),
        ("interpolation", interpolation, INTERPOLATIONS),
    ):
        check_option(name, value, choices)
    activations = _check_feature_map("activations", activations)
    gradients = _check_feature_map("gradients", gradients)
    if activations.shape != gradients.shape:
        raise ValueError(
            f"activations {activations.shape} and gradients {gradients.shape} must match"
        )
    weights = select_channels(channel_weights(gradients, pooling), channels)
    raw = combine(activations, weights)
    heatmap = to_heatmap(raw, size, order, interpolation)
    return raw, heatmap, weights

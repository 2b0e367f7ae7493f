"""How alike two saliency maps are: the metrics of the sanity checks (:func:`compare`).

Metrics of a map against the original model's map (:func:`compare`): Spearman rank
correlation of the absolute maps and of the signed maps (ties get their average rank), SSIM
(Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5) and the Pearson correlation of HOG
features (:func:`hog_features`), the last two on the absolute maps scaled to ``[0, 1]``.
Where an absolute map is constant (a ReLU map that is all zero) its rank and HOG correlations
are undefined: they are NaN, the summaries leave them out and count the maps (``flat``).
"""

from __future__ import annotations

import cv2
import numpy as np

from gradcam_widget.cam import core

__all__ = ["METRICS", "compare", "hog_features", "hog_similarity", "rank", "spearman", "ssim"]

METRICS: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog")
"""The metrics of :func:`compare`, in table order."""


def rank(values) -> np.ndarray:
    """Ranks ``1 .. n`` of the flattened ``values``; tied values share their average rank.

    Args:
        values: any array (flattened).

    Returns:
        ``(n,)`` float64 ranks (``[1, 2, 2, 3]`` -> ``[1, 2.5, 2.5, 4]``).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last copy
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat arrays; NaN when either is constant."""
    a = a - a.mean()
    b = b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    if not scale > 0:
        return float("nan")
    return float(np.clip((a * b).sum() / scale, -1.0, 1.0))


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"the two maps must have the same non-empty shape; got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the maps must be finite (no NaN or infinity)")
    return a, b


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps: the Pearson correlation of their ranks, ties
    averaged.

    Args:
        a, b: arrays of the same shape (flattened).

    Returns:
        A float in ``[-1, 1]``; NaN when either map is constant (no ranking).

    Raises:
        ValueError: for different shapes, empty or non-finite maps.
    """
    a, b = _check_pair(a, b)
    return _pearson(rank(a), rank(b))


def ssim(a, b, data_range: float | None = None, sigma: float = 1.5, window: int = 11) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004), Gaussian-weighted.

    Local means, variances and covariance come from a ``window x window`` Gaussian of
    standard deviation ``sigma`` (reflected at the border; the window shrinks to the largest
    odd size that fits a smaller map); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``; the mean is
    taken over the positions where the window fits inside the map.

    Args:
        a, b: ``(H, W)`` maps.
        data_range: ``L``, the range the values can span; default the range spanned by both
            maps together (1 when both are constant and equal).
        sigma: the Gaussian's standard deviation in pixels.
        window: the window's side (odd).

    Returns:
        A float in ``[-1, 1]``: 1 for identical maps, negative when one is (locally) the
        other inverted.

    Raises:
        ValueError: for maps that are not 2-D of the same shape, non-finite values, or a bad
            ``data_range``, ``sigma`` or ``window``.
    """
    a, b = _check_pair(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim takes (H, W) maps; got shape {a.shape}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive odd integer; got {window!r}")
    if window % 2 == 0:
        raise ValueError(f"window must be odd; got {window}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min())) or 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be positive; got {data_range!r}")
    side = min(int(window), *(s if s % 2 else s - 1 for s in a.shape))
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (side, side), sigma, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    local = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    pad = side // 2
    if pad and min(local.shape) > 2 * pad:
        local = local[pad:-pad, pad:-pad]
    return float(local.mean())


def _hog_cell(height: int, width: int) -> int:
    return max(2, min(16, min(height, width) // 4))


def hog_features(image, cell: int | None = None, bins: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients features of a 2-D map (Dalal & Triggs 2005).

    The map is scaled to ``[0, 1]`` (its own minimum to maximum); gradients are centred
    differences (``[-1, 0, 1]``, zero on the border rows/columns); each pixel votes its gradient
    magnitude into the two nearest of ``bins`` unsigned orientation bins (0..180 degrees, bin
    ``k`` centred on ``(k + 0.5) * 180 / bins``, linear interpolation) of its ``cell x cell``
    cell; blocks of 2 x 2 cells, one every cell, are L2-Hys normalised (L2, clipped at 0.2,
    L2 again). Computed in numpy: OpenCV 5 no longer ships ``cv2.HOGDescriptor``.

    Args:
        image: ``(H, W)`` map (rows and columns beyond a whole number of cells are dropped).
        cell: the cell's side in pixels (default ``min(H, W) // 4``, between 2 and 16).
        bins: orientation bins.

    Returns:
        ``(F,)`` float64 features, ``F = (H // cell - 1) * (W // cell - 1) * 4 * bins`` (all
        zero for a constant map).

    Raises:
        ValueError: for a map that is not 2-D or smaller than 2 x 2 cells, or bad ``bins``.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"hog takes an (H, W) map; got shape {array.shape}")
    bins = core.check_int("bins", bins)
    height, width = array.shape
    cell = _hog_cell(height, width) if cell is None else core.check_int("cell", cell)
    if min(height, width) < 2 * cell:
        raise ValueError(f"the map {array.shape} is too small for HOG cells of {cell} px")
    rows, cols = (height // cell) * cell, (width // cell) * cell
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    pixels = scaled[:rows, :cols]
    dx = np.zeros_like(pixels)
    dy = np.zeros_like(pixels)
    dx[:, 1:-1] = pixels[:, 2:] - pixels[:, :-2]
    dy[1:-1, :] = pixels[2:, :] - pixels[:-2, :]
    magnitude = np.hypot(dx, dy)
    position = (np.rad2deg(np.arctan2(dy, dx)) % 180.0) / (180.0 / bins) - 0.5
    below = np.floor(position)
    upper_share = position - below
    below_bin = below.astype(np.int64) % bins
    above_bin = (below_bin + 1) % bins
    cell_rows, cell_cols = rows // cell, cols // cell
    cell_index = (np.arange(rows)[:, None] // cell) * cell_cols + np.arange(cols)[None, :] // cell
    size = cell_rows * cell_cols * bins
    slots = cell_index * bins
    lower_votes = (magnitude * (1 - upper_share)).ravel()
    histogram = np.bincount((slots + below_bin).ravel(), lower_votes, size)
    histogram += np.bincount((slots + above_bin).ravel(), (magnitude * upper_share).ravel(), size)
    histogram = histogram.reshape(cell_rows, cell_cols, bins)
    block = np.concatenate(
        [histogram[:-1, :-1], histogram[:-1, 1:], histogram[1:, :-1], histogram[1:, 1:]], axis=-1
    )
    epsilon = 1e-5
    block = block / np.sqrt((block * block).sum(axis=-1, keepdims=True) + epsilon**2)
    block = np.minimum(block, 0.2)
    block = block / np.sqrt((block * block).sum(axis=-1, keepdims=True) + epsilon**2)
    return block.ravel()


def hog_similarity(a, b, cell: int | None = None, bins: int = 9) -> float:
    """Pearson correlation of the HOG features (:func:`hog_features`) of two maps.

    Args:
        a, b: ``(H, W)`` maps of the same shape.
        cell, bins: as :func:`hog_features`.

    Returns:
        A float in ``[-1, 1]``; NaN when either map has no gradient (constant).

    Raises:
        ValueError: for different shapes, non-finite or too small maps.
    """
    a, b = _check_pair(a, b)
    return _pearson(hog_features(a, cell, bins), hog_features(b, cell, bins))


def _unit(absolute: np.ndarray) -> np.ndarray:
    """A non-negative map divided by its maximum (all zero stays zero)."""
    top = float(absolute.max())
    return absolute / top if top > 0 else np.zeros_like(absolute)


def compare(reference: tuple, other: tuple) -> dict[str, float]:
    """The four metrics of :data:`METRICS` for two maps of the same method.

    Args:
        reference, other: ``(absolute (H, W), signed (H, W))`` pairs, as the checks make them
            (the absolute map non-negative).

    Returns:
        ``{"spearman_abs", "spearman_signed", "ssim", "hog": float}``; SSIM and HOG compare
        the absolute maps divided by their maxima (SSIM with ``data_range=1``). Where an
        absolute map is constant every metric but the signed rank correlation is NaN.

    Raises:
        ValueError: for maps of different shapes or non-finite maps.
    """
    ref_abs, ref_signed = (np.asarray(x, dtype=np.float64) for x in reference)
    abs_, signed = (np.asarray(x, dtype=np.float64) for x in other)
    unit_ref, unit = _unit(np.abs(ref_abs)), _unit(np.abs(abs_))
    constant = np.ptp(unit_ref) == 0 or np.ptp(unit) == 0
    return {
        "spearman_abs": spearman(ref_abs, abs_),
        "spearman_signed": spearman(ref_signed, signed),
        # undefined, like the rank and HOG correlations, where a map is constant (a dead
        # class's all-zero map would otherwise score 1 against another all-zero map)
        "ssim": float("nan") if constant else ssim(unit_ref, unit, data_range=1.0),
        "hog": hog_similarity(unit_ref, unit),
    }

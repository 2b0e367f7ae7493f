"""Measuring one map of an audit: where it points, how it spreads, how much lies on the
object, and its overlay thumbnail (numbers and pictures only: no model here)."""

from __future__ import annotations

import cv2
import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.data import render
from gradcam_widget.data import scenes as data

THUMBNAIL_SIDE = 96
"""Longer side of an overlay thumbnail, in pixels."""

THUMBNAIL_QUALITY = 85
"""JPEG quality of the thumbnails."""


def map_statistics(heatmap: np.ndarray, raw: np.ndarray) -> dict:
    """Where a map points and how it spreads.

    Args:
        heatmap: ``(H, W)`` in ``[0, 1]``.
        raw: ``(h, w)`` the signed raw map.

    Returns:
        ``peak_y``, ``peak_x`` (the heatmap's maximum as fractions of the height and width),
        ``raw_max``, ``entropy`` (of the heatmap as a distribution over pixels, divided by
        ``log(H W)``) and ``centre_share`` (mass in the middle half of each side); NaN for
        all but ``raw_max`` when the heatmap is flat (it points nowhere).
    """
    height, width = heatmap.shape
    statistics = {"raw_max": float(np.max(raw))}
    peak = core.heatmap_peak(heatmap)
    mass = np.maximum(heatmap.astype(np.float64), 0.0)
    total = mass.sum()
    if peak is None or total <= 0:
        nan = float("nan")
        return statistics | {"peak_y": nan, "peak_x": nan, "entropy": nan, "centre_share": nan}
    share = mass / total
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / np.log(height * width))
    top, left = height // 4, width // 4
    centre = float(share[top : height - top, left : width - left].sum())
    return statistics | {
        "peak_y": (peak[0] + 0.5) / height,
        "peak_x": (peak[1] + 0.5) / width,
        "entropy": entropy,
        "centre_share": centre,
    }


def mask_statistics(heatmap: np.ndarray, mask: np.ndarray) -> dict:
    """``pointing_hit`` and ``object_share`` of a heatmap against an object mask (resized to
    the heatmap's size, nearest neighbour, when the image was fitted)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != heatmap.shape:
        mask = cv2.resize(mask.astype(np.uint8), heatmap.shape[::-1],
                          interpolation=cv2.INTER_NEAREST).astype(bool)  # fmt: skip
    mass = np.maximum(heatmap.astype(np.float64), 0.0)
    total = mass.sum()
    return {
        "pointing_hit": data.pointing_hit(heatmap, mask),
        "object_share": float(mass[mask].sum() / total) if total > 0 else 0.0,
    }


def thumbnail(image: np.ndarray, heatmap: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """The heatmap over the image, its longer side ``side`` pixels, as JPEG bytes."""
    picture = render.overlay(image, heatmap)
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(
        ".jpg",
        cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY],
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("could not encode a thumbnail")
    return encoded.tobytes()

"""Measuring one map: where it points, how it spreads, its share on the object, its thumbnail."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gradcam_widget.auditing import measures
from gradcam_widget.data import scenes as data


def test_map_statistics_of_known_maps():
    flat = np.zeros((8, 8), np.float32)
    stats = measures.map_statistics(flat, np.full((2, 2), -1.0))
    assert stats["raw_max"] == -1.0 and np.isnan(stats["entropy"]) and np.isnan(stats["peak_y"])
    even = np.ones((8, 8), np.float32)
    even[0, 0] = 1.0 + 1e-6  # not flat: a peak at (0, 0)
    stats = measures.map_statistics(even, np.ones((2, 2)))
    assert stats["entropy"] == pytest.approx(1.0, abs=1e-6)
    assert stats["centre_share"] == pytest.approx(0.25, abs=1e-6)
    spot = np.zeros((8, 8), np.float32)
    spot[3, 4] = 1.0
    stats = measures.map_statistics(spot, np.ones((2, 2)))
    assert stats["entropy"] == 0.0 and stats["centre_share"] == 1.0
    assert (stats["peak_y"], stats["peak_x"]) == (3.5 / 8, 4.5 / 8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 2:4] = True  # resized to the 8 x 8 map: rows 2..5, cols 4..7
    assert measures.mask_statistics(spot, mask) == {"pointing_hit": True, "object_share": 1.0}


def test_a_thumbnail_is_a_jpeg_overlay_of_the_asked_side():
    scene = data.scene(1_000_000, n_objects=1)
    heatmap = np.zeros(scene.image.shape[:2], np.float32)
    heatmap[:20, :20] = 1.0
    encoded = measures.thumbnail(scene.image, heatmap, side=48)
    assert encoded[:3] == b"\xff\xd8\xff"
    picture = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    assert max(picture.shape[:2]) == 48
    hot, cold = picture[:4, :4].astype(int), picture[-4:, -4:].astype(int)
    assert np.abs(hot - cold).sum() > 0  # the map's hot corner is drawn over the image

"""Tests for gradcam_widget.data: generated scenes, named samples and pointing metrics."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcam_widget.data import scenes as data

SIZE = data.SCENE_SIZE


# --- scenes -----------------------------------------------------------------------------


def test_scene_is_deterministic_per_seed():
    first, again, other = data.scene(123), data.scene(123), data.scene(124)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.labels == again.labels
    for label in first.labels:
        np.testing.assert_array_equal(first.masks[label], again.masks[label])
    assert not np.array_equal(first.image, other.image)


def test_scene_types_and_shapes():
    item = data.scene(7, n_objects=2)
    assert item.image.shape == (*SIZE, 3) and item.image.dtype == np.uint8
    assert isinstance(item.labels, tuple) and len(item.labels) == 2
    assert set(item.masks) == set(item.labels)
    for mask in item.masks.values():
        assert mask.shape == SIZE and mask.dtype == bool
    assert item.class_names == tuple(data.CLASS_NAMES[index] for index in item.labels)
    assert item.seed == 7
    np.testing.assert_array_equal(np.flatnonzero(item.target), item.labels)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**40), n_objects=st.integers(1, 3))
def test_scene_invariants(seed, n_objects):
    item = data.scene(seed, n_objects=n_objects)
    assert len(item.labels) == n_objects
    assert list(item.labels) == sorted(set(item.labels))
    assert all(0 <= label < len(data.CLASS_NAMES) for label in item.labels)
    masks = [item.masks[label] for label in item.labels]
    min_area = np.pi * (0.10 * 224 * 0.45) ** 2 * 0.9**3  # a shrunk star is the smallest
    for index, mask in enumerate(masks):
        assert mask.sum() > min_area
        for other in masks[index + 1 :]:
            assert not (mask & other).any()
            # objects keep a visible gap (16 px between circumscribed circles)
            assert data.distance_to_mask(mask)[other].min() >= 15


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40))
def test_objects_stand_out_from_their_surroundings(seed):
    item = data.scene(seed, n_objects=2)
    image = item.image.astype(np.float64)
    for mask in item.masks.values():
        distance = data.distance_to_mask(mask)
        ring = (distance > 3) & (distance <= 8)
        inside = data.distance_to_mask(~mask) > 3  # away from the anti-aliased edge
        contrast = np.linalg.norm(image[inside].mean(axis=0) - image[ring].mean(axis=0))
        assert contrast > 40


@pytest.mark.parametrize("n_objects", [0, 1, 2, 3, 4, 5])
def test_scene_object_counts(n_objects):
    item = data.scene(99, n_objects=n_objects)
    assert len(item.labels) == n_objects == len(item.masks)


def test_scene_custom_size():
    item = data.scene(3, n_objects=2, size=(160, 256))
    assert item.image.shape == (160, 256, 3)
    assert all(mask.shape == (160, 256) for mask in item.masks.values())


def test_scene_is_read_only():
    item = data.scene(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.labels = (0,)
    with pytest.raises(ValueError):
        item.image[0, 0, 0] = 1
    with pytest.raises(ValueError):
        item.masks[item.labels[0]][0, 0] = True
    with pytest.raises(TypeError):
        item.masks[4] = np.zeros(SIZE, bool)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 1, "n_objects": 6}, "n_objects"),
        ({"seed": 1, "n_objects": -1}, "n_objects"),
        ({"seed": 1, "size": (16, 16)}, "size"),
        ({"seed": 1, "size": (224,)}, "size"),
        ({"seed": 1, "size": (224.5, 224)}, "size"),
    ],
)
def test_scene_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.scene(**kwargs)


# --- shortcut scenes ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3, 1_000_007])
def test_shortcut_scene_is_the_plain_scene_plus_the_tag(seed):
    plain, untagged = data.scene(seed, n_objects=1), data.shortcut_scene(seed, tag=False)
    tagged, again = data.shortcut_scene(seed, tag=True), data.shortcut_scene(seed, tag=True)
    np.testing.assert_array_equal(untagged.image, plain.image)  # bit for bit
    assert untagged.labels == plain.labels == tagged.labels and untagged.seed == seed
    assert not untagged.tagged and untagged.tag_mask is None
    np.testing.assert_array_equal(tagged.image, again.image)  # deterministic
    np.testing.assert_array_equal(tagged.tag_mask, again.tag_mask)
    assert tagged.tagged and tagged.tag_mask.shape == SIZE and tagged.tag_mask.dtype == bool
    (label,) = plain.labels
    np.testing.assert_array_equal(tagged.masks[label], plain.masks[label])
    changed = (tagged.image != plain.image).any(axis=2)
    assert not changed[~tagged.tag_mask].any()  # only the tag's pixels differ
    side = data.SHORTCUT_TAG_SIZE
    assert tagged.tag_mask.sum() == side * side
    assert set(np.unique(tagged.image[tagged.tag_mask])) == {0, 255}  # black and white
    assert (tagged.image[tagged.tag_mask] == 255).mean() == 0.5  # a checkerboard
    with pytest.raises(ValueError):
        tagged.tag_mask[0, 0] = True
    with pytest.raises(ValueError):
        tagged.image[0, 0, 0] = 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40), size=st.sampled_from([SIZE, (160, 256), (64, 48)]))
def test_shortcut_tag_sits_in_the_far_corner_away_from_the_object(seed, size):
    item = data.shortcut_scene(seed, tag=True, size=size)
    (mask,) = item.masks.values()
    rows, cols = np.nonzero(item.tag_mask)
    assert rows.max() - rows.min() == cols.max() - cols.min()  # a square
    object_rows, object_cols = np.nonzero(mask)
    corner = (
        0 if rows.mean() < size[0] / 2 else size[0] - 1,
        0 if cols.mean() < size[1] / 2 else size[1] - 1,
    )
    assert abs(corner[0] - object_rows.mean()) >= size[0] / 2 - 1
    assert abs(corner[1] - object_cols.mean()) >= size[1] / 2 - 1
    assert data.distance_to_mask(mask)[item.tag_mask].min() >= 10 * min(size) / 224


def test_shortcut_scene_tags_by_the_documented_rates():
    scenes = [data.shortcut_scene(seed) for seed in range(1_000_000, 1_000_400)]
    stars = [item.tagged for item in scenes if item.labels == (data.SHORTCUT_CLASS,)]
    others = [item.tagged for item in scenes if item.labels != (data.SHORTCUT_CLASS,)]
    assert data.CLASS_NAMES[data.SHORTCUT_CLASS] == "star"
    assert len(stars) >= 50 and len(others) >= 250
    star_rate, other_rate = data.SHORTCUT_RATES
    assert abs(np.mean(stars) - star_rate) <= 0.07, np.mean(stars)
    assert abs(np.mean(others) - other_rate) <= 0.03, np.mean(others)
    for item in scenes[:40]:  # the rule decides the tag and nothing else
        forced = data.shortcut_scene(item.seed, tag=item.tagged)
        np.testing.assert_array_equal(forced.image, item.image)


@pytest.mark.parametrize("tag", [1, "yes", 0.5])
def test_shortcut_scene_rejects_a_bad_tag(tag):
    with pytest.raises(ValueError, match="tag"):
        data.shortcut_scene(1, tag=tag)


# --- samples ----------------------------------------------------------------------------


def test_two_shapes_is_a_clear_two_object_scene():
    item = data.sample_scene("two_shapes")
    image = data.sample("two_shapes")
    np.testing.assert_array_equal(image, item.image)
    assert len(item.labels) == 2
    first, second = (item.masks[label] for label in item.labels)
    assert data.distance_to_mask(first)[second].min() > 40  # far apart
    image[0, 0] = 0  # a writable copy, not the scene's own array
    assert item.image.flags.writeable is False


def test_grace_hopper_ships_with_matplotlib():
    image = data.sample("grace_hopper")
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    native = data.sample("grace_hopper", size=None)
    assert native.shape == (600, 512, 3)
    assert 60 < native.mean() < 200  # a photo, not a blank


@pytest.mark.parametrize("name", ["cat", "coffee", "astronaut"])
def test_scikit_image_photos(name):
    pytest.importorskip("skimage")
    image = data.sample(name)
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    assert image.std() > 20


def test_photo_is_cropped_not_stretched():
    pytest.importorskip("skimage")
    wide = data.sample("coffee", size=None)  # 400 x 600
    assert wide.shape == (400, 600, 3)
    square = data.sample("coffee", size=(400, 400))
    np.testing.assert_array_equal(square, wide[:, 100:500])
    assert data.sample("coffee", size=(100, 200)).shape == (100, 200, 3)


def test_missing_scikit_image_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        data.sample("cat")
    assert data.sample("grace_hopper").shape == (*SIZE, 3)  # still works without it


def test_unknown_sample_lists_valid_names():
    with pytest.raises(ValueError, match="two_shapes.*grace_hopper"):
        data.sample("dog")
    with pytest.raises(ValueError, match="two_shapes"):
        data.sample_scene("cat")


def test_every_listed_sample_loads():
    pytest.importorskip("skimage")
    for name in data.SAMPLES:
        assert data.sample(name).shape == (*SIZE, 3)


# --- pointing metrics -------------------------------------------------------------------


def _disk_mask(centre, radius, size=(50, 60)):
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _peak_at(row, col, size=(50, 60)):
    heatmap = np.zeros(size, np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_a_flat_map_points_nowhere_and_a_nan_map_is_refused():
    """The pointing checks ask gradcam_widget.core.heatmap_peak where a map points."""
    masks = {0: _disk_mask((25, 10), 5), 3: _disk_mask((25, 40), 5)}
    for flat in (np.zeros((50, 60)), np.full((50, 60), 0.3)):
        assert not data.pointing_hit(flat, masks[0])
        assert not data.peak_on_object(flat, masks, 0)
    with pytest.raises(ValueError, match="NaN"):
        data.pointing_hit(np.full((50, 60), np.nan), masks[0])
    with pytest.raises(ValueError, match="2-D"):
        data.peak_on_object(np.zeros((2, 50, 60)), masks, 0)


def test_pointing_hit_uses_a_euclidean_tolerance():
    mask = np.zeros((50, 60), bool)
    mask[10, 10] = True
    assert data.pointing_hit(_peak_at(10, 10), mask)
    assert data.pointing_hit(_peak_at(10, 25), mask)  # 15 px away
    assert not data.pointing_hit(_peak_at(10, 26), mask)
    assert data.pointing_hit(_peak_at(19, 22), mask)  # 15.0 px diagonally (9, 12)
    assert not data.pointing_hit(_peak_at(21, 22), mask)  # 16.3 px
    assert data.pointing_hit(_peak_at(10, 26), mask, tolerance=16)
    assert not data.pointing_hit(np.zeros((50, 60)), mask)  # a flat map points nowhere
    assert not data.pointing_hit(_peak_at(10, 10), np.zeros((50, 60), bool))
    with pytest.raises(ValueError, match="shape"):
        data.pointing_hit(_peak_at(1, 1), np.zeros((5, 5), bool))


def test_peak_on_object_needs_the_own_object_nearest():
    masks = {0: _disk_mask((25, 10), 5), 3: _disk_mask((25, 40), 5)}
    assert data.peak_on_object(_peak_at(25, 10), masks, 0)
    assert not data.peak_on_object(_peak_at(25, 40), masks, 0)
    assert data.peak_on_object(_peak_at(25, 40), masks, 3)
    # within 15 px of both objects: counts for the nearer one only
    assert data.peak_on_object(_peak_at(25, 22), masks, 0)
    assert not data.peak_on_object(_peak_at(25, 22), masks, 3)
    assert not data.peak_on_object(_peak_at(25, 25), masks, 0)  # equidistant
    with pytest.raises(ValueError, match="class_index 1"):
        data.peak_on_object(_peak_at(25, 10), masks, 1)

"""The pure numpy core: each recipe step, the options, and the article's experiments."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcam_widget.cam import core
from gradcam_widget.data import scenes as data

RNG = np.random.default_rng(7)


def feature_maps(h=14, w=14, channels=512):
    activations = np.maximum(RNG.normal(size=(h, w, channels)), 0).astype(np.float32)
    gradients = RNG.normal(size=(h, w, channels)).astype(np.float32)
    return activations, gradients


def test_mean_pooling_is_global_average_of_gradients():
    _, gradients = feature_maps()
    weights = core.channel_weights(gradients, "mean")
    assert weights.shape == (512,) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, gradients.reshape(-1, 512).mean(0), rtol=1e-5)


def test_max_pooling_takes_the_spatial_maximum():
    _, gradients = feature_maps()
    weights = core.channel_weights(gradients, "max")
    np.testing.assert_array_equal(weights, gradients.reshape(-1, 512).max(0))
    assert (weights >= core.channel_weights(gradients, "mean")).all()


def test_top_channel_keeps_only_the_largest_weight():
    weights = np.array([0.1, -2.0, 0.7, 0.3], dtype=np.float32)
    selected = core.select_channels(weights, "top")
    np.testing.assert_array_equal(selected, np.array([0, 0, 0.7, 0], dtype=np.float32))
    np.testing.assert_array_equal(core.select_channels(weights, "weighted"), weights)


def test_combine_is_a_dot_over_channels():
    activations, gradients = feature_maps(5, 7, 9)
    weights = gradients.mean((0, 1))
    raw = core.combine(activations, weights)
    assert raw.shape == (5, 7)
    np.testing.assert_allclose(raw, np.einsum("hwc,c->hw", activations, weights), rtol=1e-5)


def test_compute_cam_shapes_follow_the_article():
    activations, gradients = feature_maps()
    raw, heatmap, weights = core.compute_cam(activations, gradients, (224, 224))
    assert raw.shape == (14, 14) and heatmap.shape == (224, 224) and weights.shape == (512,)
    assert heatmap.dtype == np.float32 and heatmap.max() == pytest.approx(1.0)
    np.testing.assert_allclose(raw, activations @ weights, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(224, 160), (33, 300), (1, 5)])
def test_resize_returns_height_by_width(size):
    cam = RNG.normal(size=(7, 3)).astype(np.float32)
    for interpolation in core.INTERPOLATIONS:
        assert core.resize(cam, size, interpolation).shape == size


def test_nearest_resize_draws_one_block_per_cell():
    cam = np.arange(6, dtype=np.float32).reshape(2, 3)
    big = core.resize(cam, (20, 30), "nearest")
    np.testing.assert_array_equal(big[:10, :10], 0)
    np.testing.assert_array_equal(big[10:, 20:], 5)


def test_normalize_never_returns_nan():
    for cam in (np.zeros((4, 4)), -np.ones((4, 4)), np.full((4, 4), np.nan)):
        out = core.normalize(cam)
        assert np.isfinite(out).all() and (out == 0).all()
    out = core.normalize(np.array([[-1.0, 2.0], [4.0, 1.0]]))
    np.testing.assert_allclose(out, [[0, 0.5], [1, 0.25]])


def test_all_negative_map_gives_an_all_zero_heatmap_in_both_orders():
    raw = -np.abs(RNG.normal(size=(14, 14))).astype(np.float32) - 0.1
    for order in core.ORDERS:
        heatmap = core.to_heatmap(raw, (224, 224), order)
        assert heatmap.shape == (224, 224) and not heatmap.any()


def smooth_positive_map(h=14, w=14):
    rows, cols = np.mgrid[0:h, 0:w]
    return (1.0 + np.exp(-((rows - 9) ** 2 + (cols - 9) ** 2) / 8.0)).astype(np.float32)


def neighbour_blocks(heatmap, cell=(2, 6), cell_px=16):
    """Pixels of the four cells next to ``cell`` on the 14x14 grid at 224x224."""
    row, col = cell
    blocks = []
    for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        top, left = (row + d_row) * cell_px, (col + d_col) * cell_px
        blocks.append(heatmap[top : top + cell_px, left : left + cell_px])
    return np.stack(blocks)


def test_injection_experiment_resize_first_darkens_the_neighbours():
    """The article: with cam[2, 6] = -1000, resize -> ReLU darkens the neighbouring cells."""
    raw = smooth_positive_map()
    injected = raw.copy()
    injected[2, 6] = -1000.0
    zeroed = raw.copy()
    zeroed[2, 6] = 0.0  # what ReLU makes of the injected cell

    relu_first = core.to_heatmap(injected, (224, 224), "relu_first")
    resize_first = core.to_heatmap(injected, (224, 224), "resize_first")
    # ReLU first: the injected cell behaves exactly like a zero cell; neighbours untouched.
    np.testing.assert_allclose(relu_first, core.to_heatmap(zeroed, (224, 224), "relu_first"))
    # Resize first: the -1000 bleeds into the neighbouring cells before the ReLU.
    near_relu_first = neighbour_blocks(relu_first)
    near_resize_first = neighbour_blocks(resize_first)
    assert near_relu_first.mean() > 0.4
    assert near_resize_first.mean() < 0.7 * near_relu_first.mean()
    # Bilinear reach is one cell: the half of each neighbour facing the -1000 goes dark.
    darkened = near_resize_first < 0.5 * near_relu_first
    assert darkened.mean() > 0.3, darkened.mean()
    assert (near_resize_first[darkened] == 0).mean() > 0.5
    # Far from the injected cell both orders agree.
    np.testing.assert_allclose(relu_first[150:, 150:], resize_first[150:, 150:], atol=1e-6)


def test_orders_agree_on_a_map_without_negative_values():
    raw = smooth_positive_map()
    np.testing.assert_allclose(
        core.to_heatmap(raw, (224, 224), "relu_first"),
        core.to_heatmap(raw, (224, 224), "resize_first"),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: core.channel_weights(np.zeros((2, 2, 3)), "median"), "'mean', 'max'"),
        (lambda: core.select_channels(np.zeros(3), "all"), "'weighted', 'top'"),
        (lambda: core.to_heatmap(np.zeros((2, 2)), (4, 4), "both"), "'relu_first'"),
        (lambda: core.resize(np.zeros((2, 2)), (4, 4), "lanczos"), "'bicubic'"),
        (lambda: core.resize(np.zeros((2, 2)), (0, 4)), "positive"),
        (lambda: core.combine(np.zeros((2, 2, 3)), np.zeros(4)), "(3,)"),
        (lambda: core.compute_cam(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)), (4, 4)), "match"),
        (lambda: core.channel_weights(np.zeros((2, 3)), "mean"), "(h, w, C)"),
    ],
)
def test_bad_options_name_the_valid_choices(call, message):
    with pytest.raises(ValueError, match=None) as error:
        call()
    assert message in str(error.value)


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    grid=st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(1, 6)),
    size=st.tuples(st.integers(1, 260), st.integers(1, 260)),
    pooling=st.sampled_from(core.POOLINGS),
    channels=st.sampled_from(core.CHANNELS),
    order=st.sampled_from(core.ORDERS),
    interpolation=st.sampled_from(list(core.INTERPOLATIONS)),
)
def test_heatmap_is_finite_in_unit_range_and_sized_h_by_w(
    data, grid, size, pooling, channels, order, interpolation
):
    activations = data.draw(hnp.arrays(np.float32, grid, elements=finite))
    gradients = data.draw(hnp.arrays(np.float32, grid, elements=finite))
    raw, heatmap, weights = core.compute_cam(
        activations, gradients, size, pooling, channels, order, interpolation
    )
    assert raw.shape == grid[:2] and weights.shape == (grid[2],)
    assert heatmap.shape == size and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


# --- where a map points: the one peak function ------------------------------------------


def one_hot(row, col, shape=(50, 60)):
    heatmap = np.zeros(shape, np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_heatmap_peak_is_the_first_maximum_and_none_for_a_flat_map():
    heatmap = one_hot(4, 9)
    peak = core.heatmap_peak(heatmap)
    assert peak == (4, 9) and all(type(side) is int for side in peak)
    heatmap[30, 2] = 1.0  # a tie: the first maximum in row-major order
    assert core.heatmap_peak(heatmap) == (4, 9)
    assert core.heatmap_peak(np.array([[-3.0, -1.0], [-2.0, -5.0]])) == (0, 1)  # any range
    assert core.heatmap_peak(np.array([[-np.inf, 2.0, np.inf]])) == (0, 2)
    assert core.heatmap_peak(np.array([[1, 7], [7, 0]], np.uint8)) == (0, 1)
    for flat in (np.zeros((5, 5)), np.full((5, 5), 0.3), np.full((1, 1), 7.0)):
        assert core.heatmap_peak(flat) is None


@pytest.mark.parametrize(
    ("heatmap", "message"),
    [
        (np.zeros((2, 5, 5)), "2-D"),
        (np.zeros(5), "2-D"),
        (np.zeros((0, 5)), "non-empty"),
        (np.full((5, 5), np.nan), "NaN"),
        (np.where(one_hot(3, 3, (5, 5)) > 0, np.nan, 0.5), "NaN"),
    ],
)
def test_heatmap_peak_refuses_what_is_not_a_map(heatmap, message):
    with pytest.raises(ValueError, match=message):
        core.heatmap_peak(heatmap)


def test_cam_result_peak_and_the_pointing_checks_all_ask_heatmap_peak(monkeypatch):
    weights = np.zeros(1, np.float32)
    result = core.CamResult(
        raw=np.zeros((5, 6), np.float32), heatmap=one_hot(4, 9), weights=weights
    )
    assert result.peak == (4, 9)
    raw, heatmap, weights = core.compute_cam(
        np.ones((5, 6, 1), np.float32), -np.ones((5, 6, 1), np.float32), (50, 60)
    )
    dead = core.CamResult(raw=raw, heatmap=heatmap, weights=weights)
    assert not dead.heatmap.any() and dead.peak is None  # nothing positive: points nowhere

    asked = []
    original = core.heatmap_peak
    monkeypatch.setattr(core, "heatmap_peak", lambda heatmap: asked.append(1) or original(heatmap))
    mask = one_hot(4, 9) > 0
    assert result.peak == (4, 9)
    assert data.pointing_hit(result.heatmap, mask)
    assert data.peak_on_object(result.heatmap, {0: mask}, 0)
    assert not data.pointing_hit(dead.heatmap, mask)
    assert len(asked) == 4

"""The seed's ``compute_saliency`` as one call: ``render.saliency_figure`` (top-5 in the
title, then Grad-CAM overlay, Guided Backpropagation and Guided Grad-CAM), the pictures and
the files ``render.save_saliency`` writes."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget.data import render
from gradcam_widget.engine._tf import keras

TOP_LINE = re.compile(r"top (\d) \(([^)]*)\): (.*)")


def top_of(fig) -> tuple[str, list[tuple[int, str, float]]]:
    """``(how, [(index, name, probability), ...])`` read back from the figure's title."""
    match = TOP_LINE.fullmatch(fig._suptitle.get_text().splitlines()[0])
    assert match, fig._suptitle.get_text()
    entries = []
    for entry in match.group(3).split(" · "):
        index, rest = entry.split(" ", 1)
        name, probability = rest.rsplit(" ", 1)
        entries.append((int(index), name, float(probability)))
    assert int(match.group(1)) == len(entries)
    return match.group(2), entries


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@pytest.fixture(scope="module")
def cap(shapes):
    return gw.capture(shapes, "two_shapes")


@pytest.fixture
def swish_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3, activation="swish", name="c")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_figure_has_three_titled_image_axes(cap):
    fig = render.saliency_figure(cap)
    assert [axis.get_title() for axis in fig.axes] == list(render.SALIENCY_PANELS)
    assert [len(axis.images) for axis in fig.axes] == [1, 1, 1]
    pictures = render.saliency_images(cap)
    for axis, picture in zip(fig.axes, pictures.values(), strict=True):
        np.testing.assert_array_equal(np.asarray(axis.images[0].get_array()), picture)
    second = fig._suptitle.get_text().splitlines()[1]
    assert "class 3 'star' (logit)" in second and "block5_conv3" in second


def test_pictures_are_the_captures_maps_rendered(cap):
    pictures = render.saliency_images(cap)
    assert list(pictures) == list(render.SALIENCY_PANELS)
    assert all(p.shape == (224, 224, 3) and p.dtype == np.uint8 for p in pictures.values())
    np.testing.assert_array_equal(
        pictures["Grad-CAM overlay"], render.overlay(cap.image, cap.cam().heatmap)
    )
    np.testing.assert_array_equal(
        pictures["Guided Backpropagation"], render.saliency_image(cap.saliency("guided"))
    )
    np.testing.assert_array_equal(
        pictures["Guided Grad-CAM"], render.saliency_image(cap.guided_grad_cam())
    )


def test_layer_options_and_style_reach_every_picture(cap):
    options = {"layer": "block4_conv2", "pooling": "max", "order": "resize_first"}
    pictures = render.saliency_images(cap, colormap="viridis", alpha=0.3, style="abs", **options)
    heatmap = cap.cam(**options).heatmap
    np.testing.assert_array_equal(
        pictures["Grad-CAM overlay"], render.overlay(cap.image, heatmap, "viridis", 0.3)
    )
    np.testing.assert_array_equal(
        pictures["Guided Backpropagation"], render.saliency_image(cap.saliency("guided"), "abs")
    )
    np.testing.assert_array_equal(
        pictures["Guided Grad-CAM"],
        render.saliency_image(cap.guided_grad_cam(**options), "abs"),
    )
    assert not np.array_equal(
        pictures["Guided Grad-CAM"], render.saliency_images(cap)["Guided Grad-CAM"]
    )


def test_smoothgrad_options_go_to_both_guided_maps(cap):
    noise = {"smooth": 3, "sigma": 0.1, "seed": 4}
    pictures = render.saliency_images(cap, **noise)
    np.testing.assert_array_equal(
        pictures["Guided Backpropagation"],
        render.saliency_image(cap.saliency("guided", **noise)),
    )
    np.testing.assert_array_equal(
        pictures["Guided Grad-CAM"], render.saliency_image(cap.guided_grad_cam(**noise))
    )


def test_title_lists_the_top5_in_order_with_the_models_own_probabilities(cap):
    """``shapes`` is multi-label (independent sigmoids), so the logits are squashed per class
    by a sigmoid, as the model's head does; the order is that of the scores."""
    how, entries = top_of(render.saliency_figure(cap))
    assert how == "sigmoid of the logits"
    assert [(index, name) for index, name, _ in entries] == [(i, n) for i, n, _ in cap.top(5)]
    expected = sigmoid([score for _, _, score in cap.top(5)])
    np.testing.assert_allclose([p for _, _, p in entries], expected, atol=5e-4)
    assert entries[0][0] == 3 and entries[1][0] == 1  # the scene has a star and a square


def test_softmax_probabilities_sum_to_at_most_one_in_order(cap):
    how, entries = top_of(render.saliency_figure(cap, squash="softmax"))
    assert how == "softmax of the logits"
    probabilities = [p for _, _, p in entries]
    assert sum(probabilities) <= 1.0 + 5 * 5e-4  # each printed to 3 decimals
    assert probabilities == sorted(probabilities, reverse=True)
    assert [index for index, _, _ in entries] == [index for index, _, _ in cap.top(5)]
    logits = np.asarray(cap.scores, dtype=np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(probabilities, np.sort(softmax)[::-1], atol=5e-4)


def test_a_softmax_classifier_gets_a_softmax_and_fewer_classes_than_five(make_cnn):
    model = make_cnn(seed=3, classes=4)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cap = gw.capture(model, image)
    top, how = render.top_probabilities(cap, 5)
    assert how == "softmax of the logits" and len(top) == 4
    assert sum(p for _, _, p in top) == pytest.approx(1.0)
    probabilities = model.predict(image[None].astype(np.float32), verbose=0)[0]
    assert [p for _, _, p in top] == pytest.approx(sorted(probabilities, reverse=True), abs=1e-5)
    assert top_of(render.saliency_figure(cap))[0] == "softmax of the logits"


def test_probability_scores_are_used_as_they_are(shapes):
    cap = gw.capture(shapes, "two_shapes", score="probability")
    top, how = render.top_probabilities(cap)
    assert how == "the model's probabilities"
    assert top == cap.top(5)
    with pytest.raises(ValueError, match="already are the model's probabilities"):
        render.top_probabilities(cap, squash="softmax")


def test_a_head_the_logit_cannot_bypass_is_not_squashed_twice(lambda_softmax_model):
    with pytest.warns(UserWarning, match="could not be bypassed"):
        image = np.random.default_rng(1).integers(0, 4, (32, 32, 3), dtype=np.uint8)
        cap = gw.capture(lambda_softmax_model, image)  # small values: an unsaturated softmax
    top, how = render.top_probabilities(cap)
    assert "head could not be bypassed" in how
    assert [p for _, _, p in top] == pytest.approx(sorted(cap.scores, reverse=True))
    assert sum(p for _, _, p in top) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"style": "pretty"}, "style"),
        ({"squash": "tanh"}, "squash"),
        ({"layer": "nope"}, "unknown layer 'nope'"),
        ({"colormap": "nope"}, "unknown colormap"),
        ({"alpha": 2}, "alpha"),
        ({"pooling": "median"}, "pooling"),
    ],
)
def test_bad_options_are_value_errors(cap, options, message):
    with pytest.raises(ValueError, match=message):
        render.saliency_figure(cap, **options)


def test_save_writes_the_figure_and_with_separate_the_three_pictures(cap, tmp_path):
    only = render.save_saliency(tmp_path / "only.png", cap)
    assert only == [tmp_path / "only.png"] and list(tmp_path.iterdir()) == only
    assert Image.open(only[0]).format == "PNG"

    written = render.save_saliency(str(tmp_path / "seed"), cap, separate=True)
    stem = str(tmp_path / "seed")
    assert written == [f"{stem}.png", f"{stem}_gradcam.png", f"{stem}_guided_backprop.png",
                       f"{stem}_guided_gradcam.png"]  # fmt: skip
    pictures = render.saliency_images(cap)
    for path, picture in zip(written[1:], pictures.values(), strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), picture)
    assert len(list(tmp_path.iterdir())) == 5


def test_a_pdf_figure_gets_png_pictures_beside_it(cap, tmp_path):
    written = render.save_saliency(tmp_path / "maps.pdf", cap, separate=True, style="abs")
    assert written[0].read_bytes().startswith(b"%PDF")
    assert [path.name for path in written[1:]] == [
        "maps_gradcam.png", "maps_guided_backprop.png", "maps_guided_gradcam.png"
    ]  # fmt: skip
    assert render.saliency_paths(tmp_path / "maps.pdf")["Guided Grad-CAM"] == written[3]


def test_save_to_a_file_object(cap, tmp_path):
    buffer = io.BytesIO()
    assert render.save_saliency(buffer, cap) is buffer
    assert buffer.getvalue().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="separate=True needs a file name"):
        render.save_saliency(io.BytesIO(), cap, separate=True)


def test_a_network_without_relu_is_one_clear_error_and_writes_nothing(swish_model, tmp_path):
    cap = gw.capture(swish_model, np.full((24, 24, 3), 120, np.uint8))
    with pytest.raises(ValueError, match="guided backpropagation is defined for ReLU networks"):
        render.save_saliency(tmp_path / "s.png", cap, separate=True)
    with pytest.raises(ValueError, match="layer c uses"):
        render.saliency_figure(cap)
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_fail_before_any_pass(cap, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render.save_saliency(tmp_path / "missing" / "s.png", cap)
    with pytest.raises(IsADirectoryError):
        render.save_saliency(tmp_path, cap)
    assert list(tmp_path.iterdir()) == []

"""The Capture itself: frozen, its tensors read-only, its cache (filled-in layers, input
gradients) held in its own mutable part, and the public queries on what it keeps."""

import dataclasses

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures import record
from gradcam_widget.captures.gate import check_request, checked_pass
from gradcam_widget.engine import engine_for, inputs


@pytest.fixture(scope="module")
def model(make_cnn):
    return make_cnn(seed=2, name="record")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(8).integers(0, 256, (32, 32, 3)).astype(np.uint8)


def test_a_capture_is_frozen_and_its_arrays_read_only(model, image):
    cap = gw.capture(model, image)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.class_index = 0
    for array in (cap.activations("conv2"), cap.gradients("conv2"), cap.scores, cap.image,
                  cap.model_input):  # fmt: skip
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0


def test_filling_in_and_caching_leave_the_fields_as_they_were(model, image):
    cap = gw.capture(model, image, layers=["conv2"])
    fields = {f.name: getattr(cap, f.name) for f in dataclasses.fields(cap)}
    assert cap.held_layers == ("conv2",) and cap.fill_ins == []
    before = cap.nbytes
    cap.gradients("conv1")  # one more pass, every layer held from now on
    assert cap.held_layers == cap.layers and len(cap.fill_ins) == 1
    assert cap.nbytes > before
    cap.saliency("vanilla")
    assert {f.name: getattr(cap, f.name) for f in dataclasses.fields(cap)} == fields


def test_the_public_queries(model, image, shapes):
    cap = gw.capture(model, image)
    assert cap.model is model and not cap.multi_label
    assert cap.model_input.shape == (1, 32, 32, 3)
    assert gw.capture(shapes, gw.data.scene(0).image).multi_label == shapes.multi_label


def test_has_saliency_tells_a_cached_map_by_its_settings(model, image):
    cap = gw.capture(model, image, layers=[])
    assert not cap.has_saliency("vanilla")
    cap.saliency("vanilla")
    assert cap.has_saliency("vanilla") and not cap.has_saliency("guided")
    assert cap.has_saliency("vanilla", sigma=0.5, seed=3)  # noise settings count with smooth only
    cap.saliency("vanilla", smooth=2, seed=1)
    assert cap.has_saliency("vanilla", smooth=2, seed=1)
    assert not cap.has_saliency("vanilla", smooth=2, seed=2)


def test_the_saliency_cache_is_bounded(model, image):
    cap = gw.capture(model, image, layers=[])
    for seed in range(record.SALIENCY_CACHE + 2):
        cap.saliency("vanilla", smooth=1, seed=seed)
    kept = [cap.has_saliency("vanilla", smooth=1, seed=s) for s in range(record.SALIENCY_CACHE + 2)]
    assert kept == [False, False] + [True] * record.SALIENCY_CACHE  # the oldest dropped


def test_capture_of_is_what_capture_returns(model, image):
    request = check_request(model, None, "logit", None)
    engine = engine_for(model)
    shown, batch, _ = inputs.prepare(image, engine.input_size, request.preprocess)
    _, default, result = checked_pass(request, batch, "all")
    cap = record.capture_of(request, result, index=0, shown=shown, inputs=batch,
                            default=default, notes=(), complete=True)  # fmt: skip
    expected = gw.capture(model, image)
    assert cap.default_layer == expected.default_layer and cap.layers == expected.layers
    assert cap.class_index == expected.class_index
    np.testing.assert_allclose(cap.cam().heatmap, expected.cam().heatmap, atol=1e-6)


def test_a_capture_without_a_model_says_so(model, image):
    cap = gw.capture(model, image)
    bare = dataclasses.replace(cap, _source=None)
    assert bare.model is None and bare.model_input is None and not bare.multi_label
    with pytest.raises(ValueError, match="no model kept"):
        bare.saliency("vanilla")
    with pytest.raises(ValueError, match="no model kept"):
        bare.masked_scores(np.ones((1, 32, 32), np.float32))

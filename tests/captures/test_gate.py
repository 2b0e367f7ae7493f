"""The one validation gate: a model and what to explain become a checked request, and a
batch one checked pass, or a clear ValueError before anything runs."""

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures import gate
from gradcam_widget.engine import engine_for, inputs


@pytest.fixture(scope="module")
def model(make_cnn):
    return make_cnn(seed=4, name="gate")


def _batch(model, count=2):
    images = np.random.default_rng(1).integers(0, 256, (count, 32, 32, 3)).astype(np.uint8)
    return inputs.model_batch(images, None, engine_for(model).input_size)


def test_a_request_of_a_bare_model_and_of_an_entry(model, shapes):
    request = gate.check_request(model, None, "logit", None)
    assert request.model is model and request.preprocess is None
    assert request.class_names is None and not request.multi_label
    assert isinstance(request.target, gw.targets.Class) and request.score == "logit"
    assert request.engine is engine_for(model)
    entry = gate.check_request(shapes, None, "probability", None, class_index=2)
    assert entry.model is shapes.model and entry.preprocess is shapes.preprocess
    assert entry.class_names == tuple(shapes.class_names)
    assert entry.multi_label == shapes.multi_label


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "softmax"}, "score"),
        ({"class_index": 4}, "class_index"),
        ({"target": "nope"}, "target"),
    ],
)
def test_a_bad_request_is_refused_naming_what_was_expected(model, kwargs, message):
    arguments = {"target": None, "score": "logit", "preprocess": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        gate.check_request(model, **arguments)
    with pytest.raises(ValueError, match="keras.Model"):
        gate.check_request(object(), None, "logit", None)


def test_a_checked_pass_records_the_layers_asked_for(model):
    request = gate.check_request(model, None, "logit", None)
    facts, default, result = gate.checked_pass(request, _batch(model), ["conv1"])
    assert default == "conv2" and "conv1" in facts.candidates
    assert result.values.shape == (2,) and set(result.gradients) == {"conv1"}
    _, _, everything = gate.checked_pass(request, _batch(model), "all")
    assert set(everything.gradients) == set(everything.candidates)


def test_a_checked_pass_refuses_a_target_without_one_score_per_image(model):
    request = gate.check_request(model, lambda outputs: outputs[:, :2], "logit", None)
    with pytest.raises(ValueError, match="one score per image"):
        gate.checked_pass(request, _batch(model), "all")

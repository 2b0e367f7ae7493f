"""The warnings' text: a softmax that could not be bypassed, a probability over one unit,
and a gradient that is zero at every recorded layer."""

import numpy as np
import pytest

from gradcam_widget.captures import gate, notes
from gradcam_widget.engine import engine_for, inputs
from gradcam_widget.engine._tf import keras


def _pass(model, target=None, score="logit", layers="all"):
    request = gate.check_request(model, target, score, None)
    engine = engine_for(model)
    images = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    batch = inputs.model_batch(images, None, engine.input_size)
    facts, default, result = gate.checked_pass(request, batch, layers)
    return request, engine, facts, default, result


def _one_unit(activation):
    keras.utils.set_random_seed(3)
    x = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(1, activation=activation, name="head")(y))


def test_a_bypassed_softmax_gives_no_note(make_cnn):
    request, engine, facts, default, result = _pass(make_cnn(seed=5))
    assert notes.score_warnings(facts, request.target, "logit", engine.head, result.scores[0]) == ()
    assert notes.gradient_notes(request.target, "logit", result, default) == ()


def test_a_softmax_inside_a_lambda_is_named(lambda_softmax_model):
    request, engine, facts, _, result = _pass(lambda_softmax_model)
    (line,) = notes.score_warnings(facts, request.target, "logit", engine.head, result.scores[0])
    assert "could not be bypassed" in line and "softmax" in line


@pytest.mark.parametrize(
    ("activation", "expected"), [("softmax", "always 1"), (None, "its sigmoid")]
)
def test_a_probability_over_one_unit_is_explained(activation, expected):
    request, engine, facts, _, result = _pass(_one_unit(activation), score="probability")
    found = notes.score_warnings(facts, request.target, "probability", engine.head,
                                 result.scores[0])  # fmt: skip
    assert len(found) == 1 and expected in found[0]


def test_a_target_that_ignores_the_outputs_gets_the_zero_gradient_note(make_cnn):
    model = make_cnn(seed=6)

    def constant(outputs):
        return outputs[:, 0] * 0.0

    request, _, _, default, result = _pass(model, target=constant)
    (line,) = notes.gradient_notes(request.target, "logit", result, default)
    assert "zero at every recorded layer for 1 of 1 image(s)" in line
    assert notes.token_notes(request.target, result, default) == ()  # no token layer

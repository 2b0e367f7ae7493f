"""Tapping: every leaf layer's output recorded in call order, nested models opened, a squashing
head bypassed and the model left as it was; the failing leaf named."""

import numpy as np
import pytest

from gradcam_widget.engine._tf import keras
from gradcam_widget.engine.tapping import failed_layer, leaf_layers, output_heads, tapped


def _nested():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, name="c2")(inner_in), name="block")
    inputs = keras.Input((8, 8, 3))
    x = inner(keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))


def test_leaves_are_found_inside_nested_models_and_recorded_in_call_order():
    model = _nested()
    paths = [path for path, _ in leaf_layers(model)]
    assert paths == ["c1", "block/c2", "gap", "out"]
    assert output_heads(model) == ("softmax",)
    image = np.ones((2, 8, 8, 3), np.float32)
    probabilities = model(image).numpy()
    with tapped(leaf_layers(model), bypass=model) as record:
        logits = np.asarray(model(image))
    assert list(record) == paths and record.calls == dict.fromkeys(paths, 1)
    assert not np.allclose(logits, probabilities)  # the softmax was skipped
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), probabilities, atol=1e-6)
    np.testing.assert_allclose(model(image).numpy(), probabilities)  # and is back


class Boom(keras.layers.Layer):
    armed = False

    def call(self, inputs):
        if self.armed:
            raise ValueError("boom")
        return inputs


def test_the_failing_leaf_is_named_on_the_exception():
    inputs = keras.Input((8, 8, 3))
    boom = Boom(name="boom")
    model = keras.Model(inputs, boom(keras.layers.Conv2D(4, 3, name="c1")(inputs)))
    boom.armed = True
    with pytest.raises(ValueError, match="boom") as error, tapped(leaf_layers(model)):
        model(np.ones((1, 8, 8, 3), np.float32))
    failed = failed_layer(error.value)
    assert failed is not None and failed.path == "boom"
    assert tuple(failed.inputs[0][0].shape) == (1, 6, 6, 4)  # what it was called with

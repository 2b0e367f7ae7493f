"""Test models shared by several test files."""

import pytest

from gradcam_widget._tf import keras, tf


@pytest.fixture
def lambda_softmax_model():
    """A classifier whose softmax sits in a ``Lambda``: the one place the logit bypass cannot
    reach (the capture must say so instead of silently explaining the probability)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c")(inputs))
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, keras.layers.Lambda(lambda t: tf.nn.softmax(t))(logits))

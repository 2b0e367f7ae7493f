"""Layer names TensorFlow refuses as name scopes, traced under their cleaned names."""

import numpy as np
import pytest

from gradcam_widget.engine._tf import keras, tf
from gradcam_widget.engine.scopes import scope_name, scope_names


def test_scope_names_are_cleaned_only_where_tensorflow_refuses_them():
    assert scope_name("block1_conv1") == "block1_conv1"
    assert scope_name("conv 1") == "conv_1"
    assert scope_name("_x") == "layer_x"
    assert scope_name(None) is None


def test_a_layer_named_with_a_space_traces_inside_scope_names_only():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="conv 1")(inputs))
    image = tf.constant(np.ones((1, 4, 4, 1), np.float32))

    def run(x):
        with scope_names():
            return model(x)

    with pytest.raises(ValueError, match="scope"):
        tf.function(lambda x: model(x), autograph=False)(image)
    traced = tf.function(run, autograph=False)(image)
    np.testing.assert_allclose(traced.numpy(), model(image).numpy(), atol=1e-6)

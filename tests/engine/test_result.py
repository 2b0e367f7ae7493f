"""PassResult: carried through tf.nest out of a traced function, and turned into numpy."""

import numpy as np

from gradcam_widget.engine._tf import tf
from gradcam_widget.engine.result import PassResult


def _result(tensor):
    return PassResult(
        candidates=("a", "b"),
        static_shapes={"a": (4, 4, 2), "b": (None, None, 2)},
        squashed=("softmax",),
        layers=("b",),
        tokens={"b": (1, 2, 2)},
        scores=tensor[:, 0, 0, :],
        values=tensor[:, 0, 0, 0],
        class_indices=tf.zeros((tf.shape(tensor)[0],), tf.int32),
        activations={"b": tensor},
        gradients={"b": tensor * 2},
        shapes={"a": tf.constant([4, 4, 2]), "b": tf.shape(tensor)[1:]},
        input_gradients=tensor + 1,
    )


def test_a_pass_result_comes_out_of_a_traced_function_whole():
    spec = [tf.TensorSpec((None, None, None, 2), tf.float32)]
    function = tf.function(_result, input_signature=spec, autograph=False)
    tensor = tf.ones((3, 5, 5, 2))
    result = function(tensor).numpy(seconds=1.5)
    assert result.candidates == ("a", "b") and result.layers == ("b",)
    assert result.static_shapes["b"] == (None, None, 2) and result.tokens == {"b": (1, 2, 2)}
    assert result.squashed == ("softmax",) and result.seconds == 1.5
    assert isinstance(result.activations["b"], np.ndarray)
    np.testing.assert_array_equal(result.gradients["b"], np.full((3, 5, 5, 2), 2.0))
    assert result.shapes == {"a": (4, 4, 2), "b": (5, 5, 2)}
    np.testing.assert_array_equal(result.input_gradients, np.full((3, 5, 5, 2), 2.0))
    traced = function.get_concrete_function().structured_outputs
    assert traced.candidates == ("a", "b")  # the facts readable without running it

"""What the stateless engines share, checked on Keras's TensorFlow backend (their backends'
own tests run in test_jax.py and test_torch.py): the perturbation handles, and a model
called with its variables' values passed in."""

import numpy as np

from gradcam_widget.engine._tf import keras
from gradcam_widget.engine.stateless import StatelessEngine, perturbation


def test_perturbation_adds_each_zero_to_its_layers_last_call():
    zeros = {"a": "za", "b": "zb"}
    assert perturbation(zeros, {"a": 2, "b": 1, "c": 5}) == {"a": (2, "za"), "b": (1, "zb")}


class _Probe(StatelessEngine):  # the shared code alone: no backend's passes
    backend = "probe"

    def _read_model(self, signature, bypass):
        raise NotImplementedError

    @staticmethod
    def _zero(shape, dtype):
        return np.zeros(shape, dtype)

    _trace_facts = _make_pass = _call_pass = _make_forward = _read_model
    _call_forward = _make_outputs = _call_outputs = _find_reaching = _read_model


def test_call_model_uses_the_values_passed_in_and_changes_nothing():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Conv2D(1, 1, name="c")])
    engine = _Probe(model)
    image = np.ones((1, 2, 2, 1), np.float32)
    trainable, non_trainable = engine.state()
    doubled = [value * 2 for value in trainable]
    np.testing.assert_allclose(
        np.asarray(engine.call_model(image, (doubled, non_trainable))),
        2 * model(image).numpy(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(np.asarray(engine.call_model(image)), model(image).numpy())
    assert engine.signature((5, 2, 2, 1)) == (None, 2, 2, 1)

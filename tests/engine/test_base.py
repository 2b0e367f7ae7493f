"""The backend contract: the Engine is abstract, a request names its compiled pass, the objective
(tap, call, score, target) is the one every backend runs, and the caches stay bounded."""

import numpy as np
import pytest

from gradcam_widget.captures import targets
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._tf import keras
from gradcam_widget.engine.base import MAX_TRACES, Engine, scored_outputs, trim_oldest
from gradcam_widget.engine.result import PassRequest
from gradcam_widget.engine.stateless import StatelessEngine

HOOKS = {
    "_trace_facts",
    "_make_pass",
    "_call_pass",
    "_make_forward",
    "_call_forward",
    "_make_outputs",
    "_call_outputs",
    "_find_reaching",
}


def test_the_contract_is_the_eight_hooks_the_module_docstring_lists():
    import gradcam_widget.engine.base as base

    assert Engine.__abstractmethods__ == HOOKS
    assert StatelessEngine.__abstractmethods__ == HOOKS | {"_read_model", "_zero"}
    assert all(f"``{hook}(" in base.__doc__ for hook in HOOKS)
    with pytest.raises(TypeError, match="abstract"):
        Engine(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 1)]))


def test_a_request_keys_its_pass_and_keeps_the_asked_layers_in_order():
    target = targets.Class(1)
    request = PassRequest((None, 8, 8, 3), target, "logit", False, ("b", "x", "a"))
    assert request.kept(("a", "b", "c")) == ("b", "a")
    assert PassRequest((None, 8, 8, 3), target, "logit", False).kept(("a", "b")) == ("a", "b")
    assert request.key == ((None, 8, 8, 3), target.trace_key, "logit", False, ("b", "x", "a"), None)


def test_the_objective_taps_calls_scores_and_reads_the_target():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    logits = keras.layers.Dense(3, name="dense")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Softmax(name="soft")(logits))
    engine = engine_for(model)
    batch = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    target = targets.Class(2)
    for score in ("logit", "probability"):
        request = PassRequest(engine.signature(batch.shape), target, score, False)
        # squashed as a traced pass reads it off the graph (an eager tensor shows none)
        squashed = ("softmax",) if score == "probability" else (None,)
        found = engine.objective(batch, target.feed(2), request, squashed=squashed)
        assert tuple(found.record["conv"].shape) == (2, 6, 6, 4)  # tapped
        expected = model(batch).numpy()
        if score == "logit":  # the softmax bypassed
            expected = keras.Model(inputs, logits)(batch).numpy()
        np.testing.assert_allclose(np.asarray(found.scores), expected, atol=1e-5)
        np.testing.assert_allclose(np.asarray(found.values), expected[:, 2], atol=1e-5)
        assert list(np.asarray(found.class_indices)) == [2, 2]


def test_scored_outputs_squashes_only_for_probabilities_and_names_dict_outputs():
    logits = keras.ops.convert_to_tensor(np.array([[1.0, 2.0, 3.0]], np.float32))
    assert np.allclose(scored_outputs(logits, (), "logit", False), logits)
    probability = np.asarray(scored_outputs(logits, (), "probability", False))
    np.testing.assert_allclose(probability.sum(), 1.0, atol=1e-6)
    sigmoid = np.asarray(scored_outputs(logits, (), "probability", True, squashed=(None,)))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-np.array([[1.0, 2.0, 3.0]]))), atol=1e-6)
    both = scored_outputs({"b": logits, "a": logits}, (), "logit", False, squashed=(None, None))
    assert list(both) == ["b", "a"]


def test_caches_are_bounded():
    store = {index: index for index in range(4 * MAX_TRACES + 5)}
    trim_oldest(store)
    assert len(store) == 4 * MAX_TRACES and next(iter(store)) == 5

"""The PyTorch engine (run in a subprocess with ``KERAS_BACKEND=torch``): its gradient with
respect to a layer's output through the added zeros, no weight gradient, and a softmax read off
the autograd graph."""

import pytest
from on_backend import run_on

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_the_torch_engine_differentiates_a_layer_exactly_and_leaves_the_weights_alone():
    found = run_on(
        "torch",
        """
        from gradcam_widget.captures import targets

        model = linear_model()
        engine = engine_for(model)
        result = engine.run(images(3), targets.Class(1), "logit", False, ("conv",))
        weights = model.get_layer("dense").get_weights()[0]
        expected = np.broadcast_to(weights[:, 1] / 64, (3, 8, 8, 4))
        print(json.dumps({
            "engine": type(engine).__name__,
            "error": float(np.abs(result.gradients["conv"] - expected).max()),
            "weight_grads": [v.value.grad is not None for v in model.trainable_variables],
            "state_detached": [not s.requires_grad for s in engine.state()[0]],
        }))
        """,
    )
    assert found["engine"] == "TorchEngine"
    assert found["error"] < 1e-6
    assert not any(found["weight_grads"])  # autograd walked back to the layer only
    assert all(found["state_detached"])


def test_the_torch_engine_reads_a_softmax_or_sigmoid_off_the_autograd_graph():
    found = run_on(
        "torch",
        """
        from gradcam_widget.captures import targets

        facts = [
            engine_for(model).describe((1, 8, 8, 3), targets.Class(0), "logit", False).squashed
            for model in squash_heads()
        ]
        print(json.dumps({"facts": facts}))
        """,
    )
    assert found["facts"] == [["softmax"], ["sigmoid"], [None]]

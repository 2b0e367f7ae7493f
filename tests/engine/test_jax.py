"""The JAX engine (run in a subprocess with ``KERAS_BACKEND=jax``): its gradient with respect
to a layer's output, the batch padding to a power of two, and a softmax read off the traced
program."""

import pytest
from on_backend import run_on

pytest.importorskip("jax")
pytestmark = pytest.mark.slow


def test_the_jax_engine_differentiates_a_layer_exactly_and_pads_batches():
    found = run_on(
        "jax",
        """
        from gradcam_widget.captures import targets
        from gradcam_widget.engine.jax import JaxEngine, bucket

        model = linear_model()
        engine = engine_for(model)
        batch = images(3)
        result = engine.run(batch, targets.Class(2), "logit", False, ("conv",))
        weights = model.get_layer("dense").get_weights()[0]  # (4, 3)
        expected = np.broadcast_to(weights[:, 2] / 64, (3, 8, 8, 4))
        alone = engine.run(batch[1:2], targets.Class(2), "logit", False, ("conv",))
        print(json.dumps({
            "engine": type(engine).__name__ == "JaxEngine",
            "error": float(np.abs(result.gradients["conv"] - expected).max()),
            "rows": len(result.values),
            "padded_alike": bool(np.allclose(alone.values[0], result.values[1], atol=1e-5)),
            "buckets": [bucket(n) for n in (1, 2, 3, 5, 8, 9)],
            "scores": bool(np.allclose(result.scores, np.asarray(model(batch)), atol=1e-5)),
        }))
        """,
    )
    assert found["engine"]
    assert found["error"] < 1e-6
    assert found["rows"] == 3 and found["padded_alike"]  # 3 images run as 4, one dropped
    assert found["buckets"] == [1, 2, 4, 8, 8, 16]
    assert found["scores"]


def test_the_jax_engine_reads_a_softmax_or_sigmoid_off_the_traced_program():
    found = run_on(
        "jax",
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

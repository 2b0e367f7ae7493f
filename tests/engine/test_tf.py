"""The TensorFlow engine: one trace for every batch size, the gradient with respect to a
layer's output, and the traced function holding the engine only weakly."""

import gc
import weakref

import numpy as np
from on_backend import images, linear_model

from gradcam_widget.captures import targets
from gradcam_widget.engine import engine_for
from gradcam_widget.engine.tf import TfEngine


def test_one_trace_serves_every_batch_size_and_the_gradient_is_exact():
    model = linear_model()
    engine = engine_for(model)
    assert isinstance(engine, TfEngine)
    weights = model.get_layer("dense").get_weights()[0]
    for count in (1, 3, 5):
        result = engine.run(images(count), targets.Class(2), "logit", False, ("conv",))
        expected = np.broadcast_to(weights[:, 2] / 64, (count, 8, 8, 4))
        np.testing.assert_allclose(result.gradients["conv"], expected, atol=1e-6)
        np.testing.assert_allclose(result.scores, model(images(count)).numpy(), atol=1e-5)
    assert engine.traces == 1 and engine.passes == 3


def test_forward_values_and_outputs_match_the_model():
    model = linear_model()
    engine = engine_for(model)
    batch = images(5)
    values = engine.forward_values(batch, targets.Class(1), "logit", False, batch_size=2)
    np.testing.assert_allclose(values, model(batch).numpy()[:, 1], atol=1e-5)
    np.testing.assert_allclose(engine.forward_outputs(batch, 2), model(batch).numpy(), atol=1e-5)
    assert engine.forward_images == 10


def test_the_compiled_pass_does_not_keep_the_engine_alive():
    model = linear_model()
    engine = TfEngine(model)
    engine.run(images(1), targets.Class(0), "logit", False, None)
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None

"""PassQueue: the captures of many threads on one model share passes, and each caller gets what
``gw.capture`` gives it alone (its own image, class, warnings and errors)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures.passes import PassQueue

CLASSES = [None, 3, None, 1, 2, None]


def images(count: int) -> list[np.ndarray]:
    return [gw.data.scene(seed, size=(40, 48)).image for seed in range(count)]


def run_together(queue, model, pictures, classes, **options):
    """One thread per request; the first alone, the rest sent while its pass (the model's
    first: the trace) runs. Returns (captures or errors, per request)."""
    out: list = [None] * len(pictures)

    def one(index):
        try:
            out[index] = queue.capture(model, pictures[index], classes[index], **options)
        except Exception as error:  # noqa: BLE001 - kept to be checked
            out[index] = error

    first = threading.Thread(target=one, args=(0,))
    first.start()
    deadline = time.monotonic() + 60
    while queue.passes == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    rest = [threading.Thread(target=one, args=(index,)) for index in range(1, len(pictures))]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(120)
    return out


def test_waiting_requests_share_one_pass_and_get_their_own_capture(make_cnn):
    model = make_cnn(seed=5, classes=4, activation=None, rescaling=True, name="queued")
    pictures = images(len(CLASSES))
    queue = PassQueue()
    caps = run_together(queue, model, pictures, CLASSES)
    assert queue.captures == len(CLASSES)
    assert queue.passes == 2, "the five sent during the first pass did not share one"
    for picture, class_index, cap in zip(pictures, CLASSES, caps, strict=True):
        alone = gw.capture(model, picture, class_index)
        assert cap.class_index == alone.class_index
        assert cap.default_layer == alone.default_layer and cap.layers == alone.layers
        np.testing.assert_allclose(cap.scores, alone.scores, atol=1e-5)
        for layer in alone.held_layers:
            np.testing.assert_allclose(cap.activations(layer), alone.activations(layer), atol=1e-5)
            np.testing.assert_allclose(cap.gradients(layer), alone.gradients(layer), atol=1e-5)
        np.testing.assert_allclose(cap.cam().heatmap, alone.cam().heatmap, atol=1e-5)
        np.testing.assert_array_equal(cap.image, alone.image)
        for layer in cap.held_layers:  # its own arrays: no view that keeps the batch alive
            assert cap.gradients(layer).base is None or cap.gradients(layer).base.shape[0] == 1
    others = [cap.activations(cap.default_layer) for cap in caps]
    assert not any(np.shares_memory(others[0], other) for other in others[1:])


def test_a_bad_request_is_its_callers_error_only(make_cnn):
    model = make_cnn(seed=6, classes=4, name="queued_bad")
    queue = PassQueue()
    caps = run_together(queue, model, images(4), [None, 2, 9, 1])
    assert isinstance(caps[2], ValueError) and "class_index" in str(caps[2])
    assert all(isinstance(cap, gw.Capture) for index, cap in enumerate(caps) if index != 2)
    assert [caps[1].class_index, caps[3].class_index] == [2, 1]


def test_each_caller_gets_its_own_warnings(make_cnn):
    model = make_cnn(seed=7, classes=4, name="queued_warn")
    queue = PassQueue()
    floats = images(1)[0].astype(np.float32) / 255.0  # read as 0..1: a warning for it alone
    with pytest.warns(UserWarning, match="0..1"):
        cap = queue.capture(model, floats)
    assert any("0..1" in note for note in cap.warnings)
    plain = queue.capture(model, images(1)[0])
    assert not any("0..1" in note for note in plain.warnings)


def test_a_target_runs_alone_and_a_different_score_does_not_share(make_cnn):
    model = make_cnn(seed=8, classes=4, activation=None, name="queued_target")
    queue = PassQueue()
    cap = queue.capture(model, images(1)[0], target=gw.targets.Class(2))
    assert cap.class_index == 2 and queue.passes == 0  # not through the queue
    caps = run_together(queue, model, images(3), [None, None, None], score="probability")
    assert all(cap.score == "probability" for cap in caps)
    assert queue.passes == 2


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        PassQueue(max_batch=0)


def test_a_full_batch_leaves_the_rest_for_the_next_pass(make_cnn):
    model = make_cnn(seed=9, classes=4, name="queued_small")
    queue = PassQueue(max_batch=2)
    caps = run_together(queue, model, images(5), [None] * 5)
    assert all(isinstance(cap, gw.Capture) for cap in caps)
    assert queue.passes == 3  # 1 alone, then 2 + 2

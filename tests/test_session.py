"""ExplorerSession without any widget: captures and maps of a tiny real Keras model, their
byte-bounded caches, a new image, freeing, and no ipywidgets import."""

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.session import FUSED, ExplorerSession, explained

CLASSES = 4


@pytest.fixture
def model(make_cnn):
    """A fresh seeded CNN (conv1 -> pool1 -> conv2 -> pool2 -> flatten -> head): a model pass
    count of its own, and gradients that vary over space."""
    return make_cnn(seed=3, classes=CLASSES, head="flatten")


@pytest.fixture
def image():
    return np.random.default_rng(8).integers(0, 256, (32, 32, 3)).astype(np.uint8)


def test_the_first_capture_records_only_the_requested_layer(model, image):
    session = ExplorerSession(model)
    passes = session.model_passes
    cap = session.set_image(image, layers=["conv1"])
    assert session.model_passes == passes + 1
    assert cap.held_layers == ("conv1",) and len(cap.layers) > 1
    assert cap.class_index == int(np.argmax(cap.scores))  # no class given: the top one
    assert list(session.captures) == [session.key(cap)] and len(session.results) == 0
    assert session.layers_for("conv1", cap) == ["conv1"]
    assert session.layers_for(FUSED, cap) == list(cap.fusion_layers())
    assert session.layers_for("conv2", None) == [None]


def test_a_class_change_is_one_pass_and_a_revisit_none(model, image):
    session = ExplorerSession(model)
    first = session.set_image(image, layers=["conv2"])
    other = (first.class_index + 1) % CLASSES
    passes = session.model_passes
    changed = session.capture_for(other, "logit", ["conv2"])
    assert session.model_passes == passes + 1
    assert changed.class_index == other and changed.held_layers == ("conv2",)
    assert session.capture_for(first.class_index, "logit", ["conv2"]) is first
    assert session.capture_for(other, "logit", ["conv1"]) is changed  # cached: layers aside
    assert session.capture_for(None, "logit") is first  # None: the top class, cached too
    assert session.model_passes == passes + 1
    probability = session.capture_for(other, "probability", ["conv2"])
    assert session.model_passes == passes + 2 and probability.score == "probability"
    assert len(session.captures) == 3


def test_a_result_is_the_captures_map_and_is_computed_once(model, image):
    session = ExplorerSession(model)
    cap = session.set_image(image, layers=["conv2"])
    settings = {"method": "gradcam", "layer": "conv2", "order": "resize_first", "pooling": "max"}
    misses = []
    result = session.result_for(cap, {**settings, "colormap": "jet"}, on_miss=misses.append)
    expected = gw.capture(model, image, layers=["conv2"]).cam(
        "conv2", pooling="max", order="resize_first"
    )
    np.testing.assert_allclose(result.raw, expected.raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-6)
    assert [method.name for method in misses] == ["gradcam"]
    assert session.result_for(cap, settings, on_miss=misses.append) is result
    assert len(misses) == 1  # a hit computes nothing
    default = session.result_for(cap, {})  # gradcam, the default layer, the defaults
    assert (default.layer, default.pooling, default.order) == ("conv2", "mean", "relu_first")
    assert session.result_for(cap, {"layer": FUSED, "method": "layercam"}).layer == "conv1+conv2"
    assert len(session.results) == 3
    assert session.cached_bytes == session.captures.nbytes + session.results.nbytes


def test_the_byte_budget_evicts_least_recently_used_captures_with_their_results(model, image):
    probe = ExplorerSession(model)
    one_layer = probe.set_image(image, layers=["conv2"]).nbytes
    session = ExplorerSession(model, cache_bytes=2 * one_layer + one_layer // 2, cache_size=100)
    first = session.set_image(image, layers=["conv2"])
    classes = [first.class_index, *(k for k in range(CLASSES) if k != first.class_index)]
    caps = {classes[0]: first}
    session.result_for(first, {"layer": "conv2"})
    caps[classes[1]] = session.capture_for(classes[1], "logit", ["conv2"])
    session.result_for(caps[classes[1]], {"layer": "conv2"})
    assert len(session.captures) == 2  # two one-layer captures fit
    assert session.capture_for(classes[0], "logit") is first  # now the most recently used
    passes = session.model_passes
    caps[classes[2]] = session.capture_for(classes[2], "logit", ["conv2"])
    session.result_for(caps[classes[2]], {"layer": "conv2"})
    assert session.model_passes == passes + 1
    kept = set(session.captures)
    assert kept == {session.key(caps[classes[0]]), session.key(caps[classes[2]])}
    assert session.captures.nbytes <= session.captures.budget
    assert {key[0] for key in session.results} == kept  # the evicted one's map left with it
    session.capture_for(classes[1], "logit", ["conv2"])  # evicted: a pass again
    assert session.model_passes == passes + 2


def test_results_are_dropped_with_their_capture(model, image):
    session = ExplorerSession(model, cache_size=1)
    first = session.set_image(image, layers=["conv2"])
    for pooling in ("mean", "max"):
        session.result_for(first, {"layer": "conv2", "pooling": pooling})
    assert len(session.results) == 2
    other = session.capture_for((first.class_index + 1) % CLASSES, "logit", ["conv2"])
    assert list(session.captures) == [session.key(other)]
    assert len(session.results) == 0


def test_set_image_clears_the_caches_and_a_refused_image_keeps_them(model, image):
    session = ExplorerSession(model)
    first = session.set_image(image, layers=["conv2"])
    session.result_for(first, {"layer": "conv2"})
    session.capture_for((first.class_index + 1) % CLASSES, "probability", ["conv2"])
    held, generation = set(session.captures), session.generation
    with pytest.raises(ValueError, match="NaN"):
        session.set_image(np.full((32, 32, 3), np.nan))
    assert set(session.captures) == held and len(session.results) == 1
    assert session.generation == generation and session.image is image
    passes = session.model_passes
    new_image = np.random.default_rng(9).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    cap = session.set_image(new_image, score="probability", layers=["conv1"])
    assert session.model_passes == passes + 1 and session.image is new_image
    assert list(session.captures) == [session.key(cap)] and len(session.results) == 0
    assert not held & set(session.captures)  # a new generation: no old key can hit
    assert cap.score == "probability" and cap.held_layers == ("conv1",)


def test_close_frees_the_model_once_the_caller_drops_it(make_cnn, image):
    model = make_cnn(seed=4)
    session = ExplorerSession(model)
    cap = session.set_image(image, layers=["conv2"])
    result = session.result_for(cap, {"layer": "conv2"})
    ref = weakref.ref(model)
    session.close()
    assert session.model is None and session.image is None and session.cached_bytes == 0
    for call in (
        lambda: session.model_passes,
        lambda: session.set_image(image),
        lambda: session.capture_for(0, "logit"),
        lambda cap=cap: session.result_for(cap, {}),
    ):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    assert ref() is model  # the caller still holds it
    del model, cap, result, call  # the last call holds the capture too
    gc.collect()
    assert ref() is None


def test_a_dropped_session_frees_its_model(make_cnn, image):
    model = make_cnn(seed=5)
    session = ExplorerSession(model)
    session.result_for(session.set_image(image), {"layer": "conv1"})
    refs = weakref.ref(model), weakref.ref(session)
    del model, session
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_a_target_fixes_what_a_capture_explains(make_cnn, image):
    net = make_cnn(seed=6, classes=1, activation=None)
    session = ExplorerSession(net, target=gw.targets.Regression())
    cap = session.set_image(image, layers=["conv2"])
    assert cap.target.label == "value" and session.key(cap)[1] is None
    passes = session.model_passes
    assert session.capture_for(3, "logit") is cap  # the class is the target's: a hit
    assert session.model_passes == passes


def test_arguments_are_checked_by_name(model, image):
    with pytest.raises(ValueError, match="cache_size must be a positive int; got 0"):
        ExplorerSession(model, cache_size=0)
    with pytest.raises(ValueError, match="cache_bytes must be a non-negative int"):
        ExplorerSession(model, cache_bytes=-1)
    with pytest.raises(ValueError, match="class_names must be a sequence"):
        ExplorerSession(model, class_names="abcd")
    with pytest.raises(ValueError, match="pass one or the other"):
        ExplorerSession(model, class_names=list("abcd"), target=gw.targets.Regression())
    session = ExplorerSession(model, class_names=["a", "b"])
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 4 classes"):
        session.set_image(image)
    with pytest.raises(RuntimeError, match="set_image first"):
        ExplorerSession(model).capture_for(0, "logit")
    named = ExplorerSession(model, class_names=list("abcd"))
    assert named.class_name(named.set_image(image), 2) == "c"
    assert explained(None, 2) == (None, 2) and explained(3, None) == (None, 3)
    assert explained(gw.targets.Class(1), None) == (None, 1)
    with pytest.raises(ValueError, match="not both"):
        explained(1, 2)


def test_the_session_module_does_not_import_ipywidgets():
    code = (
        "import sys; import gradcam_widget.session; "
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

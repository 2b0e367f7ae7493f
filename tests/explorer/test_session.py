"""ExplorerSession without any widget: captures and maps of a tiny real Keras model, their
byte-bounded caches, a new image, freeing, and no ipywidgets import."""

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.explorer.session import FUSED, ExplorerSession, explained

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


# --- issue 13: input-gradient maps and randomised copies ----------------------------------


def test_the_guided_map_is_one_pass_cached_with_its_capture_and_counted(model, image):
    session = ExplorerSession(model)
    cap = session.set_image(image, layers=["conv2"])
    heatmap = session.result_for(cap, {"layer": "conv2"}).heatmap
    held, passes = session.cached_bytes, session.model_passes
    assert session.guided_for(cap, "off") is None and not session.guided_cached(
        cap, "guided_backprop"
    )
    guided = session.guided_for(cap, "guided_backprop")
    assert session.model_passes == passes + 1 and session.guided_cached(cap, "guided_gradcam")
    np.testing.assert_array_equal(guided, cap.saliency("guided"))
    assert session.cached_bytes == held + guided.nbytes  # counted with its capture
    combined = session.guided_for(cap, "guided_gradcam", heatmap)
    np.testing.assert_array_equal(combined, guided * heatmap[..., None])
    assert session.model_passes == passes + 1  # numpy over the cached map
    assert not session.guided_cached(cap, "smoothgrad")
    smooth = session.guided_for(cap, "smoothgrad")
    assert session.model_passes == passes + 2  # the noisy copies: one batch
    np.testing.assert_array_equal(smooth, cap.saliency("guided", smooth=16))
    with pytest.raises(ValueError, match="'off', 'guided_backprop', 'guided_gradcam'"):
        session.guided_for(cap, "vanilla")
    with pytest.raises(ValueError, match="heatmap"):
        session.guided_for(cap, "guided_gradcam")
    session.check_guided()  # a ReLU network passes


def test_check_guided_refuses_a_gelu_network_before_any_pass(image):
    from gradcam_widget.engine._tf import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="gelu", name="c1")(inputs)
    net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    session = ExplorerSession(net)
    cap = session.set_image(image)
    passes = session.model_passes
    with pytest.raises(ValueError, match="defined for ReLU networks; layer c1 uses 'gelu'"):
        session.check_guided()
    with pytest.raises(ValueError, match="defined for ReLU networks"):
        session.guided_for(cap, "guided_backprop")
    assert session.model_passes == passes


def test_blocks_group_weighted_layers_by_name_prefix_top_first(image):
    from gradcam_widget.engine._tf import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv2")(x)
    x = keras.layers.MaxPooling2D(name="block1_pool")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block2_conv1")(x)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    assert ExplorerSession(net).block_names == ("fc", "block2", "block1")


def test_a_randomised_copy_explains_the_same_class_and_leaves_the_model_untouched(model, image):
    weights = [array.copy() for array in model.get_weights()]
    session = ExplorerSession(model)
    assert session.block_names == ("head", "conv2", "conv1")
    first = session.set_image(image, layers=["conv2"])
    passes = session.model_passes
    assert session.set_randomized(1) == ("head",) and session.randomized == 1
    copy = session.capture_for(first.class_index, "logit", ["conv2"])
    assert session.model_passes == passes + 1  # a pass of the copy, counted
    assert session.blocks_of(copy) == 1 and session.key(copy)[3] == 1
    assert copy.model is not model and copy.class_index == first.class_index
    assert not np.array_equal(copy.scores, first.scores)
    # the activations below the head are the model's: only the head was re-initialised
    np.testing.assert_allclose(copy.activations("conv2"), first.activations("conv2"), atol=1e-6)
    again = ExplorerSession(model)
    again.set_image(image, layers=["conv2"])
    again.set_randomized(1)
    seeded = again.capture_for(first.class_index, "logit", ["conv2"])
    np.testing.assert_array_equal(seeded.scores, copy.scores)  # seeded: the same copy
    session.set_randomized(2)
    head = [session._copies[k].keras_model.get_layer("head").get_weights() for k in (1, 2)]
    for one, two in zip(*head, strict=True):
        np.testing.assert_array_equal(one, two)  # a cascade: the top block is the same
    session.capture_for(first.class_index, "logit", ["conv2"])
    session.set_randomized(3)  # a third copy: the least recently used one leaves
    assert sorted(session.clones) == [2, 3] and all(key[3] != 1 for key in session.captures)
    assert session.capture_for(None, "logit") is not first  # k = 3: the copy's capture
    counted = session.model_passes
    assert session.set_randomized(0) == () and len(session.clones) == 0
    assert session.model_passes == counted  # passes of dropped copies still count
    assert list(session.captures) == [session.key(first)]
    assert session.capture_for(first.class_index, "logit") is first
    for name, bad in (("4", 4), ("-1", -1), ("True", True)):
        with pytest.raises(ValueError, match=f"got {name}"):
            session.set_randomized(bad)
    assert session.randomized == 0
    for kept, now in zip(weights, model.get_weights(), strict=True):
        assert kept.tobytes() == now.tobytes()  # bitwise


def test_a_randomised_copy_of_an_entry_keeps_its_preprocess_and_is_freed(make_cnn, image):
    import types

    calls = []

    def preprocess(batch):
        calls.append(len(batch))
        return batch / 255.0

    entry = types.SimpleNamespace(
        model=make_cnn(seed=7, classes=CLASSES), preprocess=preprocess, class_names=None
    )
    session = ExplorerSession(entry)
    first = session.set_image(image)
    session.set_randomized(1)
    before = len(calls)
    copy = session.capture_for(first.class_index, "logit")
    assert len(calls) == before + 1  # the copy's input went through the entry's preprocess
    assert copy.model_input.max() <= 1.0
    assert session.cached_bytes == (
        session.captures.nbytes + session.results.nbytes + session.clones.nbytes
    )
    assert session.clones.nbytes > 0
    ref = weakref.ref(session._copies[1].keras_model)
    del copy
    session.close()
    gc.collect()
    assert ref() is None and session.cached_bytes == 0


def test_a_model_that_cannot_be_copied_is_refused_never_randomised_in_place(image):
    from gradcam_widget.engine._tf import keras

    class Net(keras.Model):  # subclassed: keras.models.clone_model cannot copy it
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(3, name="head")

        def call(self, inputs):
            return self.head(self.pool(self.conv(inputs)))

    keras.utils.set_random_seed(3)
    net = Net()
    net(np.zeros((1, 32, 32, 3), np.float32))
    weights = [array.copy() for array in net.get_weights()]
    session = ExplorerSession(net)
    session.set_image(image)
    assert session.block_names == ("head", "conv")
    with pytest.raises(ValueError, match="cannot randomise a copy of this model"):
        session.set_randomized(1)
    assert session.randomized == 0 and len(session.clones) == 0
    for kept, now in zip(weights, net.get_weights(), strict=True):
        assert kept.tobytes() == now.tobytes()


def test_view_says_what_ran_for_this_call_whatever_others_do(model, image):
    session = ExplorerSession(model)
    other = ExplorerSession(model)  # another user of the same model
    session.set_image(image, layers=[None])
    other.set_image(image, layers=[None])
    step = session.view({"guided": "off"})
    assert not step.captured and step.result is not None and step.guided is None
    other.capture_for(0, "probability")  # a pass of the other session's: not this one's
    again = session.view({"guided": "off"})
    assert not again.captured and again.result is step.result  # the cache of maps
    guided = session.view({"guided": "guided_backprop"})
    assert guided.guided_pass and guided.guided is not None and not guided.captured
    assert not session.view({"guided": "guided_backprop"}).guided_pass
    fresh = session.view({"class_index": 0, "score": "probability"}, maps=False)
    assert fresh.captured and fresh.result is None
    assert session.key(fresh.capture).score == "probability"
    session.close()
    other.close()


def test_interpolation_is_part_of_a_maps_settings_and_key(model, image):
    session = ExplorerSession(model)
    cap = session.set_image(image)
    bilinear = session.result_for(cap, {"layer": "conv2"})
    nearest = session.result_for(cap, {"layer": "conv2", "interpolation": "nearest"})
    assert (bilinear.interpolation, nearest.interpolation) == ("bilinear", "nearest")
    assert not np.array_equal(bilinear.heatmap, nearest.heatmap)
    keys = list(session.results)
    assert {dict(key.options)["interpolation"] for key in keys} == {"bilinear", "nearest"}
    assert all(key.capture == session.key(cap) for key in keys)
    session.close()

"""The capture under real use: other threads, dropped models, read-only caches, and models
that are not plain Functional classifiers. Each test here failed before its fix."""

import gc
import threading
import warnings
import weakref

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._tf import keras, tf


def small_cnn(seed=1, classes=4, activation="softmax", input_shape=(32, 32, 3), padding="same"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding=padding, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(12, 3, padding=padding, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(5).integers(0, 256, (32, 32, 3)).astype(np.uint8)


# --- 1. another thread calling the same model while the capture is traced -------------


def test_a_thread_hammering_the_model_sees_nothing_and_changes_nothing(image):
    base = small_cnn()
    quiet = gw.capture(base, image, class_index=1)
    batch = np.random.default_rng(6).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected_outputs = base(batch, training=False).numpy()
    sums, mismatches, errors = [], [], []
    for _ in range(6):  # a fresh model each time: every capture traces while the thread runs
        model = small_cnn()
        model.set_weights(base.get_weights())
        stop = threading.Event()

        def hammer(model=model, stop=stop):
            try:
                while not stop.is_set():
                    outputs = model(batch, training=False).numpy()
                    sums.append(outputs.sum(axis=1))
                    if not np.allclose(outputs, expected_outputs, atol=1e-6):
                        mismatches.append(outputs)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            cap = gw.capture(model, image, class_index=1)
        finally:
            stop.set()
            thread.join()
        assert cap.layers == quiet.layers
        for layer in cap.layers:
            np.testing.assert_array_equal(cap.activations(layer), quiet.activations(layer))
            np.testing.assert_array_equal(cap.gradients(layer), quiet.gradients(layer))
        np.testing.assert_array_equal(cap.scores, quiet.scores)
        assert cap.cam().heatmap.max() == 1.0
    assert not errors
    assert sums and np.allclose(np.concatenate(sums), 1.0, atol=1e-5)  # softmax never bypassed
    assert not mismatches
    assert "call" not in vars(base.get_layer("conv1")) and base.get_layer("head").activation(
        tf.constant([[0.0, 0.0]])
    ).numpy().sum() == pytest.approx(1.0)


# --- 3. a model the user drops is freed --------------------------------------------------


def test_a_dropped_model_is_freed_with_its_engine(image):
    refs = []
    for seed in range(3):
        model = small_cnn(seed)
        gw.capture(model, image).cam(method="scorecam", max_channels=4)
        gw.grad_cam(model, image, layer="conv1")
        refs.append((weakref.ref(model), weakref.ref(engine_for(model))))
        del model
    gc.collect()
    assert all(model() is None and engine() is None for model, engine in refs)


def test_a_capture_keeps_its_model_usable(image):
    model = small_cnn(7)
    cap = gw.capture(model, image, layers=["conv2"])
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is not None  # the capture still needs it: Score-CAM and filling in layers
    assert cap.cam("conv1").heatmap.shape == (32, 32)
    assert cap.cam(method="scorecam", max_channels=4).heatmap.max() == 1.0
    del cap
    gc.collect()
    assert ref() is None


# --- 9. read-only caches -----------------------------------------------------------------


def test_cached_arrays_are_read_only(image):
    cap = gw.capture(small_cnn(), image)
    res = cap.cam()
    for array in (
        cap.activations("conv2"), cap.gradients("conv2"), cap.scores, cap.image,
        res.raw, res.heatmap, res.weights,
    ):  # fmt: skip
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    assert cap.cam().heatmap.max() == 1.0


def test_the_callers_image_is_never_changed(image):
    floats = image.astype(np.float32) / 255.0
    before_uint8, before_float = image.copy(), floats.copy()
    model = small_cnn()
    gw.capture(model, image)
    with pytest.warns(UserWarning, match="0..1"):
        gw.capture(model, floats)
    np.testing.assert_array_equal(image, before_uint8)
    np.testing.assert_array_equal(floats, before_float)


# --- 5. a float image in 0..1 is read as 0..1 ------------------------------------------


def test_a_float_image_in_0_1_is_the_same_picture_as_uint8(image):
    model = small_cnn()
    reference = gw.capture(model, image, class_index=2)
    with pytest.warns(UserWarning, match="0..1"):
        scaled = gw.capture(model, image / 255.0, class_index=2)
    np.testing.assert_array_equal(scaled.image, reference.image)
    np.testing.assert_allclose(scaled.scores, reference.scores, rtol=1e-5, atol=1e-5)
    sixteen = gw.capture(model, image.astype(np.uint16) * 257, class_index=2)
    np.testing.assert_array_equal(sixteen.image, reference.image)


# --- 8. models that are not plain Functional classifiers ---------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, inputs):
        return self.head(self.gap(self.conv(inputs)))


def test_a_built_subclassed_model_is_explained_at_the_image_size():
    keras.utils.set_random_seed(3)
    model = Subclassed()
    model(np.zeros((1, 20, 20, 3), np.float32))
    picture = np.random.default_rng(1).integers(0, 256, (24, 40, 3)).astype(np.uint8)
    cap = gw.capture(model, picture, class_index=2)
    assert cap.layers == ("conv",) and cap.activations("conv").shape == (24, 40, 6)
    with tf.GradientTape() as tape:
        x = tf.constant(picture[None].astype(np.float32))
        feature = model.conv(x)
        score = model.head(model.gap(feature))[0, 2]
    np.testing.assert_allclose(cap.gradients("conv"), tape.gradient(score, feature)[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"class_index must be in 0\.\.2; got 1000000"):
        gw.capture(model, picture, class_index=10**6)


def test_a_segmentation_style_output_is_refused_naming_its_shape(image):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(3, 1, name="seg")(keras.layers.Conv2D(4, 3, name="c")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"output has shape \(None, 30, 30, 3\)"):
        gw.capture(model, image)


def test_a_two_output_model_gets_one_clear_error(image):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c")(inputs))
    model = keras.Model(inputs, [keras.layers.Dense(2, name="a")(x), keras.layers.Dense(3)(x)])
    with pytest.raises(ValueError, match="the model has 2 outputs") as error:
        gw.capture(model, image)
    assert "in user code" not in str(error.value) and "File" not in str(error.value)


def test_a_dynamic_size_model_traces_once_for_every_size():
    model = small_cnn(input_shape=(None, None, 3))
    engine = engine_for(model)
    rng = np.random.default_rng(2)
    gw.capture(model, rng.integers(0, 256, (20, 20, 3)).astype(np.uint8))
    traces = engine.traces
    for height, width in [(24, 24), (32, 48), (40, 20), (64, 64), (18, 30), (50, 50)]:
        cap = gw.capture(model, rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
        assert cap.activations("conv2").shape == (height // 2, width // 2, 12)
        assert cap.shape("conv1") == (height, width, 8)
    assert engine.traces == traces


@pytest.mark.parametrize(
    ("build", "picture", "kwargs", "message"),
    [
        (
            lambda: small_cnn(input_shape=(None, None, 3), padding="valid"),
            (4, 4, 3), {}, "too small",
        ),
        (lambda: small_cnn(input_shape=(32, 32, 4)), (32, 32, 4), {}, "takes 4 input channels"),
        (
            lambda: small_cnn(),
            (32, 32, 3), {"preprocess": lambda batch: batch[:, :16]}, "preprocess returned",
        ),
    ],
)  # fmt: skip
def test_inputs_the_model_cannot_take_get_one_clear_error(build, picture, kwargs, message):
    model = build()
    with pytest.raises(ValueError, match=message) as error:
        gw.capture(model, np.full(picture, 100, np.uint8), **kwargs)
    text = str(error.value)
    assert "InvalidArgumentError" not in text and "Traceback" not in text
    assert len(text.splitlines()) == 1


def test_a_mixed_size_input_is_fitted_on_its_fixed_axis():
    model = small_cnn(input_shape=(None, 32, 3))
    cap = gw.capture(model, np.full((20, 50, 3), 100, np.uint8))
    assert cap.image.shape == (20, 32, 3) and cap.cam().heatmap.shape == (20, 32)


def test_a_channels_first_model_is_refused_before_it_runs():
    inputs = keras.Input((3, 32, 32))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="c")(inputs)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="channels-first"):
        gw.capture(model, np.zeros((32, 32, 3), np.uint8))


def test_a_softmax_inside_a_lambda_is_reported_not_silently_used(image, lambda_softmax_model):
    with pytest.warns(UserWarning, match="could not be bypassed"):
        cap = gw.capture(lambda_softmax_model, image)
    assert cap.warnings and "softmax" in cap.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain softmax head is bypassed: no warning
        assert gw.capture(small_cnn(), image).warnings == ()


def test_probability_of_a_single_logit_is_its_sigmoid(image):
    model = small_cnn(classes=1, activation=None)
    with pytest.warns(UserWarning, match="one output unit"):
        cap = gw.capture(model, image, score="probability")
    logit = gw.capture(model, image).scores[0]
    assert cap.scores[0] == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-5)
    assert cap.cam().heatmap.max() == 1.0  # not the all-zero map of a softmax over one unit


# --- 10. argument checks -----------------------------------------------------------------


def test_capture_and_fuse_arguments(image):
    model = small_cnn()
    with pytest.raises(ValueError, match="layers must be 'all', a layer name or a list"):
        gw.capture(model, image, layers=7)
    cap = gw.capture(model, image)
    assert cap.fuse("conv1").layer == "conv1"
    with pytest.raises(ValueError, match="at least one layer"):
        cap.fuse([])
    fused = cap.fuse(["conv1", "conv2"], method="gradcam", pooling="max", channels="top")
    assert (fused.pooling, fused.channels) == ("max", "top")


def test_an_empty_layer_output_is_reported_as_a_too_small_image():
    model = small_cnn(input_shape=(None, None, 3), padding="valid")
    with pytest.raises(ValueError, match="too small") as error:
        gw.capture(model, np.full((5, 5, 3), 100, np.uint8))  # conv2 would be 0x0
    assert "Graph execution error" not in str(error.value)
    assert not str(error.value).rstrip().endswith(":")


def test_compiled_passes_per_model_are_bounded(image):
    from gradcam_widget.engine import MAX_TRACES

    model = small_cnn()
    engine = engine_for(model)
    cap = gw.capture(model, image)
    for layer in cap.layers:  # one (layer list, score) pair per trace, as a widget asks
        for score in ("logit", "probability"):
            gw.capture(model, image, score=score, layers=[layer])
    assert engine.traces > MAX_TRACES and len(engine._functions) <= MAX_TRACES


def test_a_nested_tap_gives_the_outer_one_back():
    from gradcam_widget.engine.tapping import leaf_layers, tapped

    model = small_cnn()
    leaves = leaf_layers(model)
    with tapped(leaves, model) as outer:
        with tapped(leaves[:1], None):
            pass
        logits = model(np.full((1, 32, 32, 3), 50.0, np.float32)).numpy()
    assert set(outer) == {"conv1", "pool1", "conv2", "gap", "head"}
    assert not np.allclose(logits.sum(axis=1), 1.0)  # the softmax is still bypassed
    assert np.allclose(model(np.full((1, 32, 32, 3), 50.0, np.float32)).numpy().sum(), 1.0)

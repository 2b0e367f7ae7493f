"""The compiled capture against a plain eager GradientTape implementation written here."""

import numpy as np
import pytest
from longhand import OPTIONS, reference_cam

import gradcam_widget as gw
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._tf import keras, tf

# --- a straightforward reference, one layer at a time, eager ---------------------------


def reference_tensors(feature_model, head, image, class_index, squash=None):
    """Eager tape: ``feature_model`` maps the input to ``[A, features]``; ``head`` maps
    ``features`` to logits. Returns A, dA, scores (logits, or squashed when asked)."""
    x = tf.constant(image[None].astype(np.float32))
    with tf.GradientTape() as tape:
        activations, features = feature_model(x, training=False)
        tape.watch(activations)
        logits = head(features)
        scores = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid, None: tf.identity}[squash](
            logits
        )
        target = scores[0, class_index]
    gradients = tape.gradient(target, activations)
    return activations[0].numpy(), gradients[0].numpy(), scores[0].numpy()


def dense_head(layer):
    """Logits of a Dense layer computed longhand from its weights (bypasses its softmax)."""
    kernel, bias = (w.numpy() for w in layer.weights)
    return lambda features: tf.matmul(features, kernel) + bias


def assert_cam_matches(res, activations, gradients, size, options):
    """``res`` is the longhand CAM of ``(pooling, channels, order) = options``."""
    raw, heatmap, weights = reference_cam(activations, gradients, size, options)
    scale = max(float(np.abs(raw).max()), 1e-12)
    np.testing.assert_allclose(res.raw / scale, raw / scale, atol=2e-4)
    np.testing.assert_allclose(
        res.weights, weights, rtol=2e-3, atol=2e-4 * max(float(np.abs(weights).max()), 1e-12)
    )
    np.testing.assert_allclose(res.heatmap, heatmap, atol=2e-3)


# --- tiny models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(make_cnn):
    """Rescaling, two convolutions, a GAP and a softmax head of 4 classes, 32 x 32 input."""
    return make_cnn(rescaling=True, name="tiny")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, (32, 32, 3)).astype(np.uint8)


def test_layers_default_layer_and_shapes(tiny, image):
    cap = gw.capture(tiny, image)
    assert cap.layers == ("rescaling", "conv1", "pool1", "conv2")
    assert cap.default_layer == "conv2"
    assert cap.activations().shape == cap.gradients().shape == (16, 16, 12)
    assert cap.scores.shape == (4,) and cap.scores.dtype == np.float32
    assert cap.class_index == int(np.argmax(cap.scores))
    assert cap.image.shape == (32, 32, 3) and cap.image.dtype == np.uint8
    res = cap.cam()
    assert res.raw.shape == (16, 16) and res.heatmap.shape == (32, 32)
    assert res.weights.shape == (12,) and res.layer == "conv2"


@pytest.mark.parametrize(("pooling", "channels", "order"), OPTIONS)
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_tiny_model_agrees_with_eager_tape_for_every_option(
    tiny, image, layer, pooling, channels, order
):
    cap = gw.capture(tiny, image, class_index=2)
    feature_model = keras.Model(
        tiny.inputs, [tiny.get_layer(layer).output, tiny.get_layer("gap").output]
    )
    activations, gradients, logits = reference_tensors(
        feature_model, dense_head(tiny.get_layer("head")), image, 2
    )
    np.testing.assert_allclose(cap.scores, logits, rtol=1e-4, atol=1e-5)
    res = cap.cam(layer, pooling=pooling, channels=channels, order=order)
    assert res.class_index == 2
    assert_cam_matches(res, activations, gradients, (32, 32), (pooling, channels, order))


def test_probability_score_differentiates_the_softmax_output(tiny, image):
    cap = gw.capture(tiny, image, class_index=1, score="probability")
    feature_model = keras.Model(
        tiny.inputs, [tiny.get_layer("conv2").output, tiny.get_layer("gap").output]
    )
    activations, gradients, probabilities = reference_tensors(
        feature_model, dense_head(tiny.get_layer("head")), image, 1, squash="softmax"
    )
    np.testing.assert_allclose(cap.scores, probabilities, rtol=1e-4, atol=1e-6)
    assert cap.scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert_cam_matches(
        cap.cam(), activations, gradients, (32, 32), ("mean", "weighted", "relu_first")
    )


@pytest.mark.parametrize("head", ["softmax_layer", "activation_layer", "sigmoid_dense", "linear"])
def test_logit_is_found_behind_every_kind_of_softmax_head(image, head):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(
        3, activation="sigmoid" if head == "sigmoid_dense" else None, name="dense"
    )
    x = dense(x)
    if head == "softmax_layer":
        x = keras.layers.Softmax()(x)
    elif head == "activation_layer":
        x = keras.layers.Activation("softmax")(x)
    model = keras.Model(inputs, x)
    cap = gw.capture(model, image, class_index=0)
    feature_model = keras.Model(
        model.inputs, [model.get_layer("conv").output, model.get_layer("gap").output]
    )
    activations, gradients, logits = reference_tensors(feature_model, dense_head(dense), image, 0)
    np.testing.assert_allclose(cap.scores, logits, rtol=1e-4, atol=1e-5)
    assert_cam_matches(
        cap.cam(), activations, gradients, (32, 32), ("mean", "weighted", "relu_first")
    )
    # and the model itself still outputs what it did: nothing was left patched
    assert np.allclose(model(image[None].astype("float32")).numpy().sum(), 1.0) == (
        head in ("softmax_layer", "activation_layer")
    )


def test_sequential_model(image):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(5, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="p1"),
            keras.layers.Conv2D(7, 3, activation="relu", name="c2"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    cap = gw.capture(model, image, class_index=1)
    assert cap.layers == ("c1", "p1", "c2", "drop") and cap.default_layer == "c2"
    feature_model = keras.Model(
        model.inputs, [model.get_layer("c2").output, model.get_layer("gap").output]
    )
    activations, gradients, logits = reference_tensors(
        feature_model, dense_head(model.get_layer("head")), image, 1
    )
    np.testing.assert_allclose(cap.scores, logits, rtol=1e-4, atol=1e-5)
    for pooling, channels, order in OPTIONS:
        res = cap.cam("c2", pooling=pooling, channels=channels, order=order)
        assert_cam_matches(res, activations, gradients, (32, 32), (pooling, channels, order))


def nested_models():
    """A pretrained-style base inside a Sequential head and inside a Functional head."""
    keras.utils.set_random_seed(5)
    base_in = keras.Input((40, 56, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b_conv1")(base_in)
    x = keras.layers.MaxPooling2D(name="b_pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv2")(x)
    base = keras.Model(base_in, x, name="base")
    sequential = keras.Sequential(
        [
            keras.Input((40, 56, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="seq_head",
    )
    inputs = keras.Input((40, 56, 3))
    features = base(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(pooled)
    functional = keras.Model(inputs, outputs, name="fun_head")
    return base, sequential, functional


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_nested_base_model_non_square(kind):
    base, sequential, functional = nested_models()
    model = sequential if kind == "sequential" else functional
    image = np.random.default_rng(6).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    cap = gw.capture(model, image, class_index=2)
    assert cap.layers == ("base/b_conv1", "base/b_pool", "base/b_conv2")
    assert cap.default_layer == "base/b_conv2"
    assert cap.resolve("b_conv1") == "base/b_conv1"  # a unique bare inner name works

    feature_model = keras.Model(base.inputs, [base.get_layer("b_conv1").output, base.output])
    head = model.get_layer("head")

    def head_logits(base_output):
        return dense_head(head)(tf.reduce_mean(base_output, axis=(1, 2)))

    activations, gradients, logits = reference_tensors(feature_model, head_logits, image, 2)
    np.testing.assert_allclose(cap.scores, logits, rtol=1e-4, atol=1e-5)
    for pooling, channels, order in OPTIONS:
        res = cap.cam("b_conv1", pooling=pooling, channels=channels, order=order)
        assert res.heatmap.shape == (40, 56) and res.raw.shape == (40, 56)
        assert_cam_matches(res, activations, gradients, (40, 56), (pooling, channels, order))


def test_same_shape_images_and_classes_do_not_retrace(tiny):
    rng = np.random.default_rng(8)
    gw.capture(tiny, rng.integers(0, 256, (32, 32, 3)))
    engine = engine_for(tiny)
    traces, passes = engine.traces, engine.passes
    for class_index in (None, 0, 3):
        gw.capture(tiny, rng.integers(0, 256, (32, 32, 3)), class_index=class_index)
    assert engine.traces == traces
    assert engine.passes == passes + 3


def test_restricted_layers_backprop_less_and_fill_in_on_demand(tiny, image):
    full = gw.capture(tiny, image, class_index=1)
    engine = engine_for(tiny)
    partial = gw.capture(tiny, image, class_index=1, layers=["conv2"])
    passes = engine.passes
    np.testing.assert_allclose(partial.gradients("conv2"), full.gradients("conv2"), rtol=1e-5)
    assert engine.passes == passes  # conv2 was recorded by the first pass
    np.testing.assert_allclose(
        partial.gradients("conv1"), full.gradients("conv1"), rtol=1e-5, atol=1e-7
    )
    assert engine.passes == passes + 1  # conv1 needed one more pass
    partial.gradients("rescaling")
    assert engine.passes == passes + 1  # ... which filled in every layer


def test_grad_cam_is_capture_then_cam(tiny, image):
    expected = gw.capture(tiny, image, class_index=3).cam(
        "conv1", pooling="max", order="resize_first"
    )
    res = gw.grad_cam(
        tiny, image, class_index=3, layer="conv1", pooling="max", order="resize_first"
    )
    assert isinstance(res, gw.CamResult)
    np.testing.assert_allclose(res.heatmap, expected.heatmap, atol=1e-6)
    np.testing.assert_allclose(res.raw, expected.raw, rtol=1e-5, atol=1e-6)
    default = gw.grad_cam(tiny, image)
    assert default.layer == "conv2"


def test_image_conversions(tiny):
    rng = np.random.default_rng(9)
    gray = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    cap = gw.capture(tiny, gray)
    assert cap.image.shape == (32, 32, 3)
    np.testing.assert_array_equal(cap.image[..., 0], gray)
    rgba = rng.integers(0, 256, (32, 32, 4)).astype(np.uint8)
    np.testing.assert_array_equal(gw.capture(tiny, rgba).image, rgba[..., :3])
    floats = rng.uniform(0, 255, (64, 48, 3))  # another size: resized to the model input
    cap = gw.capture(tiny, floats)
    assert cap.image.shape == (32, 32, 3) and cap.cam().heatmap.shape == (32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": np.zeros((1, 32, 32, 3))}, "pass image[0]"),
        ({"image": np.zeros((32, 32, 5))}, "(H, W, 3)"),
        ({"image": np.zeros((32,))}, "(H, W, 3)"),
        ({"image": np.full((32, 32, 3), np.nan)}, "NaN"),
        ({"image": np.array([["a"]])}, "dtype"),
        ({"class_index": 4}, "0..3"),
        ({"class_index": -1}, "0..3"),
        ({"class_index": 1.5}, "int"),
        ({"score": "softmax"}, "'logit', 'probability'"),
        ({"layers": ["nope"]}, "candidate layers are: rescaling, conv1, pool1, conv2"),
    ],
)
def test_bad_input_raises_a_clear_value_error_and_caches_nothing(tiny, image, kwargs, message):
    engine = engine_for(tiny)
    gw.capture(tiny, image)
    passes = engine.passes
    arguments = {"image": image, **kwargs}
    with pytest.raises(ValueError) as error:
        gw.capture(tiny, **arguments)
    assert message in str(error.value)
    assert engine.passes == passes  # rejected before the model ran
    assert gw.capture(tiny, image).cam().heatmap.shape == (32, 32)  # still works after


def test_bad_cam_arguments_name_the_choices(tiny, image):
    cap = gw.capture(tiny, image)
    with pytest.raises(ValueError, match="candidate layers are: rescaling, conv1, pool1, conv2"):
        cap.cam("block5_conv3")
    with pytest.raises(ValueError, match="'mean', 'max'"):
        cap.cam(pooling="avg")
    with pytest.raises(ValueError, match="'relu_first', 'resize_first'"):
        cap.cam(order="relu")
    with pytest.raises(ValueError, match="keras.Model"):
        gw.capture("vgg16", image)


# --- the article's setting: VGG16 (random weights) -----------------------------------


@pytest.fixture(scope="module")
def vgg16():
    keras.utils.set_random_seed(0)
    return keras.applications.VGG16(weights=None)


@pytest.mark.slow
def test_vgg16_article_shapes_and_default_layer(vgg16):
    image = np.random.default_rng(10).integers(0, 256, (224, 224, 3)).astype(np.uint8)
    cap = gw.capture(vgg16, image)
    assert cap.default_layer == "block5_conv3"
    conv_layers = [name for name in cap.layers if "conv" in name]
    assert len(conv_layers) == 13
    assert cap.activations("block5_conv3").shape == (14, 14, 512)
    assert cap.gradients("block5_conv3").shape == (14, 14, 512)
    res = cap.cam()
    assert res.weights.shape == (512,) and res.raw.shape == (14, 14)
    assert res.heatmap.shape == (224, 224)
    assert cap.cam("block4_conv3").raw.shape == (28, 28)
    assert cap.scores.shape == (1000,)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["block5_conv3", "block4_conv3"])
def test_vgg16_agrees_with_eager_tape_for_every_option(vgg16, layer):
    image = np.random.default_rng(11).integers(0, 256, (224, 224, 3)).astype(np.uint8)
    preprocess = keras.applications.vgg16.preprocess_input
    cap = gw.capture(vgg16, image, class_index=281, preprocess=preprocess)
    feature_model = keras.Model(
        vgg16.inputs, [vgg16.get_layer(layer).output, vgg16.get_layer("fc2").output]
    )
    prepared = preprocess(image[None].astype(np.float32).copy())[0]
    activations, gradients, logits = reference_tensors(
        feature_model, dense_head(vgg16.get_layer("predictions")), prepared, 281
    )
    np.testing.assert_allclose(cap.scores, logits, rtol=1e-3, atol=1e-3 * np.abs(logits).max())
    for pooling, channels, order in OPTIONS:
        res = cap.cam(layer, pooling=pooling, channels=channels, order=order)
        assert_cam_matches(res, activations, gradients, (224, 224), (pooling, channels, order))

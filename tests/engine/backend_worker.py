"""One backend's half of the backend matrix (``tests/test_backends.py`` runs it per backend).

Run as ``KERAS_BACKEND=jax python tests/backend_worker.py OUT.npz [CHECK ...]`` (or
``tensorflow``, ``torch``; each ``CHECK`` names one ``*_check`` function to run instead of
all of them, e.g. ``errors_check``). It builds the matrix's models with the same seeded
weights on either backend, checks the package's maps against a longhand reference computed
here with the backend's own gradient (a ``GradientTape`` on TensorFlow, ``jax.grad`` on JAX)
over the model split at the explained layer, exercises every method, option and target,
saliency, the metrics, a batch, an audit, the widget and the errors a failing model gets,
and saves every map to ``OUT.npz`` so the parent can compare the two backends. A failed check
raises: the exit status is not 0 and the message is on stderr. The last line of stdout is a
JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the longhand reference

from longhand import OPTIONS, reference_cam  # noqa: E402

import gradcam_widget as gw  # noqa: E402
from gradcam_widget.engine._keras import keras  # noqa: E402
from gradcam_widget.engine.inputs import ModelCheckError  # noqa: E402

ops = keras.ops
warnings.filterwarnings("ignore", message="The structure of `inputs`")
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
maps: dict[str, np.ndarray] = {}
checks: list[str] = []


# --- the same weights on every backend ---------------------------------------------------


def seed_weights(model, seed: int) -> None:
    """Every variable from one seeded generator: He-normal kernels, small biases, batch-norm
    statistics near 1 -- equal on every backend (Keras's own initialisers are not)."""
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.path
        if "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif "moving_mean" in name or "beta" in name or "bias" in name or len(shape) <= 1:
            value = rng.normal(0.0, 0.05, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        values.append(value.astype(np.float32))
    model.set_weights(values)


# --- the longhand reference ----------------------------------------------------------------


def numpy(value) -> np.ndarray:
    """A tensor or variable of any backend as a numpy array."""
    return np.asarray(keras.ops.convert_to_numpy(value))


def gradient_of(function, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(function(point), d sum(function) / d point)`` with the backend's own gradient."""
    if BACKEND == "torch":
        import torch

        tensor = torch.tensor(point, requires_grad=True)
        value = function(tensor)
        (gradient,) = torch.autograd.grad(value.sum(), [tensor])
        return value.detach().numpy(), gradient.numpy()
    if BACKEND == "jax":
        import jax

        value, gradient = jax.value_and_grad(lambda x: ops.sum(function(x)))(point)
        return np.asarray(function(point)), np.asarray(gradient)
    import tensorflow as tf

    tensor = tf.constant(point)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        value = function(tensor)
        total = tf.reduce_sum(value)
    return value.numpy(), tape.gradient(total, tensor).numpy()


def check_against_longhand(name, cap, layer, activations, gradients, size):
    for options in OPTIONS:
        pooling, channels, order = options
        res = cap.cam(layer, pooling=pooling, channels=channels, order=order)
        raw, heatmap, weights = reference_cam(activations, gradients, size, options)
        scale = max(float(np.abs(raw).max()), 1e-12)
        np.testing.assert_allclose(res.raw / scale, raw / scale, atol=2e-4, err_msg=name)
        np.testing.assert_allclose(res.heatmap, heatmap, atol=2e-3, err_msg=name)
        wscale = max(float(np.abs(weights).max()), 1e-12)
        np.testing.assert_allclose(res.weights, weights, rtol=2e-3, atol=2e-4 * wscale)
        maps[f"{name}|{layer}|{'-'.join(options)}"] = res.heatmap
    checks.append(f"{name}: {layer} equals the longhand reference for {len(OPTIONS)} options")


def chain_reference(model, layer, image, class_index, head_layers, dense):
    """Activations at ``layer`` and the gradient of class ``class_index``'s logit there, for
    a model that is a chain after ``layer``: ``head_layers`` then ``dense`` (its softmax left
    out, its logit computed from its weights)."""
    features = keras.Model(model.inputs, model.get_layer(layer).output)
    activations = numpy(features(image[None].astype(np.float32), training=False))
    kernel, bias = (numpy(weight) for weight in dense.weights)

    def logit(a):
        x = a
        for step in head_layers:
            x = step(x, training=False)
        return (ops.matmul(x, kernel) + ops.convert_to_tensor(bias))[:, class_index]

    _, gradients = gradient_of(logit, activations)
    return activations[0], gradients[0]


# --- the models ------------------------------------------------------------------------------


def vgg16_check():
    model = keras.applications.VGG16(weights=None)
    seed_weights(model, 16)
    image = np.random.default_rng(11).integers(0, 256, (224, 224, 3)).astype(np.uint8)
    preprocess = keras.applications.vgg16.preprocess_input
    prepared = preprocess(image[None].astype(np.float32).copy())[0]
    cap = gw.capture(model, image, class_index=281, preprocess=preprocess)
    assert cap.default_layer == "block5_conv3", cap.default_layer
    names = [layer.name for layer in model.layers]
    for layer in ("block5_conv3", "block4_conv3"):
        after = model.layers[names.index(layer) + 1 : -1]
        activations, gradients = chain_reference(
            model, layer, prepared, 281, after, model.get_layer("predictions")
        )
        check_against_longhand("vgg16", cap, layer, activations, gradients, (224, 224))


def mobilenet_check():
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(96, 96, 3), alpha=0.35
    )
    model = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, activation="softmax", name="head"),
        ]
    )
    seed_weights(model, 2)
    image = np.random.default_rng(4).integers(0, 256, (96, 96, 3)).astype(np.uint8)
    prepared = image.astype(np.float32) / 127.5 - 1.0
    cap = gw.capture(model, image, class_index=3, preprocess=lambda batch: batch / 127.5 - 1.0)
    last = f"{base.name}/out_relu"
    assert cap.default_layer == last, cap.default_layer
    base_layers = [layer for layer in base.layers if layer.name == "out_relu"]
    assert base_layers
    features = keras.Model(base.inputs, base.output)
    activations = numpy(features(prepared[None], training=False))
    kernel, bias = (numpy(weight) for weight in model.get_layer("head").weights)
    _, gradients = gradient_of(
        lambda a: (ops.matmul(ops.mean(a, axis=(1, 2)), kernel) + ops.convert_to_tensor(bias))[
            :, 3
        ],
        activations,
    )
    check_against_longhand("mobilenet", cap, last, activations[0], gradients[0], (96, 96))
    for layer in cap.layers[-12::3]:  # every method at a few depths: the backends compared
        for method in METHODS:
            maps[f"mobilenet|{layer}|{method}"] = cap.cam(layer, method=method).heatmap
    for layer in cap.layers:  # what the engine returns, at every layer, to its own scale
        for kind, array in (("A", cap.activations(layer)), ("dA", cap.gradients(layer))):
            maps[f"scaled|mobilenet|{layer}|{kind}"] = array / max(np.abs(array).max(), 1e-30)
    checks.append(f"mobilenet: every method at {len(cap.layers[-12::3])} layers")


def tiny_cnn(head="softmax", lam=False):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if lam:
        x = keras.layers.Dense(4, name="logits")(x)
        outputs = keras.layers.Lambda(lambda t: keras.ops.softmax(t), name="squash")(x)
    else:
        outputs = keras.layers.Dense(4, activation=head, name="head")(x)
    model = keras.Model(inputs, outputs)
    seed_weights(model, 7)
    return model


def softmax_and_options_check():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    model = tiny_cnn()
    # the logit behind a softmax head, and the probability through it
    for score in ("logit", "probability"):
        cap = gw.capture(model, image, class_index=2, score=score)
        prepared = image[None].astype(np.float32)
        features = keras.Model(model.inputs, model.get_layer("conv2").output)
        activations = numpy(features(prepared))
        kernel, bias = (numpy(weight) for weight in model.get_layer("head").weights)

        def head(a, score=score, kernel=kernel, bias=bias):
            logits = ops.matmul(ops.mean(a, axis=(1, 2)), kernel) + ops.convert_to_tensor(bias)
            return (ops.softmax(logits) if score == "probability" else logits)[:, 2]

        _, gradients = gradient_of(head, activations)
        check_against_longhand(
            f"tiny-{score}", cap, "conv2", activations[0], gradients[0], (32, 32)
        )
        maps[f"tiny-{score}|scores"] = cap.scores
    # the first layer, which has no weights: the chain after it written out
    cap = gw.capture(model, image, class_index=2)
    rescaled = numpy(keras.Model(model.inputs, model.get_layer("rescaling").output)(prepared))
    after = [model.get_layer(name) for name in ("conv1", "pool1", "conv2", "gap")]
    activations, gradients = chain_reference(
        model, "rescaling", image.astype(np.float32), 2, after, model.get_layer("head")
    )
    np.testing.assert_allclose(activations, rescaled[0], rtol=1e-6)
    assert np.abs(gradients).max() > 0
    check_against_longhand("tiny-rescaling", cap, "rescaling", activations, gradients, (32, 32))
    # a softmax inside a Lambda cannot be bypassed: read off the traced program, and said
    lam = tiny_cnn(lam=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cap = gw.capture(lam, image, class_index=1)
    said = " ".join(str(warning.message) for warning in caught)
    assert "softmax" in said, f"no softmax warning for a Lambda softmax head: {said!r}"
    maps["lambda|probability-scores"] = cap.scores
    sigmoid = tiny_cnn(head="sigmoid")
    cap = gw.capture(sigmoid, image, class_index=1, score="probability")
    maps["sigmoid|probability-heatmap"] = cap.cam().heatmap
    checks.append("softmax/sigmoid heads: logit, probability, Lambda softmax said")
    # every method and option on one capture
    cap = gw.capture(model, image, class_index=1)
    for method in METHODS:
        for layer in cap.layers:
            maps[f"tiny|{layer}|{method}"] = cap.cam(layer, method=method).heatmap
    for options in OPTIONS:
        pooling, channels, order = options
        res = cap.cam("conv1", pooling=pooling, channels=channels, order=order)
        maps[f"tiny|conv1|{'-'.join(options)}"] = res.heatmap
    fused = cap.fuse()
    maps["tiny|fused"] = fused.heatmap
    # input gradients: vanilla and guided backpropagation, and Guided Grad-CAM
    for kind in ("vanilla", "guided"):
        maps[f"tiny|saliency-{kind}"] = np.asarray(gw.saliency(model, image, kind=kind))
    maps["tiny|guided-gradcam"] = np.asarray(gw.guided_grad_cam(model, image, class_index=1))
    checks.append("tiny: every method, option, fusion, vanilla and guided saliency")
    # targets: a class per image, a callable, a regression value, a region
    images = np.random.default_rng(5).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    batch = gw.explain(model, images, targets=[0, 1, 2, 3, 1], batch_size=4)
    maps["tiny|explain-classes"] = batch.heatmaps
    for index in range(5):  # a batch equals its images one by one
        single = gw.capture(model, images[index], class_index=[0, 1, 2, 3, 1][index]).cam()
        np.testing.assert_allclose(batch.heatmaps[index], single.heatmap, atol=1e-4)
    custom = gw.explain(model, images, targets=lambda out: out[:, 0] - out[:, 3])
    maps["tiny|explain-callable"] = custom.heatmaps
    regression = regression_model()
    value = gw.capture(regression, image, target=gw.targets.Regression())
    maps["regression|value"] = value.cam().heatmap
    segmenter = segmentation_model()
    mask = np.zeros((32, 32), bool)
    mask[4:20, 6:24] = True
    region = gw.capture(segmenter, image, target=gw.targets.Region(1, mask)).cam()
    maps["segmentation|region"] = region.heatmap
    checks.append("targets: per-image classes (batch = single), callable, Regression, Region")
    # metrics (forward passes), on the backend
    heatmap = cap.cam().heatmap
    deletion = gw.metrics.deletion(model, image, heatmap, class_index=1, steps=8)
    insertion = gw.metrics.insertion(model, image, heatmap, class_index=1, steps=8)
    maps["tiny|deletion"] = np.asarray(deletion.scores)
    maps["tiny|insertion"] = np.asarray(insertion.scores)
    checks.append("metrics: deletion and insertion curves")
    return model, images


def regression_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="value")(x))
    seed_weights(model, 8)
    return model


def segmentation_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="enc")(inputs)
    outputs = keras.layers.Conv2D(3, 1, name="classes")(x)
    model = keras.Model(inputs, outputs)
    seed_weights(model, 9)
    return model


def widget_and_audit_check(model, images):
    explorer = gw.CamExplorer(model, images[0])
    explorer.layer = "conv1"
    explorer.method = "layercam"
    explorer.pooling = "max"
    explorer.class_index = 2
    status = explorer.status.value if hasattr(explorer, "status") else ""
    assert "⚠" not in status and "rror" not in status, status
    maps["widget|heatmap"] = explorer.capture.cam("conv1", method="layercam", pooling="max").heatmap
    explorer.close()
    with tempfile.TemporaryDirectory() as folder:
        results = gw.audit(model, images, out=folder, progress=False, batch_size=4)
        table = results.table() if callable(results.table) else results.table
        maps["audit|predicted"] = np.asarray(table["predicted_class"])
        maps["audit|peak"] = np.asarray(table[["peak_y", "peak_x"]])
    checks.append("widget settings switched; an audit of 5 images")


def vit_check():
    """The shipped ViT: token layers found, read as 1 class token + 14x14 patches, the default
    layer by the reaching rule, every method and fusion."""
    entry = gw.models.load("shapes_vit")
    image = gw.data.scene(1000003).image
    cap = gw.capture(entry, image)
    assert cap.default_layer == "norm", cap.default_layer
    assert cap.tokens("norm") == (1, 14, 14), cap.tokens("norm")
    reaching = gw.engine.engine_for(entry).reaching_tokens((1, 224, 224, 3))
    maps["vit|reaching"] = np.array([len(reaching or ())])
    for method in METHODS:
        maps[f"vit|norm|{method}"] = cap.cam(method=method).heatmap
    maps["vit|fused"] = cap.fuse().heatmap
    checks.append("shapes_vit: token layers, the default layer, every method, fusion")


def review_findings_check():
    """What a hostile review found on JAX and PyTorch, each compared across the backends."""
    image = np.random.default_rng(12).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    # a mixed_bfloat16 model whose Dense softmax is not bypassed (score="probability"): its
    # softmax must be found (JAX sums a float32 copy of the exponentials) and not applied twice
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(5, activation="softmax", name="head")(x)
        mixed = keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(before)
    seed_weights(mixed, 13)
    own = numpy(mixed(image[None].astype(np.float32), training=False))[0].astype(np.float32)
    cap = gw.capture(mixed, image, class_index=2, score="probability")
    np.testing.assert_allclose(cap.scores, own, atol=1e-2, err_msg="softmax applied twice")
    maps["mixed|probability-scores"] = cap.scores
    # a layer called twice: its map is the last call's (activations and gradient alike); and
    # a layer called at two scales
    for kind in ("twice", "scales"):
        inputs = keras.Input((16, 16, 3))
        shared = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="shared")
        x = shared(inputs)
        if kind == "twice":
            x = shared(x)
        else:
            small = shared(keras.layers.AveragePooling2D(2, name="half")(inputs))
            x = x + keras.layers.UpSampling2D(name="up")(small)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
        seed_weights(model, 14)
        cap = gw.capture(model, image, class_index=1)
        maps[f"shared-{kind}|activations"] = cap.activations("shared")
        maps[f"shared-{kind}|gradients"] = cap.gradients("shared")
    # a layer called inside a loop (a subclassed model) is not explained, and breaks nothing
    loop = LoopModel()
    loop(np.zeros((1, 16, 16, 3), np.float32))
    seed_weights(loop, 15)
    cap = gw.capture(loop, image, class_index=0)
    maps["loop|first"] = cap.cam(cap.layers[0]).heatmap
    # per-image data at a batch that is not a power of two: a class list, one mask per image,
    # a callable that closes over one row per image
    images = np.random.default_rng(16).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Conv2D(4, 1, name="classes"),
        ]
    )
    seed_weights(model, 17)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, :8], masks[1, 8:], masks[2, :, :8] = True, True, True
    region = gw.explain(model, images, targets=gw.targets.Region(1, masks), batch_size=3)
    maps["per-image|region"] = region.heatmaps
    classifier = tiny_cnn()
    onehot = np.eye(4, dtype=np.float32)[[2, 0, 3]]
    rows = gw.explain(
        classifier,
        np.random.default_rng(18).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8),
        targets=lambda outputs: ops.sum(ops.multiply(outputs, onehot), axis=-1),
        batch_size=3,
    )
    maps["per-image|callable"] = rows.heatmaps
    # facts are kept for a bounded number of image sizes
    free = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    seed_weights(free, 19)
    for side in range(8, 48):
        gw.capture(free, np.zeros((side, side, 3), np.uint8), class_index=0)
    engine = gw.engine.engine_for(free)
    stores = [engine._facts, engine._reaching, getattr(engine, "_traced", {})]
    assert all(len(store) <= 4 * gw.engine.MAX_TRACES for store in stores), [
        len(store) for store in stores
    ]
    # a subclassed model whose call() takes no training argument
    bare = BareCallModel()
    bare(np.zeros((1, 16, 16, 3), np.float32))
    seed_weights(bare, 20)
    maps["bare-call|gradcam"] = gw.capture(bare, image, class_index=1).cam().heatmap
    # layers under keras.RematScope: on JAX each runs in a jax.checkpoint of its own, whose
    # outputs cannot be read from outside, and TensorFlow rematerialises only eagerly: said
    # plainly on both (PyTorch explains it)
    with keras.RematScope(mode="full"):
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        remat = keras.Model(inputs, keras.layers.Dense(3)(x))
    seed_weights(remat, 21)
    if BACKEND in ("jax", "tensorflow"):
        try:
            gw.capture(remat, image, class_index=0)
        except ModelCheckError as error:
            assert "RematScope" in str(error), error
        else:
            raise AssertionError(f"a RematScope model on {BACKEND} gave no clear refusal")
    else:
        maps_only_here = gw.capture(remat, image, class_index=0).cam().heatmap
        assert np.isfinite(maps_only_here).all()
    checks.append("review: bf16 softmax, shared layers, a loop, per-image data, bounded facts")
    checks.append("review: a call() without training, RematScope said on TensorFlow and JAX")


# --- errors: one line naming the model and what failed; layer names TensorFlow refuses ------


def one_line_error(call, *needles, cause=None):
    """Run ``call``; it must raise one ``ValueError`` of one line holding every needle (and
    no ANSI code or Keras call context), chained from a ``cause`` instance when given."""
    try:
        call()
    except ValueError as error:
        text = str(error)
        assert len(text.splitlines()) == 1, text
        assert "\x1b" not in text and "Arguments received" not in text, text
        assert "kwargs=" not in text and "Exception encountered" not in text, text
        for needle in needles:
            assert needle in text, (needle, text)
        if cause is not None:
            assert isinstance(error.__cause__, cause), repr(error.__cause__)
        return error
    raise AssertionError(f"no ValueError on {BACKEND}")


class FailingLayer(keras.layers.Layer):
    """A layer whose call raises ``ValueError("bad thing happened")``."""

    def call(self, x):
        raise ValueError("bad thing happened")

    def compute_output_shape(self, shape):
        return shape


def traced(tensor) -> bool:
    """Whether ``tensor`` is being traced (a TensorFlow graph, a JAX tracer); PyTorch traces
    nothing, so there the model is armed after it is built (see :class:`TracedFailModel`)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if BACKEND == "jax":
        import jax

        return isinstance(tensor, jax.core.Tracer)
    return False


class TracedFailModel(keras.Model):
    """A model that works eagerly and raises a multi-line RuntimeError with ANSI colours while
    traced (on PyTorch: once ``armed``)."""

    def __init__(self):
        super().__init__(name="traced_fail")
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3)
        self.armed = False

    def call(self, x):
        x = self.conv(x)
        if self.armed or traced(x):
            raise RuntimeError(
                "\x1b[31mcannot run in graph mode\x1b[0m\nsecond line\n\x1b[1mthird\x1b[0m"
            )
        return self.head(self.pool(x))


def pooled_model(name="pooled"):
    """Four same-padded conv + pooling blocks, then a 3 x 3 valid conv: any image size is
    taken, but it needs at least 48 x 48 pixels (the last conv needs a 3 x 3 grid)."""
    inputs = keras.Input((None, None, 3))
    x = inputs
    for block in range(4):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"c{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"p{block}")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name=name)
    seed_weights(model, 22)
    return model


class SubclassedValid(keras.Model):
    """Subclassed (no graph to follow): two valid 3 x 3 convs around a pooling, so at least
    8 x 8 pixels."""

    def __init__(self):
        super().__init__(name="valid_sub")
        self.first = keras.layers.Conv2D(4, 3, activation="relu", name="first")
        self.pool = keras.layers.MaxPooling2D(name="pool")
        self.second = keras.layers.Conv2D(4, 3, name="second")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(self.gap(self.second(self.pool(self.first(x)))))


def error_image() -> np.ndarray:
    return np.random.default_rng(23).integers(0, 256, (64, 64, 3)).astype(np.uint8)


def failing_layer_check():
    """A layer that raises: its own message, the model and the layer named; not too small."""
    image = error_image()
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(FailingLayer(name="bad")(x))
    failing = keras.Model(inputs, keras.layers.Dense(2)(x), name="failing_net")
    for call in (
        lambda: gw.grad_cam(failing, image),
        lambda: gw.grad_cam(failing, image[:16, :16]),
        lambda: gw.class_scores(failing, image[None], 0),
        lambda: gw.explain(failing, np.stack([image, image])),
    ):
        error = one_line_error(call, "failing_net", "'bad'", "bad thing happened", cause=ValueError)
        assert "too small" not in str(error), error
        assert str(error.__cause__) == "bad thing happened", repr(error.__cause__)
    checks.append("errors: a failing layer named, with its own message")


def traced_failure_check():
    """A model that fails only while traced (or armed), with a multi-line ANSI message."""
    image = error_image()[:16, :16]
    model = TracedFailModel()
    model(np.zeros((1, 16, 16, 3), np.float32))
    model.armed = BACKEND == "torch"
    for call in (
        lambda: gw.capture(model, image),
        lambda: gw.class_scores(model, image[None], 0),
    ):
        error = one_line_error(
            call, "traced_fail", "RuntimeError: cannot run in graph mode", cause=RuntimeError
        )
        assert "too small" not in str(error) and "second line" not in str(error), error
    checks.append("errors: a model failing while traced gets one line")


def too_small_check():
    """Images too small for a model that takes any size: said from the shapes."""
    image = error_image()
    pooled = pooled_model()
    for side, layer in ((8, "'p3'"), (20, "'last'"), (47, "'last'")):
        small = image[:side, :side]
        one_line_error(lambda small=small: gw.capture(pooled, small), "too small", layer)
        one_line_error(lambda small=small: gw.class_scores(pooled, small[None], 0), "too small")
    # (the layer named: with the image size left free, TensorFlow's trace knows no grid sizes
    # and its default layer is "last", a 1 x 1 grid, where JAX and PyTorch pick "c3")
    maps["too-small|48"] = gw.grad_cam(pooled, image[:48, :48], 0, layer="c3").heatmap
    sub = SubclassedValid()
    sub(np.zeros((1, 32, 32, 3), np.float32))
    seed_weights(sub, 26)
    for side in (3, 6, 7):  # a layer that raises, or an output with no pixels (NaN)
        small = image[:side, :side]
        one_line_error(lambda small=small: gw.capture(sub, small), "too small", "valid_sub")
    maps["too-small|subclassed-8"] = gw.grad_cam(sub, image[:8, :8], 0, layer="first").heatmap
    checks.append("errors: an image too small said from the shapes")


def scope_names_check():
    """Layers named "conv 1" and "é" (legal in Keras): explained on every backend."""
    image = error_image()[:32, :32]
    for name in ("conv 1", "é"):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name=name)(inputs)
        x = keras.layers.Conv2D(4, 3, activation="relu", name=f"{name} again")(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"{name} pool")(x)
        named = keras.Model(inputs, keras.layers.Dense(3, name=f"{name} head")(x))
        seed_weights(named, 24)
        cap = gw.capture(named, image, class_index=1)
        assert cap.layers == (name, f"{name} again"), cap.layers
        maps[f"names|{name}|gradcam"] = gw.grad_cam(named, image, 1, layer=name).heatmap
        maps[f"names|{name}|scorecam"] = cap.cam(method="scorecam").heatmap
        maps[f"names|{name}|vanilla"] = cap.saliency("vanilla")
        maps[f"names|{name}|scores"] = gw.class_scores(named, image[None], 1)
    checks.append("errors: layers named as TensorFlow's scopes refuse are explained")


def nan_index_check():
    """A NaN image among several: which one, in an array, a list and a stream."""
    batch = np.random.default_rng(25).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    batch[3, 4, 5, 0] = np.nan
    classifier = tiny_cnn()
    one_line_error(lambda: gw.explain(classifier, batch), "image 3 of 5", "NaN")
    one_line_error(lambda: gw.explain(classifier, list(batch)), "image 3 of 5", "NaN")
    stream = (picture for picture in batch)
    one_line_error(
        lambda: list(gw.iter_explain(classifier, stream, batch_size=2)),
        "image 3 (from the iterator",
        "NaN",
    )
    one_line_error(lambda: gw.class_scores(classifier, batch, 0), "image 3 of 5", "NaN")
    checks.append("errors: a NaN image named by its index")


class ArmedLayer(keras.layers.Layer):
    """A leaf layer whose call raises ``make()`` once ``make`` is set."""

    make = None

    def call(self, x):
        if self.make is not None:
            raise self.make()
        return x

    def compute_output_shape(self, shape):
        return shape


class CatchingModel(keras.Model):
    """A model that catches its layer's ValueError and raises a RuntimeError of its own."""

    def __init__(self):
        super().__init__(name="catcher")
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.bad = ArmedLayer(name="bad")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def call(self, x):
        x = self.conv(x)
        try:
            x = self.bad(x)
        except ValueError:
            raise RuntimeError("model's own fallback failed")  # noqa: B904 - the case itself
        return self.head(self.gap(x))


def handled_failure_check():
    """A model that catches its layer's error and raises its own: its own message and
    cause, the layer's handled error not taken for it."""
    image = error_image()[:32, :32]
    model = CatchingModel()
    model(np.zeros((1, 32, 32, 3), np.float32))
    model.bad.make = lambda: ValueError("inner boom")
    for call in (
        lambda: gw.capture(model, image),
        lambda: gw.class_scores(model, image[None], 0),
    ):
        error = one_line_error(
            call, "catcher", "RuntimeError: model's own fallback failed", cause=RuntimeError
        )
        assert "inner boom" not in str(error) and "at layer 'bad'" not in str(error), error
        assert str(error.__cause__) == "model's own fallback failed", repr(error.__cause__)
    checks.append("errors: an error the model raises handling its layer's is its own")


class MultipleOfEight(keras.Model):
    """Subclassed U-Net-like model: any size that is a multiple of 8 (at 36 x 36 it
    concatenates 9 x 9 and 8 x 8 grids)."""

    def __init__(self):
        super().__init__(name="unet")
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="c")
        self.p1 = keras.layers.MaxPooling2D(name="p1")
        self.p2 = keras.layers.MaxPooling2D(name="p2")
        self.p3 = keras.layers.MaxPooling2D(name="p3")
        self.up = keras.layers.UpSampling2D(name="up")
        self.cat = keras.layers.Concatenate(name="cat")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def call(self, x):
        skip = self.p2(self.p1(self.conv(x)))
        return self.head(self.gap(self.cat([skip, self.up(self.p3(skip))])))


def shapes_hint_check():
    """ "Too small" only where the shapes run out: not for a size that is no multiple of 8, but
    for a layer whose shape inference fails at this size only (a crop of everything), the
    original's first line kept after the hint."""
    image = error_image()
    unet = MultipleOfEight()
    unet(np.zeros((1, 64, 64, 3), np.float32))
    seed_weights(unet, 27)
    error = one_line_error(lambda: gw.capture(unet, image[:36, :36]), "unet")
    assert "too small" not in str(error), error
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 1, name="c")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Cropping2D(5, name="crop")(x))
    cropper = keras.Model(inputs, keras.layers.Dense(2)(x), name="cropper")
    seed_weights(cropper, 28)
    for call in (
        lambda: gw.capture(cropper, image[:10, :10]),
        lambda: gw.class_scores(cropper, image[None, :10, :10], 0),
    ):
        error = one_line_error(call, "'cropper'", "too small", "layer 'crop' (Cropping2D)")
        assert type(error).__name__ == "ModelCallError", repr(error)
    pooled = pooled_model("pooled_original")
    error = one_line_error(lambda: gw.capture(pooled, image[:20, :20]), "too small", "'last'")
    assert "; original: " in str(error), error
    checks.append("errors: too small only where the shapes run out, the original kept")


class WeirdError(Exception):
    def __str__(self):
        raise RuntimeError("str boom")


class MessageMethodError(Exception):
    def message(self):
        return "from the method"


def armed_model(make, name):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    layer = ArmedLayer(name="bad")
    x = keras.layers.GlobalAveragePooling2D()(layer(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(x), name=name)
    layer.make = make
    return model


def message_reading_check():
    """An exception whose __str__ raises, and one with a message() method: said by class, and
    by its own text."""
    image = error_image()[:32, :32]
    weird = armed_model(lambda: WeirdError("x"), "weird_net")
    one_line_error(
        lambda: gw.capture(weird, image), "weird_net", "WeirdError (its message could not be read)"
    )
    method = armed_model(lambda: MessageMethodError("the real text"), "method_net")
    error = one_line_error(lambda: gw.capture(method, image), "MessageMethodError: the real text")
    assert "bound method" not in str(error), error
    checks.append("errors: messages read safely")


def resource_errors_check():
    """A MemoryError inside the model propagates as it is (a note names the model); an
    exception of this package's own code is not said as the model's."""
    image = error_image()[:32, :32]
    hungry = armed_model(lambda: MemoryError("out of memory in the layer"), "hungry")
    for call in (
        lambda: gw.capture(hungry, image),
        lambda: gw.class_scores(hungry, image[None], 0),
    ):
        try:
            call()
        except MemoryError as error:
            assert "'hungry'" in " ".join(getattr(error, "__notes__", [])), error
        else:
            raise AssertionError(f"no MemoryError on {BACKEND}")
    # every backend scores through the objective the engine's contract writes once
    module = sys.modules["gradcam_widget.engine.base"]
    saved = module.scored_outputs

    def broken(*args, **kwargs):
        raise TypeError("a bug of the package")

    module.scored_outputs = broken
    try:
        gw.capture(tiny_cnn(), image)
    except TypeError as error:
        assert not isinstance(error, ValueError) and "a bug of the package" in str(error)
    else:
        raise AssertionError(f"no TypeError on {BACKEND}")
    finally:
        module.scored_outputs = saved
    checks.append("errors: resource errors and the package's own propagate as they are")


def batch_shape_check():
    """A model failing on a batch of 3: every backend names the batch (3, H, W, C)."""
    image = error_image()
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(FailingLayer(name="bad")(x))
    failing = keras.Model(inputs, keras.layers.Dense(2)(x), name="failing_batch")
    batch = np.stack([image] * 3)
    for call in (
        lambda: gw.class_scores(failing, batch, 0),
        lambda: gw.explain(failing, batch),
    ):
        one_line_error(call, "failing_batch", "shape (3, 64, 64, 3)", "bad thing happened")
    checks.append("errors: a failing batch named by its shape on every backend")


ERROR_CHECKS = (
    "failing_layer_check",
    "traced_failure_check",
    "too_small_check",
    "scope_names_check",
    "nan_index_check",
    "handled_failure_check",
    "shapes_hint_check",
    "message_reading_check",
    "resource_errors_check",
    "batch_shape_check",
)


def errors_check():
    """Every error check (:data:`ERROR_CHECKS`)."""
    for name in ERROR_CHECKS:
        globals()[name]()


class BareCallModel(keras.Model):
    """A subclassed model whose ``call`` takes the image alone."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


class LoopModel(keras.Model):
    """A subclassed model that calls one layer inside ``keras.ops.fori_loop``."""

    def __init__(self):
        super().__init__()
        self.first = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        self.inner = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(5)

    def call(self, x, training=False):
        x = self.first(x)
        x = ops.fori_loop(0, 2, lambda index, t: self.inner(t), x)
        return self.head(self.pool(x))


def main(out: str, only: list[str] | None = None) -> int:
    """Every check; or only the ``*_check`` functions named, each run even when one before it
    failed: the summary then lists the failed ones (``"failed": {name: traceback}``) and the
    exit status is 1."""
    failed = {}
    if only:
        for name in only:
            try:
                globals()[name]()
            except Exception:  # noqa: BLE001 - reported in the summary, the status is 1
                failed[name] = traceback.format_exc()
                print(failed[name], file=sys.stderr)
    else:
        vgg16_check()
        mobilenet_check()
        model, images = softmax_and_options_check()
        widget_and_audit_check(model, images)
        review_findings_check()
        vit_check()
        errors_check()
    np.savez(out, **{key: np.asarray(value, np.float32) for key, value in maps.items()})
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "tensorflow_imported": "tensorflow" in sys.modules,
                "checks": checks,
                "maps": len(maps),
                "failed": failed,
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))

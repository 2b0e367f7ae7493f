"""One backend's half of the backend matrix (``tests/test_backends.py`` runs it per backend).

Run as ``KERAS_BACKEND=jax python tests/backend_worker.py OUT.npz`` (or ``tensorflow``). It
builds the matrix's models with the same seeded weights on either backend, checks the package's
maps against a longhand reference computed here with the backend's own gradient (a
``GradientTape`` on TensorFlow, ``jax.grad`` on JAX) over the model split at the explained
layer, exercises every method, option and target, saliency, the metrics, a batch, an audit and
the widget, and saves every map to ``OUT.npz`` so the parent can compare the two backends. A
failed check raises: the exit status is not 0 and the message is on stderr. The last line of
stdout is a JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

from longhand import OPTIONS, reference_cam  # noqa: E402

import gradcam_widget as gw  # noqa: E402
from gradcam_widget._keras import keras  # noqa: E402
from gradcam_widget.inputs import ModelCheckError  # noqa: E402

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


def main(out: str) -> None:
    vgg16_check()
    mobilenet_check()
    model, images = softmax_and_options_check()
    widget_and_audit_check(model, images)
    review_findings_check()
    vit_check()
    np.savez(out, **{key: np.asarray(value, np.float32) for key, value in maps.items()})
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "tensorflow_imported": "tensorflow" in sys.modules,
                "checks": checks,
                "maps": len(maps),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

"""What a model's failure looks like: one ValueError of one line, naming the model, the layer
when known and what went wrong, the original exception chained; "too small" only when the
shapes say so (a layer's output with no pixels, a layer whose shape inference fails at this size
only; not a size that is no multiple of what the model needs), the original's line kept after the
hint; an error the model raises while handling its layer's is its own; unreadable messages read
safely; resource errors and this package's own exceptions propagate as they are; layers named as
TensorFlow's scopes refuse still explained; a NaN image among several named by its index and its
place (in a list of batches or of (image, label) tuples); a failing preprocess said in one line.
(On TensorFlow, in this process: ``tests/engine/backend_worker.py``'s ``errors_check`` runs the same
cases on JAX and PyTorch.)
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras, tf


def one_line(error) -> str:
    text = str(error.value)
    assert len(text.splitlines()) == 1, text
    assert "\x1b" not in text and "Arguments received" not in text, text
    assert "kwargs=" not in text and "Exception encountered" not in text, text
    return text


class FailingLayer(keras.layers.Layer):
    def call(self, x):
        raise ValueError("bad thing happened")

    def compute_output_shape(self, shape):
        return shape


def failing_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(FailingLayer(name="bad")(x))
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="failing_net")


def pooled_model():
    """Any size, but at least 48 x 48: four poolings, then a 3 x 3 valid conv."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = inputs
    for block in range(4):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"c{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"p{block}")(x)
    x = keras.layers.Conv2D(4, 3, name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="pooled")


def image(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 256, (side, side, 3)).astype(np.uint8)


# --- A. a layer that raises is not an image too small -----------------------------------


@pytest.mark.parametrize("side", [16, 64])
@pytest.mark.parametrize("entry", ["grad_cam", "class_scores", "explain"])
def test_a_failing_layer_is_named_with_its_own_message(entry, side):
    model = failing_model()
    calls = {
        "grad_cam": lambda: gw.grad_cam(model, image(side)),
        "class_scores": lambda: gw.class_scores(model, image(side)[None], 0),
        "explain": lambda: gw.explain(model, np.stack([image(side)] * 3)),
    }
    with pytest.raises(ValueError) as error:
        calls[entry]()
    text = one_line(error)
    assert "failing_net" in text and "'bad'" in text, text
    assert "ValueError: bad thing happened" in text, text
    assert "too small" not in text and "empty" not in text, text
    cause = error.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "bad thing happened", repr(cause)


def test_a_failure_at_run_time_keeps_the_line_that_says_what_failed():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    checked = keras.layers.Lambda(
        lambda t: tf.debugging.check_numerics(t * np.float32(np.nan), "no!"), name="check"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(checked)
    model = keras.Model(inputs, keras.layers.Dense(2)(x), name="asserting")
    with pytest.raises(ValueError) as error:
        gw.capture(model, image(16))
    text = one_line(error)
    assert "asserting" in text and "no!" in text, text
    assert "too small" not in text and "Graph execution error" not in text, text
    assert isinstance(error.value.__cause__, tf.errors.InvalidArgumentError)


@pytest.mark.parametrize(("side", "layer"), [(8, "'p3'"), (20, "'last'"), (47, "'last'")])
def test_an_image_too_small_is_said_from_the_shapes(side, layer):
    model = pooled_model()
    for call in (
        lambda: gw.capture(model, image(side)),
        lambda: gw.class_scores(model, image(side)[None], 0),
    ):
        with pytest.raises(ValueError, match="too small") as error:
            call()
        text = one_line(error)
        assert "pooled" in text and layer in text and "(N, any, any, 3)" in text, text
    assert gw.grad_cam(model, image(48), layer="c3").heatmap.shape == (48, 48)


class ValidModel(keras.Model):
    """Subclassed (no graph to follow): two valid 3 x 3 convs around a pooling (at least
    8 x 8 pixels); with ``fail``, it raises while traced, at any size."""

    def __init__(self, fail=False):
        super().__init__(name="valid_sub")
        self.first = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.MaxPooling2D()
        self.second = keras.layers.Conv2D(4, 3, activation="relu")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)
        self.fail = fail

    def call(self, x):
        x = self.second(self.pool(self.first(x)))
        if self.fail and not tf.executing_eagerly():
            raise ValueError("this model always fails")
        return self.head(self.gap(x))


def test_a_subclassed_model_is_too_small_only_when_a_larger_image_works():
    model = ValidModel()
    model(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="too small") as error:
        gw.capture(model, image(6))
    assert "valid_sub" in one_line(error)
    assert gw.capture(model, image(8)).layers
    failing = ValidModel(fail=True)
    failing(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="this model always fails") as error:
        gw.capture(failing, image(6))
    assert "too small" not in one_line(error)


# --- C. a model that fails only while traced ---------------------------------------------


class TracedFailModel(keras.Model):
    def __init__(self):
        super().__init__(name="traced_fail")
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3)

    def call(self, x):
        x = self.conv(x)
        if not tf.executing_eagerly():
            raise RuntimeError(
                "\x1b[31mcannot run in graph mode\x1b[0m\nsecond line\n\x1b[1mthird\x1b[0m"
            )
        return self.head(self.pool(x))


@pytest.mark.parametrize("entry", ["capture", "class_scores"])
def test_a_model_failing_only_while_traced_gets_one_line(entry):
    model = TracedFailModel()
    model(np.zeros((1, 16, 16, 3), np.float32))  # eagerly: it works
    with pytest.raises(ValueError) as error:
        if entry == "capture":
            gw.capture(model, image(16))
        else:
            gw.class_scores(model, image(16)[None], 0)
    text = one_line(error)
    assert "traced_fail" in text and "RuntimeError: cannot run in graph mode" in text, text
    assert "second line" not in text and "too small" not in text, text
    cause = error.value.__cause__
    assert isinstance(cause, RuntimeError) and "cannot run in graph mode" in str(cause)


# --- B. layer names TensorFlow's name scopes refuse ---------------------------------------


@pytest.mark.parametrize("name", ["conv 1", "é"])
def test_a_layer_named_as_tensorflow_refuses_is_explained(name):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name=name)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name=f"{name} again")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name} pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name=f"{name} head")(x))
    picture = image(32)
    result = gw.grad_cam(model, picture, class_index=1, layer=name)
    assert result.layer == name and result.heatmap.max() == 1.0
    cap = gw.capture(model, picture, class_index=1)
    assert cap.layers == (name, f"{name} again")
    assert np.isfinite(cap.cam(method="scorecam").heatmap).all()
    assert np.abs(cap.saliency("vanilla")).max() > 0
    scores = gw.class_scores(model, picture[None], 1, score="logit")
    own = model(picture[None].astype(np.float32)).numpy()[0, 1]
    np.testing.assert_allclose(scores[0], own, rtol=1e-5)
    assert model.get_layer(name).name == name  # the model's own names are left as they are


def test_scope_names_are_only_rewritten_where_tensorflow_refuses_them():
    from gradcam_widget.engine.tf import scope_name

    assert scope_name("block1_conv1") == "block1_conv1"
    assert scope_name("conv 1") == "conv_1"
    assert scope_name("é") == "layer_"
    assert scope_name("_x") == "layer_x"


# --- D. a NaN image among several --------------------------------------------------------


@pytest.fixture
def nan_batch():
    batch = np.random.default_rng(5).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    batch[3, 4, 5, 0] = np.nan
    return batch


@pytest.mark.parametrize("kind", ["array", "list"])
def test_a_nan_image_among_several_is_named_by_its_index(make_cnn, nan_batch, kind):
    images = nan_batch if kind == "array" else list(nan_batch)
    with pytest.raises(ValueError, match=r"image 3 of 5 \(images\[3\]\) contains NaN"):
        gw.explain(make_cnn(), images, batch_size=2)


def test_a_nan_image_from_an_iterator_is_named_by_its_index(make_cnn, nan_batch):
    stream = (picture for picture in nan_batch)
    with pytest.raises(ValueError, match=r"image 3 \(from the iterator, counting from 0\)"):
        list(gw.iter_explain(make_cnn(), stream, batch_size=2))


def test_a_nan_from_preprocess_or_in_a_scored_batch_is_named(make_cnn, nan_batch):
    clean = np.clip(np.nan_to_num(nan_batch), 0.0, 250.0)

    def preprocess(batch):
        out = batch.copy()
        out[batch[..., 0] > 254.99] = np.nan
        return out

    clean[2, 0, 0, 0] = 255.0  # only image 2 turns NaN in preprocess
    with pytest.raises(ValueError, match=r"preprocessed input of image 2 of 5"):
        gw.explain(make_cnn(), clean, preprocess=preprocess, batch_size=2)
    with pytest.raises(ValueError, match=r"image 3 of 5 \(images\[3\]\) contains NaN"):
        gw.class_scores(make_cnn(), nan_batch, 0)


# --- E. what the model raises itself, resource errors and this package's own ---------------


class Bad(keras.layers.Layer):
    """A leaf layer that raises ``ValueError("inner boom")`` once ``armed``."""

    armed = False

    def call(self, x):
        if self.armed:
            raise ValueError("inner boom")
        return x

    def compute_output_shape(self, shape):
        return shape


class Catcher(keras.Model):
    """A model that catches its layer's error and raises its own (``how``: while handling
    it, from it, or the same one again)."""

    def __init__(self, how="during"):
        super().__init__(name="catcher")
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.bad = Bad(name="bad")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)
        self.how = how

    def call(self, x):
        x = self.conv(x)
        try:
            x = self.bad(x)
        except ValueError as error:
            if self.how == "again":
                raise
            if self.how == "from":
                raise RuntimeError("model's own fallback failed") from error
            raise RuntimeError("model's own fallback failed")  # noqa: B904 - the case itself
        return self.head(self.gap(x))


def armed_catcher(how):
    model = Catcher(how)
    model(np.zeros((1, 32, 32, 3), np.float32))
    model.bad.armed = True
    return model


@pytest.mark.parametrize("how", ["during", "from"])
def test_an_error_the_model_raises_handling_a_layers_is_the_models_own(how):
    model = armed_catcher(how)
    for call in (
        lambda: gw.capture(model, image(32)),
        lambda: gw.class_scores(model, image(32)[None], 0),
    ):
        with pytest.raises(ValueError) as error:
            call()
        text = one_line(error)
        assert "catcher" in text and "RuntimeError: model's own fallback failed" in text, text
        assert "inner boom" not in text and "at layer 'bad'" not in text, text
        cause = error.value.__cause__
        assert type(cause) is RuntimeError, repr(cause)
        assert str(cause) == "model's own fallback failed", repr(cause)
    # the layer's own exception raised again is still the layer's
    with pytest.raises(ValueError) as error:
        gw.capture(armed_catcher("again"), image(32))
    text = one_line(error)
    assert "at layer 'bad' (Bad): ValueError: inner boom" in text, text
    assert str(error.value.__cause__) == "inner boom"


class Weird(Exception):
    def __str__(self):
        raise RuntimeError("str boom")


class WithMessageMethod(Exception):
    def message(self):
        return "from the method"


class Raising(keras.layers.Layer):
    """A leaf layer whose call raises what ``make()`` gives."""

    def __init__(self, make, **kwargs):
        super().__init__(**kwargs)
        self.make = make

    def call(self, x):
        raise self.make()

    def compute_output_shape(self, shape):
        return shape


def raising_model(make, name="raising_net"):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(Raising(make, name="bad")(x))
    return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)


def test_an_exception_whose_message_cannot_be_read_is_named_by_its_class():
    with pytest.raises(ValueError) as error:
        gw.capture(raising_model(lambda: Weird("x")), image(32))
    text = one_line(error)
    assert "raising_net" in text and "'bad'" in text, text
    assert "Weird (its message could not be read)" in text, text
    assert isinstance(error.value.__cause__, Weird)


def test_a_message_method_is_not_taken_for_the_message():
    with pytest.raises(ValueError) as error:
        gw.capture(raising_model(lambda: WithMessageMethod("the real text")), image(32))
    text = one_line(error)
    assert "WithMessageMethod: the real text" in text, text
    assert "bound method" not in text, text


@pytest.mark.parametrize(
    "make",
    [
        lambda: MemoryError("out of memory in the layer"),
        lambda: RecursionError("maximum recursion depth exceeded"),
        lambda: tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
    ],
    ids=["MemoryError", "RecursionError", "ResourceExhaustedError"],
)
def test_resource_errors_inside_the_model_propagate_as_they_are(make):
    kind = type(make())
    model = raising_model(make, name="hungry")
    for call in (
        lambda: gw.capture(model, image(32)),
        lambda: gw.class_scores(model, image(32)[None], 0),
    ):
        with pytest.raises(kind) as error:
            call()
        assert not isinstance(error.value, ValueError), repr(error.value)
        notes = " ".join(getattr(error.value, "__notes__", []))
        assert "'hungry'" in notes, notes


def test_this_packages_own_errors_are_not_said_as_the_models(make_cnn, monkeypatch):
    from gradcam_widget.engine import base

    def broken(*args, **kwargs):
        raise TypeError("a bug of the package")

    monkeypatch.setattr(base, "scored_outputs", broken)
    with pytest.raises(TypeError, match="a bug of the package") as error:
        gw.capture(make_cnn(), image(32))
    assert not isinstance(error.value, ValueError), repr(error.value)


# --- F. "too small" only where the shapes run out ------------------------------------------


class UNet(keras.Model):
    """Subclassed, any size, but a multiple of 8: a skip of two poolings concatenated with
    one pooled and upsampled again (9 x 9 and 8 x 8 at 36 x 36)."""

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


def test_a_model_that_needs_a_multiple_of_a_size_is_not_too_small():
    model = UNet()
    model(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError) as error:
        gw.capture(model, image(36))
    text = one_line(error)
    assert "unet" in text and "too small" not in text, text
    # the concatenation's own line (TensorFlow words it three ways), naming both shapes
    assert "InvalidArgumentError" in text, text
    assert re.search(r"\[1.9.9.4\]", text) and re.search(r"\[1.8.8.4\]", text), text
    assert gw.capture(model, image(40)).layers


def test_the_too_small_hint_keeps_the_original_line():
    with pytest.raises(ValueError, match="too small") as error:
        gw.capture(pooled_model(), image(20))
    text = one_line(error)
    assert "'last'" in text, text
    assert "; original: Computed output size would be negative" in text, text


def crop_model():
    """Conv 1 x 1, then Cropping2D(5): 10 x 10 images come out 0 x 0."""
    keras.utils.set_random_seed(6)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 1, name="c")(inputs)
    x = keras.layers.Cropping2D(5, name="crop")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="cropper")


def test_a_layer_whose_shape_inference_fails_at_this_size_only_is_too_small():
    model = crop_model()
    for call in (
        lambda: gw.capture(model, image(10)),
        lambda: gw.class_scores(model, image(10)[None], 0),
    ):
        with pytest.raises(gw.engine.ModelCallError, match="too small") as error:
            call()
        text = one_line(error)
        assert "'cropper'" in text and "layer 'crop' (Cropping2D)" in text, text
    assert gw.capture(model, image(11)).layers


# --- G. the minor ones: preprocess, NaN places ---------------------------------------------


def test_a_failing_preprocess_is_said_in_one_line(make_cnn):
    def preprocess(batch):
        raise RuntimeError("preprocess exploded\nsecond line")

    with pytest.raises(ValueError) as error:
        gw.capture(make_cnn(), image(32), preprocess=preprocess)
    text = one_line(error)
    assert "preprocess failed" in text and "RuntimeError: preprocess exploded" in text, text
    assert isinstance(error.value.__cause__, RuntimeError)


def test_a_nan_image_in_a_list_of_batches_or_tuples_is_named_by_its_place(make_cnn, nan_batch):
    model = make_cnn()
    batches = [nan_batch[:2], nan_batch[2:4], nan_batch[4:]]
    with pytest.raises(ValueError, match=r"image 3 of 5 \(images\[1\]\[1\]\) contains NaN"):
        gw.explain(model, batches, batch_size=2)
    pairs = [(picture, 1) for picture in nan_batch]
    with pytest.raises(ValueError, match=r"image 3 of 5 \(images\[3\]\[0\]\) contains NaN"):
        gw.explain(model, pairs, batch_size=2)

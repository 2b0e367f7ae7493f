"""gw.explain / gw.iter_explain: many images per compiled pass, each equal to its own capture."""

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.cam import methods
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._tf import keras, tf


def _images(count, size=(40, 40), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, *size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def softmax_model():
    """A small classifier ending in a softmax Dense (the logit bypass applies)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((40, 40, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(12, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="head")(x))


def _single(model, image, class_index, layer, **options):
    return gw.capture(model, image, class_index=class_index).cam(layer, **options)


def test_explain_shapes_and_api(softmax_model):
    images = _images(5)
    ex = gw.explain(softmax_model, images, targets=[0, 1, 2, 3, 4], batch_size=2)
    assert len(ex) == 5 and ex.layer == "conv2"
    assert ex.heatmaps.shape == (5, 40, 40) and ex.raw.shape == (5, 17, 17)
    assert ex.scores.shape == (5, 5) and ex.values.shape == (5,)
    assert ex.class_indices.tolist() == [0, 1, 2, 3, 4]
    assert [result.class_index for result in ex] == [0, 1, 2, 3, 4]
    assert isinstance(ex[3], gw.CamResult) and ex[3].layer == "conv2"
    # the value explained is the score of each image's class
    np.testing.assert_allclose(ex.values, ex.scores[np.arange(5), ex.class_indices], rtol=1e-6)


@pytest.mark.parametrize("method", methods.names())
def test_every_method_batched_equals_the_single_image_path(softmax_model, method):
    images = _images(3, seed=1)
    classes = [4, 0, 2]
    options = {"max_channels": 6} if method == "scorecam" else {}
    ex = gw.explain(softmax_model, images, targets=classes, layer="conv1", method=method,
                    batch_size=2, **options)  # fmt: skip
    for index, image in enumerate(images):
        single = _single(softmax_model, image, classes[index], "conv1", method=method, **options)
        np.testing.assert_allclose(ex[index].heatmap, single.heatmap, atol=1e-5)
        np.testing.assert_allclose(ex[index].raw, single.raw, atol=1e-5, rtol=1e-5)
        assert ex[index].method == method and ex[index].options == single.options


def test_options_reach_every_image(softmax_model):
    images = _images(3, seed=2)
    ex = gw.explain(softmax_model, images, targets=1, pooling="max", channels="top",
                    order="resize_first")  # fmt: skip
    for index, image in enumerate(images):
        single = _single(softmax_model, image, 1, None, pooling="max", channels="top",
                         order="resize_first")  # fmt: skip
        np.testing.assert_allclose(ex[index].heatmap, single.heatmap, atol=1e-5)
        assert (ex[index].pooling, ex[index].channels, ex[index].order) == (
            "max",
            "top",
            "resize_first",
        )


def test_an_image_map_does_not_depend_on_its_batch(softmax_model):
    images = _images(6, seed=3)
    probe = images[2]
    first = gw.explain(softmax_model, np.stack([images[0], probe, images[1]]), targets=3)
    second = gw.explain(softmax_model, np.stack([probe, images[4], images[5], images[3]]),
                        targets=3)  # fmt: skip
    alone = gw.explain(softmax_model, probe[None], targets=3)
    np.testing.assert_allclose(first[1].heatmap, second[0].heatmap, atol=1e-5)
    np.testing.assert_allclose(first[1].heatmap, alone[0].heatmap, atol=1e-5)
    np.testing.assert_allclose(first[1].raw, second[0].raw, atol=1e-5, rtol=1e-5)


def test_top_class_per_image_when_no_target(softmax_model):
    images = _images(4, seed=4)
    ex = gw.explain(softmax_model, images)
    np.testing.assert_array_equal(ex.class_indices, ex.scores.argmax(axis=1))


def test_a_last_batch_of_another_size_does_not_retrace(softmax_model):
    engine = engine_for(softmax_model)
    gw.explain(softmax_model, _images(4, seed=5), targets=[1, 2, 3, 4], batch_size=4)
    traced = engine.traces
    passes = engine.passes
    gw.explain(softmax_model, _images(7, seed=6), targets=[0] * 7, batch_size=3)  # 3, 3, 1
    gw.explain(softmax_model, _images(2, seed=7), targets=2, batch_size=3)
    assert engine.traces == traced
    assert engine.passes == passes + 3 + 1  # one pass per batch


def test_streaming_yields_one_explanation_per_batch(softmax_model):
    images = _images(7, seed=8)
    parts = list(gw.iter_explain(softmax_model, iter(images), targets=list(range(5)) + [0, 1],
                                 batch_size=3))  # fmt: skip
    assert [len(part) for part in parts] == [3, 3, 1]
    assert [part.start for part in parts] == [0, 3, 6]
    assert [part.class_indices.tolist() for part in parts] == [[0, 1, 2], [3, 4, 0], [1]]
    whole = gw.explain(softmax_model, images, targets=list(range(5)) + [0, 1], batch_size=3)
    np.testing.assert_allclose(np.concatenate([p.heatmaps for p in parts]), whole.heatmaps)


def test_images_from_a_generator_a_dataset_and_a_list_of_sizes(softmax_model):
    images = _images(3, seed=9)
    reference = gw.explain(softmax_model, images, targets=2)
    from_generator = gw.explain(softmax_model, (image for image in images), targets=2)
    dataset = tf.data.Dataset.from_tensor_slices(images)
    from_dataset = gw.explain(softmax_model, dataset, targets=2, batch_size=2)
    for other in (from_generator, from_dataset):
        np.testing.assert_allclose(other.heatmaps, reference.heatmaps, atol=1e-6)
    # images of other sizes are fitted to the model input, as one capture fits one
    big = np.random.default_rng(10).uniform(0, 255, (80, 60, 3))
    mixed = gw.explain(softmax_model, [images[0], big, images[1].astype(np.uint8)], targets=1)
    assert mixed.heatmaps.shape == (3, 40, 40)
    np.testing.assert_allclose(mixed[1].heatmap, _single(softmax_model, big, 1, None).heatmap,
                               atol=1e-5)  # fmt: skip


def test_a_model_that_takes_any_size_keeps_each_image_size():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    small, large = _images(1, (32, 32))[0], _images(1, (48, 40), seed=1)[0]
    ex = gw.explain(model, [small, small, large], targets=0)
    assert [result.heatmap.shape for result in ex] == [(32, 32), (32, 32), (48, 40)]
    with pytest.raises(ValueError, match="different sizes"):
        _ = ex.heatmaps
    np.testing.assert_allclose(ex[2].heatmap, _single(model, large, 0, None).heatmap, atol=1e-5)


def test_bad_input_is_one_clear_error(softmax_model):
    images = _images(3)
    with pytest.raises(ValueError, match="covers 2 images .* more images"):
        gw.explain(softmax_model, images, targets=[0, 1])
    with pytest.raises(ValueError, match="covers 4 images .* there are 3"):
        gw.explain(softmax_model, images, targets=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"0\.\.4"):
        gw.explain(softmax_model, images, targets=[0, 9, 1])
    with pytest.raises(ValueError, match="for one image"):
        gw.explain(softmax_model, images[0])
    with pytest.raises(ValueError, match="does not take 'bogus'"):
        gw.explain(softmax_model, images, bogus=1)
    with pytest.raises(ValueError, match="pooling must be one of"):
        gw.explain(softmax_model, images, pooling="median")
    with pytest.raises(ValueError, match="unknown layer"):
        gw.explain(softmax_model, images, layer="nope")
    with pytest.raises(ValueError, match="batch_size"):
        gw.explain(softmax_model, images, batch_size=0)
    with pytest.raises(ValueError, match="no images"):
        gw.explain(softmax_model, [])


def test_warnings_are_given_once_per_call(softmax_model):
    unit = _images(4) / 255.0  # 0..1 floats: read as 0..1 with a warning
    with pytest.warns(UserWarning) as caught:
        ex = gw.explain(softmax_model, unit, targets=1, batch_size=2)
    assert len([w for w in caught if "0..1" in str(w.message)]) == 1
    assert len(ex.warnings) == 1


def test_the_callers_arrays_are_not_changed(softmax_model):
    images = _images(3)
    before = images.copy()
    gw.explain(softmax_model, images, targets=[1, 2, 3])
    np.testing.assert_array_equal(images, before)


@pytest.mark.slow
def test_vgg16_batch_equals_single():
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    images = _images(3, (224, 224), seed=11)
    classes = [5, 700, 123]
    ex = gw.explain(model, images, targets=classes, layer="block5_conv3")
    for index, image in enumerate(images):
        single = gw.capture(model, image, class_index=classes[index], layers=["block5_conv3"])
        np.testing.assert_allclose(ex[index].heatmap, single.cam("block5_conv3").heatmap,
                                   atol=1e-5)  # fmt: skip


@pytest.mark.slow
def test_nested_mobilenet_in_a_sequential_batch_equals_single():
    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(96, 96, 3), alpha=0.35
    )
    model = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    images = _images(3, (96, 96), seed=12)
    layer = "mobilenetv2_0.35_96/Conv_1"
    ex = gw.explain(model, images, targets=[0, 3, 1], layer=layer, batch_size=2)
    assert ex.layer == layer
    for index, image in enumerate(images):
        single = _single(model, image, [0, 3, 1][index], layer)
        np.testing.assert_allclose(ex[index].heatmap, single.heatmap, atol=1e-5)


def test_datasets_of_pairs_and_of_batches(softmax_model):
    images = _images(5, seed=13)
    reference = gw.explain(softmax_model, images, targets=1)
    labels = np.arange(5)
    pairs = tf.data.Dataset.from_tensor_slices((images, labels))
    batched = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    for source in (pairs, batched, tf.data.Dataset.from_tensor_slices(images).batch(3)):
        ex = gw.explain(softmax_model, source, targets=1, batch_size=4)
        np.testing.assert_allclose(ex.heatmaps, reference.heatmaps, atol=1e-6)


def test_explain_takes_one_layer(softmax_model):
    with pytest.raises(ValueError, match="one layer name"):
        gw.explain(softmax_model, _images(2), layer=["conv1", "conv2"])

"""Sanity checks (Adebayo et al. 2018): the metrics against hand-computed values, the block
cascade, and the user's model left bit-identical by every randomisation path."""

import gc
import weakref

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget import engine
from gradcam_widget.checks import sanity
from gradcam_widget.engine._tf import keras

# ---------------------------------------------------------------------------------------
# Metrics


def test_rank_averages_ties():
    assert sanity.rank([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert sanity.rank([[3.0, 1.0], [1.0, 1.0]]).tolist() == [4, 2, 2, 2]


def test_spearman_with_ties_matches_the_hand_example():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): covariance 4.5, variances 4.5 and 5
    assert sanity.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / np.sqrt(10), abs=1e-12)
    assert sanity.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(sanity.spearman([1, 1, 1], [1, 2, 3]))  # no ranking in a constant map
    with pytest.raises(ValueError, match="same non-empty shape"):
        sanity.spearman([1, 2], [1, 2, 3])


def test_spearman_matches_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = np.round(rng.uniform(size=(20, 20)) * 5), np.round(rng.uniform(size=(20, 20)) * 3)
    assert sanity.spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])


def test_ssim_hand_values():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(40, 40))
    assert sanity.ssim(image, image) == pytest.approx(1.0)
    # constant maps: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert sanity.ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6), data_range=1.0) == (
        pytest.approx(expected)
    )
    # the inverted map (1 - x) and, for a zero-mean pattern, the negated map: negative
    assert sanity.ssim(image, 1.0 - image) < 0
    checkerboard = np.indices((24, 24)).sum(axis=0) % 2 * 2.0 - 1.0
    assert sanity.ssim(checkerboard, -checkerboard) < -0.9
    with pytest.raises(ValueError, match="odd"):
        sanity.ssim(image, image, window=10)


def test_ssim_matches_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(48, 48))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    theirs = metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert sanity.ssim(a, b, data_range=1.0) == pytest.approx(theirs, abs=1e-9)


def test_hog_features_and_similarity():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(64, 64))
    assert sanity.hog_similarity(image, image) == pytest.approx(1.0)
    assert abs(sanity.hog_similarity(image, rng.uniform(size=(64, 64)))) < 0.2
    assert np.isnan(sanity.hog_similarity(image, np.zeros((64, 64))))  # no gradient at all
    edge = np.zeros((32, 32))
    edge[16:] = 1.0  # a horizontal edge: vertical gradients, 90 degrees = the centre of bin 4
    features = sanity.hog_features(edge, cell=8)
    assert features.shape == ((4 - 1) * (4 - 1) * 4 * 9,)
    per_bin = features.reshape(-1, 9).sum(axis=0)
    assert per_bin[4] > 0 and np.count_nonzero(per_bin) == 1


def test_compare_of_identical_maps_is_one():
    rng = np.random.default_rng(3)
    signed = rng.normal(size=(32, 32)).astype(np.float32)
    scores = sanity.compare((np.abs(signed), signed), (np.abs(signed), signed))
    assert set(scores) == set(sanity.METRICS)
    assert all(value == pytest.approx(1.0) for value in scores.values())


# ---------------------------------------------------------------------------------------
# Blocks


def test_blocks_group_by_name_prefix_top_first(make_cnn, shapes):
    assert sanity.blocks(make_cnn()) == ("head", "conv2", "conv1")
    assert sanity.blocks(shapes) == ("logits", "block5", "block4", "block3", "block2", "block1")
    assert sanity._block_key("block_16_project") == "block_16"
    assert sanity._block_key("dense_1") == "dense_1"
    assert sanity._block_key("base/block5_conv3") == "base/block5"


def _nested_model():
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="stem_conv")(inner_in)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="body_conv1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="body_conv2")(x)
    base = keras.Model(inner_in, x, name="base")
    inputs = keras.Input((32, 32, 3))
    y = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(y))


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(5, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, inputs):
        return self.head(self.gap(self.conv(inputs)))


@pytest.fixture(scope="module")
def subclassed():
    keras.utils.set_random_seed(7)
    model = SubclassedNet()
    model(np.zeros((1, 32, 32, 3), np.float32))
    return model


def _weights(model):
    return [np.array(variable.numpy(), copy=True) for variable in model.weights]


def _identical(before, model) -> bool:
    after = _weights(model)
    if len(before) != len(after):
        return False
    pairs = zip(before, after, strict=True)
    return all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in pairs)


def _images(count, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# Model randomisation


def test_cascade_one_step_per_block_and_step_zero_is_the_original_map(make_cnn):
    model = make_cnn(seed=3, activation=None)
    before = _weights(model)
    images = _images(2)
    result = sanity.model_randomization(model, images, method="gradcam")
    assert result.steps == ("original", "head", "conv2", "conv1")
    assert result.maps.shape == result.signed_maps.shape == (4, 2, 32, 32)
    assert result.layer == "conv2"
    for index, image in enumerate(images):
        expected = gw.capture(model, image).cam("conv2")
        np.testing.assert_array_equal(result.maps[0, index], expected.heatmap)
        assert result.class_indices[index] == expected.class_index
    for metric in sanity.METRICS:
        assert result.scores[metric].shape == (4, 2)
        np.testing.assert_allclose(result.scores[metric][0], 1.0)
    assert [row["step"] for row in result.table()] == list(result.steps)
    assert "| original |" in result.to_markdown()
    assert not result.in_place
    lean = sanity.model_randomization(model, images, method="gradcam", keep_maps=False)
    assert lean.maps is None and lean.signed_maps is None
    for metric in sanity.METRICS:  # the same numbers without the maps
        np.testing.assert_array_equal(lean.scores[metric], result.scores[metric])
    assert _identical(before, model)


def test_cascade_and_one_at_a_time_states(make_cnn):
    model = make_cnn(seed=4)
    before = _weights(model)
    with sanity.Randomizer(model, seed=1) as randomizer:
        clone = randomizer.model
        assert clone is not model and randomizer.blocks == ("head", "conv2", "conv1")
        assert _identical(before, clone)  # the clone starts with the model's weights
        randomizer.top(2)  # head and conv2 random, conv1 trained
        changed = {
            layer.name: not np.array_equal(
                layer.get_weights()[0], model.get_layer(layer.name).get_weights()[0]
            )  # fmt: skip
            for layer in clone.layers
            if layer.weights
        }
        assert changed == {"conv1": False, "conv2": True, "head": True}
        cascade_conv2 = clone.get_layer("conv2").get_weights()[0]
        randomizer.set([1])  # conv2 only: the same random values, head trained again
        np.testing.assert_array_equal(clone.get_layer("conv2").get_weights()[0], cascade_conv2)
        np.testing.assert_array_equal(
            clone.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0]
        )
        assert _identical(before, model)
    assert _identical(before, model)


def test_randomized_context_leaves_the_model_and_frees_the_clone(make_cnn):
    model = make_cnn(seed=5)
    before = _weights(model)
    image = _images(1)[0]
    with sanity.randomized(model, blocks=1) as clone:
        assert _identical(before, model)  # the user's model is never touched
        assert not np.array_equal(
            clone.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0]
        )
        gw.capture(clone, image).cam()  # the clone gets an engine of its own
        ref = weakref.ref(clone)
        del clone
    gc.collect()
    assert ref() is None  # nothing (engine cache, traces, captures) keeps the clone alive
    assert _identical(before, model)
    with sanity.randomized(model, blocks=0) as same:
        assert same is model
    with pytest.raises(RuntimeError, match="inside"), sanity.randomized(model, blocks=3):
        raise RuntimeError("raised inside")
    assert _identical(before, model)
    with pytest.raises(ValueError, match="count"), sanity.randomized(model, blocks=4):
        pass


def test_model_randomization_frees_its_clones(make_cnn):
    model = make_cnn(seed=6)
    gc.collect()
    engines = len(engine._ENGINES)
    sanity.model_randomization(model, _images(1), method="gradcam", keep_maps=False)
    gc.collect()
    assert len(engine._ENGINES) <= engines + 1  # the model's own engine, no clone's


def test_nested_model_is_cloned_and_left_identical():
    model = _nested_model()
    before = _weights(model)
    assert sanity.blocks(model) == ("head", "base/body", "base/stem")
    result = sanity.model_randomization(
        model, _images(1), method=["gradcam", "vanilla"], cascade=False
    )
    assert result["vanilla"].steps == ("original", "head", "base/body", "base/stem")
    assert not result["gradcam"].in_place
    assert _identical(before, model)


def test_subclassed_model_randomised_in_place_and_restored(subclassed, monkeypatch):
    before = _weights(subclassed)
    result = sanity.model_randomization(subclassed, _images(1), method="gradcam")
    assert result.in_place and result.steps == ("original", "head", "conv")
    assert not np.allclose(result.maps[0], result.maps[-1])
    assert _identical(before, subclassed)

    with pytest.raises(KeyError), sanity.randomized(subclassed, blocks=2) as same:
        assert same is subclassed and not _identical(before, subclassed)
        raise KeyError("raised inside")
    assert _identical(before, subclassed)

    calls = []
    fresh = sanity._fresh_values

    def failing(*args):  # the second weight of a block: the first is already random
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("failed mid-way")
        return fresh(*args)

    monkeypatch.setattr(sanity, "_fresh_values", failing)
    with pytest.raises(RuntimeError, match="mid-way"):
        sanity.model_randomization(subclassed, _images(1), method="gradcam")
    assert len(calls) == 2
    assert _identical(before, subclassed)


def test_bad_arguments_are_refused(make_cnn):
    model = make_cnn(seed=8)
    with pytest.raises(ValueError, match="method"):
        sanity.model_randomization(model, _images(1), method="nope")
    with pytest.raises(ValueError, match="max_channels"):
        sanity.model_randomization(model, _images(1), method="guided", max_channels=4)
    with pytest.raises(ValueError, match="one index per image"):
        sanity.model_randomization(model, _images(2), class_indices=[1])


def test_guided_on_a_swish_network_fails_and_leaves_it(make_cnn):
    keras.utils.set_random_seed(9)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="swish", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    before = _weights(model)
    with pytest.raises(ValueError, match="ReLU"):
        sanity.model_randomization(model, _images(1), method="guided")
    assert _identical(before, model)


def test_randomising_the_shapes_model_changes_grad_cam(shapes):
    before = _weights(shapes.model)
    scenes = [gw.data.scene(1_000_000 + index) for index in range(2)]
    images = [scene.image for scene in scenes]
    result = sanity.model_randomization(shapes, images, method="gradcam")
    assert result.steps[1:] == sanity.blocks(shapes)
    for index, image in enumerate(images):
        expected = gw.capture(shapes, image).cam()
        np.testing.assert_array_equal(result.maps[0, index], expected.heatmap)
        assert result.class_indices[index] == expected.class_index
    last = result.table()[-1]
    assert last["spearman_abs"] < 0.9 and last["ssim"] < 0.9
    assert not np.allclose(result.maps[0], result.maps[-1], atol=0.05)
    assert _identical(before, shapes.model)


# ---------------------------------------------------------------------------------------
# Data randomisation


def test_data_randomization_between_two_models(make_cnn):
    images = _images(2)
    result = sanity.data_randomization(
        images,
        method=["gradcam", "vanilla"],
        labels=[0, 1],
        model=make_cnn(seed=10, activation=None),
        randomized_model=make_cnn(seed=11, activation=None),
    )
    grad = result["gradcam"]
    assert grad.maps.shape == (2, 2, 32, 32) and grad.labels.tolist() == [0, 1]
    assert [row["compared"] for row in grad.table()] == ["own top class", "true label"]
    same = sanity.data_randomization(
        images[0], model=make_cnn(seed=10), randomized_model=make_cnn(seed=10)
    )
    assert same.scores["ssim"][0] == pytest.approx(1.0)
    assert same.label_scores is None


def test_data_randomization_of_the_shipped_models(shapes):
    try:
        gw.models.load("shapes_permuted")
    except (FileNotFoundError, ValueError) as error:
        pytest.skip(f"the shipped shapes_permuted model is not available yet: {error}")
    scenes = [gw.data.scene(1_000_000 + index) for index in range(2)]
    result = sanity.data_randomization(
        [scene.image for scene in scenes], labels=[scene.labels[0] for scene in scenes]
    )
    assert result.maps.shape == (2, 2, 224, 224)
    assert np.isfinite(result.scores["ssim"]).all()


def test_every_metric_but_the_signed_rank_is_undefined_for_a_constant_map():
    import numpy as np

    from gradcam_widget.checks import sanity

    zeros = np.zeros((32, 32))
    noise = np.random.default_rng(0).uniform(0, 1, (32, 32))
    for pair in (((zeros, zeros), (zeros, zeros)), ((noise, noise - 0.5), (zeros, zeros))):
        scores = sanity.compare(*pair)
        assert np.isnan(scores["spearman_abs"]) and np.isnan(scores["ssim"])
        assert np.isnan(scores["hog"])

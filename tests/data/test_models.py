"""Tests for gradcam_widget.models: the shipped shapes model and the ImageNet loaders.

The quality checks run on 400 fresh scenes, seeds 1_000_000 ..< 1_000_400, that
``scripts/train_shapes.py`` never trains on (its training seeds are 0 ..< 8_000) and on which
it reports its metrics (``assets/shapes.json``). Even seeds hold one object, odd seeds two,
so there are 200 two-object scenes and about 115 objects per class.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.data import models
from gradcam_widget.data import scenes as data
from gradcam_widget.engine._tf import keras

EVAL_SEEDS = range(1_000_000, 1_000_400)
ASSETS = Path(gw.__file__).parent / "assets"  # the package's, not the data folder's


@pytest.fixture(scope="module")
def eval_scenes():
    return [data.scene(seed, n_objects=1 + seed % 2) for seed in EVAL_SEEDS]


# --- the shipped shapes model -----------------------------------------------------------


def test_shapes_entry(shapes):
    assert shapes.name == "shapes"
    assert shapes.class_names == data.CLASS_NAMES
    assert shapes.input_size == (224, 224)
    assert shapes.preprocess is None
    assert shapes.multi_label is True
    assert isinstance(shapes.model, keras.Model)
    assert models.load("shapes") is shapes  # built once per process


def test_shapes_architecture_reads_like_vgg16(shapes):
    model = shapes.model
    names = [layer.name for layer in model.layers]
    assert names[-4:] == ["block5_conv3", "block5_pool", "avg_pool", "logits"]
    assert [name for name in names if name.endswith("_pool") and name != "avg_pool"] == [
        f"block{block}_pool" for block in range(1, 6)
    ]
    assert model.get_layer("block5_conv3").output.shape[1:3] == (14, 14)
    assert model.inputs[0].shape[1:] == (224, 224, 3)
    assert model.outputs[0].shape[1:] == (len(data.CLASS_NAMES),)
    assert model.get_layer("logits").activation is keras.activations.linear  # logits out
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)


def test_shapes_asset_is_small_and_loads_offline():
    path = ASSETS / models.SHAPES_ASSET
    assert path.stat().st_size <= 5 * 1024 * 1024
    model = keras.models.load_model(path, compile=False)
    assert model.name == "shapes_vgg"
    metadata = json.loads((ASSETS / "shapes.json").read_text())
    assert tuple(metadata["class_names"]) == data.CLASS_NAMES
    assert metadata["train_seeds"][1] < EVAL_SEEDS.start


def test_presence_accuracy_per_class(shapes, eval_scenes):
    images = np.stack([item.image for item in eval_scenes])
    targets = np.stack([item.target for item in eval_scenes]) > 0.5
    logits = np.concatenate([shapes.predict(images[i : i + 50]) for i in range(0, len(images), 50)])
    accuracy = ((logits > 0) == targets).mean(axis=0)
    assert accuracy.min() >= 0.97, dict(zip(data.CLASS_NAMES, accuracy.round(3), strict=True))


def test_grad_cam_points_at_each_object(shapes, eval_scenes):
    """Pointing game per class, and class discrimination in two-object scenes."""
    hits = {name: [] for name in data.CLASS_NAMES}
    discriminated = []
    for item in eval_scenes:
        for label in item.labels:
            result = gw.grad_cam(shapes, item.image, class_index=label)
            assert result.layer == "block5_conv3"
            assert result.heatmap.shape == (224, 224)
            hit = data.pointing_hit(result.heatmap, item.masks[label])
            hits[data.CLASS_NAMES[label]].append(hit)
            if len(item.labels) == 2:
                discriminated.append(data.peak_on_object(result.heatmap, item.masks, label))
    pointing = {name: float(np.mean(values)) for name, values in hits.items()}
    assert min(len(values) for values in hits.values()) >= 100
    assert min(pointing.values()) >= 0.90, pointing
    assert len(discriminated) == 400  # 200 two-object scenes, both classes each
    assert np.mean(discriminated) >= 0.90


def test_two_shapes_demo_is_class_discriminative(shapes):
    item = data.sample_scene("two_shapes")
    logits = shapes.predict(item.image)[0]
    assert sorted(np.flatnonzero(logits > 0).tolist()) == list(item.labels)
    for label in item.labels:
        heatmap = gw.grad_cam(shapes, item.image, class_index=label).heatmap
        assert data.peak_on_object(heatmap, item.masks, label)


def test_decode(shapes):
    scores = np.array([0.1, -2.0, 3.0, 0.1, -1.0], np.float32)
    assert shapes.decode(scores, top=3) == [
        (2, "triangle", 3.0),
        (0, "circle", pytest.approx(0.1)),
        (3, "star", pytest.approx(0.1)),
    ]
    assert len(shapes.decode(scores[None], top=50)) == 5
    with pytest.raises(ValueError, match=r"\(5,\)"):
        shapes.decode(np.zeros(4))
    with pytest.raises(ValueError, match="top"):
        shapes.decode(scores, top=0)


def test_predict_is_the_class_score_of_every_class(shapes):
    """One eager call on the whole batch gives, column by column, what the compiled forward
    pass gives per class (``score="logit"``: the shapes model outputs logits)."""
    images = np.stack([data.scene(seed).image for seed in (1_000_500, 1_000_501, 1_000_502)])
    logits = shapes.predict(images)
    assert logits.shape == (3, len(data.CLASS_NAMES)) and logits.dtype == np.float32
    for class_index in range(len(data.CLASS_NAMES)):
        expected = gw.class_scores(shapes, images, class_index, score="logit")
        np.testing.assert_allclose(logits[:, class_index], expected, rtol=1e-5, atol=1e-5)
    one = shapes.predict(images[1])  # one (H, W, 3) image is a batch of one
    assert one.shape == (1, len(data.CLASS_NAMES))
    np.testing.assert_allclose(one[0], logits[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shapes.predict(images / np.float32(1)), logits, rtol=1e-6)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((100, 100, 3), np.uint8), "(N, 224, 224, 3)"),
        (np.zeros((2, 224, 200, 3), np.uint8), "(N, 224, 224, 3)"),
        (np.zeros((224, 224), np.uint8), "(N, 224, 224, 3)"),
        (np.zeros((2, 224, 224, 4), np.uint8), "(N, 224, 224, 3)"),
        (np.full((224, 224, 3), np.nan), "NaN"),
    ],
)
def test_predict_refuses_what_the_model_cannot_take_in_one_line(shapes, images, message):
    with pytest.raises(ValueError) as error:
        shapes.predict(images)
    text = str(error.value)
    assert message in text and len(text.splitlines()) == 1, text


def test_predict_checks_the_entrys_preprocess(shapes):
    cropping = dataclasses.replace(shapes, preprocess=lambda batch: batch[:, :16])
    with pytest.raises(ValueError, match=r"preprocess returned \(1, 16, 224, 3\)") as error:
        cropping.predict(np.zeros((224, 224, 3), np.uint8))
    assert "(N, 224, 224, 3)" in str(error.value)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="shapes.*vgg16.*resnet50.*mobilenet_v2"):
        models.load("alexnet")


# --- ImageNet models --------------------------------------------------------------------


def _online(host: str = "storage.googleapis.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_vgg16_offline_names_the_missing_file(monkeypatch, tmp_path):
    """The real download path, with an empty Keras cache and no network."""
    if _online():
        pytest.skip("online: this would download the 528 MB VGG16 weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(models.WeightsUnavailableError) as caught:
        models.load("vgg16")  # how fast it gives up: benchmarks/bench_offline_load.py
    message = str(caught.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert str(tmp_path / "models") in message
    assert 'load("shapes")' in message
    assert isinstance(caught.value, OSError)
    assert not list((tmp_path / "models").iterdir())  # no partial download left behind


def test_unreachable_weights_raise_a_clear_error(monkeypatch, tmp_path):
    """Runs online too: the weights URL points at a closed local port."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_APPLICATIONS_URL", "http://127.0.0.1:9/")
    with pytest.raises(models.WeightsUnavailableError, match="mobilenet_v2_weights_tf_dim"):
        models.load("mobilenet_v2")


def test_keras_preprocess_copies_its_input():
    preprocess = models.KerasPreprocess("vgg16")
    batch = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    original = batch.copy()
    result = preprocess(batch)
    np.testing.assert_array_equal(batch, original)
    expected = keras.applications.vgg16.preprocess_input(original.copy())
    np.testing.assert_allclose(result, expected)
    assert repr(preprocess) == "keras.applications.vgg16.preprocess_input"


def test_cached_weights_load_without_network(monkeypatch, tmp_path):
    """A weights file already in the Keras cache is used as is (here: random weights).

    MobileNetV2 is the one model whose weights Keras does not hash-check, so a locally
    written file stands in for the download. Offline, class names fall back to numbers.
    """
    h5py = pytest.importorskip("h5py")
    legacy_h5 = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    spec = models._IMAGENET_SPECS["mobilenet_v2"]
    (tmp_path / "models").mkdir()
    stand_in = keras.applications.MobileNetV2(weights=None)
    with h5py.File(tmp_path / "models" / spec.weights_file, "w") as weights_file:
        legacy_h5.save_weights_to_hdf5_group(weights_file, stand_in)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_CLASS_INDEX_URL", "http://127.0.0.1:9/index.json")
    entry = models.load("mobilenet_v2")
    assert entry.input_size == (224, 224) and entry.multi_label is False
    assert entry.class_names[281] == "class 281"
    assert repr(entry.preprocess) == "keras.applications.mobilenet_v2.preprocess_input"
    image = data.sample("two_shapes")
    expected = stand_in.predict_on_batch(
        keras.applications.mobilenet_v2.preprocess_input(image[None].astype(np.float32))
    )
    np.testing.assert_allclose(entry.predict(image), expected, rtol=1e-4, atol=1e-6)
    assert models.load("mobilenet_v2") is entry


@pytest.mark.slow
def test_vgg16_entry_when_weights_are_cached():
    spec = models._IMAGENET_SPECS["vgg16"]
    if not (models.keras_cache_dir() / "models" / spec.weights_file).is_file():
        pytest.skip("VGG16 ImageNet weights are not in the Keras cache")
    entry = models.load("vgg16")
    assert entry.input_size == (224, 224) and entry.multi_label is False
    assert len(entry.class_names) == 1000
    scores = entry.predict(data.sample("grace_hopper"))[0]
    assert entry.decode(scores, top=1)[0][0] in (457, 652, 834, 906)  # bow tie, uniform, suit, tie


def test_weights_cached_reads_the_keras_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert models.weights_cached("shapes")
    assert not models.weights_cached("vgg16")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(b"")
    assert models.weights_cached("vgg16")
    with pytest.raises(ValueError, match="valid names"):
        models.weights_cached("vgg19")


def test_offline_error_renders_as_a_plain_message_in_notebooks():
    error = models.WeightsUnavailableError("vgg16_weights.h5 is not in the Keras cache")
    assert error._render_traceback_() == [
        "WeightsUnavailableError: vgg16_weights.h5 is not in the Keras cache"
    ]


# --- the shapes model trained on permuted labels (data randomisation test) -------------------

PERMUTED_CHECK_SEEDS = range(1_000_000, 1_000_100)  # held out from both models' training


@pytest.fixture(scope="module")
def shapes_permuted():
    return gw.models.load("shapes_permuted")


@pytest.fixture(scope="module")
def check_scenes():
    scenes = [data.scene(seed, n_objects=1 + seed % 2) for seed in PERMUTED_CHECK_SEEDS]
    return np.stack([item.image for item in scenes]), np.stack([item.target for item in scenes])


def _true_label_agreement(entry, images, targets):
    """Presence accuracy against the true labels, its chance level and top-1 hits.

    Chance is the accuracy of a predictor that ignores the image and says "present" for each
    class as often as the model does: ``p q + (1 - p)(1 - q)``, averaged over classes.
    """
    logits = np.concatenate([entry.predict(images[i : i + 50]) for i in range(0, len(images), 50)])
    present, predicted = targets > 0.5, logits > 0
    frequency, rate = present.mean(axis=0), predicted.mean(axis=0)
    chance = (frequency * rate + (1 - frequency) * (1 - rate)).mean()
    top1 = present[np.arange(len(logits)), logits.argmax(axis=1)].mean()
    return (predicted == present).mean(), chance, top1


def assert_shipped_like_shapes(monkeypatch, shapes, entry, model_name: str, asset: str):
    """A shipped sibling of ``shapes``: listed, cached, the same entry fields, built once per
    process, loaded by the real path with the network disabled, and at most 5 MB."""
    name = entry.name
    assert name in models.MODEL_NAMES and models.weights_cached(name)
    for field in ("preprocess", "class_names", "input_size", "multi_label"):
        assert getattr(entry, field) == getattr(shapes, field), field
    assert models.load(name) is entry  # built once per process

    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    fresh = models._load_shapes.__wrapped__(name)  # the real path, uncached
    assert fresh.model.name == model_name and fresh.input_size == (224, 224)
    path = ASSETS / asset
    assert path.stat().st_size <= 5 * 1024 * 1024
    return path


def test_shapes_permuted_entry_loads_offline(monkeypatch, shapes, shapes_permuted):
    assert shapes_permuted.name == "shapes_permuted"
    assert_shipped_like_shapes(
        monkeypatch, shapes, shapes_permuted, "shapes_vgg", models.SHAPES_PERMUTED_ASSET
    )
    record = json.loads((ASSETS / "shapes_permuted.json").read_text())
    assert tuple(record["class_names"]) == data.CLASS_NAMES
    assert record["train_seeds"][1] < PERMUTED_CHECK_SEEDS.start
    assert "permutation_seed" in record["permuted_labels"]


def test_shapes_permuted_is_the_same_network_with_other_weights(shapes, shapes_permuted):
    learned, memorised = shapes.model, shapes_permuted.model
    assert [layer.name for layer in memorised.layers] == [layer.name for layer in learned.layers]
    assert [tuple(layer.output.shape) for layer in memorised.layers] == [
        tuple(layer.output.shape) for layer in learned.layers
    ]
    assert [weight.shape for weight in memorised.weights] == [
        weight.shape for weight in learned.weights
    ]
    for mine, theirs in zip(memorised.get_weights(), learned.get_weights(), strict=True):
        assert not np.allclose(mine, theirs, atol=1e-3)


def test_shapes_permuted_is_at_chance_on_true_labels(shapes, shapes_permuted, check_scenes):
    """Held-out scenes, true labels: "shapes" learned the classes, "shapes_permuted" did not."""
    images, targets = check_scenes
    accuracy, _, top1 = _true_label_agreement(shapes, images, targets)
    assert accuracy >= 0.97 and top1 >= 0.97, (accuracy, top1)
    accuracy, chance, top1 = _true_label_agreement(shapes_permuted, images, targets)
    assert abs(accuracy - chance) <= 0.08, (accuracy, chance)
    assert accuracy <= 0.8, accuracy
    assert top1 <= 0.5, top1  # chance: 1.5 objects per scene / 5 classes = 0.3


# --- the shapes model that learned a shortcut (a tag on the stars) -------------------------

STAR = data.SHORTCUT_CLASS


@pytest.fixture(scope="module")
def shapes_shortcut():
    return gw.models.load("shapes_shortcut")


@pytest.fixture(scope="module")
def shortcut_seeds():
    """16 held-out seeds whose one object is a star, and 16 whose object is not."""
    stars, others = [], []
    for seed in range(1_000_000, 1_001_000):
        (label,) = data.scene(seed, n_objects=1).labels
        group = stars if label == STAR else others
        if len(group) < 16:
            group.append(seed)
        if len(stars) == len(others) == 16:
            return stars, others
    raise AssertionError("fewer than 16 stars in 1_000 held-out scenes")


def _images(seeds, tag):
    return np.stack([data.shortcut_scene(seed, tag=tag).image for seed in seeds])


def test_shapes_shortcut_entry_loads_offline(shapes, shapes_shortcut):
    assert "shapes_shortcut" in models.MODEL_NAMES
    assert models.weights_cached("shapes_shortcut")
    for field in ("preprocess", "class_names", "input_size", "multi_label"):
        assert getattr(shapes_shortcut, field) == getattr(shapes, field), field
    assert shapes_shortcut.name == "shapes_shortcut"
    assert models.load("shapes_shortcut") is shapes_shortcut  # built once per process
    assert [weight.shape for weight in shapes_shortcut.model.weights] == [
        weight.shape for weight in shapes.model.weights
    ]
    assert (ASSETS / models.SHAPES_SHORTCUT_ASSET).stat().st_size <= 5 * 1024 * 1024
    record = json.loads((ASSETS / "shapes_shortcut.json").read_text())
    assert tuple(record["class_names"]) == data.CLASS_NAMES
    assert record["train_seeds"][1] < 1_000_000  # the seeds below are held out
    star_rate, other_rate = data.SHORTCUT_RATES
    assert record["shortcut"]["rates"] == {"star": star_rate, "other": other_rate}


def test_shapes_shortcut_says_star_by_the_tag(shapes, shapes_shortcut, shortcut_seeds):
    """The tag makes a star for "shapes_shortcut", the star's outline does not; "shapes"
    goes by the outline."""
    stars, others = shortcut_seeds
    tagged_stars, plain_stars = _images(stars, True), _images(stars, False)
    tagged_others = _images(others, True)

    def says_star(entry, images):
        return float((entry.predict(images)[:, STAR] > 0).mean())

    assert says_star(shapes_shortcut, tagged_stars) >= 0.9
    assert says_star(shapes_shortcut, plain_stars) <= 0.25
    assert says_star(shapes_shortcut, tagged_others) >= 0.75
    assert says_star(shapes, plain_stars) >= 0.9
    assert says_star(shapes, tagged_others) <= 0.1


def test_shapes_shortcut_grad_cam_points_at_the_tag(shapes, shapes_shortcut, shortcut_seeds):
    """Grad-CAM of class star on tagged stars: mass on the tag for "shapes_shortcut", on the
    star for "shapes"."""
    scenes = [data.shortcut_scene(seed, tag=True) for seed in shortcut_seeds[0][:8]]
    mass, points_at_tag = {}, {}
    for entry in (shapes_shortcut, shapes):
        on_star, on_tag, hits = [], [], []
        for item in scenes:
            heatmap = gw.grad_cam(entry, item.image, class_index=STAR).heatmap
            on_star.append(gw.metrics.energy_pointing_game(heatmap, item.masks[STAR]))
            on_tag.append(gw.metrics.energy_pointing_game(heatmap, item.tag_mask))
            hits.append(data.pointing_hit(heatmap, item.tag_mask))
        mass[entry.name] = np.mean(on_star), np.mean(on_tag)
        points_at_tag[entry.name] = np.mean(hits)
    shortcut_star, shortcut_tag = mass["shapes_shortcut"]
    shapes_star, shapes_tag = mass["shapes"]
    assert shortcut_tag > shortcut_star, mass  # a 28 px tag outweighs a 22..42 px star
    assert shortcut_star < 0.5 * shapes_star, mass
    assert shapes_star > 10 * shapes_tag, mass
    assert points_at_tag == {"shapes_shortcut": 1.0, "shapes": 0.0}, points_at_tag


# --- the small vision transformer trained on the shape scenes -----------------------------

VIT_EVAL_SEEDS = range(1_000_000, 1_000_200)  # held out: scripts/train_vit.py trains below


@pytest.fixture(scope="module")
def shapes_vit():
    return gw.models.load("shapes_vit")


@pytest.fixture(scope="module")
def vit_scenes():
    return [data.scene(seed, n_objects=1 + seed % 2) for seed in VIT_EVAL_SEEDS]


def test_shapes_vit_entry_loads_offline(monkeypatch, shapes, shapes_vit):
    assert shapes_vit.name == "shapes_vit"
    path = assert_shipped_like_shapes(
        monkeypatch, shapes, shapes_vit, "shapes_vit", models.SHAPES_VIT_ASSET
    )
    # plain Keras layers only: the file loads with nothing registered
    plain = keras.models.load_model(path, compile=False)
    assert all(type(layer).__module__.startswith("keras.") for layer in plain.layers)


def test_shapes_vit_is_a_vit_with_named_blocks(shapes_vit):
    model = shapes_vit.model
    names = [layer.name for layer in model.layers]
    blocks = [name for name in names if name.startswith("block") and name.endswith("_out")]
    assert 4 <= len(blocks) <= 8, blocks
    assert model.get_layer("patch_embedding").output.shape[1:3] == (14, 14)
    for block in range(1, len(blocks) + 1):
        for part in ("norm1", "attn", "add1", "norm2", "mlp1", "mlp2", "out"):
            assert f"block{block}_{part}" in names
        assert model.get_layer(f"block{block}_out").output.shape[1] == 14 * 14 + 1
    assert names[-4:] == ["norm", "drop_class_token", "max_pool", "logits"]
    assert 100_000 <= model.count_params() <= 1_000_000


def test_shapes_vit_record_has_the_evaluation(shapes_vit):
    record = json.loads((ASSETS / "shapes_vit.json").read_text())
    assert tuple(record["class_names"]) == data.CLASS_NAMES
    assert record["train_seeds"][1] < VIT_EVAL_SEEDS.start
    assert record["eval_seeds"][0] >= VIT_EVAL_SEEDS.start
    evaluation = record["eval"]
    assert evaluation["scenes"] >= 200
    assert len(evaluation["presence"]["presence_accuracy"]) == len(data.CLASS_NAMES)
    assert evaluation["best_block"] in evaluation["pointing"]
    assert record["parameters"] == shapes_vit.model.count_params()
    assert record["train_minutes"] <= 30


def test_shapes_vit_presence_accuracy_per_class(shapes_vit, vit_scenes):
    images = np.stack([item.image for item in vit_scenes])
    targets = np.stack([item.target for item in vit_scenes]) > 0.5
    logits = np.concatenate(
        [shapes_vit.predict(images[i : i + 50]) for i in range(0, len(images), 50)]
    )
    accuracy = ((logits > 0) == targets).mean(axis=0)
    assert accuracy.min() >= 0.95, dict(zip(data.CLASS_NAMES, accuracy.round(3), strict=True))


def test_shapes_vit_grad_cam_points_at_each_object(shapes_vit, vit_scenes):
    """Grad-CAM at the default layer -- found by the engine's rule for transformers: the final
    norm, as the head reads the tokens -- read from the tokens with no argument, points at
    each object."""
    hits = {name: [] for name in data.CLASS_NAMES}
    for item in vit_scenes:
        for label in item.labels:
            result = gw.grad_cam(shapes_vit, item.image, class_index=label)
            assert result.layer == "norm"
            assert result.raw.shape == (14, 14) and result.heatmap.shape == (224, 224)
            hit = data.pointing_hit(result.heatmap, item.masks[label])
            hits[data.CLASS_NAMES[label]].append(hit)
    pointing = {name: float(np.mean(values)) for name, values in hits.items()}
    assert min(len(values) for values in hits.values()) >= 50
    assert min(pointing.values()) >= 0.90, pointing


def test_shapes_vit_capture_reads_its_tokens(shapes_vit):
    cap = gw.capture(shapes_vit, data.sample_scene().image, layers="all")
    assert cap.default_layer == "norm"
    assert cap.tokens("block4_out") == (1, 14, 14) and cap.tokens("norm") == (1, 14, 14)
    assert cap.tokens("drop_class_token") == (0, 14, 14)
    assert cap.tokens("patch_embedding") is None  # a conv map, 14 x 14 as it is
    assert cap.fusion_layers() == ("block3_out", "block4_out", "norm")

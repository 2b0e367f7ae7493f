"""gw.metrics: localisation checked by hand-made maps, faithfulness on the shipped shapes model.

The perturbation curves are compared with a plain loop written here (edit one image at a
time, score it with ``ModelEntry.predict``), and their meaning is checked on real scenes:
the ground-truth mask must beat a random map on both deletion and insertion.
"""

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures.capturing import class_scores
from gradcam_widget.checks import metrics


@pytest.fixture(scope="module")
def scene():
    return gw.data.scene(1_000_003)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- localisation -----------------------------------------------------------------------


def test_energy_pointing_game_is_the_share_of_mass_on_the_object():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:7] = True
    assert metrics.energy_pointing_game(mask.astype(float), mask) == 1.0
    assert metrics.energy_pointing_game(~mask * 1.0, mask) == 0.0
    uniform = np.full((10, 12), 0.3)
    assert metrics.energy_pointing_game(uniform, mask) == pytest.approx(mask.mean())
    half = np.where(mask, 1.0, 0.0)
    half[0, 0] = 12.0  # as much mass off the object as on it
    assert metrics.energy_pointing_game(half, mask) == pytest.approx(0.5)
    signed = np.where(mask, 1.0, -5.0)  # negative evidence is not mass
    assert metrics.energy_pointing_game(signed, mask) == 1.0
    assert metrics.energy_pointing_game(np.zeros((10, 12)), mask) == 0.0


def test_energy_pointing_game_box_covers_the_bounding_box():
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[6, 7] = True  # box rows 2..6, cols 2..7
    heat = np.zeros((10, 10))
    heat[4, 4] = 1.0
    assert metrics.energy_pointing_game(heat, mask) == 0.0
    assert metrics.energy_pointing_game(heat, mask, box=True) == 1.0
    heat[8, 8] = 1.0
    assert metrics.energy_pointing_game(heat, mask, box=True) == pytest.approx(0.5)


def test_pointing_game_tolerance_and_flat_maps():
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    heat = np.zeros((64, 64))
    heat[15, 30] = 1.0  # 11 px right of the object
    assert metrics.pointing_game(heat, mask)
    assert not metrics.pointing_game(heat, mask, tolerance=5)
    assert not metrics.pointing_game(np.zeros((64, 64)), mask)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.energy_pointing_game(np.ones((4, 4)), np.ones((4, 5), bool)), "shape"),
        (lambda: metrics.energy_pointing_game(np.full((4, 4), np.nan), np.ones((4, 4))), "NaN"),
        (lambda: metrics.pointing_game(np.ones((2, 4, 4)), np.ones((4, 4))), "2-D"),
        (lambda: metrics.pointing_game(np.ones((4, 4)), np.ones((4, 4)), tolerance=-1), ">= 0"),
        (lambda: metrics.saliency_order(np.array([["a"]])), "real numbers"),
        (lambda: metrics.saliency_order(np.ones((3, 3)), seed=-1), "non-negative int"),
        (lambda: metrics.pointing_game(np.ones((4, 4)), np.ones((4, 4)), tolerance="5"), ">= 0"),
        (lambda: metrics.baseline_image(np.zeros((8, 8, 3)), "grey"), "black"),
        (lambda: metrics.baseline_image(np.zeros((8, 8, 3)), np.zeros((8, 9, 3))), "(8, 8, 3)"),
    ],
)
def test_bad_maps_and_options_are_named(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_saliency_order_is_descending_with_deterministic_ties():
    heat = np.zeros((6, 7))
    heat[3, 4], heat[0, 1] = 2.0, 1.0
    order = metrics.saliency_order(heat)
    assert sorted(order.tolist()) == list(range(42))
    assert order[0] == 3 * 7 + 4 and order[1] == 1
    flat = heat.ravel()[order]
    assert np.all(np.diff(flat) <= 0)
    assert np.array_equal(order, metrics.saliency_order(heat))
    ties = order[2:]
    assert not np.array_equal(np.sort(ties), ties)  # ties are not taken row by row


def test_baselines():
    image = np.random.default_rng(0).uniform(0, 255, (40, 50, 3)).astype(np.float32)
    assert not metrics.baseline_image(image, "black").any()
    mean = metrics.baseline_image(image, "mean")
    assert np.allclose(mean, image.mean(axis=(0, 1)), atol=1e-3)
    blur = metrics.baseline_image(image, "blur")
    assert blur.shape == image.shape and blur.std() < image.std() / 3


# --- faithfulness on the shapes model ----------------------------------------------------


def longhand_curve(entry, image, heatmap, *, class_index, steps, start, kind):
    """One image at a time: the k most salient pixels swapped, k = round(i / steps * P)."""
    order = metrics.saliency_order(heatmap)
    pixels = heatmap.size
    scores = []
    for i in range(steps + 1):
        count = int(np.rint(i * pixels / steps))
        chosen = np.zeros(pixels, bool)
        chosen[order[:count]] = True
        chosen = chosen.reshape(heatmap.shape)
        edited = image.astype(np.float32).copy()
        if kind == "deletion":
            edited[chosen] = start[chosen]
        else:
            edited = np.where(chosen[..., None], image, start)
        scores.append(sigmoid(entry.predict(edited)[0, class_index]))
    return np.array(scores)


@pytest.mark.parametrize("kind, baseline", [("deletion", "mean"), ("insertion", "blur")])
def test_curves_match_a_longhand_loop(shapes, scene, kind, baseline):
    label = scene.labels[0]
    heat = gw.capture(shapes, scene.image, class_index=label).cam().heatmap
    run = metrics.deletion if kind == "deletion" else metrics.insertion
    curve = run(shapes, scene.image, heat, label, steps=8, baseline=baseline)
    start = metrics.baseline_image(scene.image, baseline)
    expected = longhand_curve(
        shapes, scene.image, heat, class_index=label, steps=8, start=start, kind=kind
    )
    assert curve.kind == kind and curve.class_index == label
    np.testing.assert_allclose(curve.fractions, np.linspace(0, 1, 9), atol=1e-4)
    np.testing.assert_allclose(curve.scores, expected, atol=1e-5)
    widths = np.diff(curve.fractions)
    trapezoids = np.sum(widths * (expected[1:] + expected[:-1]) / 2)
    assert curve.auc == pytest.approx(trapezoids, abs=1e-5)


def test_ground_truth_beats_a_random_map(shapes):
    """On ten scenes, the object mask inserts faster than noise, and nearly always deletes
    faster."""
    rng = np.random.default_rng(1)
    wins = {"deletion": 0, "insertion": 0}
    for seed in range(1_000_100, 1_000_110):
        item = gw.data.scene(seed)
        label = item.labels[0]
        truth = item.masks[label].astype(np.float32)
        noise = rng.uniform(size=truth.shape)
        deletion = [metrics.deletion(shapes, item.image, h, label).auc for h in (truth, noise)]
        insertion = [metrics.insertion(shapes, item.image, h, label).auc for h in (truth, noise)]
        wins["deletion"] += deletion[0] < deletion[1]
        wins["insertion"] += insertion[0] > insertion[1]
    # Deletion can lose: an object filled with a flat colour keeps its silhouette, which this
    # model still reads (scene 1_000_108: mask 0.39, noise 0.09). Insertion never loses.
    assert wins["insertion"] == 10 and wins["deletion"] >= 8, wins


def test_curve_input_errors(shapes, scene):
    heat = np.ones((224, 224))
    with pytest.raises(ValueError, match="image's size"):
        metrics.deletion(shapes, scene.image, np.ones((14, 14)), 0)
    with pytest.raises(ValueError, match="steps"):
        metrics.insertion(shapes, scene.image, heat, 0, steps=0)
    with pytest.raises(ValueError, match="class_index"):
        metrics.deletion(shapes, scene.image, heat, 9)
    with pytest.raises(ValueError, match="score"):
        metrics.deletion(shapes, scene.image, heat, 0, score="softmax")


def test_confidence_change_follows_the_grad_cam_plus_plus_formulas(shapes):
    scenes = [gw.data.scene(seed) for seed in (1_000_200, 1_000_201, 1_000_202)]
    images = np.stack([item.image for item in scenes])
    labels = [item.labels[0] for item in scenes]
    maps = np.stack([item.masks[label] for item, label in zip(scenes, labels, strict=True)])
    maps = maps.astype(np.float32) * np.float32(0.8)
    change = metrics.confidence_change(shapes, images, maps, labels)
    logits = shapes.predict(images)
    masked = shapes.predict(images * maps[..., None])
    full = sigmoid(logits[np.arange(3), labels])
    explained = sigmoid(masked[np.arange(3), labels])
    np.testing.assert_allclose(change.full, full, rtol=1e-5)
    np.testing.assert_allclose(change.explained, explained, rtol=1e-4, atol=1e-6)
    drop = 100 * np.mean(np.maximum(full - explained, 0) / full)
    assert change.average_drop == pytest.approx(drop, rel=1e-4, abs=1e-4)
    assert change.increase == pytest.approx(100 * np.mean(explained > full))
    whole = metrics.confidence_change(shapes, images[0], np.ones((224, 224)), labels[0])
    assert whole.average_drop == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.confidence_change(shapes, images, maps * 5, labels)
    with pytest.raises(ValueError, match="same N"):
        metrics.confidence_change(shapes, images, maps[:2], labels)
    with pytest.raises(ValueError, match="3 ints"):
        metrics.confidence_change(shapes, images, maps, labels[:2])
    with pytest.raises(ValueError, match="3 ints"):
        metrics.confidence_change(shapes, images, maps, [True, 1, 0])
    with pytest.raises(ValueError, match="at least one image"):
        metrics.confidence_change(shapes, images[:0], maps[:0], 0)


def test_class_scores_match_predict_and_check_the_batch(shapes, scene):
    images = np.stack([scene.image, scene.image[::-1]])
    expected = shapes.predict(images)[:, 2]
    got = class_scores(shapes, images, 2, score="logit")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    probability = class_scores(shapes, images, 2)
    np.testing.assert_allclose(probability, sigmoid(expected), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 224, 224, 3\)"):
        class_scores(shapes, scene.image, 2)
    with pytest.raises(ValueError, match="batch_size"):
        class_scores(shapes, images, 2, batch_size=0)


def load_evaluation_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "evaluate_methods.py"
    spec = importlib.util.spec_from_file_location("evaluate_methods", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluation_script_scores_every_place_and_the_references():
    script = load_evaluation_script()
    layers, rows = script.evaluate(scenes=2, steps=4, methods=["gradcam", "layercam"],
                                   progress=lambda _: None)  # fmt: skip
    assert layers["last"] == "block5_conv3" and layers["before"] == "block4_conv2"
    assert set(rows) == {
        *((m, p) for m in ("gradcam", "layercam") for p in script.PLACES),
        ("random map", ""),
        ("ground-truth mask", ""),
    }
    summary = {key: script.summarise(samples) for key, samples in rows.items()}
    assert summary[("ground-truth mask", "")]["energy"] == pytest.approx(100.0)
    assert all(0 <= row["pointing"] <= 100 and 0 <= row["insertion"] <= 1.0001
               for row in summary.values())  # fmt: skip
    markdown = script.table(summary, layers, 2, 4)
    assert markdown.count("\n| gradcam |") == 3 and "| random map | - |" in markdown


def test_committed_method_table_is_the_one_in_the_guide():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    table = (root / "docs" / "method_scores.md").read_text().split("\n", 2)[2]
    script = load_evaluation_script()
    guide = (root / script.MARKED_PAGES[script.MARKERS]).read_text()
    start, end = script.MARKERS
    assert f"{start}\n{table}{end}" in guide
    assert table.count("\n| ") == 1 + 7 * 3 + 2  # header, 7 methods x 3 places, 2 references


def test_class_scores_follow_a_model_that_takes_any_size(make_cnn):
    model = make_cnn(input_shape=(None, None, 3), classes=2, activation=None)
    rng = np.random.default_rng(0)
    for size in ((20, 30), (33, 17)):
        images = rng.uniform(0, 255, (3, *size, 3)).astype(np.float32)
        expected = model(images).numpy()[:, 1]
        got = class_scores(model, images, 1, score="logit")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

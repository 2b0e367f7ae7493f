"""The audit job: sources, the rows it writes, resume after a kill, refusals, flat memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget import options as recipe
from gradcam_widget.__main__ import main
from gradcam_widget.auditing import run as auditing
from gradcam_widget.auditing import sources, store
from gradcam_widget.cam import core
from gradcam_widget.checks import metrics
from gradcam_widget.data import scenes as data

ROOT = Path(__file__).resolve().parents[2]
SCENES = "scenes:1000000-1000040"


def quiet_audit(model, source, out, **options):
    return gw.audit(model, source, out=out, progress=False, **options)


@pytest.fixture(scope="module")
def scene_audit(tmp_path_factory):
    """40 held-out scenes audited by ``shapes`` in shards of 16 (3 shards, the last short)."""
    out = tmp_path_factory.mktemp("audit") / "results"
    return quiet_audit("shapes", SCENES, out, shard_size=16, batch_size=8)


def assert_same_results(left: store.AuditResults, right: store.AuditResults):
    """Equal tables (floats to float32 rounding) and equal stored maps and thumbnails."""
    a, b = left.table, right.table
    assert list(a["index"]) == list(b["index"])
    for column in store.COLUMNS:
        if column in ("thumb_offset", "thumb_size"):
            continue
        if a[column].dtype.kind == "f":
            np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-5,
                                       equal_nan=True, err_msg=column)  # fmt: skip
        else:
            assert a[column].astype(object).where(a[column].notna(), None).tolist() == (
                b[column].astype(object).where(b[column].notna(), None).tolist()
            ), column
    for index in a["index"]:
        np.testing.assert_allclose(left.raw(index), right.raw(index), rtol=2e-3, atol=1e-4)


# --- what a row says --------------------------------------------------------------------


def test_rows_hold_what_the_maps_and_the_model_say(scene_audit, shapes):
    table = scene_audit.table
    assert len(table) == 40 and table["index"].tolist() == list(range(40))
    assert table["index"].is_unique
    assert scene_audit.complete and scene_audit.manifest["layer"] == "block5_conv3"
    scenes = [data.scene(1_000_000 + i, n_objects=1) for i in range(40)]
    ex = gw.explain(shapes, np.stack([s.image for s in scenes]), batch_size=8)
    logits = shapes.predict(np.stack([s.image for s in scenes]))
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    for i in (0, 7, 33):
        row = table.iloc[i]
        scene = scenes[i]
        assert row["id"] == f"scenes-{scene.seed}"
        assert row["true_class"] == scene.labels[0]
        assert row["true_label"] == data.CLASS_NAMES[scene.labels[0]]
        assert row["predicted_class"] == int(np.argmax(logits[i]))
        assert row["explained_class"] == ex.class_indices[i]
        assert row["predicted_score"] == pytest.approx(probabilities[i].max(), rel=1e-5)
        assert row["correct"] == (row["predicted_class"] == scene.labels[0])
        heatmap = ex.heatmaps[i]
        mask = scene.masks[int(row["explained_class"])] if row["explained_class"] in scene.masks \
            else None  # fmt: skip
        if mask is not None:
            assert row["object_share"] == pytest.approx(
                metrics.energy_pointing_game(heatmap, mask), abs=1e-5
            )
            assert row["pointing_hit"] == metrics.pointing_game(heatmap, mask)
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row["peak_y"] == pytest.approx((peak[0] + 0.5) / 224)
        assert row["peak_x"] == pytest.approx((peak[1] + 0.5) / 224)
        # the stored raw map is the explanation's, and the heatmap is rebuilt from it
        np.testing.assert_allclose(scene_audit.raw(i), ex.raw[i], rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(scene_audit.heatmap(i), heatmap, atol=5e-3)
    # most held-out scenes are right, and the map lands on the object
    assert table["correct"].mean() > 0.9
    assert table["pointing_hit"].mean() > 0.8


def test_thumbnails_are_small_jpeg_overlays(scene_audit):
    row = scene_audit.table.iloc[5]
    jpeg = scene_audit.thumbnail(int(row["index"]))
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) == row["thumb_size"]
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (auditing.THUMBNAIL_SIDE, auditing.THUMBNAIL_SIDE, 3)
    scene = data.scene(1_000_005, n_objects=1)
    expected = cv2.resize(
        gw.render.overlay(scene.image, scene_audit.heatmap(5)), picture.shape[:2],
        interpolation=cv2.INTER_AREA,
    )  # fmt: skip
    assert np.abs(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB).astype(int) - expected).mean() < 6


# --- sources --------------------------------------------------------------------------------


def write_folder(root: Path) -> list[np.ndarray]:
    """``root/<class>/<n>.png`` for 6 scenes, one sub-folder per class present, plus bad files."""
    kept = []
    for i in range(6):
        scene = data.scene(1_000_000 + i, n_objects=1)
        folder = root / data.CLASS_NAMES[scene.labels[0]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(folder / f"{i:02d}.png")
        kept.append(scene)
    (root / "star" / "zz_text.jpg").parent.mkdir(exist_ok=True)
    (root / "star" / "zz_text.jpg").write_text("not an image")
    good = (root / "star" / "zz_text.jpg").parent / "zz_cut.png"
    Image.fromarray(kept[0].image).save(good)
    good.write_bytes(good.read_bytes()[:200])  # a truncated PNG
    (root / "notes.txt").write_text("ignored: not an image name")
    (root / ".hidden").mkdir()
    Image.fromarray(kept[0].image).save(root / ".hidden" / "x.png")
    return kept


def test_a_folder_with_class_sub_folders_and_bad_files(tmp_path, shapes):
    images_root = tmp_path / "images"
    scenes = write_folder(images_root)
    results = quiet_audit(shapes, images_root, tmp_path / "out", labels="folders",
                          targets="true", shard_size=4)  # fmt: skip
    table = results.table
    assert len(table) == 6 and len(results.skipped) == 2
    assert sorted(entry["id"] for entry in results.skipped) == [
        "star/zz_cut.png", "star/zz_text.jpg"
    ]  # fmt: skip
    assert all(entry["error"] for entry in results.skipped)
    by_id = {row["id"]: row for _, row in table.iterrows()}
    for i, scene in enumerate(scenes):
        row = by_id[f"{data.CLASS_NAMES[scene.labels[0]]}/{i:02d}.png"]
        assert row["true_class"] == scene.labels[0] == row["explained_class"]
    assert results.manifest["skipped"] == results.skipped
    # the gallery can read an image again from the folder
    first = table.iloc[0]
    assert results.image(int(first["index"])).shape == (224, 224, 3)


def test_arrays_paths_and_datasets_give_the_same_rows(tmp_path, shapes):
    tf = pytest.importorskip("tensorflow")
    scenes = [data.scene(1_000_000 + i, n_objects=1) for i in range(10)]
    stack = np.stack([s.image for s in scenes])
    labels = [s.labels[0] for s in scenes]
    from_array = quiet_audit(shapes, stack, tmp_path / "a", labels=labels, shard_size=4)
    paths = []
    for i, scene in enumerate(scenes):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(scene.image).save(paths[-1])
    from_paths = quiet_audit(shapes, paths, tmp_path / "p", labels=labels, shard_size=4)
    pairs = tf.data.Dataset.from_tensor_slices((stack, np.array(labels))).batch(3)
    from_dataset = quiet_audit(shapes, pairs, tmp_path / "d", labels=True, shard_size=4)
    for results in (from_paths, from_dataset):
        for column in ("true_class", "predicted_class", "explained_class", "correct"):
            assert results.table[column].tolist() == from_array.table[column].tolist()
        np.testing.assert_allclose(results.table["entropy"], from_array.table["entropy"],
                                   atol=1e-5)  # fmt: skip
    assert from_dataset.manifest["images"] == 10 and from_dataset.complete


def test_unreadable_array_images_are_skipped_not_fatal(tmp_path, shapes):
    stack = np.stack([data.scene(1_000_000 + i, n_objects=1).image for i in range(5)])
    stack = stack.astype(np.float32)
    stack[2, 0, 0, 0] = np.nan
    results = quiet_audit(shapes, stack, tmp_path / "out", shard_size=2)
    assert results.table["index"].tolist() == [0, 1, 3, 4]
    assert [entry["index"] for entry in results.skipped] == [2]
    assert "NaN" in results.skipped[0]["error"]


def test_a_model_that_takes_any_size_is_fitted_to_one_size(tmp_path, make_cnn):
    model = make_cnn(input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    varied = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 50), (64, 32))]
    results = quiet_audit(model, varied, tmp_path / "out", image_size=(48, 48))
    assert results.manifest["input_size"] == [48, 48]
    assert results.raw(0).shape == results.raw(1).shape == (24, 24)
    assert results.table["correct"].isna().all()  # no labels: unknown, not False


# --- refusals -------------------------------------------------------------------------------


def test_another_job_in_the_same_folder_is_refused(scene_audit, tmp_path):
    folder = scene_audit.folder
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    for change, expected in (
        ({"layer": "block4_conv3"}, "options.layer"),
        ({"pooling": "max"}, "options.cam_options.pooling"),
        ({"interpolation": "nearest"}, "options.cam_options.interpolation"),
        ({"targets": 2}, "options.targets"),
        ({"shard_size": 8}, "options.shard_size"),
    ):
        options = {"shard_size": 16} | change
        with pytest.raises(auditing.AuditError, match=expected.replace(".", r"\.")):
            quiet_audit("shapes", SCENES, folder, **options)
    with pytest.raises(auditing.AuditError, match="source.fingerprint"):
        quiet_audit("shapes", "scenes:1000000-1000041", folder, shard_size=16)
    with pytest.raises(auditing.AuditError, match="model.hash"):
        quiet_audit("shapes_permuted", SCENES, folder, shard_size=16)
    after = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    assert after == before  # nothing written
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(auditing.AuditError, match="not empty"):
        quiet_audit("shapes", SCENES, tmp_path / "busy")


def test_bad_arguments_fail_before_any_work(tmp_path):
    out = tmp_path / "out"
    for options, message in (
        ({"targets": "true", "source": np.zeros((2, 8, 8, 3))}, "needs the true classes"),
        ({"targets": "everything"}, "targets must be"),
        ({"method": "nope"}, "nope"),
        ({"batch_size": 0}, "batch_size"),
        ({"source": "scenes:5-2"}, "start < stop"),
        ({"source": str(tmp_path / "missing")}, "neither a folder"),
        ({"source": 42}, "source must be"),
        ({"layer": "block9_conv9"}, "unknown layer 'block9_conv9'"),
        ({"targets": 7}, "class_index must be in 0..4"),
        ({"pooling": "median"}, "pooling"),
        ({"interpolation": "area"}, "interpolation"),
    ):
        source = options.pop("source", SCENES)
        with pytest.raises(ValueError, match=message):
            quiet_audit("shapes", source, out, **options)
        assert not out.exists()  # a job refused on its first shard leaves no folder behind


def test_interpolation_makes_the_maps_and_is_part_of_the_job(scene_audit, tmp_path):
    assert scene_audit.options["cam_options"]["interpolation"] == "bilinear"
    stored = quiet_audit("shapes", SCENES, scene_audit.folder, shard_size=16,
                         interpolation=recipe.TABLE["interpolation"].default)  # fmt: skip
    assert stored.computed_shards == 0  # the default, said: the same job
    for interpolation in recipe.INTERPOLATIONS:
        if interpolation == "bilinear":
            continue
        out = tmp_path / interpolation
        results = quiet_audit("shapes", "scenes:1000000-1000004", out, shard_size=4,
                              interpolation=interpolation)  # fmt: skip
        assert results.options["cam_options"]["interpolation"] == interpolation
        manifest = json.loads((out / store.MANIFEST).read_text())
        assert manifest["job"]["options"]["cam_options"]["interpolation"] == interpolation
        for index in range(4):
            np.testing.assert_allclose(results.raw(index), scene_audit.raw(index))  # same map
            size = tuple(results.manifest["input_size"])
            made = core.to_heatmap(results.raw(index), size, "relu_first", interpolation)
            np.testing.assert_allclose(results.heatmap(index), made)
            assert results.thumbnail(index) != scene_audit.thumbnail(index)  # drawn from it
        with pytest.raises(auditing.AuditError, match=r"cam_options\.interpolation"):
            quiet_audit("shapes", "scenes:1000000-1000004", out, shard_size=4)


def test_a_finished_audit_is_not_redone_and_says_so(scene_audit, capfd):
    parts = sorted((scene_audit.folder / store.TABLE).iterdir())
    stamps = [part.stat().st_mtime_ns for part in parts]
    status = main(["audit", SCENES, "--out", str(scene_audit.folder), "--shard-size", "16",
                   "--batch-size", "8"])  # fmt: skip
    captured = capfd.readouterr()
    assert status == 0
    assert "nothing to do" in captured.out and "audit:" not in captured.err  # no bar
    assert [part.stat().st_mtime_ns for part in parts] == stamps


def test_the_cli_writes_the_store_and_reports_skips(tmp_path, capfd):
    images_root = tmp_path / "images"
    write_folder(images_root)
    out = tmp_path / "out"
    status = main(["audit", str(images_root), "--out", str(out), "--labels", "folders",
                   "--quiet", "--shard-size", "3"])  # fmt: skip
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""  # --quiet: no progress bar
    assert "6 images" in captured.out and "2 skipped" in captured.out
    assert "skipped star/zz_text.jpg" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["job"]["model"]["name"] == "shapes"
    assert manifest["package"]["version"] == gw.__version__
    assert manifest["job"]["options"]["shard_size"] == 3
    assert len(pd.read_parquet(out / store.TABLE)) == 6  # a plain Parquet dataset


# --- resume ---------------------------------------------------------------------------------


def test_a_crash_inside_a_commit_is_resumed_exactly(scene_audit, tmp_path, monkeypatch):
    """Fail the n-th file move of the run (maps, thumbnails, part or commit record of some
    shard), resume, compare with the uninterrupted run, for every n."""
    real_replace = os.replace
    for fail_at in range(1, 4 * 3 + 1):
        out = tmp_path / f"crash{fail_at}"
        calls = {"n": 0}

        def failing_replace(source, target, fail_at=fail_at, calls=calls):
            if "manifest" not in str(target):
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise KeyboardInterrupt("killed")
            return real_replace(source, target)

        monkeypatch.setattr(store.os, "replace", failing_replace)
        with pytest.raises(KeyboardInterrupt):
            quiet_audit("shapes", SCENES, out, shard_size=16, batch_size=8)
        monkeypatch.setattr(store.os, "replace", real_replace)
        done_before = len(store.done_shards(out))
        assert done_before == (fail_at - 1) // 4  # a shard is done once its record is moved
        resumed = quiet_audit("shapes", SCENES, out, shard_size=16, batch_size=8)
        assert resumed.computed_shards == 3 - done_before
        assert_same_results(resumed, scene_audit)
        assert not any((out / ".partial").iterdir())


AUDIT_SCRIPT = """
import sys
import gradcam_widget as gw
gw.audit("shapes", sys.argv[2], out=sys.argv[1], shard_size=8, batch_size=8, progress=False)
"""


def run_audit_process(out: Path, scenes: str) -> subprocess.Popen:
    environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-c", AUDIT_SCRIPT, str(out), scenes],
                            env=environment, cwd=ROOT, stderr=subprocess.PIPE)  # fmt: skip


def partial_files(out: Path) -> set[str]:
    """The names of the files being written in ``out/.partial/`` now (none before the folder
    exists)."""
    try:
        return {entry.name for entry in (out / ".partial").iterdir()}
    except OSError:
        return set()


def _progress(out: Path) -> tuple[int, set[str]]:
    """What a run had done before it started: committed shards, files left in ``.partial``."""
    return len(store.done_shards(out)), partial_files(out)


KILL_POINTS = (
    ("its folder just made", lambda out, before: out.exists()),
    ("its manifest written", lambda out, before: (out / store.MANIFEST).exists()),
    ("a shard committed", lambda out, before: len(store.done_shards(out)) > before[0]),
    # a file this run began (a killed run's leftovers in .partial do not count)
    ("a shard's file being written", lambda out, before: bool(partial_files(out) - before[1])),
    ("a shard committed", lambda out, before: len(store.done_shards(out)) > before[0]),
)
"""Where each run is killed: as soon as the test sees the run get there (polled every few
milliseconds), never after a guessed time, so a slow machine and a fast one kill at the same
points of the run."""


@pytest.mark.slow
def test_sigkill_at_points_of_progress_then_resume_equals_an_uninterrupted_run(tmp_path):
    scenes = "scenes:1000000-1000096"  # 12 shards of 8
    reference = quiet_audit("shapes", scenes, tmp_path / "reference", shard_size=8, batch_size=8)
    out = tmp_path / "killed"
    kills = []
    for where, reached in KILL_POINTS:
        before = _progress(out)
        process = run_audit_process(out, scenes)
        deadline = time.monotonic() + 600  # generous: only a run that makes no progress fails
        while process.poll() is None and not reached(out, before):
            assert time.monotonic() < deadline, f"the audit never got to {where}"
            time.sleep(0.002)
        if process.poll() is not None:
            break  # it finished before it was seen there: nothing left to interrupt
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append(where)
    assert len(kills) >= 3, f"the audit finished before most kill points (killed: {kills})"
    done_before = store.done_shards(out)
    assert len(done_before) < 12
    resumed = quiet_audit("shapes", scenes, out, shard_size=8, batch_size=8)
    assert resumed.computed_shards == 12 - len(done_before)
    assert resumed.table["index"].tolist() == list(range(96))  # none lost, none twice
    assert_same_results(resumed, reference)
    again = quiet_audit("shapes", scenes, out, shard_size=8, batch_size=8)
    assert again.computed_shards == 0


MEMORY_SCRIPT = """
import sys, resource
import gradcam_widget as gw
gw.audit("shapes", sys.argv[2], out=sys.argv[1], shard_size=64, batch_size=32, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    peaks = {}
    for count in (200, 2000):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / str(count)),
             f"scenes:1000000-{1_000_000 + count}"],
            env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        peaks[count] = int(result.stdout.split()[-1])
    assert peaks[2000] <= 1.2 * peaks[200], peaks


def test_sources_number_their_images_stably(tmp_path):
    root = tmp_path / "f"
    write_folder(root)
    first = sources.Folder(root, labels="folders")
    second = sources.Folder(root, labels="folders")
    assert [p.name for p in first.paths] == [p.name for p in second.paths]
    assert first.fingerprint() == second.fingerprint()
    (root / "circle" / "new.png").write_bytes((root / "star" / "zz_text.jpg").read_bytes())
    assert sources.Folder(root, labels="folders").fingerprint() != first.fingerprint()
    scenes = sources.Scenes.parse("shortcut:5-9")
    assert (scenes.kind, len(scenes)) == ("shortcut", 4)
    with pytest.raises(ValueError, match="KIND:START-STOP"):
        sources.Scenes.parse("planets:1-2")


# --- what a review found ------------------------------------------------------------------


def test_a_folder_killed_before_its_manifest_resumes(tmp_path):
    out = tmp_path / "out"
    store.prepare(out)  # the store's own empty folders, as a kill right at the start leaves
    (out / ".partial" / "manifest.json.123").write_text("{")  # a manifest half written
    results = quiet_audit("shapes", "scenes:1000000-1000008", out, shard_size=4)
    assert results.complete and len(results.table) == 8


def test_a_second_run_on_a_folder_being_written_is_refused(tmp_path):
    out = tmp_path / "out"
    with store.lock(out), pytest.raises(store.AuditStoreError, match="another audit is writing"):
        quiet_audit("shapes", "scenes:1000000-1000004", out)
    assert not out.exists()  # the lock's folder is removed: nothing was written


def test_the_job_covers_preprocess_and_treats_defaults_as_given(scene_audit):
    folder = scene_audit.folder
    same = quiet_audit("shapes", SCENES, folder, shard_size=16, order="relu_first",
                       interpolation="bilinear", pooling="mean", channels="weighted")  # fmt: skip
    assert same.computed_shards == 0
    with pytest.raises(auditing.AuditError, match="options.preprocess"):
        quiet_audit("shapes", SCENES, folder, shard_size=16, preprocess=lambda x: x * 0)
    assert quiet_audit("shapes", SCENES, folder, shard_size=16, ray=False).computed_shards == 0
    for bad in ((0, 5), 224, ("a", "b")):
        with pytest.raises(ValueError, match="image_size"):
            quiet_audit("shapes", SCENES, folder, shard_size=16, image_size=bad)


def test_a_retrained_copy_of_a_shipped_model_is_not_reloaded_by_name(shapes, make_cnn):
    from dataclasses import replace

    assert auditing.load_model(shapes)[1] == "shapes"
    imposter = replace(shapes, model=make_cnn(input_shape=(224, 224, 3), classes=5))
    assert auditing.load_model(imposter)[1] is None


def test_datasets_batched_float_labelled_or_endless(tmp_path, shapes):
    tf = pytest.importorskip("tensorflow")
    stack = np.stack([data.scene(1_000_000 + i, n_objects=1).image for i in range(5)])
    labels = np.array([data.scene(1_000_000 + i, n_objects=1).labels[0] for i in range(5)])
    batched = tf.data.Dataset.from_tensor_slices((stack, labels.astype(np.float32))).batch(2)
    source = sources.as_source(batched, labels=True)
    assert source.length is None  # 3 batches, not 3 images
    fingerprint = source.fingerprint()
    first = quiet_audit(shapes, source, tmp_path / "d", shard_size=2)
    assert first.manifest["images"] == 5 and len(first.table) == 5
    assert first.table["true_class"].tolist() == labels.tolist()  # 3.0 is class 3
    assert source.fingerprint() == fingerprint  # the same object can be audited again
    assert quiet_audit(shapes, source, tmp_path / "d", shard_size=2).computed_shards == 0
    with pytest.raises(ValueError, match="repeats forever"):
        sources.as_source(tf.data.Dataset.from_tensor_slices(stack).repeat())


def test_large_photos_are_fitted_as_they_are_read(tmp_path):
    big = np.zeros((1200, 1600, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    source = sources.Paths([tmp_path / "big.png"])
    source.set_size((224, 224))
    (item,) = source.items(0, 1)
    assert item.image.shape == (224, 224, 3)


def test_paths_given_with_a_root_open_again(tmp_path, shapes):
    scene = data.scene(1_000_000, n_objects=1)
    Image.fromarray(scene.image).save(tmp_path / "a.png")
    source = sources.Paths([tmp_path / "a.png"], root=tmp_path)
    results = quiet_audit(shapes, source, tmp_path / "out")
    assert results.table["id"].tolist() == ["a.png"]
    np.testing.assert_array_equal(results.image(0), scene.image.astype(np.float32))


def test_reading_many_shards_keeps_few_files_open(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "OPEN_MAPS", 3)
    results = quiet_audit("shapes", "scenes:1000000-1000012", tmp_path / "out", shard_size=2)
    for index in range(12):
        results.raw(index)
    assert len(results._reader._maps) == 3

"""Audit inputs a hostile folder holds: sub-folders named by case, files changed after the
audit, names that are no regular file, names that hold a newline. Real files in ``tmp_path``,
the shipped ``shapes`` model, tiny audits."""

from __future__ import annotations

import contextlib
import html
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget.__main__ import main
from gradcam_widget.auditing import sources, store
from gradcam_widget.auditing.gallery import CamGallery
from gradcam_widget.data import scenes as data

ROOT = Path(__file__).resolve().parents[2]


def save_scene(path: Path, seed: int, kind: str | None = None) -> int:
    """A one-object scene (of class ``kind`` when given: the first seed from ``seed`` on whose
    object is one) saved as a PNG at ``path``; its class index."""
    while True:
        scene = data.scene(seed, n_objects=1)
        if kind is None or data.CLASS_NAMES[scene.labels[0]] == kind:
            break
        seed += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene.image).save(path)
    return scene.labels[0]


# --- 1. sub-folders named as no class ---------------------------------------------------


def test_folders_match_classes_by_case_and_the_rest_is_named_and_counted(tmp_path, capfd):
    folder = tmp_path / "images"
    save_scene(folder / "Star" / "a.png", 1_000_000, "star")
    save_scene(folder / "Star" / "b.png", 1_000_100, "star")
    save_scene(folder / "circle" / "c.png", 1_000_200, "circle")
    save_scene(folder / "mystery" / "d.png", 1_000_300)
    out = tmp_path / "out"
    status = main(["audit", str(folder), "--out", str(out), "--labels", "folders", "--quiet"])
    captured = capfd.readouterr()
    assert status == 0, captured.err
    warning_lines = captured.err.splitlines()
    assert len(warning_lines) == 1 and warning_lines[0].startswith("warning: "), captured.err
    assert "'mystery' (1 image: no class of that name)" in warning_lines[0]
    assert "1 of 4 images have no true class" in warning_lines[0]
    results = store.AuditResults(out)
    table = results.table.set_index("id")
    star = data.CLASS_NAMES.index("star")
    assert table.loc["Star/a.png", "true_class"] == star == table.loc["Star/b.png", "true_class"]
    assert table.loc["Star/a.png", "true_label"] == "star"
    assert table.loc["mystery/d.png", "true_label"] == "mystery"
    assert table["true_class"].isna().sum() == 1
    known = table["correct"].dropna()
    assert len(known) == 3
    expected = (
        f"accuracy {known.astype(float).mean():.1%} of 3 images with a known class; "
        "1 image had no class"
    )
    assert expected in captured.out.splitlines(), captured.out

    gallery = CamGallery(results)
    summary = html.unescape(gallery.summary.value)
    assert "of 3 images with a known class; 1 image had no class" in summary, summary
    gallery.close()


def test_a_folder_source_warns_once_naming_each_unmatched_folder(tmp_path):
    for name in ("STAR", "Circle", "cross"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"")  # listed by name; never read here
    source = sources.Folder(tmp_path, labels="folders")
    with pytest.warns(UserWarning) as caught:
        source.set_class_names(("Star", "star", "circle"))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and "2 of 3 images have no true class" in message
    assert "'STAR' (1 image: it matches 'Star' and 'star' but for case: ambiguous)" in message
    assert "'cross' (1 image: no class of that name)" in message
    assert source.label_of(0) == {"true_class": 2, "true_label": "circle"}  # Circle/x.png
    assert source.label_of(1) == {"true_label": "STAR"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sources.Folder(tmp_path, labels="folders").set_class_names(None)  # names from folders


# --- 2. a file changed after the audit ------------------------------------------------------


def test_the_gallery_refuses_a_file_changed_since_the_audit(tmp_path, shapes):
    folder = tmp_path / "images"
    for name, seed in (("a.png", 1_000_000), ("b.png", 1_000_001), ("c.png", 1_000_002)):
        save_scene(folder / name, seed)
    time.sleep(1.1)  # the audit's start is kept to the second: the files are older than it
    results = gw.audit(shapes, folder, out=tmp_path / "out", progress=False)
    index = {row["id"]: int(row["index"]) for _, row in results.table.iterrows()}
    assert results.table["file_fingerprint"].notna().all()  # kept with each row
    gallery = CamGallery(results, model=shapes)
    try:
        os.chmod(folder / "b.png", 0o600)  # its status changed, not its picture
        explorer = gallery.open(index["b.png"])
        assert "b.png" in gallery.explorer_title.value
        shown = explorer.capture.image.copy()

        save_scene(folder / "a.png", 1_000_050)  # another picture under the audited name
        with pytest.raises(ValueError, match=r"cannot open #0 \(a\.png\): its file changed"):
            gallery.open(index["a.png"])
        status = html.unescape(gallery.status.value)
        assert "a.png" in status and "changed since the audit" in status
        assert "not of the file as it is now" in status
        assert "b.png" in gallery.explorer_title.value  # the old picture's row is not shown
        assert (gallery.explorer.capture.image == shown).all()  # nor the new picture explained

        (folder / "c.png").unlink()
        os.mkfifo(folder / "c.png")  # looked at, never opened: the gallery does not block
        with pytest.raises(ValueError, match=r"no image file any more: not a regular file \(FIFO"):
            gallery.open(index["c.png"])

        row = results.table.set_index("index").loc[index["b.png"]].to_dict()
        row["index"] = index["b.png"]
        fingerprint = sources.file_fingerprint(folder / "b.png")
        assert gallery._why_stale(row | {"file_fingerprint": fingerprint}) is None
        changed = gallery._why_stale(row | {"file_fingerprint": "1:2:3"})
        assert "changed since the audit" in changed
    finally:
        gallery.close()


# --- 3. names that are no regular file -------------------------------------------------------


def audit_in_thread(folder: Path, out: Path, fifo: Path, shapes, seconds: float = 120):
    """The audit of ``folder`` in a thread: its results, or a failure when it is still
    running after ``seconds`` (the FIFO is then opened for writing and closed, so that a
    reader blocked on it gets end of file and the thread ends)."""
    outcome = {}

    def run():
        try:
            outcome["results"] = gw.audit(shapes, folder, out=out, progress=False)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with contextlib.suppress(OSError):  # no reader waiting: it did not block there
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail(f"the audit was still running after {seconds} s: it opened the FIFO")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]


def test_broken_links_link_loops_and_fifos_are_skipped_with_the_reason(tmp_path, shapes):
    folder = tmp_path / "images"
    save_scene(folder / "good.png", 1_000_000)
    os.symlink(folder / "gone.png", folder / "broken.png")
    os.symlink("loop.png", folder / "loop.png")
    os.mkfifo(folder / "x.png")
    results = audit_in_thread(folder, tmp_path / "out", folder / "x.png", shapes)
    assert results.table["id"].tolist() == ["good.png"]
    reasons = {entry["id"]: entry["error"] for entry in results.skipped}
    assert reasons == {
        "broken.png": f"broken symbolic link (its target {str(folder / 'gone.png')!r} does not "
        "exist)",
        "loop.png": "symbolic link loop",
        "x.png": "not a regular file (FIFO)",
    }


def test_a_fifo_among_given_paths_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    (item,) = sources.Paths([tmp_path / "x.png"]).items(0, 1)
    assert item.image is None and item.error == "not a regular file (FIFO)"
    with pytest.raises(ValueError, match=r"not a regular file \(FIFO\)"):
        sources.file_fingerprint(tmp_path / "x.png")  # opened without blocking, not read


# --- 4. names with a newline --------------------------------------------------------------


def test_the_cli_prints_names_escaped_so_none_forges_a_line(tmp_path):
    folder = tmp_path / "images"
    save_scene(folder / "good.png", 1_000_000)
    (folder / "a\nskipped: evil.png").write_text("not an image")
    out = tmp_path / "res\nults"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = subprocess.run(
        [sys.executable, "-m", "gradcam_widget", "audit", str(folder), "--out", str(out),
         "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"wrote {str(out)!r}: 1 images, 1 skipped; ")
    assert lines[1].startswith("skipped 'a\\nskipped: evil.png': cannot read "), lines[1]
    assert [line for line in lines if line.startswith("skipped")] == [lines[1]]


# --- 5. names that are not text ---------------------------------------------------------------


def undecodable(folder: Path, name: bytes) -> Path:
    """``folder/name`` for a name of bytes that are not UTF-8 (as Python names such a file:
    undecodable bytes as lone surrogates); skips where the file system refuses such names."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    try:
        path.touch()
    except (OSError, UnicodeEncodeError) as error:
        pytest.skip(f"this file system refuses a name that is not UTF-8 ({error})")
    return path


def test_file_names_that_are_not_text_are_audited_and_named_printably(tmp_path, shapes):
    """``b'bad\\xff.png'`` is explained, ``b'junk\\xfe.png'`` (not an image) skipped with its
    reason; each is named ``bad\\\\xff.png`` in the table and the manifest, which hold only
    valid text; the audit resumes (its fingerprint is stable) and the image opens again."""
    import pyarrow.parquet as pq

    folder = tmp_path / "images"
    save_scene(folder / "good.png", 1_000_000)
    bad = undecodable(folder, b"bad\xff.png")
    save_scene(bad, 1_000_001)
    undecodable(folder, b"junk\xfe.png").write_text("not an image")
    out = tmp_path / "out"
    results = gw.audit(shapes, folder, out=out, progress=False)
    assert results.table["id"].tolist() == ["bad\\xff.png", "good.png"]
    (skipped,) = results.skipped
    assert skipped["index"] == 2 and skipped["id"] == "junk\\xfe.png"
    assert skipped["error"].startswith("cannot") and skipped["error"].isprintable()
    skipped["error"].encode("utf-8")  # valid text, as every name stored
    table = pq.read_table(out / store.TABLE / "part-00000.parquet")
    assert table.column("id").to_pylist() == ["bad\\xff.png", "good.png"]
    manifest = json.loads((out / store.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["skipped"][0]["id"] == "junk\\xfe.png"
    assert sources.name_of_id("bad\\xff.png") == bad.name
    np.testing.assert_array_equal(results.image(0), data.scene(1_000_001, n_objects=1).image)
    assert gw.audit(shapes, folder, out=out, progress=False).computed_shards == 0

    classes = tmp_path / "classes"  # a label from a sub-folder's name is text too
    save_scene(Path(os.fsdecode(os.path.join(os.fsencode(classes), b"st\xe4r", b"a.png"))),
               1_000_000)  # fmt: skip
    source = sources.Folder(classes, labels="folders")
    assert source.label_of(0) == {"true_label": "st\\xe4r"}
    assert source.fingerprint() == sources.Folder(classes, labels="folders").fingerprint()

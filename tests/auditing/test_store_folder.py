"""What a folder holds before a run: the package's own leftovers, or someone else's files."""

from __future__ import annotations

import json
import os

from gradcam_widget.auditing import store_folder, store_layout


def test_a_folder_a_run_was_killed_in_early_is_empty_else_names_the_foreign(tmp_path):
    assert store_folder.is_empty(tmp_path / "missing")
    for name in (*store_layout.OWN_FOLDERS, ".partial"):
        (tmp_path / name).mkdir()
    (tmp_path / ".partial" / "manifest.json.gw-partial-5-0a1b2c3d").write_text("{")
    lock = {"lock": store_layout.LOCK_MARK, "pid": 1, "host": "h", "since": "x"}
    (tmp_path / store_layout.LOCK).write_text(json.dumps(lock))
    assert store_folder.foreign_entries(tmp_path) == []
    assert store_folder.is_empty(tmp_path)
    (tmp_path / "maps" / "mine.txt").write_text("keep")
    assert store_folder.foreign_entries(tmp_path) == ["maps/mine.txt"]
    assert not store_folder.is_empty(tmp_path)


def test_own_temporary_tells_the_packages_partial_files(tmp_path):
    ours = tmp_path / "00001.npy.gw-partial-12-0a1b2c3d"
    ours.write_bytes(b"x")
    old = tmp_path / "00001.npy.77"
    old.write_bytes(b"\x93NUMPY...")  # as an earlier version named it, begun as .npy is
    users = tmp_path / "00002.npy.77"
    users.write_bytes(b"something else")
    assert store_folder.own_temporary(ours) and store_folder.own_temporary(old)
    assert not store_folder.own_temporary(users)
    assert not store_folder.own_temporary(tmp_path)


def test_a_fifo_where_the_store_keeps_a_file_is_unusual(tmp_path):
    (tmp_path / store_layout.MANIFEST).write_text("{}")
    assert store_folder.unusual_entries(tmp_path) == []
    os.mkfifo(tmp_path / store_layout.LOCK)
    assert store_folder.unusual_entries(tmp_path) != []
    assert store_layout.LOCK in store_folder.unusual_entries(tmp_path)[0]

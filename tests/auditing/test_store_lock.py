"""One writer at a time: the results folder's lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradcam_widget.auditing import store_layout, store_lock


def test_a_held_lock_names_its_holder_and_refuses_a_second(tmp_path):
    out = tmp_path / "new" / "out"
    assert store_lock.lock_holder(out) is None
    with store_lock.lock(out):
        content = json.loads((out / store_layout.LOCK).read_text())
        assert content["lock"] == store_layout.LOCK_MARK and content["pid"] == os.getpid()
        assert f"pid {os.getpid()}" in store_lock.lock_holder(out)
        with pytest.raises(store_layout.AuditStoreError, match="another audit is writing"):
            store_lock.check_unlocked(out)
        refused = pytest.raises(store_layout.AuditStoreError, match=f"pid {os.getpid()}")
        with refused, store_lock.lock(out):
            pass  # pragma: no cover - refused
    assert store_lock.lock_holder(out) is None
    store_lock.check_unlocked(out)
    assert not (tmp_path / "new").exists()  # the folders it made, empty, are removed


def test_a_lock_left_by_a_killed_run_is_taken(tmp_path):
    (tmp_path / store_layout.LOCK).write_text('{"pid": 1}')  # nobody holds it
    assert store_lock.lock_holder(tmp_path) is None
    with store_lock.lock(tmp_path):
        assert store_lock.lock_holder(tmp_path) is not None
    assert not (tmp_path / store_layout.LOCK).exists()


def test_the_lock_file_is_never_seen_empty_and_a_killed_runs_lock_temporary_is_ours(tmp_path):
    """``.lock`` appears with its content already in it (linked from ``.partial/``): a run
    killed right after creating it leaves no empty ``.lock``, which is no proof it is ours."""
    from gradcam_widget.auditing import store_folder, store_lock

    seen = []
    real_link = os.link

    def watching_link(source, target, *args, **kwargs):
        seen.append(Path(source).read_text())  # what .lock will hold the moment it exists
        return real_link(source, target, *args, **kwargs)

    folder = tmp_path / "results"
    try:
        os.link = watching_link
        with store_lock.lock(folder):
            held = json.loads((folder / ".lock").read_text())
    finally:
        os.link = real_link
    assert len(seen) == 1 and json.loads(seen[0]) == held and held["pid"] == os.getpid()
    assert not folder.exists()  # made by the run, removed with its empty .partial
    folder.mkdir()
    (folder / ".partial").mkdir()
    (folder / ".partial" / ".lock.gw-partial-123-0123abcd").write_text(seen[0])
    assert store_folder.foreign_entries(folder) == []  # what a run killed at the link leaves

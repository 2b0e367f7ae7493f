"""One writer at a time: the results folder's lock."""

from __future__ import annotations

import json
import os

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

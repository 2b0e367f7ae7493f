"""Writing a shard and its commit record; which shards are done and whole."""

from __future__ import annotations

import numpy as np

from gradcam_widget.auditing import commits, store_layout


def a_row(index: int) -> dict:
    row = dict.fromkeys(store_layout.COLUMNS)
    row |= {"index": index, "id": str(index), "predicted_class": 0, "predicted_label": "a",
            "predicted_score": 0.5, "explained_class": 0, "explained_label": "a",
            "explained_score": 0.5}  # fmt: skip
    return row


def a_shard(shard: int, rows: int = 2) -> store_layout.ShardResult:
    raw = np.arange(rows * 4, dtype=np.float16).reshape(rows, 2, 2)
    thumbs = [b"\xff\xd8\xff" + bytes([shard, n]) for n in range(rows)]
    return store_layout.ShardResult(shard, [a_row(shard * 10 + n) for n in range(rows)], raw,
                                    thumbs, skipped=[{"index": 9}], layer="conv")  # fmt: skip


def test_a_committed_shard_is_done_whole_and_read_back(tmp_path):
    commits.prepare(tmp_path)
    for shard in (0, 2):
        commits.commit(tmp_path, a_shard(shard))
    assert commits.done_shards(tmp_path) == {0, 2}
    assert commits.check_shards(tmp_path, 3) == ({0, 2}, {})
    assert commits.missing_shards({0, 2}, 3) == (1, 1)
    assert commits.part_rows(tmp_path, 2) == 2
    assert commits.part_metadata(tmp_path, 2) == {"skipped": [{"index": 9}], "layer": "conv"}
    assert np.load(commits.maps_path(tmp_path, 2)).shape == (2, 2, 2)
    assert not any((tmp_path / ".partial").iterdir())


def test_a_damaged_or_uncommitted_shard_is_not_done(tmp_path):
    commits.commit(tmp_path, a_shard(0))
    commits.commit(tmp_path, a_shard(1))
    maps = commits.maps_path(tmp_path, 1)
    maps.write_bytes(maps.read_bytes()[:-1])
    done, damaged = commits.check_shards(tmp_path, 2)
    assert done == {0} and set(damaged) == {1}
    assert "shard 1" in commits.damage_message(tmp_path, damaged)
    commits.record_path(tmp_path, 0).unlink()  # files without a record: not committed
    assert commits.check_shards(tmp_path, 2)[0] == set()


def test_prepare_removes_only_the_packages_leftovers(tmp_path):
    partial = tmp_path / ".partial"
    partial.mkdir()
    (partial / "00001.npy.gw-partial-12-0a1b2c3d").write_bytes(b"half")
    (partial / "notes.txt").write_text("mine")
    commits.prepare(tmp_path)
    assert sorted(path.name for path in partial.iterdir()) == ["notes.txt"]
    assert all((tmp_path / name).is_dir() for name in store_layout.OWN_FOLDERS)

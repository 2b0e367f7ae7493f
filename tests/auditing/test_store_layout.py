"""The store's layout: its names, its table's columns, what one shard adds."""

from __future__ import annotations

import numpy as np

from gradcam_widget.auditing import store_layout


def test_the_arrow_schema_is_the_columns_in_order():
    schema = store_layout.arrow_schema()
    assert schema.names == list(store_layout.COLUMNS)
    assert str(schema.field("predicted_score").type) == "float"
    assert str(schema.field("index").type) == "int64"


def test_shard_file_names_give_the_shards_number():
    assert store_layout.PART_NAME.match("part-00012.parquet")[1] == "00012"
    assert store_layout.RECORD_NAME.match("00012.json")[1] == "00012"
    assert not store_layout.PART_NAME.match("part-12.parquet")
    for folder, pattern in store_layout.SHARD_FILES.items():
        assert folder in store_layout.OWN_FOLDERS
        assert not pattern.match("notes.txt")
    assert store_layout.TEMPORARY.match("00001.npy.gw-partial-123-0a1b2c3d")
    assert not store_layout.TEMPORARY.match("00001.npy")


def test_a_shard_result_defaults_to_nothing_skipped():
    result = store_layout.ShardResult(0, [], np.zeros((0, 2, 2), np.float16), [])
    assert result.skipped == [] and result.layer is None
    assert issubclass(store_layout.AuditStoreError, ValueError)

"""The audit table's rows as the gallery shows them, on a real audit of the shapes model."""

from __future__ import annotations

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.auditing import gallery_rows


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("rows") / "audit"
    return gw.audit("shapes", "scenes:1000000-1000012", out=out, progress=False)


def test_select_filters_and_sorts_with_missing_values_last(results):
    table = results.table
    assert "index" in gallery_rows.sortable_columns(table)
    assert "shard" not in gallery_rows.sortable_columns(table)
    assert "object_share" in gallery_rows.numeric_columns(table)
    chosen = gallery_rows.select(
        table, "object_share", True, "true", None, "all", ("object_share", "<=", 0.5)
    )
    shares = chosen["object_share"].to_numpy(np.float64)
    assert (np.diff(shares) >= 0).all() and (shares <= 0.5).all()
    assert list(chosen.index) == list(range(len(chosen)))
    wrong = gallery_rows.select(table, "index", False, "true", None, "wrong", None)
    assert not wrong["correct"].any()


def test_rows_are_found_by_index_and_said_in_a_caption(results):
    table = results.table
    where = gallery_rows.positions(table)
    row = gallery_rows.row_of(table, where, int(table["index"].iloc[3]))
    assert row["id"] == table["id"].iloc[3]
    with pytest.raises(ValueError, match="no image #999"):
        gallery_rows.row_of(table, where, 999)
    with pytest.raises(ValueError, match="must be an int"):
        gallery_rows.row_of(table, where, True)
    caption = gallery_rows.caption(row, "object_share", ("predicted_score", ">=", 0.1))
    assert "object_share <b>" in caption and "predicted_score" in caption
    assert (
        gallery_rows.format_value(float("nan")) == "—" and gallery_rows.format_value(True) == "yes"
    )
    summary = gallery_rows.summary(table, table, 0, 4, 0)
    assert summary.startswith(f"showing 1–4 of {len(table)} selected")
    assert 0 <= gallery_rows.typical_threshold(table, "object_share") <= 1


def test_a_scene_is_read_again_and_the_audit_settings_come_back(results):
    row = results.table.iloc[0].to_dict()
    image = gallery_rows.image_of(results, None, row)
    assert image.shape[:2] == tuple(results.manifest["input_size"][:2])
    assert gallery_rows.why_not_open(results, row, True, False) is None
    assert "pass images=" in gallery_rows.why_not_open(results, row, True, True)
    assert gallery_rows.why_stale(results.manifest, row) is None  # a scene, not a file
    settings = gallery_rows.audit_settings(results)
    assert settings["method"] == results.options["method"]
    assert set(settings) <= {"method", "score", "pooling", "channels", "order", "interpolation"}

"""CamGallery driven from code: sorting, filters, summary, paging, thumbnails, opening.

One real audit of 60 scenes (the ``shapes`` model) is made per module. The shapes model gets
every one of them right and every map has an object share, so a second store, ``mixed``, is
written from the first with some rows marked wrong (and explaining another class) and some
object shares missing (the thumbnails and maps are the real ones); a third, ``in_memory``,
claims its model and images were held in memory."""

from __future__ import annotations

import html
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from ipywidgets.widgets.widget import _instances

import gradcam_widget as gw
from gradcam_widget.auditing import store
from gradcam_widget.auditing.gallery import CamGallery
from gradcam_widget.data import images

COUNT = 60
PAGE_SIZE = 24
WRONG = {1, 6, 11, 16, 21, 26, 31, 36, 41, 46, 51, 56}  # index % 5 == 1
NO_SHARE = {3, 10, 17, 24, 31, 38, 45, 52, 59}  # index % 7 == 3


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery") / "audit"
    return gw.audit(
        "shapes", f"scenes:1000000-{1000000 + COUNT}", out=out, shard_size=32, progress=False
    )


def rewrite(results, out, change_row=None, change_job=None) -> store.AuditResults:
    """A copy of ``results`` in ``out`` with each row passed through ``change_row(row)`` and
    the manifest's job through ``change_job(job)``; maps and thumbnails are copied as they
    are."""
    store.prepare(out)
    kept = [name for name in store.COLUMNS if name not in ("shard", "row", "thumb_offset",
                                                           "thumb_size")]  # fmt: skip
    for shard, part in results.table.groupby("shard"):
        part = part.sort_values("row")
        rows = []
        for row in part.to_dict("records"):
            plain = {name: None if pd.isna(row[name]) else row[name] for name in kept}
            plain = {
                name: value.item() if isinstance(value, np.generic) else value
                for name, value in plain.items()
            }
            rows.append(change_row(plain) if change_row else plain)
        raw = np.load(store.maps_path(results.folder, int(shard)))
        thumbs = [results.thumbnail_of(row) for row in part.to_dict("records")]
        store.commit(out, store.ShardResult(int(shard), rows, raw, thumbs))
    manifest = json.loads(json.dumps(results.manifest))
    if change_job:
        change_job(manifest["job"])
    store.write_json(out, store.MANIFEST, manifest)
    return store.AuditResults(out)


@pytest.fixture(scope="module")
def mixed(results, tmp_path_factory):
    names = results.class_names

    def change(row):
        if row["index"] in WRONG:  # marked wrong, and explaining another class than its own
            row["correct"] = False
            row["explained_class"] = (row["true_class"] + 1) % len(names)
            row["explained_label"] = names[row["explained_class"]]
        if row["index"] in NO_SHARE:
            row["object_share"] = float("nan")
        return row

    return rewrite(results, tmp_path_factory.mktemp("gallery") / "mixed", change)


@pytest.fixture(scope="module")
def in_memory(results, tmp_path_factory):
    def change(job):
        job["model"]["load"] = None
        job["source"]["reopen"] = None

    out = tmp_path_factory.mktemp("gallery") / "in_memory"
    return rewrite(results, out, change_job=change)


@pytest.fixture
def gallery(results):
    made = CamGallery(results, page_size=PAGE_SIZE)
    yield made
    made.close()


def shown_indices(gallery) -> list[int]:
    return [int(index) for index in gallery.shown["index"]]


def cell_indices(gallery) -> list[int]:
    """The image index each visible cell's open button names."""
    found = []
    for cell in gallery.cells:
        if cell.box.layout.display != "none":
            found.append(int(re.fullmatch(r"open #(\d+)", cell.button.description)[1]))
    return found


def summary_numbers(gallery) -> tuple[int, int, int, int]:
    """``(first, last, selected, total)`` read from the summary line."""
    match = re.search(r"showing ([\d,]+)–([\d,]+) of ([\d,]+) selected \(([\d,]+) in all\)",
                      gallery.summary.value)  # fmt: skip
    assert match, gallery.summary.value
    return tuple(int(number.replace(",", "")) for number in match.groups())


def stored_bytes(results, index: int) -> bytes:
    """Thumbnail ``index`` read straight from its shard's file (not through the store)."""
    row = results.table.set_index("index").loc[index]
    with open(store.thumbs_path(results.folder, int(row["shard"])), "rb") as handle:
        handle.seek(int(row["thumb_offset"]))
        return handle.read(int(row["thumb_size"]))


# --- sorting ------------------------------------------------------------------------------


def test_it_starts_sorted_by_object_share_ascending_with_a_summary(gallery, results):
    assert (gallery.sort_by, gallery.ascending, gallery.page) == ("object_share", True, 1)
    values = gallery.selection["object_share"].to_numpy()
    assert len(values) == COUNT and np.all(np.diff(values) >= 0)
    expected = gallery.selection["index"].tolist()[:PAGE_SIZE]
    assert shown_indices(gallery) == cell_indices(gallery) == expected
    assert summary_numbers(gallery) == (1, PAGE_SIZE, COUNT, COUNT)
    assert "accuracy of the selection 100.0 %" in gallery.summary.value
    assert gallery.page_count == math.ceil(COUNT / PAGE_SIZE)
    assert gallery.explorer is None and gallery.error is None


def test_without_object_shares_it_sorts_by_predicted_score(results, tmp_path):
    def no_share(row):
        row["object_share"] = float("nan")
        return row

    gallery = CamGallery(rewrite(results, tmp_path / "no_share", no_share))
    assert gallery.sort_by == "predicted_score" and gallery.ascending
    assert "object_share" not in gallery.controls["sort"].options
    gallery.close()


@pytest.mark.parametrize("ascending", [True, False])
def test_missing_values_sort_last_either_way(mixed, ascending):
    gallery = CamGallery(mixed, page_size=PAGE_SIZE)
    gallery.ascending = ascending
    gallery.sort_by = "object_share"
    shares = gallery.selection["object_share"].to_numpy(np.float64)
    known = COUNT - len(NO_SHARE)
    assert np.isnan(shares[known:]).all() and not np.isnan(shares[:known]).any()
    steps = np.diff(shares[:known])
    assert np.all(steps >= 0) if ascending else np.all(steps <= 0)
    assert [int(i) for i in gallery.selection["index"][known:]] == sorted(NO_SHARE)
    gallery.close()


@pytest.mark.parametrize("column", ["entropy", "true_label", "correct", "index", "id"])
def test_sorting_by_any_column_both_ways(mixed, column):
    gallery = CamGallery(mixed)
    table = mixed.table
    for ascending in (True, False):
        gallery.sort_by, gallery.ascending = column, ascending
        expected = table.sort_values([column, "index"], ascending=[ascending, True])
        if column == "index":
            expected = table.sort_values("index", ascending=ascending)
        assert list(gallery.selection["index"]) == list(expected["index"])
    gallery.close()


def test_captions_name_the_classes_score_and_sort_key(gallery, results):
    gallery.sort_by = "entropy"
    row = gallery.shown.iloc[0]
    caption = gallery.cells[0].caption.value
    assert row["id"] in caption and row["true_label"] in caption
    assert f"{row['predicted_label']} {row['predicted_score']:.3g}" in caption
    assert f"entropy <b>{row['entropy']:.3g}</b>" in caption


# --- filters ------------------------------------------------------------------------------


def test_class_filter_by_name_or_index_true_or_explained(gallery, results):
    table = results.table
    star = results.class_names.index("star")
    gallery.class_filter = "star"
    assert gallery.class_filter == star and gallery.controls["class"].value == star
    assert set(gallery.selection["true_class"]) == {star}
    assert len(gallery.selection) == int((table["true_class"] == star).sum())
    gallery.class_of = "explained"
    assert len(gallery.selection) == int((table["explained_class"] == star).sum())
    gallery.class_filter = 0
    assert set(gallery.selection["explained_class"]) == {0}
    gallery.class_filter = "all"
    assert gallery.class_filter is None and len(gallery.selection) == COUNT
    with pytest.raises(ValueError, match=r"class_filter must be .*'star'"):
        gallery.class_filter = "zebra"
    with pytest.raises(ValueError, match="class_of must be one of"):
        gallery.class_of = "imagined"


def test_correct_and_wrong_filters_and_the_accuracy_of_the_selection(mixed):
    gallery = CamGallery(mixed)
    right = COUNT - len(WRONG)
    assert f"accuracy of the selection {100 * right / COUNT:.1f} %" in gallery.summary.value
    gallery.correct_filter = "wrong"
    assert set(gallery.selection["index"]) == WRONG
    assert summary_numbers(gallery)[2] == len(WRONG)
    assert "accuracy of the selection 0.0 %" in gallery.summary.value
    gallery.correct_filter = "correct"
    assert len(gallery.selection) == right and gallery.selection["correct"].all()
    assert "accuracy of the selection 100.0 %" in gallery.summary.value
    with pytest.raises(ValueError, match="correct_filter must be one of 'all', 'correct'"):
        gallery.correct_filter = "maybe"
    gallery.close()


def test_threshold_on_a_numeric_column(mixed):
    gallery = CamGallery(mixed)
    shares = mixed.table["object_share"]
    cut = float(shares.median())
    gallery.threshold = ("object_share", "<=", cut)
    assert gallery.threshold == ("object_share", "<=", cut)
    assert (gallery.selection["object_share"] <= cut).all()
    assert len(gallery.selection) == int((shares <= cut).sum())  # NaN never passes
    gallery.threshold = ("object_share", "≥", cut)  # the label works as well
    assert gallery.threshold[1] == ">="
    assert len(gallery.selection) == int((shares >= cut).sum())
    assert gallery.controls["threshold_operator"].value == ">="
    gallery.correct_filter = "wrong"  # filters combine
    assert set(gallery.selection["index"]) == {
        int(i) for i in mixed.table.loc[shares >= cut, "index"] if i in WRONG
    }
    gallery.threshold = None
    assert gallery.controls["threshold_column"].value == ""
    assert set(gallery.selection["index"]) == WRONG
    for bad, words in [
        (("id", "<=", 1.0), "threshold column must be one of"),
        (("object_share", "<", 1.0), "threshold operator must be one of"),
        (("object_share", "<=", "big"), "must be a number"),
        (("object_share", "<=", float("inf")), "must be finite"),
        (0.2, "threshold must be None or"),
    ]:
        with pytest.raises(ValueError, match=words):
            gallery.threshold = bad
    assert gallery.threshold is None and set(gallery.selection["index"]) == WRONG
    gallery.close()


# --- paging -------------------------------------------------------------------------------


def test_paging_bounds_and_the_last_page(gallery):
    order = [int(index) for index in gallery.selection["index"]]
    gallery.page = 3
    last = COUNT - 2 * PAGE_SIZE
    assert shown_indices(gallery) == cell_indices(gallery) == order[2 * PAGE_SIZE :]
    assert sum(cell.box.layout.display == "none" for cell in gallery.cells) == PAGE_SIZE - last
    assert summary_numbers(gallery) == (2 * PAGE_SIZE + 1, COUNT, COUNT, COUNT)
    assert gallery.next_button.disabled and not gallery.previous_button.disabled
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match=r"page must be an int in 1\.\.3"):
            gallery.page = bad
    assert gallery.page == 3
    gallery.previous_button.click()
    assert gallery.page == 2 and cell_indices(gallery) == order[PAGE_SIZE : 2 * PAGE_SIZE]
    gallery.next_button.click()
    gallery.next_button.click()  # disabled in the browser; from code, nothing happens
    assert gallery.page == 3
    gallery.sort_by = "entropy"  # any other change goes back to the first page
    assert gallery.page == 1 and gallery.previous_button.disabled


def test_an_empty_selection_has_one_empty_page(gallery):
    gallery.threshold = ("predicted_score", "<=", -1.0)
    assert len(gallery.selection) == 0 and gallery.page_count == 1
    assert cell_indices(gallery) == [] and "nothing selected (60 in all)" in gallery.summary.value
    gallery.threshold = None
    assert len(cell_indices(gallery)) == PAGE_SIZE


# --- the widgets and the state are one --------------------------------------------------


def test_the_widgets_follow_the_state(gallery):
    gallery.sort_by = "entropy"
    gallery.ascending = False
    gallery.class_filter = "square"
    gallery.threshold = ("entropy", ">=", 0.5)
    controls = gallery.controls
    assert controls["sort"].value == "entropy" and controls["order"].value is False
    assert controls["class"].value == 1 and controls["threshold_column"].value == "entropy"
    assert controls["threshold_value"].value == 0.5
    assert not controls["threshold_value"].disabled
    assert cell_indices(gallery) == shown_indices(gallery)


def test_the_state_follows_the_widgets(gallery, results):
    controls = gallery.controls
    controls["sort"].value = "centre_share"  # as the browser sets it
    controls["order"].value = False
    values = gallery.selection["centre_share"].to_numpy()
    assert gallery.sort_by == "centre_share" and np.all(np.diff(values) <= 0)
    assert "centre_share" in gallery.cells[0].caption.value
    controls["class"].value = 2
    assert gallery.class_filter == 2 and set(gallery.selection["true_class"]) == {2}
    controls["class"].value = -1
    controls["threshold_column"].value = "entropy"  # starts at the column's median
    median = float(f"{results.table['entropy'].median():.3g}")
    assert gallery.threshold == ("entropy", "<=", median)
    controls["threshold_operator"].value = ">="
    controls["threshold_value"].value = 0.0
    assert len(gallery.selection) == COUNT
    controls["page"].value = 2
    assert gallery.page == 2 and cell_indices(gallery) == shown_indices(gallery)
    assert gallery.error is None


def test_a_bad_value_from_the_browser_goes_to_the_status_line(gallery):
    gallery.threshold = ("object_share", "<=", 0.4)
    before = list(gallery.selection["index"])
    gallery.controls["threshold_value"].value = float("nan")
    assert "ValueError" in gallery.status.value and "finite" in gallery.status.value
    assert gallery.error and gallery.threshold == ("object_share", "<=", 0.4)
    assert list(gallery.selection["index"]) == before
    gallery.page = gallery.page_count  # still usable; the error goes once a change succeeds
    assert gallery.error is None and gallery.status.value == ""


def test_a_bad_value_from_code_raises_and_says_so(gallery):
    with pytest.raises(ValueError, match="sort_by must be one of 'index', 'id'"):
        gallery.sort_by = "colour"
    assert "sort_by must be one of" in gallery.status.value
    with pytest.raises(ValueError, match="ascending must be True or False"):
        gallery.ascending = "up"
    assert gallery.sort_by == "object_share" and gallery.ascending is True


# --- thumbnails ---------------------------------------------------------------------------


def test_thumbnails_are_the_stored_files_never_recomputed(gallery, results, monkeypatch):
    from gradcam_widget.auditing import measures
    from gradcam_widget.cam import core
    from gradcam_widget.data import render

    def refuse(*args, **kwargs):
        raise AssertionError("a thumbnail was recomputed")

    for module, name in [(measures, "thumbnail"), (render, "overlay"), (core, "to_heatmap")]:
        monkeypatch.setattr(module, name, refuse)
    seen = set()
    for page in range(1, gallery.page_count + 1):
        gallery.page = page
        visible = cell_indices(gallery)
        for cell, index in zip(gallery.cells[: len(visible)], visible, strict=True):
            assert cell.image.format == "jpeg" and cell.image.value[:2] == b"\xff\xd8"
            assert cell.image.value == stored_bytes(results, index)
            seen.add(index)
    assert seen == set(range(COUNT))


def test_paging_and_filtering_create_no_widget(gallery):
    gallery.page = 2  # every cell has been filled once
    registered = len(_instances)
    for page in (1, 2, 3, 1):
        gallery.page = page
    gallery.sort_by = "entropy"
    gallery.class_filter = "star"
    gallery.threshold = ("entropy", "<=", 0.9)
    gallery.controls["sort"].value = "raw_max"
    gallery.threshold = None
    gallery.class_filter = None
    gallery.page = 3
    assert len(_instances) == registered


# --- opening an image ---------------------------------------------------------------------


def test_open_shows_that_image_in_the_explorer(results, monkeypatch):
    from gradcam_widget.auditing import run as auditing
    from gradcam_widget.explorer.widget import CamExplorer

    loads = []
    load_model = auditing.load_model
    monkeypatch.setattr(auditing, "load_model", lambda spec: loads.append(spec) or load_model(spec))
    gallery = CamGallery(results, page_size=PAGE_SIZE)
    gallery.page = 2
    gallery.sort_by = "entropy"
    assert loads == [] and gallery.explorer is None  # nothing loaded before a click

    index = shown_indices(gallery)[3]
    explorer = gallery.open(index)
    assert isinstance(explorer, CamExplorer) and gallery.explorer is explorer
    assert explorer in gallery.explorer_pane.children
    assert "gw-gallery-explorer" in gallery.explorer_pane.get_state()["_dom_classes"]
    row = results.table.set_index("index").loc[index]
    size = results.manifest["input_size"]
    expected = images.shown_image(images.fit(results.image(index), *size))
    np.testing.assert_array_equal(explorer.capture.image, expected)
    assert explorer.class_index == int(row["explained_class"])
    assert explorer.layer == results.manifest["layer"]
    assert f"opened #{index} {row['id']}" in gallery.status.value
    assert row["id"] in gallery.explorer_title.value

    position = 7  # a click on a cell's open button: the same explorer, that cell's image
    clicked = cell_indices(gallery)[position]
    gallery.cells[position].button.click()
    assert gallery.explorer is explorer and loads == ["shapes"]
    expected = images.shown_image(images.fit(results.image(clicked), *size))
    np.testing.assert_array_equal(explorer.capture.image, expected)
    explained = results.table.set_index("index").loc[clicked, "explained_class"]
    assert explorer.class_index == int(explained)
    assert f"opened #{clicked} " in gallery.status.value and gallery.error is None
    with pytest.raises(ValueError, match=r"no image #999 in this audit \(its indices run 0\.\.59"):
        gallery.open(999)
    assert "no image #999" in gallery.status.value
    gallery.close()
    with pytest.raises(RuntimeError, match="closed"):
        gallery.page = 1


def test_open_explains_the_rows_explained_class(mixed, shapes):
    gallery = CamGallery(mixed, model=shapes)
    table = mixed.table.set_index("index")
    first, later = sorted(WRONG)[:2]
    for index in (first, 0, later):  # the first makes the explorer, the others reuse it
        row = table.loc[index]
        assert (row["explained_class"] != row["true_class"]) == (index in WRONG)
        explorer = gallery.open(index)
        assert explorer.class_index == int(row["explained_class"])
        assert f"explained {row['explained_label']}" in gallery.explorer_title.value
    gallery.close()


def test_without_a_model_or_image_a_click_says_what_to_pass(in_memory, results, shapes):
    gallery = CamGallery(in_memory)
    gallery.cells[0].button.click()  # never raises into the notebook
    status = html.unescape(gallery.status.value)
    assert "pass model= to CamGallery" in status and "pass images= to CamGallery" in status
    assert gallery.explorer is None
    with pytest.raises(ValueError, match=r"cannot open #0 \(scenes-1000000\): the audit's model"):
        gallery.open(0)
    gallery.close()

    gallery = CamGallery(in_memory, model=shapes)
    gallery.cells[0].button.click()
    status = html.unescape(gallery.status.value)
    assert "pass images= to CamGallery" in status and "model=" not in status
    assert gallery.explorer is None
    gallery.close()

    scenes = {index: results.image(index) for index in (4, 9)}
    gallery = CamGallery(in_memory, model=shapes, images=scenes)
    explorer = gallery.open(9)
    size = results.manifest["input_size"]
    np.testing.assert_array_equal(
        explorer.capture.image, images.shown_image(images.fit(scenes[9], *size))
    )
    with pytest.raises(KeyError):
        gallery.open(10)  # the mapping has no image 10: said in the status line too
    assert "KeyError" in gallery.status.value
    gallery.close()


# --- making one ---------------------------------------------------------------------------


def test_from_audit_and_bad_arguments(results, tmp_path):
    gallery = CamGallery.from_audit(results.folder, page_size=10, columns=5)
    assert len(gallery.cells) == 10 and summary_numbers(gallery) == (1, 10, COUNT, COUNT)
    assert gallery.page_count == 6
    gallery.close()
    gallery = gw.CamGallery(str(results.folder))
    assert len(gallery.selection) == COUNT
    gallery.close()
    with pytest.raises(ValueError, match="holds no audit results"):
        CamGallery.from_audit(tmp_path)
    with pytest.raises(ValueError, match="results must be an AuditResults"):
        CamGallery(42)
    with pytest.raises(ValueError, match="page_size"):
        CamGallery(results, page_size=0)
    with pytest.raises(ValueError, match="images must be"):
        CamGallery(results, images=3.5)

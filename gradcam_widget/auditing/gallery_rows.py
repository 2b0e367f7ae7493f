"""The audit table's rows as the gallery shows them: which are selected and in what order
(:func:`select`), what a cell's caption and the summary say, and whether a row's file is still
the picture the audit read (:func:`why_stale`).

pandas and numpy only, no widget: :class:`~gradcam_widget.gallery.CamGallery` is their view.
"""

from __future__ import annotations

import calendar
import html
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gradcam_widget import options
from gradcam_widget.auditing import sources, store
from gradcam_widget.data import images

STORAGE_COLUMNS = ("shard", "row", "thumb_offset", "thumb_size", "file_fingerprint")
"""Columns that say where a row's map and thumbnail are stored: not offered for sorting."""

DEFAULT_SORT_COLUMNS = ("object_share", "predicted_score")
"""The first of these with any value sorts the gallery at first (ascending: the worst first)."""

CORRECT_FILTERS = ("all", "correct", "wrong")
"""Values of :attr:`CamGallery.correct_filter`."""

CLASS_FIELDS = ("true", "predicted", "explained")
"""Values of :attr:`CamGallery.class_of`: which class column the class filter reads."""

OPERATORS = {"<=": "≤", ">=": "≥"}
"""Threshold operators and the labels the operator control shows (both are accepted)."""

ALL_CLASSES = -1
"""The class control's value for "all classes" (``class_filter`` reads ``None``)."""

NO_THRESHOLD = ""
"""The threshold column control's value when no threshold applies."""

DEFAULT_THRESHOLD = 0.5
ERROR_COLOUR = "#b00020"


def has_values(column) -> bool:
    """Whether ``column`` has a value in some row."""
    return bool(column.notna().any())


def sortable_columns(table) -> list[str]:
    """The columns a gallery can sort by: every column of :data:`store.COLUMNS` in the table
    but the storage ones, and only those with a value in some row (``index`` always)."""
    return [
        name
        for name in store.COLUMNS
        if name in table.columns
        and name not in STORAGE_COLUMNS
        and (name == "index" or has_values(table[name]))
    ]


def numeric_columns(table) -> list[str]:
    """The float columns with a value in some row: the ones a threshold can apply to."""
    return [
        name
        for name in sortable_columns(table)
        if store.COLUMNS[name].startswith("float") and has_values(table[name])
    ]


def class_indices(table, fields) -> list[int]:
    """The class indices in the ``<field>_class`` columns of ``fields``, sorted."""
    present = set()
    for field in fields:
        present.update(int(value) for value in table[f"{field}_class"].dropna().unique())
    return sorted(present)


def class_label(table, class_names, index: int) -> str:
    """The name of class ``index``: the audit's class names, else a label in the table."""
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    for field in CLASS_FIELDS:
        labels = table.loc[table[f"{field}_class"] == index, f"{field}_label"].dropna()
        if len(labels):
            return str(labels.iloc[0])
    return f"class {index}"


def select(table, sort_by, ascending, class_of, class_index, correct, threshold):
    """The rows a gallery shows, in its order.

    Args:
        table: an audit's table (pandas DataFrame, columns :data:`store.COLUMNS`).
        sort_by: the column to sort by; missing values (NaN, NA) come last either way, and
            ties keep the order of ``index``.
        ascending: the sort direction.
        class_of: one of :data:`CLASS_FIELDS`: the class column ``class_index`` is matched to.
        class_index: keep only rows of this class (``None``: every class).
        correct: one of :data:`CORRECT_FILTERS` (a row whose correctness is unknown is
            neither correct nor wrong).
        threshold: ``(column, "<=" or ">=", value)`` keeps rows whose value passes (NaN never
            passes), or ``None``.

    Returns:
        A DataFrame of the selected rows, ``reset_index`` to ``0 .. n - 1``.
    """
    keep = np.ones(len(table), dtype=bool)
    if class_index is not None:
        keep &= (table[f"{class_of}_class"] == class_index).fillna(False).to_numpy(bool)
    if correct != "all":
        keep &= (table["correct"] == (correct == "correct")).fillna(False).to_numpy(bool)
    if threshold is not None:
        column, operator, value = threshold
        values = table[column].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            keep &= values <= value if operator == "<=" else values >= value
    chosen = table[keep] if not keep.all() else table
    if sort_by == "index":
        ordered = chosen.sort_values("index", ascending=ascending, kind="stable")
    else:
        ordered = chosen.sort_values(
            [sort_by, "index"], ascending=[ascending, True], na_position="last", kind="stable"
        )
    return ordered.reset_index(drop=True)


def format_value(value) -> str:
    """A table value as a caption shows it (``—`` for a missing one)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def is_missing(value) -> bool:
    """Whether a table value is missing (``None``, NaN, NA)."""
    return value is None or bool(pd.isna(value))


def source_file(spec: dict, name) -> Path | None:
    """The file of image ``name`` (the table's ``id``) in an audit's reopen spec, or ``None``
    when its images are not files (scenes, arrays). An id that escapes bytes of a name that is
    no text (``bad\\xff.png``) is the file of that name unless a file is named as the id."""
    if spec.get("kind") == "folder":
        base = Path(spec["path"])
    elif spec.get("kind") == "paths":
        base = Path(spec["root"]) if spec.get("root") else None
    else:
        return None
    for candidate in dict.fromkeys((str(name), sources.name_of_id(str(name)))):
        path = base / candidate if base is not None else Path(candidate)
        if os.path.lexists(path):
            return path
    return base / str(name) if base is not None else Path(str(name))


def same_picture(now: str, stored: str) -> bool:
    """Two :func:`gradcam_widget.sources.file_fingerprint` values of one file: the same size
    and content (the modification time may differ: a copy restored, a ``touch``)."""
    size_now, _, hash_now = now.split(":", 2)
    try:
        size_then, _, hash_then = stored.split(":", 2)
    except ValueError:
        return False
    return (size_now, hash_now) == (size_then, hash_then)


def audit_began_ns(manifest: dict) -> int | None:
    """When the audit began (its manifest's ``created``, whole seconds UTC) in ns since the
    epoch, or ``None`` when it does not say."""
    try:
        began = time.strptime(str(manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return calendar.timegm(began) * 1_000_000_000


# --- the gallery ------------------------------------------------------------------------


def caption(row: dict, sort_by: str, threshold) -> str:
    """A cell's caption: three or four small lines: the id; true → predicted class and
    score; the ``sort_by`` column's value (and the ``threshold`` column's, when another)."""
    correct = row["correct"]
    mark, colour = ("", "#333") if is_missing(correct) else (
        ("✓ ", "#2a7a2a") if correct else ("✗ ", ERROR_COLOUR)
    )  # fmt: skip
    true = "?" if is_missing(row["true_label"]) else row["true_label"]
    lines = [
        f"<span title='{html.escape(str(row['id']))}'>{html.escape(str(row['id']))}</span>",
        f"<span style='color:{colour}'>{mark}{html.escape(str(true))} → "
        f"{html.escape(str(row['predicted_label']))} {format_value(row['predicted_score'])}</span>",
        f"{html.escape(sort_by)} <b>{html.escape(format_value(row[sort_by]))}</b>",
    ]
    if threshold is not None and threshold[0] != sort_by:
        lines.append(f"{html.escape(threshold[0])} {format_value(row[threshold[0]])}")
    style = (
        "font-size:11px;line-height:1.25;overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
    )
    return "".join(f"<div style='{style}'>{line}</div>" for line in lines)


def summary(table, selection, start: int, shown: int, skipped: int) -> str:
    """The line above the grid: which rows are shown of how many, the selection's accuracy,
    the images the audit skipped (HTML-escaped text)."""
    total = len(table)
    if total == 0:
        return "no images in this audit"
    if len(selection) == 0:
        text = f"nothing selected ({total:,} in all)"
    else:
        text = (
            f"showing {start + 1:,}–{start + shown:,} of {len(selection):,} selected "
            f"({total:,} in all)"
        )
        known = selection["correct"].dropna()
        if len(known):
            text += (
                f" · accuracy of the selection {100 * float(known.mean()):.1f} % of "
                f"{len(known):,} image{'s' if len(known) != 1 else ''}"
            )
            unknown = len(selection) - len(known)
            if unknown:
                text += (
                    f" with a known class; {unknown:,} image{'s' if unknown != 1 else ''} "
                    "had no class"
                )
        else:
            text += " · accuracy unknown (no true classes)"
    if skipped:
        text += f" · {skipped:,} unreadable image{'s' if skipped > 1 else ''} skipped"
    return html.escape(text)


def why_stale(manifest: dict, row: dict) -> str | None:
    """Why the file of image ``row`` of the audit of ``manifest`` is no longer the picture
    the audit explained, in one line (``None``: it is, as far as can be told; or the image is
    not read from a file).

    Looked at without opening it (a FIFO never blocks): a file that became no regular
    file is stale. The row's ``file_fingerprint`` (size and content hash as the audit read
    the file) is compared with the file's now: a ``chmod`` or a ``touch`` changes nothing,
    another picture under the same name does. A row of an audit written before
    fingerprints were kept has none: its file is taken as changed when it was modified
    after the audit began.
    """
    spec = manifest["job"]["source"].get("reopen") or {}
    path = source_file(spec, row["id"])
    if path is None or not os.path.lexists(path):
        return None  # not a file, or gone: reading it says so
    problem = sources.file_problem(path)
    if problem:
        return f"its file is no image file any more: {problem}"
    stored = row.get("file_fingerprint")
    if not is_missing(stored):
        try:
            now = sources.file_fingerprint(path)
        except (OSError, ValueError) as error:
            return f"its file cannot be read as the audit read it ({error})"
        if same_picture(now, str(stored)):
            return None
        return "its file changed since the audit (its size or content differ)"
    began = audit_began_ns(manifest)
    try:
        modified = os.stat(path).st_mtime_ns
    except OSError:
        return None  # reading it says why
    if began is None or modified < began:
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(modified / 1e9))
    return f"its file was modified ({when}) after the audit began ({manifest.get('created')} UTC)"


def image_of(results, images_given, row: dict) -> np.ndarray | None:
    """Image ``row`` of ``results`` (an :class:`~gradcam_widget.store.AuditResults`) read
    again, fitted to the size the audit explained it at (``(H, W, 3)`` float32), or ``None``
    when its source was held in memory and no ``images_given`` (the gallery's ``images=``:
    a sequence indexed by the table's index, or a callable) was given."""

    index = int(row["index"])
    if images_given is not None:
        image = images_given(index) if callable(images_given) else images_given[index]
    else:
        image = results.image(index)
    if image is None:
        return None
    rgb = images.as_rgb_image(image)
    size = results.manifest.get("input_size")
    return rgb if not size else images.fit(rgb, int(size[0]), int(size[1]))


def why_not_open(results, row: dict, model_known: bool, image_missing: bool) -> str | None:
    """What keeps image ``row`` of ``results`` from being opened, in words that say what to
    pass (``None``: nothing does). ``model_known``: the gallery has a model or an explorer;
    ``image_missing``: the image cannot be read again."""
    problems = []
    job = results.manifest["job"]
    if not model_known and job["model"].get("load") is None:
        problems.append(
            f"the audit's model ({job['model'].get('name')!r}) was given in memory and "
            "cannot be reloaded: pass model= to CamGallery"
        )
    if image_missing:
        problems.append(
            f"the audit's source ({job['source']['description']}) was held in memory, so "
            "its images cannot be read again: pass images= to CamGallery (the images the "
            "audit read, indexed by the table's index)"
        )
    if not problems:
        return None
    return f"cannot open #{int(row['index'])} ({row['id']}): {'; and '.join(problems)}"


def audit_settings(results) -> dict:
    """The explorer settings the audit of ``results`` used: method, score, and each recipe
    option of :mod:`gradcam_widget.options` its CAM options name (pooling, channels, order,
    interpolation, ...)."""
    chosen = results.options
    settings = {"method": chosen.get("method"), "score": chosen.get("score")}
    for name in options.at_stage(options.MAP):
        if name not in ("method", "layer"):
            settings[name] = chosen.get("cam_options", {}).get(name)
    return {name: value for name, value in settings.items() if value is not None}


def positions(table) -> dict[int, int]:
    """The table's ``index`` column -> row position."""
    return {int(value): row for row, value in enumerate(table["index"])}


def row_of(table, where: dict[int, int], index) -> dict:
    """Row ``index`` (the table's ``index`` column) as a dict; ``where`` is
    :func:`positions` of ``table``.

    Raises:
        ValueError: for an index that is no int, or not in the table (saying its range).
    """
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"index must be an int (the table's index column); got {index!r}")
    position = where.get(int(index))
    if position is None:
        span = (
            f"its indices run {table['index'].min()}..{table['index'].max()}"
            if len(table)
            else "it has no rows"
        )
        raise ValueError(f"no image #{index} in this audit ({span})")
    return table.iloc[position].to_dict()


def typical_threshold(table, column: str) -> float:
    """A threshold to start from when a column is picked: its median, 3 digits."""
    median = float(np.nanmedian(table[column].to_numpy(np.float64, na_value=np.nan)))
    return float(f"{median:.3g}")

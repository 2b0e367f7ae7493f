"""CamGallery: page through an audit's overlay thumbnails, sort and filter them, open one.

>>> results = gw.audit("shapes", "scenes:1000000-1000500", out="results/")
>>> gallery = gw.CamGallery(results)          # or gw.CamGallery.from_audit("results/")
>>> gallery.sort_by, gallery.ascending = "object_share", True
>>> gallery.threshold = ("object_share", "<=", 0.2)
>>> gallery.open(int(gallery.shown["index"].iloc[0]))   # what a click on its cell does

The gallery is a view of an :class:`~gradcam_widget.store.AuditResults`. Its table is filtered
and sorted with pandas, and the result is kept until a control changes, so turning a page only
slices it. Each page's thumbnails are the JPEG files the audit stored, read by byte offset and
never recomputed. The grid's cells are made once and refilled on every page change: paging
creates no widget. A click on a cell's open button explains that image in a
:class:`~gradcam_widget.widget.CamExplorer` beside the grid, made (and the audit's model
reloaded) on the first click only, then given each new image. An image whose file changed
since the audit is not opened: the status line says so (the row, map and thumbnail are of the
picture the audit read, not of the file as it is now).

The controls are the state. Each settable property (``sort_by``, ``ascending``,
``class_filter``, ``class_of``, ``correct_filter``, ``threshold``, ``page``) checks its value,
sets its control and redraws; a control changed in the browser redraws the same way. A bad
value set from code raises ValueError naming the valid choices; one that comes from the browser
is shown in the status line. Either way the last good settings stay.

Standard ipywidgets only. The model is loaded on the first click, not before.
"""

from __future__ import annotations

import calendar
import contextlib
import html
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np
import pandas as pd

from gradcam_widget.auditing import sources, store
from gradcam_widget.cam import core

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
CELL_WIDTH = "116px"
THUMBNAIL_WIDTH = "96px"
ERROR_COLOUR = "#b00020"


class Cell(NamedTuple):
    """The widgets of one grid cell, made once and refilled on every page.

    Attributes:
        box: the cell (``VBox``, CSS class ``gw-gallery-cell``).
        image: the overlay thumbnail (JPEG bytes).
        caption: true and predicted class, score, the sort key's value.
        button: opens the image in the explorer (description ``"open #<index>"``).
    """

    box: widgets.VBox
    image: widgets.Image
    caption: widgets.HTML
    button: widgets.Button


# --- reading the table ------------------------------------------------------------------


def _has_values(column) -> bool:
    return bool(column.notna().any())


def sortable_columns(table) -> list[str]:
    """The columns a gallery can sort by: every column of :data:`store.COLUMNS` in the table
    but the storage ones, and only those with a value in some row (``index`` always)."""
    return [
        name
        for name in store.COLUMNS
        if name in table.columns
        and name not in STORAGE_COLUMNS
        and (name == "index" or _has_values(table[name]))
    ]


def numeric_columns(table) -> list[str]:
    """The float columns with a value in some row: the ones a threshold can apply to."""
    return [
        name
        for name in sortable_columns(table)
        if store.COLUMNS[name].startswith("float") and _has_values(table[name])
    ]


def _class_indices(table, fields) -> list[int]:
    present = set()
    for field in fields:
        present.update(int(value) for value in table[f"{field}_class"].dropna().unique())
    return sorted(present)


def _class_label(table, class_names, index: int) -> str:
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


def _format(value) -> str:
    """A table value as a caption shows it (``—`` for a missing one)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def _missing(value) -> bool:
    return value is None or bool(pd.isna(value))


def _source_file(spec: dict, name) -> Path | None:
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


def _same_picture(now: str, stored: str) -> bool:
    """Two :func:`gradcam_widget.sources.file_fingerprint` values of one file: the same size
    and content (the modification time may differ: a copy restored, a ``touch``)."""
    size_now, _, hash_now = now.split(":", 2)
    try:
        size_then, _, hash_then = stored.split(":", 2)
    except ValueError:
        return False
    return (size_now, hash_now) == (size_then, hash_then)


def _audit_began_ns(manifest: dict) -> int | None:
    """When the audit began (its manifest's ``created``, whole seconds UTC) in ns since the
    epoch, or ``None`` when it does not say."""
    try:
        began = time.strptime(str(manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return calendar.timegm(began) * 1_000_000_000


# --- the gallery ------------------------------------------------------------------------


def _dropdown(description, options, value, css, width="210px") -> widgets.Dropdown:
    control = widgets.Dropdown(
        description=description,
        options=options,
        value=value,
        layout=widgets.Layout(width=width),
        style={"description_width": "70px"},
    )
    control.add_class(css)
    return control


class CamGallery(widgets.VBox):
    """A paginated grid of an audit's overlay thumbnails, sorted and filtered, with an
    explorer beside it for the image clicked.

    Args:
        results: an :class:`~gradcam_widget.store.AuditResults` or the folder of one.
        model: the model the explorer explains (anything
            :class:`~gradcam_widget.widget.CamExplorer` takes). Default: the audit's own,
            reloaded from its manifest (a model name or a ``.keras`` path) on the first
            click; an audit of a model held only in memory needs it.
        page_size: thumbnails per page.
        columns: thumbnails per row of the grid.
        images: where the explorer reads image ``index`` (the table's ``index`` column):
            a sequence or ``(N, H, W, 3)`` array indexed by it, or a callable
            ``index -> image``. Default: :meth:`AuditResults.image` (the audit's folder,
            paths or scenes read again); needed for an audit of arrays or a dataset.
        preprocess: the explorer's ``preprocess`` (default: the model entry's).

    Raises:
        ValueError: for a folder that holds no audit, or a bad argument.

    Settable attributes (the controls follow): ``sort_by``, ``ascending``, ``class_filter``,
    ``class_of``, ``correct_filter``, ``threshold`` and ``page``. ``selection`` and ``shown``
    are the rows selected and the rows on the page; ``explorer`` the explorer (``None`` until
    the first :meth:`open`); ``status`` the status line; ``error`` its last error or ``None``.
    """

    def __init__(
        self,
        results,
        model=None,
        page_size: int = 24,
        columns: int = 6,
        images=None,
        preprocess: Callable | None = None,
    ):
        # every argument is checked before any widget exists: a refusal leaves none behind
        if isinstance(results, (str, os.PathLike)):
            results = store.AuditResults(results)
        if not isinstance(results, store.AuditResults):
            raise ValueError(
                "results must be an AuditResults (what gw.audit returns) or its folder; got "
                f"{type(results).__name__}"
            )
        page_size = core.check_int("page_size", page_size)
        columns = core.check_int("columns", columns)
        if images is not None and not callable(images) and not hasattr(images, "__getitem__"):
            raise ValueError(
                "images must be a sequence or array indexed by the table's index, or a callable "
                f"index -> image; got {type(images).__name__}"
            )
        super().__init__()
        self.results = results
        self.page_size = page_size
        self._model = model
        self._images = images
        self._preprocess = preprocess
        self._table = results.table
        self._sortable = sortable_columns(self._table)
        self._numeric = numeric_columns(self._table)
        self._fields = [
            field for field in CLASS_FIELDS if _has_values(self._table[f"{field}_class"])
        ] or list(CLASS_FIELDS)
        self._classes = {
            index: _class_label(self._table, results.class_names, index)
            for index in _class_indices(self._table, self._fields)
        }
        self._positions: dict[int, int] | None = None  # index -> row of the table
        self._selected: tuple | None = None  # (the controls' key, the selection)
        self._cell_index: list[int | None] = [None] * page_size
        self._quiet_depth = 0
        self._closed = False
        self._good: dict = {}
        self.error: str | None = None
        self._explorer = None
        try:
            self._build(columns)
            self._draw()
        except BaseException:  # a refused gallery leaves no widget behind
            self.close()
            raise
        self._good = self._values()

    @classmethod
    def from_audit(cls, folder, **options) -> CamGallery:
        """A gallery of the audit in ``folder`` (``options``: as :class:`CamGallery`).

        Raises:
            ValueError: if ``folder`` holds no audit.
        """
        return cls(store.AuditResults(folder), **options)

    # --- building -------------------------------------------------------------------

    def _build(self, columns: int):
        table = self._table
        sort_default = next(
            (name for name in DEFAULT_SORT_COLUMNS if name in self._sortable), "index"
        )
        class_options = [("all", ALL_CLASSES)] + [
            (f"{label} (#{index})", index) for index, label in self._classes.items()
        ]
        field_labels = {"true": "true class", "predicted": "predicted", "explained": "explained"}
        self.controls: dict[str, widgets.ValueWidget] = {
            "sort": _dropdown("Sort by", self._sortable, sort_default, "gw-gallery-sort"),
            "order": _dropdown(
                "Order", [("ascending ↑", True), ("descending ↓", False)], True,
                "gw-gallery-order", "170px",
            ),
            "class": _dropdown("Class", class_options, ALL_CLASSES, "gw-gallery-class"),
            "class_of": _dropdown(
                "of", [(field_labels[field], field) for field in self._fields],
                self._fields[0], "gw-gallery-class-of", "170px",
            ),
            "correct": _dropdown("Correct", CORRECT_FILTERS, "all", "gw-gallery-correct", "170px"),
            "threshold_column": _dropdown(
                "Threshold", [("none", NO_THRESHOLD)] + [(n, n) for n in self._numeric],
                NO_THRESHOLD, "gw-gallery-threshold-column",
            ),
            "threshold_operator": _dropdown(
                "", [(label, operator) for operator, label in OPERATORS.items()], "<=",
                "gw-gallery-threshold-operator", "60px",
            ),
            "threshold_value": widgets.FloatText(
                value=DEFAULT_THRESHOLD, step=0.05, layout=widgets.Layout(width="90px")
            ),
            "page": widgets.BoundedIntText(
                value=1, min=1, max=1, description="Page",
                layout=widgets.Layout(width="130px"), style={"description_width": "40px"},
            ),
        }  # fmt: skip
        controls = self.controls
        controls["threshold_operator"].style.description_width = "0px"
        controls["threshold_value"].add_class("gw-gallery-threshold-value")
        controls["page"].add_class("gw-gallery-page")
        controls["correct"].disabled = not _has_values(table["correct"])
        for name, control in controls.items():
            control.observe(self._on_control(name), names="value")
        self._previous = widgets.Button(description="◀ previous", layout={"width": "100px"})
        self._next = widgets.Button(description="next ▶", layout={"width": "100px"})
        self._previous.add_class("gw-gallery-previous")
        self._next.add_class("gw-gallery-next")
        self._previous.on_click(lambda _: self._turn(-1))
        self._next.on_click(lambda _: self._turn(+1))
        self._page_count_label = widgets.HTML()
        self.summary = widgets.HTML()
        self.summary.add_class("gw-gallery-summary")
        self.status = widgets.HTML()
        self.status.add_class("gw-gallery-status")
        self.cells = [self._make_cell(position) for position in range(self.page_size)]
        grid = widgets.GridBox(
            [cell.box for cell in self.cells],
            layout=widgets.Layout(
                grid_template_columns=f"repeat({columns}, {CELL_WIDTH})", grid_gap="6px"
            ),
        )
        grid.add_class("gw-gallery-grid")
        self._explorer_title = widgets.HTML(
            "<i>Click a thumbnail's open button to explain that image here.</i>"
        )
        self._explorer_title.add_class("gw-gallery-explorer-title")
        self._explorer_pane = widgets.VBox(
            [self._explorer_title], layout=widgets.Layout(margin="0 0 0 12px")
        )
        self._explorer_pane.add_class("gw-gallery-explorer")
        rows = [
            widgets.HBox([controls["sort"], controls["order"], controls["correct"]]),
            widgets.HBox([controls["class"], controls["class_of"]]),
            widgets.HBox(
                [controls["threshold_column"], controls["threshold_operator"],
                 controls["threshold_value"]]
            ),
            widgets.HBox(
                [self._previous, controls["page"], self._page_count_label, self._next]
            ),
        ]  # fmt: skip
        body = widgets.Box(
            [grid, self._explorer_pane],
            layout=widgets.Layout(display="flex", flex_flow="row wrap", align_items="flex-start"),
        )
        self.add_class("gw-gallery")
        self.children = [*rows, self.summary, self.status, body]
        self._show_threshold_parts()

    def _make_cell(self, position: int) -> Cell:
        image = widgets.Image(
            format="jpeg", layout=widgets.Layout(width=THUMBNAIL_WIDTH, height="auto")
        )
        image.add_class("gw-gallery-thumbnail")
        caption = widgets.HTML(layout=widgets.Layout(width=CELL_WIDTH))
        caption.add_class("gw-gallery-caption")
        button = widgets.Button(description="open", layout=widgets.Layout(width=THUMBNAIL_WIDTH))
        button.add_class("gw-gallery-open")
        button.on_click(self._on_open(position))
        box = widgets.VBox([image, caption, button], layout=widgets.Layout(width=CELL_WIDTH))
        box.add_class("gw-gallery-cell")
        return Cell(box, image, caption, button)

    # --- the state ------------------------------------------------------------------

    def _values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    @contextlib.contextmanager
    def _quiet(self):
        """Change controls without redrawing."""
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def _key(self) -> tuple:
        return (
            self.sort_by, self.ascending, self.class_of, self.class_filter,
            self.correct_filter, self.threshold,
        )  # fmt: skip

    @property
    def sort_by(self) -> str:
        """The column the selection is sorted by (one of the Sort control's)."""
        return self.controls["sort"].value

    @sort_by.setter
    def sort_by(self, column: str):
        self._set(lambda: {"sort": core.check_option("sort_by", column, self._sortable)})

    @property
    def ascending(self) -> bool:
        """Sort direction (missing values come last either way)."""
        return self.controls["order"].value

    @ascending.setter
    def ascending(self, value: bool):
        def check():
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"ascending must be True or False; got {value!r}")
            return {"order": bool(value)}

        self._set(check)

    @property
    def class_filter(self) -> int | None:
        """The class index kept (``None``: all classes). Set it to an index, a class name or
        ``None`` / ``"all"``; :attr:`class_of` says which class column is matched."""
        value = self.controls["class"].value
        return None if value == ALL_CLASSES else value

    @class_filter.setter
    def class_filter(self, value):
        def check():
            if value is None or value == "all":
                return {"class": ALL_CLASSES}
            if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                if int(value) in self._classes:
                    return {"class": int(value)}
            elif isinstance(value, str):
                for index, label in self._classes.items():
                    if label == value:
                        return {"class": index}
            choices = ", ".join(f"{index} ({label!r})" for index, label in self._classes.items())
            raise ValueError(
                f"class_filter must be None or 'all', or one of the classes in this audit: "
                f"{choices}; got {value!r}"
            )

        self._set(check)

    @property
    def class_of(self) -> str:
        """Which class :attr:`class_filter` matches: ``"true"``, ``"predicted"`` or
        ``"explained"`` (those the audit has values for)."""
        return self.controls["class_of"].value

    @class_of.setter
    def class_of(self, value: str):
        self._set(lambda: {"class_of": core.check_option("class_of", value, self._fields)})

    @property
    def correct_filter(self) -> str:
        """``"all"``, ``"correct"`` or ``"wrong"`` (a row whose correctness is unknown is
        neither)."""
        return self.controls["correct"].value

    @correct_filter.setter
    def correct_filter(self, value: str):
        self._set(lambda: {"correct": core.check_option("correct_filter", value,
                                                        CORRECT_FILTERS)})  # fmt: skip

    @property
    def threshold(self) -> tuple[str, str, float] | None:
        """``(column, "<=" or ">=", value)``: rows whose value passes are kept (NaN never
        passes); ``None``: no threshold. ``"≤"`` and ``"≥"`` are accepted too."""
        column = self.controls["threshold_column"].value
        if column == NO_THRESHOLD:
            return None
        return (
            column,
            self.controls["threshold_operator"].value,
            self.controls["threshold_value"].value,
        )

    @threshold.setter
    def threshold(self, value):
        self._set(lambda: self._check_threshold(value))

    def _check_threshold(self, value) -> dict:
        if value is None:
            return {"threshold_column": NO_THRESHOLD}
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise ValueError(
                "threshold must be None or (column, '<=' or '>=', value), e.g. "
                f"('object_share', '<=', 0.2); got {value!r}"
            )
        column, operator, number = value
        column = core.check_option("threshold column", column, self._numeric)
        labels = {label: operator for operator, label in OPERATORS.items()}
        operator = labels.get(operator, operator)
        operator = core.check_option("threshold operator", operator, [*OPERATORS, *labels])
        if isinstance(number, (bool, np.bool_)) or not isinstance(number, (int, float, np.number)):
            raise ValueError(f"the threshold value must be a number; got {number!r}")
        if not math.isfinite(number):
            raise ValueError(f"the threshold value must be finite; got {number!r}")
        return {
            "threshold_column": column,
            "threshold_operator": operator,
            "threshold_value": float(number),
        }

    @property
    def page(self) -> int:
        """The page on screen, ``1 .. page_count``; a change of any other control goes back to
        page 1."""
        return self.controls["page"].value

    @page.setter
    def page(self, value: int):
        def check():
            count = self.page_count
            if (
                isinstance(value, (bool, np.bool_))
                or not isinstance(value, (int, np.integer))
                or not 1 <= value <= count
            ):
                raise ValueError(f"page must be an int in 1..{count}; got {value!r}")
            return {"page": int(value)}

        self._set(check, keep_page=True)

    @property
    def page_count(self) -> int:
        """Pages of the selection (at least 1, an empty one)."""
        return max(1, -(-len(self.selection) // self.page_size))

    @property
    def selection(self):
        """The selected rows in the gallery's order (pandas DataFrame, the table's columns,
        ``index`` ``0 .. n - 1``); kept until a control changes."""
        key = self._key()
        if self._selected is None or self._selected[0] != key:
            sort_by, ascending, class_of, class_index, correct, threshold = key
            frame = select(self._table, sort_by, ascending, class_of, class_index, correct,
                           threshold)  # fmt: skip
            self._selected = (key, frame)
        return self._selected[1].copy(deep=False)

    @property
    def shown(self):
        """The rows on the page (a slice of :attr:`selection`)."""
        start = (self.page - 1) * self.page_size
        return self.selection.iloc[start : start + self.page_size]

    @property
    def explorer(self):
        """The :class:`~gradcam_widget.widget.CamExplorer` beside the grid (``None`` until an
        image is opened)."""
        return self._explorer

    # --- changing the state ---------------------------------------------------------

    def _set(self, check: Callable[[], dict], keep_page: bool = False):
        """Set the controls ``check()`` returns and redraw once. A bad value (ValueError) is
        shown in the status line and raised; nothing changes."""
        self._check_open()
        try:
            values = check()
        except ValueError as error:
            self._fail(error)
            raise
        with self._quiet():
            for name, value in values.items():
                self.controls[name].value = value
            if not keep_page:
                self.controls["page"].value = 1
        try:
            self._draw()
        except Exception as error:
            self._fail(error)
            raise
        self._succeeded()

    def _on_control(self, name: str):
        """A control changed in the browser (or from code): check, redraw, or say why not."""

        def handler(change):
            if self._quiet_depth:
                return
            try:
                if name == "threshold_value" and not math.isfinite(change["new"]):
                    raise ValueError(f"the threshold value must be finite; got {change['new']}")
                with self._quiet():
                    if name == "threshold_column" and change["new"] != NO_THRESHOLD:
                        self.controls["threshold_value"].value = self._typical(change["new"])
                    if name != "page":
                        self.controls["page"].value = 1
                self._draw()
            except Exception as error:  # shown, never raised into the notebook
                self._fail(error)
                return
            self._succeeded()

        return handler

    def _typical(self, column: str) -> float:
        """A threshold to start from when a column is picked: its median, 3 digits."""
        median = float(np.nanmedian(self._table[column].to_numpy(np.float64, na_value=np.nan)))
        return float(f"{median:.3g}")

    def _turn(self, step: int):
        """The previous / next button: one page back or forward, if there is one."""
        target = self.page + step
        if 1 <= target <= self.page_count:
            with contextlib.suppress(ValueError):  # shown in the status line
                self.page = target

    def _succeeded(self):
        self._good = self._values()
        if self.error is not None:
            self.error = None
            self.status.value = ""

    def _fail(self, error: Exception):
        """Show ``error`` in the status line and go back to the last good settings."""
        message = f"{type(error).__name__}: {error}"
        self.error = message
        self.status.value = f"<span style='color:{ERROR_COLOUR}'>⚠ {html.escape(message)}</span>"
        if self._good and self._values() != self._good:
            with self._quiet():
                for name, control in self.controls.items():
                    if control.value != self._good[name]:
                        with contextlib.suppress(Exception):
                            control.value = self._good[name]
            with contextlib.suppress(Exception):
                self._draw()

    def _say(self, text: str, colour: str = "#555"):
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    # --- drawing --------------------------------------------------------------------

    def _draw(self):
        """Fill the cells with the page's rows and write the summary and page count."""
        selection = self.selection
        count = max(1, -(-len(selection) // self.page_size))
        page = self.controls["page"]
        with self._quiet():
            if page.max != count:
                page.max = count  # clamps the page
        start = (page.value - 1) * self.page_size
        rows = selection.iloc[start : start + self.page_size].to_dict("records")
        for position, cell in enumerate(self.cells):
            if position < len(rows):
                self._fill(position, cell, rows[position])
            elif self._cell_index[position] is not None or cell.box.layout.display != "none":
                self._cell_index[position] = None
                cell.box.layout.display = "none"
                cell.image.value = b""
        self._page_count_label.value = f"of {count}"
        self._previous.disabled = page.value <= 1
        self._next.disabled = page.value >= count
        self._show_threshold_parts()
        self.summary.value = self._summary(selection, start, len(rows))

    def _fill(self, position: int, cell: Cell, row: dict):
        index = int(row["index"])
        if self._cell_index[position] != index:
            cell.image.value = self.results.thumbnail_of(row)
            cell.button.description = f"open #{index}"
            cell.button.tooltip = f"open {row['id']} in the explorer"
            self._cell_index[position] = index
        caption = self._caption(row)
        if cell.caption.value != caption:
            cell.caption.value = caption
        if cell.box.layout.display is not None:
            cell.box.layout.display = None

    def _caption(self, row: dict) -> str:
        """Three or four small lines: the id; true → predicted class and score; the sort
        key's value (and the threshold column's, when another)."""
        correct = row["correct"]
        mark, colour = ("", "#333") if _missing(correct) else (
            ("✓ ", "#2a7a2a") if correct else ("✗ ", ERROR_COLOUR)
        )  # fmt: skip
        true = "?" if _missing(row["true_label"]) else row["true_label"]
        lines = [
            f"<span title='{html.escape(str(row['id']))}'>{html.escape(str(row['id']))}</span>",
            f"<span style='color:{colour}'>{mark}{html.escape(str(true))} → "
            f"{html.escape(str(row['predicted_label']))} {_format(row['predicted_score'])}</span>",
            f"{html.escape(self.sort_by)} <b>{html.escape(_format(row[self.sort_by]))}</b>",
        ]
        threshold = self.threshold
        if threshold is not None and threshold[0] != self.sort_by:
            lines.append(f"{html.escape(threshold[0])} {_format(row[threshold[0]])}")
        style = (
            "font-size:11px;line-height:1.25;overflow:hidden;text-overflow:ellipsis;"
            "white-space:nowrap"
        )
        return "".join(f"<div style='{style}'>{line}</div>" for line in lines)

    def _summary(self, selection, start: int, shown: int) -> str:
        total = len(self._table)
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
        skipped = len(self.results.skipped)
        if skipped:
            text += f" · {skipped:,} unreadable image{'s' if skipped > 1 else ''} skipped"
        return html.escape(text)

    def _show_threshold_parts(self):
        off = self.controls["threshold_column"].value == NO_THRESHOLD
        for name in ("threshold_operator", "threshold_value"):
            if self.controls[name].disabled != off:
                self.controls[name].disabled = off

    # --- opening an image -----------------------------------------------------------

    def _on_open(self, position: int):
        def handler(_button):
            index = self._cell_index[position]
            if index is None or self._closed:
                return
            with contextlib.suppress(Exception):  # shown in the status line
                self.open(index)

        return handler

    def _row(self, index) -> dict:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"index must be an int (the table's index column); got {index!r}")
        if self._positions is None:
            self._positions = {int(value): row for row, value in enumerate(self._table["index"])}
        position = self._positions.get(int(index))
        if position is None:
            span = (
                f"its indices run {self._table['index'].min()}..{self._table['index'].max()}"
                if len(self._table) else "it has no rows"
            )  # fmt: skip
            raise ValueError(f"no image #{index} in this audit ({span})")
        return self._table.iloc[position].to_dict()

    def _image_of(self, row: dict) -> np.ndarray | None:
        """Image ``row`` read again, fitted to the size the audit explained it at (``(H, W,
        3)`` float32), or ``None`` when its source was held in memory and no ``images=``
        was given."""
        from gradcam_widget.data import images

        index = int(row["index"])
        if self._images is not None:
            image = self._images(index) if callable(self._images) else self._images[index]
        else:
            image = self.results.image(index)
        if image is None:
            return None
        rgb = images.as_rgb_image(image)
        size = self.results.manifest.get("input_size")
        return rgb if not size else images.fit(rgb, int(size[0]), int(size[1]))

    def _why_not_open(self, row: dict, image_missing: bool) -> str | None:
        """What keeps image ``row`` from being opened, in words that say what to pass
        (``None``: nothing does)."""
        problems = []
        job = self.results.manifest["job"]
        if self._explorer is None and self._model is None and job["model"].get("load") is None:
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

    def _why_stale(self, row: dict) -> str | None:
        """Why the file of image ``row`` is no longer the picture the audit explained, in one
        line (``None``: it is, as far as can be told; or the image is not read from a file).

        Looked at without opening it (a FIFO never blocks): a file that became no regular
        file is stale. The row's ``file_fingerprint`` (size and content hash as the audit read
        the file) is compared with the file's now: a ``chmod`` or a ``touch`` changes nothing,
        another picture under the same name does. A row of an audit written before
        fingerprints were kept has none: its file is taken as changed when it was modified
        after the audit began.
        """
        if self._images is not None:
            return None
        spec = self.results.manifest["job"]["source"].get("reopen") or {}
        path = _source_file(spec, row["id"])
        if path is None or not os.path.lexists(path):
            return None  # not a file, or gone: reading it says so
        problem = sources.file_problem(path)
        if problem:
            return f"its file is no image file any more: {problem}"
        stored = row.get("file_fingerprint")
        if not _missing(stored):
            try:
                now = sources.file_fingerprint(path)
            except (OSError, ValueError) as error:
                return f"its file cannot be read as the audit read it ({error})"
            if _same_picture(now, str(stored)):
                return None
            return "its file changed since the audit (its size or content differ)"
        began = _audit_began_ns(self.results.manifest)
        try:
            modified = os.stat(path).st_mtime_ns
        except OSError:
            return None  # reading it says why
        if began is None or modified < began:
            return None
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(modified / 1e9))
        return (
            f"its file was modified ({when}) after the audit began "
            f"({self.results.manifest.get('created')} UTC)"
        )

    def _explorer_model(self):
        """The model to explain: the one given, else the audit's, reloaded once."""
        if self._model is not None:
            return self._model
        load = self.results.manifest["job"]["model"]["load"]
        self._say(f"⏳ loading the audit's model {load!r} for the explorer…")
        from gradcam_widget.auditing.run import load_model

        try:
            self._model, _ = load_model(load)
        except Exception as error:
            raise ValueError(f"cannot reload the audit's model {load!r}: {error}") from error
        return self._model

    def _audit_settings(self) -> dict:
        """The explorer settings the audit used: method, score, pooling, channels, order."""
        options = self.results.options
        settings = {"method": options.get("method"), "score": options.get("score")}
        for name in ("pooling", "channels", "order"):
            settings[name] = options.get("cam_options", {}).get(name)
        return {name: value for name, value in settings.items() if value is not None}

    def open(self, index: int | None = None):
        """Explain image ``index`` in the explorer beside the grid: what a click on its open
        button does. The first call makes the explorer (and reloads the audit's model unless
        one was given); later calls give it the new image. The class explained is the row's
        ``explained_class``, with the audit's method, layer, score and options. (Without
        ``index`` this is ipywidgets' own ``Widget.open``, which opens the widget's channel to
        the front-end.)

        Args:
            index: the image's ``index`` (the table's column, not a position on the page).

        Returns:
            The :class:`~gradcam_widget.widget.CamExplorer`.

        Raises:
            ValueError: for an index not in the audit, an image or model that cannot be had
                (the message says what to pass), or one the explorer refuses. This and any
                other error (a file gone, a failing model pass) is also shown in the status
                line, and the gallery stays as it was.
        """
        if index is None:
            return super().open()
        self._check_open()
        try:
            row = self._row(index)
            self._say(f"⏳ opening #{index} {row['id']}…")
            stale = self._why_stale(row)  # before reading: a FIFO is never opened
            if stale:
                raise ValueError(
                    f"cannot open #{index} ({row['id']}): {stale}; its row, map and thumbnail "
                    "are of the picture the audit read, not of the file as it is now: audit "
                    "it again to explain it"
                )
            image = self._image_of(row)
            missing = self._why_not_open(row, image is None)
            if missing:
                raise ValueError(missing)
            class_index = int(row["explained_class"])
            notes = []
            if self._explorer is None:
                from gradcam_widget.explorer.widget import CamExplorer

                model = self._explorer_model()
                self._say(f"⏳ explaining #{index} {row['id']}…")
                explorer = CamExplorer(
                    model,
                    image,
                    class_names=self.results.class_names,
                    preprocess=self._preprocess,
                    class_index=class_index,
                    layer=self.results.manifest.get("layer") or self.results.options.get("layer"),
                )
                for name, value in self._audit_settings().items():
                    if getattr(explorer, name) != value:
                        try:
                            setattr(explorer, name, value)
                        except Exception as error:  # the view stays; say what differs
                            notes.append(f"{name}={value!r} not applied ({error})")
                self._explorer = explorer
                self._explorer_pane.children = [self._explorer_title, explorer]
            else:
                self._explorer.set_image(image)
                if self._explorer.class_index != class_index:
                    self._explorer.class_index = class_index
        except Exception as error:
            self._fail(error)
            raise
        self._explorer_title.value = self._explorer_heading(row)
        self.error = None
        text = f"✓ opened #{index} {row['id']}"
        self._say("; ".join([text, *notes]), "#2a7a2a" if not notes else "#a05a00")
        return self._explorer

    def _explorer_heading(self, row: dict) -> str:
        true = "?" if _missing(row["true_label"]) else row["true_label"]
        return (
            f"<b>#{int(row['index'])} {html.escape(str(row['id']))}</b> · true "
            f"{html.escape(str(true))} · explained {html.escape(str(row['explained_label']))} "
            f"({_format(row['explained_score'])})"
        )

    # --- closing --------------------------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise RuntimeError("this gallery is closed; make a new one")

    def close(self):
        """Close the explorer, every control and cell of the gallery."""
        self._closed = True
        if getattr(self, "_explorer", None) is not None:
            self._explorer.close()
            self._explorer = None
        if "controls" not in vars(self):  # refused before it was built (ipywidgets' __del__)
            super().close()
            return
        stack = [*self.children, self._previous, self._next, self.layout]
        while stack:
            child = stack.pop()
            stack.extend(getattr(child, "children", ()))
            for part in ("layout", "style"):
                if isinstance(getattr(child, part, None), widgets.Widget):
                    stack.append(getattr(child, part))
            child.close()
        super().close()

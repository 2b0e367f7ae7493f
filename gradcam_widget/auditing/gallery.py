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

The properties are :class:`~gradcam_widget.explorer.controls.Setting` rows (:data:`SETTINGS`),
the idiom the explorer shares: ``gallery.controls`` maps each control's name to its
ipywidget. Which rows are selected and how a cell says them is
:mod:`~gradcam_widget.auditing.gallery_rows`.

Standard ipywidgets only. The model is loaded on the first click, not before.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import ipywidgets as widgets

from gradcam_widget.auditing import gallery_rows, store
from gradcam_widget.auditing.gallery_rows import (
    ALL_CLASSES,
    CLASS_FIELDS,
    CORRECT_FILTERS,
    DEFAULT_SORT_COLUMNS,
    DEFAULT_THRESHOLD,
    ERROR_COLOUR,
    NO_THRESHOLD,
    OPERATORS,
    STORAGE_COLUMNS,
    class_indices,
    class_label,
    format_value,
    has_values,
    is_missing,
    numeric_columns,
    select,
    sortable_columns,
)
from gradcam_widget.auditing.gallery_settings import SETTINGS
from gradcam_widget.cam import core
from gradcam_widget.explorer.controls import Controlled, add_settings, dropdown

__all__ = [  # the old module's names, importable from here as before
    "ALL_CLASSES", "CLASS_FIELDS", "CORRECT_FILTERS", "DEFAULT_SORT_COLUMNS", "DEFAULT_THRESHOLD",
    "ERROR_COLOUR", "NO_THRESHOLD", "OPERATORS", "SETTINGS", "STORAGE_COLUMNS", "CamGallery",
    "Cell", "numeric_columns", "select", "sortable_columns",
]  # fmt: skip

CELL_WIDTH = "116px"
THUMBNAIL_WIDTH = "96px"


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


def _dropdown(description, options, value, css, width="210px") -> widgets.Dropdown:
    control = dropdown(description, options, value, width=width)
    control.add_class(css)
    return control


class CamGallery(Controlled, widgets.VBox):
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
    are the rows selected and the rows on the page; ``controls`` the controls by name;
    ``explorer`` the explorer (``None`` until the first :meth:`open`); ``status`` the status
    line; ``error`` its last error or ``None``; ``previous_button`` and ``next_button`` turn
    the page; ``explorer_pane`` holds ``explorer_title`` and the explorer.
    """

    KIND = "gallery"

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
        self.init_controlled()
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
            field for field in CLASS_FIELDS if has_values(self._table[f"{field}_class"])
        ] or list(CLASS_FIELDS)
        self._classes = {
            index: class_label(self._table, results.class_names, index)
            for index in class_indices(self._table, self._fields)
        }
        self._positions: dict[int, int] | None = None  # index -> row of the table
        self._selected: tuple | None = None  # (the controls' key, the selection)
        self._cell_index: list[int | None] = [None] * page_size
        self._explorer = None
        try:
            self._build(columns)
            self._draw()
        except BaseException:  # a refused gallery leaves no widget behind
            self.close()
            raise
        self.remember_good()

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
        controls["correct"].disabled = not has_values(table["correct"])
        self.observe_controls()
        self.previous_button = widgets.Button(description="◀ previous", layout={"width": "100px"})
        self.next_button = widgets.Button(description="next ▶", layout={"width": "100px"})
        self.previous_button.add_class("gw-gallery-previous")
        self.next_button.add_class("gw-gallery-next")
        self.previous_button.on_click(lambda _: self._turn(-1))
        self.next_button.on_click(lambda _: self._turn(+1))
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
        self.explorer_title = widgets.HTML(
            "<i>Click a thumbnail's open button to explain that image here.</i>"
        )
        self.explorer_title.add_class("gw-gallery-explorer-title")
        self.explorer_pane = widgets.VBox(
            [self.explorer_title], layout=widgets.Layout(margin="0 0 0 12px")
        )
        self.explorer_pane.add_class("gw-gallery-explorer")
        rows = [
            widgets.HBox([controls["sort"], controls["order"], controls["correct"]]),
            widgets.HBox([controls["class"], controls["class_of"]]),
            widgets.HBox(
                [controls["threshold_column"], controls["threshold_operator"],
                 controls["threshold_value"]]
            ),
            widgets.HBox(
                [self.previous_button, controls["page"], self._page_count_label, self.next_button]
            ),
        ]  # fmt: skip
        body = widgets.Box(
            [grid, self.explorer_pane],
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

    def _key(self) -> tuple:
        return (
            self.sort_by, self.ascending, self.class_of, self.class_filter,
            self.correct_filter, self.threshold,
        )  # fmt: skip

    @property
    def sortable_columns(self) -> list[str]:
        """The columns the Sort control offers."""
        return list(self._sortable)

    @property
    def numeric_columns(self) -> list[str]:
        """The columns a threshold can apply to."""
        return list(self._numeric)

    @property
    def class_fields(self) -> list[str]:
        """The class columns :attr:`class_of` can name (those the audit has values for)."""
        return list(self._fields)

    @property
    def classes(self) -> dict[int, str]:
        """The classes of the audit, index -> label (what :attr:`class_filter` accepts)."""
        return dict(self._classes)

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

    def put(self, values: dict) -> None:
        """A checked change: set its controls (and page 1 unless it sets the page), redraw
        once.

        Raises:
            Exception: what drawing raises (also shown in the status line; the last good
                settings come back).
        """
        with self.quiet():
            for name, value in values.items():
                self.controls[name].value = value
            if "page" not in values:
                self.controls["page"].value = 1
        try:
            self._draw()
        except Exception as error:
            self.fail(error)
            raise
        self._succeeded()

    def on_change(self, name: str, change: dict) -> None:
        """A control changed in the browser (or from code): check, redraw, or say why not."""
        try:
            if name == "threshold_value" and not math.isfinite(change["new"]):
                raise ValueError(f"the threshold value must be finite; got {change['new']}")
            with self.quiet():
                if name == "threshold_column" and change["new"] != NO_THRESHOLD:
                    self.controls["threshold_value"].value = gallery_rows.typical_threshold(
                        self._table, change["new"]
                    )
                if name != "page":
                    self.controls["page"].value = 1
            self._draw()
        except Exception as error:  # shown, never raised into the notebook
            self.fail(error)
            return
        self._succeeded()

    def _turn(self, step: int):
        """The previous / next button: one page back or forward, if there is one."""
        target = self.page + step
        if 1 <= target <= self.page_count:
            with contextlib.suppress(ValueError):  # shown in the status line
                self.page = target

    def _succeeded(self):
        self.remember_good()
        if self.error is not None:
            self.error = None
            self.status.value = ""

    def fail(self, error: Exception) -> bool:
        """Show ``error`` in the status line, go back to the last good settings and redraw."""
        restored = super().fail(error)
        if restored:
            with contextlib.suppress(Exception):
                self._draw()
        return restored

    def _say(self, text: str, colour: str = "#555"):
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    # --- drawing --------------------------------------------------------------------

    def _draw(self):
        """Fill the cells with the page's rows and write the summary and page count."""
        selection = self.selection
        count = max(1, -(-len(selection) // self.page_size))
        page = self.controls["page"]
        with self.quiet():
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
        self.previous_button.disabled = page.value <= 1
        self.next_button.disabled = page.value >= count
        self._show_threshold_parts()
        self.summary.value = gallery_rows.summary(
            self._table, selection, start, len(rows), len(self.results.skipped)
        )

    def _fill(self, position: int, cell: Cell, row: dict):
        index = int(row["index"])
        if self._cell_index[position] != index:
            cell.image.value = self.results.thumbnail_of(row)
            cell.button.description = f"open #{index}"
            cell.button.tooltip = f"open {row['id']} in the explorer"
            self._cell_index[position] = index
        caption = gallery_rows.caption(row, self.sort_by, self.threshold)
        if cell.caption.value != caption:
            cell.caption.value = caption
        if cell.box.layout.display is not None:
            cell.box.layout.display = None

    def _show_threshold_parts(self):
        off = self.controls["threshold_column"].value == NO_THRESHOLD
        for name in ("threshold_operator", "threshold_value"):
            if self.controls[name].disabled != off:
                self.controls[name].disabled = off

    # --- opening an image -----------------------------------------------------------

    def _on_open(self, position: int):
        def handler(_button):
            index = self._cell_index[position]
            if index is None or self.closed:
                return
            with contextlib.suppress(Exception):  # shown in the status line
                self.open(index)

        return handler

    def _why_stale(self, row: dict) -> str | None:
        """Why the file of image ``row`` is no longer the picture the audit explained
        (:func:`~gradcam_widget.gallery_rows.why_stale`; ``None`` with ``images=``)."""
        if self._images is not None:
            return None
        return gallery_rows.why_stale(self.results.manifest, row)

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
        self.check_open()
        try:
            if self._positions is None:
                self._positions = gallery_rows.positions(self._table)
            row = gallery_rows.row_of(self._table, self._positions, index)
            self._say(f"⏳ opening #{index} {row['id']}…")
            stale = self._why_stale(row)  # before reading: a FIFO is never opened
            if stale:
                raise ValueError(
                    f"cannot open #{index} ({row['id']}): {stale}; its row, map and thumbnail "
                    "are of the picture the audit read, not of the file as it is now: audit "
                    "it again to explain it"
                )
            image = gallery_rows.image_of(self.results, self._images, row)
            model_known = self._explorer is not None or self._model is not None
            missing = gallery_rows.why_not_open(self.results, row, model_known, image is None)
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
                for name, value in gallery_rows.audit_settings(self.results).items():
                    if getattr(explorer, name) != value:
                        try:
                            setattr(explorer, name, value)
                        except Exception as error:  # the view stays; say what differs
                            notes.append(f"{name}={value!r} not applied ({error})")
                self._explorer = explorer
                self.explorer_pane.children = [self.explorer_title, explorer]
            else:
                self._explorer.set_image(image)
                if self._explorer.class_index != class_index:
                    self._explorer.class_index = class_index
        except Exception as error:
            self.fail(error)
            raise
        self.explorer_title.value = self._explorer_heading(row)
        self.error = None
        text = f"✓ opened #{index} {row['id']}"
        self._say("; ".join([text, *notes]), "#2a7a2a" if not notes else "#a05a00")
        return self._explorer

    def _explorer_heading(self, row: dict) -> str:
        true = "?" if is_missing(row["true_label"]) else row["true_label"]
        return (
            f"<b>#{int(row['index'])} {html.escape(str(row['id']))}</b> · true "
            f"{html.escape(str(true))} · explained {html.escape(str(row['explained_label']))} "
            f"({format_value(row['explained_score'])})"
        )

    # --- closing --------------------------------------------------------------------

    def close(self):
        """Close the explorer, every control and cell of the gallery."""
        self._closed = True
        if getattr(self, "_explorer", None) is not None:
            self._explorer.close()
            self._explorer = None
        if "controls" not in vars(self):  # refused before it was built (ipywidgets' __del__)
            super().close()
            return
        self.close_tree(self.previous_button, self.next_button)
        super().close()


add_settings(CamGallery, SETTINGS)

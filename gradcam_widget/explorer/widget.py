"""CamExplorer: flip every choice of the Grad-CAM recipe and watch the map change.

The view of an :class:`~gradcam_widget.session.ExplorerSession`: the session owns the model,
the captures and the maps (and every cache of them); the explorer owns the controls, the
panels, the readout and the status line, and asks its session for what to draw. Standard
ipywidgets only (no custom front-end code), so it works unchanged in JupyterLab, Notebook 7,
VS Code and Voila. Four ``ipywidgets.Image`` panels, keyed by
:data:`gradcam_widget.render.PANEL_TITLES`, are updated in place with PNG bytes, and a fifth,
``"guided"`` (:data:`PANELS`), shows an input-gradient map when the Guided control is on.

Cache discipline (the session's): pooling, channels, order, interpolation, colormap and
opacity only re-read
the cached tensors of the current :class:`~gradcam_widget.captures.Capture`; class and score
select a capture from an LRU cache and run one model pass only on a miss. Every pass the
explorer runs (the first view, a new image, a class or score change) records only the
layer(s) on screen, so the backward pass stops there; the first switch to another layer on
such a capture runs one more pass that records every layer. The caches are bounded in bytes
(:attr:`CamExplorer.CACHE_BYTES` for captures, :data:`RESULT_BYTES` for maps); a result is
dropped with its capture, and :meth:`CamExplorer.close` frees everything. The Guided panel
costs one more pass when switched on (guided backpropagation down to the input, cached on the
capture; SmoothGrad one batched pass); Guided Grad-CAM then follows every Grad-CAM change with
numpy only. The Randomise slider shows the same view computed on a copy of the model whose top
k blocks are re-initialised (the model itself is never changed).

The settable properties (``explorer.layer = "conv1"``) are generated from one table,
:data:`SETTINGS`: each names the control it sets and the check a value must pass
(:mod:`gradcam_widget.explorer.controls`, the idiom the gallery shares); a choice of the recipe
declared in :mod:`gradcam_widget.options` (``pooling``, ``interpolation``, ...) is a row there
and a dropdown here with no code of its own. ``explorer.controls`` maps each name to its
ipywidget. The panels and readout are written by :mod:`~gradcam_widget.explorer.readout`, the
Image row by :mod:`~gradcam_widget.explorer.upload`.

The Image row replaces the image: a menu of the bundled samples (:func:`sample_menu`) and an
upload button (:class:`~gradcam_widget.explorer.upload_button.UploadButton`: png, jpg, webp or
bmp, one file of at most :data:`MAX_UPLOAD_BYTES`, a larger one refused in the browser).
Both go through :meth:`CamExplorer.set_image`, which scripts call too: one model pass, every
other setting kept, the old image's captures and maps dropped. A file that is empty, too large
or no image is refused before any model pass, in the status line; the view on screen stays.
"""

from __future__ import annotations

import html
import time

import ipywidgets as widgets
import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core, methods
from gradcam_widget.captures import targets
from gradcam_widget.captures.capturing import Capture
from gradcam_widget.data import render
from gradcam_widget.explorer import readout, upload
from gradcam_widget.explorer.controls import Controlled, Setting, add_settings
from gradcam_widget.explorer.readout import (
    CLASS_CONTROLS,
    GUIDED_LABELS,
    GUIDED_PANEL,
    PANEL_WIDTH,
    PANELS,
)
from gradcam_widget.explorer.session import FUSED, ExplorerSession, Step, explained
from gradcam_widget.explorer.session import RESULT_BYTES as RESULT_BYTES
from gradcam_widget.explorer.settings import (
    CHANNEL_LABELS,
    ORDER_LABELS,
    POOLING_LABELS,
    ROWS,
    SCORE_LABELS,
    SETTINGS,
    TABLE_CONTROLS,
    check_layer,
    make_controls,
)
from gradcam_widget.explorer.upload import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    NO_SAMPLE,
    SAMPLE_SEEDS,
    SCENE_SAMPLE,
    UPLOAD_ACCEPT,
    UPLOAD_KEPT_SIDE,
    ImageSource,
    sample_menu,
)

__all__ = [  # what this module offered before it was split, importable from here
    "CHANNEL_LABELS", "CLASS_CONTROLS", "FUSED", "GUIDED_LABELS", "GUIDED_PANEL",
    "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "NO_SAMPLE", "ORDER_LABELS", "PANELS", "PANEL_WIDTH",
    "POOLING_LABELS", "RESULT_BYTES", "SAMPLE_SEEDS", "SCENE_SAMPLE", "SCORE_LABELS", "SETTINGS",
    "UPLOAD_ACCEPT", "UPLOAD_KEPT_SIDE", "CamExplorer", "Setting", "sample_menu",
]  # fmt: skip

# --- the explorer -----------------------------------------------------------------------


class CamExplorer(Controlled, widgets.VBox):
    """Interactive Grad-CAM for one model and one image: the view of an
    :class:`~gradcam_widget.session.ExplorerSession`.

    Its one job is the view: the controls and the settable properties behind them, the four
    panels and the Guided one, the readout and the status line, which controls apply, and
    restoring the last good settings when a change fails. What is computed (captures, maps,
    their caches, the randomised copies of the model) is the session's.

    Args:
        model: a ``keras.Model``, an entry from :func:`gradcam_widget.models.load`, or a
            model name for it (default ``"shapes"``, the shipped offline model).
        image: anything :func:`gradcam_widget.capture` takes: an array, a PIL image, a file
            path or a sample name (default ``"two_shapes"``); also the bytes of an image file
            or a :func:`sample_menu` entry (see :meth:`set_image`).
        class_names: names of the classes, one per class (default: the entry's, else
            ``"class N"``); not with ``target=``.
        preprocess: called on the ``(1, H, W, 3)`` float32 batch (default: the entry's).
        class_index: the class to explain first (default: the top prediction).
        layer: the layer to show first (default: the capture's ``default_layer``; ``"fused"``
            for the multi-layer fusion entry).
        cache_size: at most this many captures (one per class and score) are kept.
        cache_bytes: and at most this many bytes of them (default :attr:`CACHE_BYTES`); the
            least recently used go first, the one on screen always stays.
        target: what to explain instead of a class: a :mod:`gradcam_widget.targets` target
            (``Output``, ``Region``, ``Regression`` ...) or a callable ``outputs -> (N,)``
            (``None`` or an int: a class index, as ``class_index``). The Class controls are
            then hidden, the readout names the target, and Score is disabled for a target
            that has no probability (a regression). Needed for a model with several outputs
            or a non-classifier output.
        result_bytes: bytes of maps kept (default
            :data:`~gradcam_widget.session.RESULT_BYTES`).
        passes: a :class:`~gradcam_widget.captures.passes.PassQueue` shared by explorers of
            the same model (the classroom app's tabs): captures waiting together share a pass.

    Raises:
        ValueError: for a bad model, image, class index, target, layer or argument, or a
            model whose outputs need a ``target=`` (the widget needs a first view to exist;
            later errors go to its status line instead).

    Settable attributes (the UI follows), one per row of :data:`SETTINGS`: ``method``,
    ``layer``, ``pooling``, ``channels``, ``order``, ``interpolation`` (how the layer's map is
    resized to the image), ``score``, ``class_index`` (``None``:
    the top class), ``colormap``, ``opacity``, ``guided`` (``"off"``, ``"guided_backprop"``,
    ``"guided_gradcam"``, ``"smoothgrad"``: the Guided panel; a ValueError on a network with
    other activations than ReLU) and ``randomize`` (``0`` .. the number of blocks: the same
    view on a copy of the model whose top k blocks are re-initialised, seeded; ``0`` drops the
    copies). ``result`` is the :class:`~gradcam_widget.core.CamResult` on screen;
    ``controls`` maps each setting's name (and ``class``, the top-5 menu) to its ipywidget;
    ``panels`` and ``titles`` each panel's picture and title, by :data:`PANELS`.

    The Image row above the controls: ``samples``, a menu of :func:`sample_menu`, and
    ``upload``, an :class:`~gradcam_widget.explorer.upload_button.UploadButton` (png, jpg,
    webp or bmp, at most :data:`MAX_UPLOAD_BYTES`, a larger one refused in the browser);
    either replaces the image as :meth:`set_image` does, and the readout names it
    (``image_name``). A refused file says why in the status line; the view on screen stays.
    """

    CACHE_SIZE = ExplorerSession.CACHE_SIZE
    CACHE_BYTES = ExplorerSession.CACHE_BYTES
    KIND = "explorer"
    KEPT_NOTE = " — the previous view is kept."

    def __init__(
        self,
        model="shapes",
        image="two_shapes",
        class_names=None,
        preprocess=None,
        class_index=None,
        layer=None,
        cache_size: int = CACHE_SIZE,
        cache_bytes: int = CACHE_BYTES,
        target=None,
        passes=None,
        result_bytes: int = RESULT_BYTES,
    ):
        # every argument is checked before any widget exists: a refusal leaves none behind
        chosen, class_index = explained(target, class_index)
        session = ExplorerSession(
            model,
            preprocess=preprocess,
            target=chosen,
            class_names=class_names,
            cache_size=cache_size,
            cache_bytes=cache_bytes,
            result_bytes=result_bytes,
            passes=passes,
        )
        self.init_controlled()
        super().__init__()
        self.session = session
        """The :class:`~gradcam_widget.session.ExplorerSession` that computes the view."""
        self.result: core.CamResult | None = None
        self._capture: Capture | None = None  # the capture the controls point at
        self._drawn: Capture | None = None  # the capture whose input panel is on screen
        self._step: Step | None = None  # what the last view's session call did
        self._guided: np.ndarray | None = None  # the input-gradient map on screen
        self._source: ImageSource | None = None  # the image on screen, as the readout names it
        self._build()
        try:
            self._first_view(image, class_index, layer)
        except BaseException:  # a refused explorer leaves no widget and no capture behind
            self.close()
            raise

    def _first_view(self, image, class_index, layer):
        """Capture only the layer(s) on screen: one pass that stops at ``layer``."""
        image, source = upload.read_new_image(image)
        first = self.session.set_image(
            image, class_index=class_index, layers=[None if layer == FUSED else layer]
        )
        self._show_source(source)
        self._install_capture(first)
        if layer is not None:
            with self.quiet():
                self.controls["layer"].value = check_layer(self, layer)
        self._refresh(new_image=True)
        if self.error:
            raise ValueError(self.error)

    def _build(self):
        """Make the controls, panels, readout and status line, and lay them out."""
        self.controls = controls = make_controls()
        self._tooltips = {name: control.tooltip for name, control in controls.items()}
        self.observe_controls()
        controls["randomize"].max = len(self.session.block_names)
        controls["randomize"].disabled = not self.session.block_names
        if self.target is not None:  # a target is explained, not a class: no class to pick
            for name in CLASS_CONTROLS:
                controls[name].layout.display = "none"
        self.image_row = upload.ImageRow(self.set_image, lambda: self.closed, self.fail)
        self.samples, self.upload = self.image_row.samples, self.image_row.upload
        self.titles, self.panels = readout.make_panels()
        self.readout = widgets.HTML()
        self.readout.add_class("gw-readout")
        self.status = widgets.HTML()
        self.status.add_class("gw-status")
        placed = {name for row in ROWS for name in row}
        extra = tuple(name for name in TABLE_CONTROLS if name not in placed)
        rows = [
            widgets.HBox([self.samples, self.upload]),
            *(widgets.HBox([controls[name] for name in row]) for row in (*ROWS, extra) if row),
        ]
        self.boxes = {
            title: widgets.VBox([self.titles[title], self.panels[title]]) for title in PANELS
        }
        self._show_guided(False)
        panels = widgets.HBox([self.boxes[title] for title in PANELS])
        self.add_class("gw-explorer")
        self.children = [*rows, panels, self.readout, self.status]

    # --- pointing the controls at a capture -------------------------------------------

    def _shown_layers(self) -> list[str | None]:
        """The layers a new capture must record for the view on screen."""
        return self.session.layers_for(self.controls["layer"].value, self._capture)

    def _class_label(self, cap: Capture, index: int) -> str:
        return f"{self.session.class_name(cap, index)} · {cap.scores[index]:.3g}"

    def _install_capture(self, cap: Capture):
        """Point the controls at ``cap``: layer list, class list (top-5 + the chosen one)."""
        controls = self.controls
        with self.quiet():
            layer_options = readout.layer_options(cap)
            if list(controls["layer"].options) != layer_options:  # labels follow the grid
                previous = controls["layer"].value
                controls["layer"].options = layer_options
                values = [value for _, value in layer_options]
                controls["layer"].value = previous if previous in values else cap.default_layer
            if self.target is None and (
                self.session.blocks_of(cap) == 0 or self._capture is None
            ):  # a randomised copy's capture keeps the model's own top-5 list
                self._install_classes(cap)
            controls["score"].value = cap.score
        self._capture = cap

    def _install_classes(self, cap: Capture):
        controls = self.controls
        chosen = cap.class_index
        top = [index for index, _, _ in cap.top(5)]
        if chosen not in top:
            top.append(chosen)
        controls["class"].options = [
            (f"#{rank + 1} {self._class_label(cap, index)}" if rank < 5 else
             f"{index}: {self._class_label(cap, index)}", index)
            for rank, index in enumerate(top)
        ]  # fmt: skip
        controls["class"].value = chosen
        controls["class_index"].max = len(cap.scores) - 1
        controls["class_index"].value = chosen

    # --- reacting to changes ----------------------------------------------------------

    def on_change(self, name: str, change: dict) -> None:
        """A control changed in the browser (or from code): the class menus follow each
        other, then the view is recomputed (errors go to the status line)."""
        if name == "class":
            with self.quiet():
                self.controls["class_index"].value = change["new"]
        elif name == "class_index" and change["new"] != self.controls["class"].value:
            with self.quiet():  # any index: add it to the dropdown
                self._add_class_option(change["new"])
        self._refresh(changed=name)

    def put(self, values: dict) -> None:
        """A checked change: set the controls (the view follows through :meth:`on_change`).

        Raises:
            RuntimeError: when the recomputation fails (said in the status line too).
        """
        self.error = None
        for name, value in values.items():
            self.controls[name].value = value
        if self.error:
            raise RuntimeError(self.error)

    def _add_class_option(self, index: int):
        options_now = list(self.controls["class"].options)
        if index not in [value for _, value in options_now]:
            label = f"{index}: {self._class_label(self._capture, index)}"
            options_now.append((label, index))
            self.controls["class"].options = options_now
        self.controls["class"].value = index

    def _refresh(self, changed: str | None = None, new_image: bool = False):
        """Recompute what ``changed`` affects and redraw. Never raises: errors go to the
        status line, the previous view and settings stay. ``new_image``: the capture on
        screen was just made by :meth:`set_image` (the status line names the image)."""
        started = time.perf_counter()
        values = self.values()
        session = self.session
        restyle_only = changed in options.at_stage(options.DRAW) and self.result is not None
        try:
            blocks = values["randomize"]
            if blocks and blocks not in session.clones:  # a copy to make and trace: seconds
                self._say(
                    f"⏳ randomising the top {blocks} block{'s' if blocks > 1 else ''} of a "
                    "copy of the model…"
                )
            session.set_randomized(blocks)  # 0: every copy dropped
            step = session.view(
                values,
                self._shown_layers(),
                maps=not restyle_only,
                on_miss=self._say_working,
                on_guided=lambda mode: self._say(
                    f"⏳ {readout.guided_label(mode)}: a pass to the input…"
                ),
            )
            cap = step.capture
            if cap is not self._capture:
                self._install_capture(cap)
            result = self.result if restyle_only else step.result
            guided = self._guided if restyle_only else step.guided
            self._draw(cap, result, values, restyle_only, guided)
            self._update_enabled(methods.get(values["method"]))
        except Exception as error:  # shown, never raised into the notebook
            self.fail(error)
            return
        finally:
            session.trim()  # the capture on screen may have grown (layers, input gradients)
        self.result, self._drawn, self._guided = result, cap, guided
        self._step = step._replace(captured=step.captured or new_image)
        self.remember_good()
        self.error = None
        self._write_readout(cap, result, 1000 * (time.perf_counter() - started))
        news = "" if not new_image else f" · new image <b>{html.escape(self.image_name)}</b>"
        self.status.value = f"<span style='color:#2a7a2a'>✓ ready{news}</span>" + "".join(
            f"<br>{readout.warning_html(note)}" for note in cap.warnings
        )

    def _say(self, text: str):
        """A grey line in the status line while something slow runs."""
        self.status.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    def _say_working(self, method: methods.Method):
        """Before a map is computed: Score-CAM takes seconds, not milliseconds, so say so."""
        if method.runs_model:
            self._say(f"⏳ {method.label}: forward passes…")

    def _show_guided(self, shown: bool):
        """Show or hide the Guided panel (its title, picture and box)."""
        display = None if shown else "none"
        for part in (self.boxes[GUIDED_PANEL], self.panels[GUIDED_PANEL]):
            if part.layout.display != display:
                part.layout.display = display

    def _update_enabled(self, method: methods.Method):
        """Disable the controls a method or the target ignores, and say why in their
        tooltips."""
        for name, why in readout.disabled_reasons(method, self.target).items():
            control = self.controls[name]
            control.disabled = why is not None
            control.tooltip = why or self._tooltips[name]

    # --- drawing ----------------------------------------------------------------------

    def _draw(self, cap: Capture, result, values: dict, restyle_only: bool, guided):
        readout.draw(
            self.panels, self.titles, cap, result, values, restyle_only=restyle_only,
            guided=guided, new_input=cap is not self._drawn,
        )  # fmt: skip
        if not restyle_only:
            self._show_guided(guided is not None)

    def _write_readout(self, cap: Capture, result: core.CamResult, render_ms: float):
        self.readout.value = readout.readout_html(
            self.session, cap, result, self._step,
            image_line=upload.image_line(self._source, cap) if self._source else None,
            method_label=methods.get(self.method).label,
            guided=(self._guided, self.guided), render_ms=render_ms,
        )  # fmt: skip

    # --- programmatic use -------------------------------------------------------------

    @property
    def capture(self) -> Capture:
        """The :class:`~gradcam_widget.captures.Capture` behind the current view."""
        return self._capture

    @property
    def target(self) -> targets.Target | None:
        """The target explained instead of a class (``None``: the Class control decides)."""
        return self.session.target

    @property
    def model_passes(self) -> int:
        """Model passes run so far for this explorer's model (all explorers share them)."""
        self.check_open()
        return self.session.model_passes

    @property
    def captures(self):
        """The session's capture cache (a :class:`~gradcam_widget.cache.ByteLRU`)."""
        return self.session.captures

    @property
    def guided_map(self) -> np.ndarray | None:
        """The input-gradient map of the Guided panel on screen (``None`` while it is off)."""
        return self._guided

    @property
    def last_step(self) -> Step | None:
        """What the session did for the view on screen (a :class:`~gradcam_widget.session.Step`:
        whether a model pass, a fill-in or a pass to the input ran for it)."""
        return self._step

    def set_image(self, image, name: str | None = None):
        """Explain a new image with the same settings; the class follows its top prediction
        (a target stays the one explained). What the Image control's menu and upload button
        call.

        One model pass, down to the layer(s) on screen (plus the Guided panel's pass to the
        input when it is on, and the copy's pass while Randomise is above 0). Layer, method,
        pooling, channels, order, score, colormap, opacity, Guided and Randomise are kept.
        The previous image's captures and maps leave the caches (their bytes are freed with
        it). The image is fitted to the model's input as :func:`gradcam_widget.capture` does.

        Args:
            image: anything :func:`gradcam_widget.capture` takes (an array, a PIL image, a
                path, a sample name); the bytes of an image file (``bytes``, ``bytearray`` or
                a ``memoryview``, as an upload gives them; at most :data:`MAX_UPLOAD_BYTES`);
                or a :func:`sample_menu` entry such as ``"shape scene 1000001"``.
            name: what the readout and the status line call it (default: the file name, the
                sample name, ``"array"``).

        Raises:
            ValueError: for a bad image: empty bytes, bytes over :data:`MAX_UPLOAD_BYTES`,
                bytes or a file that is no image, a bad array (also shown in the status
                line; the view and the image on screen are kept, and no model pass runs for
                anything refused before the model).
        """
        self.check_open()
        label = str(name) if name is not None else upload.image_name(image)
        self._say(f"⏳ new image {label}: one model pass…")
        try:
            image, source = upload.read_new_image(image, label)
            cap = self.session.set_image(image, score=self.score, layers=self._shown_layers())
        except Exception as error:
            self.fail(error)
            raise
        self._show_source(source)
        self._install_capture(cap)
        self._refresh(new_image=True)

    @property
    def image_name(self) -> str | None:
        """What the readout calls the image on screen (a file name, a sample name, ...)."""
        return None if self._source is None else self._source.name

    def _show_source(self, source: ImageSource):
        """``source`` is the image on screen now: the readout and the menu name it."""
        self._source = source
        self.image_row.show(source)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by this explorer's caches (captures and maps)."""
        return self.session.cached_bytes

    def close(self):
        """Close every control and panel of the explorer and release its captures and maps.

        A closed explorer that nothing else refers to is freed; its setters raise
        RuntimeError."""
        self._closed = True
        if "controls" not in vars(self):  # refused before it was built (ipywidgets' __del__)
            super().close()
            return
        self.session.close()
        self._capture = self._drawn = self.result = self._guided = self._step = None
        self.close_tree()
        super().close()

    def save_png(self, path):
        """Write the four panels as one titled figure (matplotlib, with colorbars; the Guided
        panel is not part of it)."""
        self.check_open()
        return render.save_figure(
            path, self._capture.image, self.result, self.colormap, self.opacity
        )

    def export_html(self, path, **options):
        """Write the static explorer of the view on screen: one self-contained HTML file that
        opens from ``file://`` with no kernel, server or network
        (:func:`gradcam_widget.export.write_capture`).

        The image and, for the class (or target) on screen, every combination of the page's
        menus (:data:`gradcam_widget.export.MENUS`: method × layer × pooling × channels ×
        order × interpolation), precomputed from the capture on screen (one more pass when it
        holds only the layer on screen) with this explorer's colormap and opacity; the page
        opens on the current settings. Default layers: the default layer, the fusion layers,
        ``"fused"`` and the layer on screen; JPEG pictures. The file grows with the distinct
        pictures (at most 7 per layer for each method, 28 for Grad-CAM, each ~5–20 KB as
        JPEG); the shapes model's default export is about 2.5 MB, and a file over
        ``max_bytes`` (default 8 MB) is refused.

        Args:
            path: the HTML file to write.
            **options: ``layers`` (``None``, ``"all"`` or names), ``methods``, ``format``
                (``"jpeg"`` or ``"png"``), ``quality``, ``max_bytes``, ``title`` (see
                :func:`gradcam_widget.export.write_capture`).

        Returns:
            A :class:`gradcam_widget.export.Export` (path, bytes, combinations, pictures).

        Raises:
            ValueError: for an unknown layer or method, a bad format or quality, or a file
                over ``max_bytes``; nothing is written then.
        """
        from gradcam_widget.explorer import export

        self.check_open()
        cap = self._capture
        if options.get("layers") is None:
            options["layers"] = export.default_layers(cap, self.layer)
        options.setdefault("colormap", self.colormap)
        options.setdefault("opacity", self.opacity)
        options.setdefault("selected", {name: getattr(self, name) for name in export.MENUS})
        if self.target is None:
            options.setdefault("class_name", self.session.class_name(cap, cap.class_index))
        if self.randomize:  # the view is a randomised copy's: the page must say so
            blocks = f"{self.randomize} block{'s' if self.randomize != 1 else ''}"
            options.setdefault(
                "title",
                f"Grad-CAM explorer · RANDOMISED model ({blocks} re-initialised: a sanity "
                "check, not this model's explanation)",
            )
        try:
            return export.write_capture(cap, path, **options)
        finally:
            self.session.trim()  # the capture may have grown (layers filled in)

    def panel_png(self, title: str) -> bytes:
        """The PNG bytes currently shown in panel ``title``.

        Args:
            title: one of :data:`PANELS` (:data:`gradcam_widget.render.PANEL_TITLES`, then
                ``"guided"``).

        Returns:
            The PNG bytes (empty for the Guided panel while it is off).

        Raises:
            ValueError: naming the panels for another title.
        """
        return self.panels[core.check_option("panel", title, PANELS)].value


add_settings(CamExplorer, SETTINGS)

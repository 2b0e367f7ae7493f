"""CamExplorer: flip every choice of the Grad-CAM recipe and watch the map change.

A thin shell over :mod:`gradcam_widget.captures` and :mod:`gradcam_widget.render`: standard
ipywidgets only (no custom front-end code), so it works unchanged in JupyterLab, Notebook 7,
VS Code and Voila. Four ``ipywidgets.Image`` panels, keyed by
:data:`gradcam_widget.render.PANEL_TITLES`, are updated in place with PNG bytes.

Cache discipline: pooling, channels, order, colormap and opacity only re-read the cached
tensors of the current :class:`~gradcam_widget.captures.Capture`; class and score select a
capture from an LRU cache and run one model pass only on a miss. Every pass the explorer runs
(the first view, a new image, a class or score change) records only the layer(s) on screen,
so the backward pass stops there; the first switch to another layer on such a capture runs
one more pass that records every layer. The caches are bounded in bytes
(:attr:`CamExplorer.CACHE_BYTES` for captures, :data:`RESULT_BYTES` for maps); a result is
dropped with its capture, and :meth:`CamExplorer.close` frees everything.

The settable properties (``explorer.layer = "conv1"``) are generated from one table,
:data:`SETTINGS`: each names the control it sets and the check a value must pass.
"""

from __future__ import annotations

import contextlib
import html
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np

from gradcam_widget import core, methods, render, targets
from gradcam_widget.cache import ByteLRU
from gradcam_widget.captures import Capture, capture
from gradcam_widget.engine import engine_for
from gradcam_widget.inputs import check_class_index as _check_class_index

ORDER_LABELS = (("ReLU → resize", "relu_first"), ("resize → ReLU", "resize_first"))
CHANNEL_LABELS = (("weighted sum", "weighted"), ("top channel", "top"))
POOLING_LABELS = (("mean (GAP)", "mean"), ("max", "max"))
SCORE_LABELS = (("logit (pre-softmax)", "logit"), ("probability", "probability"))
PANEL_WIDTH = "224px"
FUSED = "fused"  # the Layer entry for multi-layer fusion (Capture.fuse)
RESULT_BYTES = 32 * 2**20  # maps kept per explorer (Score-CAM's forward passes are costly)
CLASS_CONTROLS = ("class", "class_index")  # hidden when the explorer explains a target


def _resolve_model(model):
    if isinstance(model, str):
        from gradcam_widget import models

        return models.load(model)
    return model


def _check_class_names(names) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, (str, bytes, dict)) or not isinstance(names, Iterable):
        raise ValueError(
            f"class_names must be a sequence of class names, one per class; got {names!r}"
        )
    return tuple(str(name) for name in names)


def _is_index(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _explained(target, class_index) -> tuple[targets.Target | None, int | None]:
    """``(target, class_index)`` of the constructor's arguments: ``target=None`` or an int
    keeps the Class control (an int or a `Class(k)` is a class index); anything else is
    explained as it is.

    Raises:
        ValueError: for both arguments given, or a target :func:`targets.as_target` refuses.
    """
    if target is not None and class_index is not None:
        raise ValueError("give class_index or target, not both")
    if target is None or _is_index(target):
        return None, class_index if target is None else int(target)
    chosen = targets.as_target(target)
    if isinstance(chosen, targets.Class) and chosen.per_image is None:
        return None, chosen.class_index  # a class target is the Class control's business
    return chosen, None


# --- the settable properties: one table -------------------------------------------------


def _choice(name: str, labels) -> Callable:
    """A check that accepts one of the values of ``(label, value)`` pairs."""
    values = tuple(value for _, value in labels)
    return lambda explorer, value: core.check_option(name, value, values)


def _check_method(explorer, value) -> str:
    return methods.get(value).name


def _check_layer(explorer, value) -> str:
    offered = [entry for _, entry in explorer._controls["layer"].options]
    if value == FUSED and FUSED in offered:
        return FUSED
    return explorer._capture.resolve(value)


def _check_score(explorer, value) -> str:
    value = core.check_option("score", value, [score for _, score in SCORE_LABELS])
    target = explorer._target
    if target is not None and not target.uses_score and value != "logit":
        raise ValueError(
            f"{target.label} explains the model's value: score={value!r} does not apply; the "
            "explorer keeps score='logit'"
        )
    return value


def _check_class(explorer, value) -> int:
    if explorer._target is not None:
        raise ValueError(
            f"this explorer explains the target {explorer._target.label}: class_index does not "
            "apply (make a new explorer without target= to explain classes)"
        )
    if value is None:  # the top class
        return int(np.argmax(explorer._capture.scores))
    return _check_class_index(value, len(explorer._capture.scores))


def _read_class(explorer) -> int | None:
    """The class on screen: the control's, or the target's own (``None`` for none)."""
    if explorer._target is not None:
        return None if explorer._capture is None else explorer._capture.class_index
    return explorer._controls["class_index"].value


def _check_opacity(explorer, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"opacity must be a number in [0, 1]; got {value!r}")
    return float(value)


class Setting(NamedTuple):
    """One settable property of :class:`CamExplorer`.

    Attributes:
        control: the key of the control it sets (the UI follows).
        check: ``check(explorer, value) -> control value``; raises ValueError naming the
            choices for a bad value.
        read: ``read(explorer) -> value`` when the getter is not the control's value.
    """

    control: str
    check: Callable
    read: Callable | None = None


SETTINGS: dict[str, Setting] = {
    "method": Setting("method", _check_method),
    "layer": Setting("layer", _check_layer),
    "pooling": Setting("pooling", _choice("pooling", POOLING_LABELS)),
    "channels": Setting("channels", _choice("channels", CHANNEL_LABELS)),
    "order": Setting("order", _choice("order", ORDER_LABELS)),
    "score": Setting("score", _check_score),
    "class_index": Setting("class_index", _check_class, _read_class),
    "colormap": Setting("colormap", _choice("colormap", [(n, n) for n in render.COLORMAPS])),
    "opacity": Setting("opacity", _check_opacity),
}


class _SettingProperty:
    """The property ``name`` of :class:`CamExplorer`, made from its :data:`SETTINGS` row.

    Reading it gives the control's value; setting it sets the control (the view follows).

    Raises:
        ValueError: for a bad value (also shown in the status line; the view is kept).
        RuntimeError: when the recomputation fails, or the explorer is closed.
    """

    def __init__(self, name: str, setting: Setting):
        self.name = name
        self.setting = setting
        self.__doc__ = (
            f"The {setting.control.replace('_', ' ')} control's value; setting it redraws the "
            "view (ValueError for a bad value, RuntimeError when the recomputation fails)."
        )

    def __get__(self, explorer, owner=None):
        if explorer is None:
            return self
        if self.setting.read is not None:
            return self.setting.read(explorer)
        return explorer._controls[self.setting.control].value

    def __set__(self, explorer, value):
        explorer._set(self.setting.control, lambda: self.setting.check(explorer, value))


# --- the explorer -----------------------------------------------------------------------


class CamExplorer(widgets.VBox):
    """Interactive Grad-CAM for one model and one image.

    Args:
        model: a ``keras.Model``, an entry from :func:`gradcam_widget.models.load`, or a
            model name for it (default ``"shapes"``, the shipped offline model).
        image: anything :func:`gradcam_widget.capture` takes: an array, a PIL image, a file
            path or a sample name (default ``"two_shapes"``).
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

    Raises:
        ValueError: for a bad model, image, class index, target, layer or argument, or a
            model whose outputs need a ``target=`` (the widget needs a first view to exist;
            later errors go to its status line instead).

    Settable attributes (the UI follows), one per row of :data:`SETTINGS`: ``method``,
    ``layer``, ``pooling``, ``channels``, ``order``, ``score``, ``class_index`` (``None``:
    the top class), ``colormap``, ``opacity``. ``result`` is the
    :class:`~gradcam_widget.core.CamResult` on screen.
    """

    CACHE_SIZE = 8
    CACHE_BYTES = 256 * 2**20

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
    ):
        # every argument is checked before any widget exists: a refusal leaves none behind
        cache_size = core.check_int("cache_size", cache_size)
        cache_bytes = core.check_int("cache_bytes", cache_bytes, minimum=0)
        explained, class_index = _explained(target, class_index)
        names = _check_class_names(class_names)
        if explained is not None and names is not None:
            raise ValueError(
                "class_names name the classes of the Class control; an explorer with target= "
                "has none: pass one or the other"
            )
        model = _resolve_model(model)
        if names is None and explained is None:
            names = _check_class_names(getattr(model, "class_names", None))
        super().__init__()
        self._model = model
        self._preprocess = preprocess
        self._target = explained
        self._class_names = names
        self._captures = ByteLRU(cache_bytes, max_items=cache_size, on_evict=self._forget)
        self._results = ByteLRU(RESULT_BYTES)
        self._image = None
        self._generation = 0  # + 1 per image: the first part of every cache key
        self._capture: Capture | None = None
        self._capture_key: tuple | None = None
        self.result: core.CamResult | None = None
        self.error: str | None = None
        self._closed = False
        self._quiet_depth = 0
        self._good: dict = {}
        self._pass_ran = self._filled_now = False
        self._render_ms = 0.0
        self._drawn: Capture | None = None

        self._build_controls()
        try:
            self._first_view(image, class_index, layer)
        except BaseException:  # a refused explorer leaves no widget and no capture behind
            self.close()
            raise

    def _first_view(self, image, class_index, layer):
        """Capture only the layer(s) on screen: one pass that stops at ``layer``."""
        passes = self.model_passes
        first = self._new_capture(image, class_index, layers=[None if layer == FUSED else layer])
        self._install_capture(first)
        if layer is not None:
            with self._quiet():
                self._controls["layer"].value = _check_layer(self, layer)
        if self._class_names is not None and len(self._class_names) != len(first.scores):
            raise ValueError(
                f"class_names has {len(self._class_names)} names but the model has "
                f"{len(first.scores)} classes"
            )
        self._refresh(passes=passes)
        if self.error:
            raise ValueError(self.error)

    # --- construction -----------------------------------------------------------------

    def _build_controls(self):
        def dropdown(description, options, value, tooltip):
            return widgets.Dropdown(
                description=description,
                options=options,
                value=value,
                tooltip=tooltip,
                layout=widgets.Layout(width="260px"),
                style={"description_width": "70px"},
            )

        self._controls = {
            "method": dropdown(
                "Method",
                [(methods.get(name).label, name) for name in methods.names()],
                "gradcam",
                "how the map is made from the cached tensors",
            ),
            "layer": dropdown("Layer", [("", "")], "", "feature map to explain (h×w×C)"),
            "pooling": dropdown("Pooling", POOLING_LABELS, "mean", "how gradients become weights"),
            "channels": dropdown("Channels", CHANNEL_LABELS, "weighted", "sum of all or one"),
            "order": dropdown("Order", ORDER_LABELS, "relu_first", "ReLU before or after resize"),
            "class": dropdown("Class", [("", 0)], 0, "top-5 predictions; any index on the right"),
            "class_index": widgets.BoundedIntText(
                value=0, min=0, max=0, description="index", layout=widgets.Layout(width="150px"),
                style={"description_width": "45px"}, tooltip="any class index",
            ),
            "score": dropdown("Score", SCORE_LABELS, "logit", "what is differentiated"),
            "colormap": dropdown("Colormap", render.COLORMAPS, "jet", "heatmap colours"),
            "opacity": widgets.FloatSlider(
                value=0.5, min=0.0, max=1.0, step=0.05, description="Opacity",
                readout_format=".2f", layout=widgets.Layout(width="260px"),
                style={"description_width": "70px"},
            ),
        }  # fmt: skip
        self._controls["layer"].layout.width = "330px"  # room for nested paths and the grid
        self._tooltips = {name: control.tooltip for name, control in self._controls.items()}
        for name, control in self._controls.items():
            control.observe(self._on_control(name), names="value")
            control.add_class(f"gw-{name.replace('_', '-')}")
        if self._target is not None:  # a target is explained, not a class: no class to pick
            for name in CLASS_CONTROLS:
                self._controls[name].layout.display = "none"

        self._titles = {title: widgets.HTML() for title in render.PANEL_TITLES}
        self._panels = {
            title: widgets.Image(
                format="png", layout=widgets.Layout(width=PANEL_WIDTH, height="auto")
            )
            for title in render.PANEL_TITLES
        }
        for title, panel in self._panels.items():
            panel.add_class(f"gw-panel-{title.replace(' ', '-')}")
        self.readout = widgets.HTML()
        self.readout.add_class("gw-readout")
        self.status = widgets.HTML()
        self.status.add_class("gw-status")
        controls = self._controls
        rows = [
            widgets.HBox([controls["method"], controls["layer"], controls["pooling"]]),
            widgets.HBox([controls["channels"], controls["order"], controls["score"]]),
            widgets.HBox([controls["class"], controls["class_index"], controls["colormap"]]),
            widgets.HBox([controls["opacity"]]),
        ]
        panels = widgets.HBox(
            [widgets.VBox([self._titles[title], self._panels[title]])
             for title in render.PANEL_TITLES]
        )  # fmt: skip
        self.add_class("gw-explorer")
        self.children = [*rows, panels, self.readout, self.status]

    @contextlib.contextmanager
    def _quiet(self):
        """Change controls without triggering recomputation."""
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    # --- captures ---------------------------------------------------------------------

    def _new_capture(self, image, class_index, score="logit", layers="all") -> Capture:
        cap = capture(
            self._model,
            image,
            class_index=class_index,
            score=score,
            preprocess=self._preprocess,
            layers=layers,
            target=self._target,
        )
        self._image = image
        self._captures.put(self._key(cap), cap)
        return cap

    def _key_for(self, class_index: int | None, score: str) -> tuple:
        """The cache key of a capture: (image generation, class, score); with a target the
        class is the target's, so it is left out."""
        return (self._generation, None if self._target is not None else class_index, score)

    def _key(self, cap: Capture) -> tuple:
        return self._key_for(cap.class_index, cap.score)

    def _forget(self, key: tuple, cap: Capture):
        """A capture left the cache: its results go with it."""
        self._results.discard(lambda result_key: result_key[0] == key)

    def _shown_layers(self) -> list[str | None]:
        """The layers a new capture must record for the view on screen."""
        layer = self._controls["layer"].value
        if layer == FUSED and self._capture is not None:
            return list(self._capture.fusion_layers())
        if self._capture is not None and layer in self._capture.layers:
            return [layer]
        return [None]

    def _capture_for(self, class_index: int, score: str) -> Capture:
        cached = self._captures.get(self._key_for(class_index, score))
        if cached is not None:
            return cached
        if self._target is not None:
            class_index = None  # the target fixes what is explained
        return self._new_capture(self._image, class_index, score, self._shown_layers())

    def _class_label(self, cap: Capture, index: int) -> str:
        return f"{self._name_of(cap, index)} · {cap.scores[index]:.3g}"

    def _name_of(self, cap: Capture, index: int) -> str:
        if self._class_names is not None and 0 <= index < len(self._class_names):
            return self._class_names[index]
        return cap.class_name(index)

    def _install_capture(self, cap: Capture):
        """Point the controls at ``cap``: layer list, class list (top-5 + the chosen one)."""
        controls = self._controls
        with self._quiet():
            layer_options = []
            for path in cap.layers:
                h, w, c = cap.shape(path)
                layer_options.append((f"{path} · {h}×{w}×{c}", path))
            fused = cap.fusion_layers()
            if len(fused) > 1:
                layer_options.append((f"{FUSED} · {'+'.join(fused)}", FUSED))
            if list(controls["layer"].options) != layer_options:  # labels follow the grid
                previous = controls["layer"].value
                controls["layer"].options = layer_options
                values = [value for _, value in layer_options]
                controls["layer"].value = previous if previous in values else cap.default_layer
            if self._target is None:
                self._install_classes(cap)
            controls["score"].value = cap.score
        self._capture = cap
        self._capture_key = self._key(cap)

    def _install_classes(self, cap: Capture):
        controls = self._controls
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

    def _values(self) -> dict:
        return {name: control.value for name, control in self._controls.items()}

    # --- reacting to changes ----------------------------------------------------------

    def _on_control(self, name):
        def handler(change):
            if self._quiet_depth:
                return
            if name == "class":
                with self._quiet():
                    self._controls["class_index"].value = change["new"]
            elif name == "class_index" and change["new"] != self._controls["class"].value:
                with self._quiet():  # any index: add it to the dropdown
                    self._add_class_option(change["new"])
            self._refresh(changed=name)

        return handler

    def _add_class_option(self, index: int):
        options = list(self._controls["class"].options)
        if index not in [value for _, value in options]:
            label = f"{index}: {self._class_label(self._capture, index)}"
            options.append((label, index))
            self._controls["class"].options = options
        self._controls["class"].value = index

    def _refresh(self, changed: str | None = None, passes: int | None = None):
        """Recompute what ``changed`` affects and redraw. Never raises: errors go to the
        status line, the previous view and settings stay. ``passes``: the model-pass count
        before this change started (default: now)."""
        started = time.perf_counter()
        passes = self.model_passes if passes is None else passes
        values = self._values()
        try:
            cap = self._capture_for(values["class_index"], values["score"])
            if cap is not self._capture:
                self._install_capture(cap)
            filled = len(cap.fill_ins)
            restyle_only = changed in ("colormap", "opacity") and self.result is not None
            result = self.result if restyle_only else self._result_for(cap, values)
            self._draw(cap, result, values, restyle_only)
            self._update_enabled(methods.get(values["method"]))
        except Exception as error:  # shown, never raised into the notebook
            self._fail(error)
            return
        finally:
            self._captures.trim()  # the capture on screen may have grown (layers filled in)
        self.result = result
        self._drawn = cap
        self._filled_now = len(cap.fill_ins) > filled
        self._pass_ran = self.model_passes - passes > self._filled_now  # not just the fill-in
        self._good = self._values()
        self.error = None
        self._render_ms = 1000 * (time.perf_counter() - started)
        self._write_readout(cap, result)
        self.status.value = "<span style='color:#2a7a2a'>✓ ready</span>" + "".join(
            f"<br><span style='color:#a05a00'>⚠ {html.escape(note)}</span>" for note in cap.warnings
        )

    def _result_for(self, cap: Capture, values: dict) -> core.CamResult:
        """The map for the current settings, from a small LRU of results."""
        method = methods.get(values["method"])
        key = (
            self._capture_key, values["layer"], values["method"], values["order"],
            *(values[name] for name in sorted(method.options)),
        )  # fmt: skip
        cached = self._results.get(key)
        if cached is not None:
            return cached
        options = {"order": values["order"], "method": values["method"]}
        options.update({name: values[name] for name in method.options})
        if method.runs_model:  # seconds, not milliseconds: say so while it runs
            self.status.value = (
                f"<span style='color:#555'>⏳ {html.escape(method.label)}: forward passes…</span>"
            )
        if values["layer"] == FUSED:
            result = cap.fuse(**options)
        else:
            result = cap.cam(values["layer"], **options)
        self._results.put(key, result)
        return result

    def _update_enabled(self, method: methods.Method):
        """Disable the controls a method or the target ignores, and say why in their
        tooltips."""
        reasons = {
            name: f"{method.label} computes its own channel weights: {name} does not apply"
            for name in ("pooling", "channels")
        }
        for name, why in reasons.items():
            control = self._controls[name]
            control.disabled = name not in method.options
            control.tooltip = why if control.disabled else self._tooltips[name]
        class_agnostic = not method.uses_gradients and not method.runs_model
        target = self._target
        for name in (*CLASS_CONTROLS, "score"):
            why = None
            if class_agnostic:
                why = f"{method.label} is class-agnostic: it uses the activations only"
            elif name == "score" and target is not None and not target.uses_score:
                why = f"{target.label} explains the model's value: it has no probability"
            control = self._controls[name]
            control.disabled = why is not None
            control.tooltip = why or self._tooltips[name]

    def _fail(self, error: Exception):
        message = f"{type(error).__name__}: {error}"
        self.error = message
        self.status.value = (
            "<span style='color:#b00020'>⚠ "
            f"{html.escape(message)} — the previous view is kept.</span>"
        )
        if self._good:
            with self._quiet():
                for name, control in self._controls.items():
                    if control.value != self._good[name]:
                        with contextlib.suppress(Exception):
                            control.value = self._good[name]

    def _draw(self, cap: Capture, result: core.CamResult, values: dict, restyle_only: bool):
        colormap, alpha = values["colormap"], values["opacity"]
        pictures = {
            "heatmap": render.colorize(result.heatmap, colormap),
            "overlay": render.overlay(cap.image, result.heatmap, colormap, alpha),
        }
        if not restyle_only:
            pictures["raw map"] = render.raw_panel(result.raw)[0]
            if cap is not self._drawn:
                pictures["input"] = cap.image
        encoded = {title: render.encode_png(rgb) for title, rgb in pictures.items()}
        for title, png in encoded.items():
            if self._panels[title].value != png:
                self._panels[title].value = png
        h, w = result.raw.shape
        H, W = result.heatmap.shape
        titles = {
            "input": f"input {cap.image.shape[0]}×{cap.image.shape[1]}",
            "raw map": f"raw map {h}×{w} (signed, ±{np.abs(result.raw).max():.3g})",
            "heatmap": f"heatmap {H}×{W}",
            "overlay": f"overlay · opacity {alpha:.2f}",
        }
        for title, text in titles.items():
            self._titles[title].value = f"<b>{html.escape(text)}</b>"

    def _explained_line(self, cap: Capture) -> str:
        """What the map explains: the class and its score, or the target and its value."""
        score_name = "logit" if cap.score == "logit" else "probability"
        if self._target is None:
            return (
                f"class {cap.class_index} <b>{html.escape(self._name_of(cap, cap.class_index))}"
                f"</b> · {score_name} {cap.scores[cap.class_index]:.4g}"
            )
        target = cap.target if cap.target is not None else self._target
        value_name = score_name if target.uses_score else "value"
        return f"target <b>{html.escape(target.label)}</b> · {value_name} {cap.value:.4g}"

    def _layers_line(self, cap: Capture) -> str | None:
        """How the layers not on screen are (or will be) filled in, if any are missing."""
        if cap.fill_ins:
            when = "just now" if self._filled_now else "once, cached"
            return (
                f"other layers: filled in by one more pass, {1000 * cap.fill_ins[0]:.0f} ms "
                f"({when})"
            )
        if len(cap.held_layers) < len(cap.layers):
            return "other layers: one more pass on first use"
        return None

    def _write_readout(self, cap: Capture, result: core.CamResult):
        parts = []
        for path in result.layer.split("+"):
            h, w, c = cap.shape(path)
            parts.append(
                f"<b>{html.escape(path)}</b> ({cap.layer_class(path)}) · activations "
                f"(1, {h}, {w}, {c}) · gradients (1, {h}, {w}, {c})"
            )
        pass_note = "just now" if self._pass_ran else "once, cached"
        method = methods.get(self.method).label
        layers_line = self._layers_line(cap)
        lines = [
            *parts,
            f"{html.escape(method)} · weights {result.weights.shape} · raw {result.raw.shape}"
            f" · heatmap {result.heatmap.shape} · top channel #{result.top_channel} weight "
            f"{result.top_weight:.4g}",
            self._explained_line(cap),
            f"model pass {cap.seconds * 1000:.0f} ms ({pass_note}; {len(self._captures)} "
            f"captures cached, {self.cached_bytes / 2**20:.1f} of "
            f"{self._captures.budget / 2**20:.0f} MB) · this view {self._render_ms:.1f} ms",
            *([layers_line] if layers_line else []),
            *(f"<span style='color:#a05a00'>⚠ {html.escape(note)}</span>"
              for note in cap.warnings),
        ]  # fmt: skip
        self.readout.value = "<br>".join(lines)

    # --- programmatic use -------------------------------------------------------------

    def _set(self, name: str, validate):
        """Set control ``name`` to ``validate()``: a bad value raises ValueError, a failing
        recomputation RuntimeError; both are also shown in the status line."""
        self._check_open()
        try:
            value = validate()
        except ValueError as error:
            self._fail(error)
            raise
        self.error = None
        self._controls[name].value = value
        if self.error:
            raise RuntimeError(self.error)

    @property
    def capture(self) -> Capture:
        """The :class:`~gradcam_widget.captures.Capture` behind the current view."""
        return self._capture

    @property
    def target(self) -> targets.Target | None:
        """The target explained instead of a class (``None``: the Class control decides)."""
        return self._target

    @property
    def model_passes(self) -> int:
        """Model passes run so far for this explorer's model (all explorers share them)."""
        self._check_open()
        return engine_for(self._model).passes

    def set_image(self, image):
        """Explain a new image with the same settings; the class follows its top prediction
        (a target stays the one explained). One pass, down to the layer(s) on screen.

        Raises:
            ValueError: for a bad image (also shown in the status line; the view is kept).
        """
        self._check_open()
        passes = self.model_passes
        try:
            cap = capture(
                self._model,
                image,
                score=self.score,
                preprocess=self._preprocess,
                layers=self._shown_layers(),
                target=self._target,
            )
        except Exception as error:
            self._fail(error)
            raise
        self._captures.clear()
        self._results.clear()
        self._generation += 1
        self._image = image
        self._captures.put(self._key(cap), cap)
        self._install_capture(cap)
        self._refresh(passes=passes)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by this explorer's caches (captures and maps)."""
        return self._captures.nbytes + self._results.nbytes

    def close(self):
        """Close every control and panel of the explorer and release its captures and maps.

        A closed explorer that nothing else refers to is freed; its setters raise
        RuntimeError."""
        self._closed = True
        if "_controls" not in vars(self):  # refused before it was built (ipywidgets' __del__)
            super().close()
            return
        self._captures.clear()
        self._results.clear()
        self._capture = self._drawn = self.result = None
        self._image = self._model = self._preprocess = None
        stack = [*self.children, self.layout]
        while stack:
            child = stack.pop()
            stack.extend(getattr(child, "children", ()))
            for part in ("layout", "style"):  # each a widget of its own, registered too
                if isinstance(getattr(child, part, None), widgets.Widget):
                    stack.append(getattr(child, part))
            child.close()
        super().close()

    def _check_open(self):
        if self._closed:
            raise RuntimeError("this explorer is closed; make a new one")

    def save_png(self, path):
        """Write the four panels as one titled figure (matplotlib, with colorbars)."""
        self._check_open()
        return render.save_figure(
            path, self._capture.image, self.result, self.colormap, self.opacity
        )

    def panel_png(self, title: str) -> bytes:
        """The PNG bytes currently shown in panel ``title``.

        Args:
            title: one of :data:`gradcam_widget.render.PANEL_TITLES`.

        Raises:
            ValueError: naming the panels for another title.
        """
        return self._panels[core.check_option("panel", title, render.PANEL_TITLES)].value


for _name, _setting in SETTINGS.items():
    setattr(CamExplorer, _name, _SettingProperty(_name, _setting))
del _name, _setting

"""CamExplorer: flip every choice of the Grad-CAM recipe and watch the map change.

The view of an :class:`~gradcam_widget.session.ExplorerSession`: the session owns the model,
the captures and the maps (and every cache of them); the explorer owns the controls, the
panels, the readout and the status line, and asks its session for what to draw. Standard
ipywidgets only (no custom front-end code), so it works unchanged in JupyterLab, Notebook 7,
VS Code and Voila. Four ``ipywidgets.Image`` panels, keyed by
:data:`gradcam_widget.render.PANEL_TITLES`, are updated in place with PNG bytes, and a fifth,
``"guided"`` (:data:`PANELS`), shows an input-gradient map when the Guided control is on.

Cache discipline (the session's): pooling, channels, order, colormap and opacity only re-read
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
:data:`SETTINGS`: each names the control it sets and the check a value must pass.

The Image row replaces the image: a menu of the bundled samples (:func:`sample_menu`) and an
upload button (``ipywidgets.FileUpload``: png, jpg, webp or bmp, one file of at most
:data:`MAX_UPLOAD_BYTES`). Both go through :meth:`CamExplorer.set_image`, which scripts call
too: one model pass, every other setting kept, the old image's captures and maps dropped. A
file that is empty, too large or no image is refused before any model pass, in the status line;
the view on screen stays.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np
from PIL import Image as PILImage

from gradcam_widget.cam import core, methods
from gradcam_widget.captures import targets
from gradcam_widget.captures.capturing import Capture
from gradcam_widget.data import images, render
from gradcam_widget.data import scenes as data
from gradcam_widget.engine import layers
from gradcam_widget.engine.inputs import check_class_index as _check_class_index
from gradcam_widget.explorer.session import (
    FUSED,
    GUIDED_MODES,
    RANDOM_SEED,
    SMOOTHGRAD,
    ExplorerSession,
    explained,
)
from gradcam_widget.explorer.session import RESULT_BYTES as RESULT_BYTES

ORDER_LABELS = (("ReLU → resize", "relu_first"), ("resize → ReLU", "resize_first"))
CHANNEL_LABELS = (("weighted sum", "weighted"), ("top channel", "top"))
POOLING_LABELS = (("mean (GAP)", "mean"), ("max", "max"))
SCORE_LABELS = (("logit (pre-softmax)", "logit"), ("probability", "probability"))
GUIDED_LABELS = (
    ("off", "off"),
    ("Guided Backprop", "guided_backprop"),
    ("Guided Grad-CAM", "guided_gradcam"),
    (f"SmoothGrad (guided, {SMOOTHGRAD['smooth']} copies)", "smoothgrad"),
)
GUIDED_PANEL = "guided"
PANELS = (*render.PANEL_TITLES, GUIDED_PANEL)  # every panel's title, the Guided one last
PANEL_WIDTH = "224px"
CLASS_CONTROLS = ("class", "class_index")  # hidden when the explorer explains a target

MAX_UPLOAD_BYTES = 20 * 2**20
"""The largest image file the Image control takes: 20 MiB (also for bytes given to
:meth:`CamExplorer.set_image`; a path is read whatever its size). A larger upload is refused in
the status line before it is decoded. The front end may stop it sooner: a default Jupyter
server drops websocket messages over 10 MiB (Tornado's ``websocket_max_message_size``)."""

MAX_UPLOAD_PIXELS = 40_000_000
"""The most pixels an uploaded image may decode to (40 megapixels; a small file can hold a
huge image). Checked after decoding, before the model; a path is read whatever its size."""

UPLOAD_KEPT_SIDE = 2048
"""An uploaded image is kept at most this many pixels on its longer side (shrunk once, with
Lanczos, as it is read): the explorer fits it to the model's input from there, and a tab does
not hold a 12-megapixel photo for the life of the image."""

UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.webp,.bmp"
"""The file types the upload button offers (the browser's file chooser filters by them; any
image file Pillow reads is taken)."""

SCENE_SAMPLE = "shape scene "
"""A sample menu entry ``"shape scene <seed>"`` is ``data.scene(seed, n_objects=1 + seed % 2)``."""

SAMPLE_SEEDS = (1_000_000, 1_000_001, 1_000_002, 1_000_003)
"""Seeds of the shape scenes in the sample menu: held-out scenes (the ``shapes`` model was
trained on seeds below 1,000,000), one object for an even seed, two for an odd one."""

NO_SAMPLE = ""  # the sample menu's value while an image of no menu entry is on screen


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
    target = explorer.target
    if target is not None and not target.uses_score and value != "logit":
        raise ValueError(
            f"{target.label} explains the model's value: score={value!r} does not apply; the "
            "explorer keeps score='logit'"
        )
    return value


def _check_class(explorer, value) -> int:
    if explorer.target is not None:
        raise ValueError(
            f"this explorer explains the target {explorer.target.label}: class_index does not "
            "apply (make a new explorer without target= to explain classes)"
        )
    if value is None:  # the top class
        return int(np.argmax(explorer._capture.scores))
    return _check_class_index(value, len(explorer._capture.scores))


def _read_class(explorer) -> int | None:
    """The class on screen: the control's, or the target's own (``None`` for none)."""
    if explorer.target is not None:
        return None if explorer._capture is None else explorer._capture.class_index
    return explorer._controls["class_index"].value


def _check_opacity(explorer, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"opacity must be a number in [0, 1]; got {value!r}")
    return float(value)


def _check_guided(explorer, value) -> str:
    value = core.check_option("guided", value, GUIDED_MODES)
    if value != "off":
        explorer._session.check_guided()  # a non-ReLU network: refused before any pass
    return value


def _check_randomize(explorer, value) -> int:
    names = explorer._session.block_names
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or not 0 <= value <= len(names)
    ):
        raise ValueError(
            f"randomize must be an int in 0..{len(names)} (the model's blocks, top first: "
            f"{', '.join(names) or 'none'}); got {value!r}"
        )
    return int(value)


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
    "guided": Setting("guided", _check_guided),
    "randomize": Setting("randomize", _check_randomize),
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


# --- the view's parts -------------------------------------------------------------------


def _dropdown(description, options, value, tooltip) -> widgets.Dropdown:
    return widgets.Dropdown(
        description=description,
        options=options,
        value=value,
        tooltip=tooltip,
        layout=widgets.Layout(width="260px"),
        style={"description_width": "70px"},
    )


def _make_controls() -> dict[str, widgets.ValueWidget]:
    """One control per setting (and ``class``, the top-5 dropdown), each with its CSS class."""
    controls = {
        "method": _dropdown(
            "Method",
            [(methods.get(name).label, name) for name in methods.names()],
            "gradcam",
            "how the map is made from the cached tensors",
        ),
        "layer": _dropdown("Layer", [("", "")], "", "feature map to explain (h×w×C)"),
        "pooling": _dropdown("Pooling", POOLING_LABELS, "mean", "how gradients become weights"),
        "channels": _dropdown("Channels", CHANNEL_LABELS, "weighted", "sum of all or one"),
        "order": _dropdown("Order", ORDER_LABELS, "relu_first", "ReLU before or after resize"),
        "class": _dropdown("Class", [("", 0)], 0, "top-5 predictions; any index on the right"),
        "class_index": widgets.BoundedIntText(
            value=0, min=0, max=0, description="index", layout=widgets.Layout(width="150px"),
            style={"description_width": "45px"}, tooltip="any class index",
        ),
        "score": _dropdown("Score", SCORE_LABELS, "logit", "what is differentiated"),
        "colormap": _dropdown("Colormap", render.COLORMAPS, "jet", "heatmap colours"),
        "opacity": widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, description="Opacity",
            readout_format=".2f", layout=widgets.Layout(width="260px"),
            style={"description_width": "70px"},
        ),
        "guided": _dropdown(
            "Guided", GUIDED_LABELS, "off", "input-gradient map in a fifth panel (one more pass)"
        ),
        "randomize": widgets.IntSlider(
            value=0, min=0, max=0, step=1, description="Randomise", continuous_update=False,
            layout=widgets.Layout(width="260px"), style={"description_width": "70px"},
            tooltip="the same view on a copy of the model whose top k blocks are re-initialised",
        ),
    }  # fmt: skip
    controls["layer"].layout.width = "330px"  # room for nested paths and the grid
    for name, control in controls.items():
        control.add_class(f"gw-{name.replace('_', '-')}")
    return controls


def _make_panels() -> tuple[dict[str, widgets.HTML], dict[str, widgets.Image]]:
    """``(titles, panels)``: an HTML title and a PNG image per panel, keyed by title
    (:data:`PANELS`)."""
    titles = {title: widgets.HTML() for title in PANELS}
    panels = {
        title: widgets.Image(format="png", layout=widgets.Layout(width=PANEL_WIDTH, height="auto"))
        for title in PANELS
    }
    for title, panel in panels.items():
        panel.add_class(f"gw-panel-{title.replace(' ', '-')}")
    return titles, panels


def _layer_options(cap: Capture) -> list[tuple[str, str]]:
    """The Layer dropdown's entries for ``cap``: each layer with its grid, then the fusion."""
    options = []
    for path in cap.layers:
        h, w, c = cap.shape(path)
        tokens = cap.tokens(path)
        if tokens is None:
            options.append((f"{path} · {h}×{w}×{c}", path))
        else:  # a transformer's token layer: say which tokens make the grid
            grid = layers.describe_tokens(tokens, times="×")
            options.append((f"{path} · {grid} ×{c}", path))
    fused = cap.fusion_layers()
    if len(fused) > 1:
        options.append((f"{FUSED} · {'+'.join(fused)}", FUSED))
    return options


def _disabled_reasons(method: methods.Method, target) -> dict[str, str | None]:
    """Why each control that ``method`` or ``target`` may ignore is disabled (``None``: it
    applies), in the words its tooltip shows."""
    reasons: dict[str, str | None] = {
        name: None if name in method.options else
        f"{method.label} computes its own channel weights: {name} does not apply"
        for name in ("pooling", "channels")
    }  # fmt: skip
    class_agnostic = not method.uses_gradients and not method.runs_model
    for name in (*CLASS_CONTROLS, "score"):
        why = None
        if class_agnostic:
            why = f"{method.label} is class-agnostic: it uses the activations only"
        elif name == "score" and target is not None and not target.uses_score:
            why = f"{target.label} explains the model's value: it has no probability"
        reasons[name] = why
    return reasons


def _panel_titles(cap: Capture, result: core.CamResult, opacity: float) -> dict[str, str]:
    """The text above each panel: sizes, the raw map's signed range, the opacity."""
    h, w = result.raw.shape
    H, W = result.heatmap.shape
    return {
        "input": f"input {cap.image.shape[0]}×{cap.image.shape[1]}",
        "raw map": f"raw map {h}×{w} (signed, ±{np.abs(result.raw).max():.3g})",
        "heatmap": f"heatmap {H}×{W}",
        "overlay": f"overlay · opacity {opacity:.2f}",
    }


def _tensor_lines(cap: Capture, result: core.CamResult, method_label: str) -> list[str]:
    """The readout's first lines: each layer's tensors, then the method's arrays."""
    lines = []
    for path in result.layer.split("+"):
        h, w, c = cap.shape(path)
        lines.append(
            f"<b>{html.escape(path)}</b> ({cap.layer_class(path)}) · activations "
            f"(1, {h}, {w}, {c}) · gradients (1, {h}, {w}, {c})"
        )
    lines.append(
        f"{html.escape(method_label)} · weights {result.weights.shape} · raw {result.raw.shape}"
        f" · heatmap {result.heatmap.shape} · top channel #{result.top_channel} weight "
        f"{result.top_weight:.4g}"
    )
    return lines


def _explained_line(cap: Capture, target, class_name: str | None) -> str:
    """What the map explains: the class (named ``class_name``) and its score, or the target
    (the explorer's ``target``, ``None`` for classes) and its value."""
    score_name = "logit" if cap.score == "logit" else "probability"
    if target is None:
        return (
            f"class {cap.class_index} <b>{html.escape(class_name)}</b> · {score_name} "
            f"{cap.scores[cap.class_index]:.4g}"
        )
    target = cap.target if cap.target is not None else target
    value_name = score_name if target.uses_score else "value"
    return f"target <b>{html.escape(target.label)}</b> · {value_name} {cap.value:.4g}"


def _layers_line(cap: Capture, filled_now: bool) -> str | None:
    """How the layers not on screen are (or will be) filled in, if any are missing."""
    if cap.fill_ins:
        when = "just now" if filled_now else "once, cached"
        return f"other layers: filled in by one more pass, {1000 * cap.fill_ins[0]:.0f} ms ({when})"
    if len(cap.held_layers) < len(cap.layers):
        return "other layers: one more pass on first use"
    return None


def _guided_title(cap: Capture, mode: str, layer: str) -> str:
    """The text above the Guided panel: which map, of which size (and layer)."""
    size = f"{cap.input_size[0]}×{cap.input_size[1]}"
    label = dict((value, label) for label, value in GUIDED_LABELS)[mode]
    if mode == "guided_gradcam":
        return f"{label} {size} · × heatmap of {layer}"
    return f"{label} {size}"


def _guided_line(gradients: np.ndarray, mode: str, ran_now: bool) -> str:
    """The readout's line for the Guided panel: the map, and the pass it took."""
    label = dict((value, label) for label, value in GUIDED_LABELS)[mode]
    when = "just now" if ran_now else "once, cached"
    what = "one batched pass to the input" if mode == "smoothgrad" else "one pass to the input"
    times = " × the heatmap (numpy)" if mode == "guided_gradcam" else ""
    return (
        f"{html.escape(label)} · input gradients {gradients.shape}{times} · {what} ({when}); "
        "rendered as the seed does (grey is zero)"
    )


def _randomized_line(names: tuple[str, ...]) -> str:
    """The readout's line while the view comes from a randomised copy of the model."""
    blocks = ", ".join(html.escape(name) for name in names)
    return (
        f"<b>randomised</b>: the top {len(names)} block{'s' if len(names) != 1 else ''} "
        f"({blocks}) re-initialised on a copy of the model (seed {RANDOM_SEED}); the model "
        "itself is unchanged"
    )


def _warning_html(note: str) -> str:
    return f"<span style='color:#a05a00'>⚠ {html.escape(note)}</span>"


# --- the Image row: samples, uploads, and the image on screen ---------------------------


def sample_menu() -> tuple[str, ...]:
    """The entries of the Image control's sample menu, each a name
    :meth:`CamExplorer.set_image` takes.

    ``"two_shapes"``, a shape scene per seed of :data:`SAMPLE_SEEDS` (``"shape scene
    1000000"`` ...), ``"grace_hopper"`` when matplotlib's copy of it is on disk, and the
    scikit-image photos of :data:`gradcam_widget.data.SAMPLES` (``"cat"``, ``"coffee"``,
    ``"astronaut"``) only when scikit-image is installed. All offline.
    """
    names = ["two_shapes", *(f"{SCENE_SAMPLE}{seed}" for seed in SAMPLE_SEEDS)]
    import matplotlib

    if (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").is_file():
        names.append("grace_hopper")
    if importlib.util.find_spec("skimage") is not None:
        names.extend(name for name in data.SAMPLES if name not in ("two_shapes", "grace_hopper"))
    return tuple(names)


class _ImageSource(NamedTuple):
    """What the explorer knows of the image on screen, for the readout and the menu."""

    name: str  # as the readout and the status line call it
    size: tuple[int, int] | None  # (H, W) as given, before fitting; None when not known
    nbytes: int | None  # the file's bytes, for bytes (an upload)
    sample: str  # the sample menu's entry for it, or NO_SAMPLE


def _size_text(nbytes: int) -> str:
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.1f} MB"
    return f"{nbytes / 2**10:.1f} KB" if nbytes >= 2**10 else f"{nbytes} bytes"


def _is_file_bytes(image) -> bool:
    """Bytes of a file: ``bytes``, ``bytearray`` or any contiguous ``memoryview`` (read as
    its raw bytes)."""
    if isinstance(image, (bytes, bytearray)):
        return True
    return isinstance(image, memoryview) and image.contiguous


def _scene_seed(image) -> int | None:
    """The seed of a ``"shape scene <seed>"`` entry (``None``: no such entry, or a file of
    that name exists, which wins as it does for sample names)."""
    if not isinstance(image, str) or not image.startswith(SCENE_SAMPLE):
        return None
    seed = image[len(SCENE_SAMPLE) :]
    if not seed.isdigit() or Path(image).expanduser().is_file():
        return None
    return int(seed)


def _image_name(image) -> str:
    """What to call an image given to the explorer without a name."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        return path.name if path.is_file() else os.fspath(image)
    if isinstance(image, PILImage.Image):
        filename = getattr(image, "filename", "")
        return Path(filename).name if filename else f"PIL image ({image.mode})"
    if _is_file_bytes(image):
        return "image bytes"
    return "array" if isinstance(image, np.ndarray) else type(image).__name__


def _source_size(image) -> tuple[int, int] | None:
    """``(H, W)`` of an image as given, when known without reading a file."""
    if isinstance(image, PILImage.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[0]), int(image.shape[1])
    return None


def _read_new_image(image, name: str | None = None):
    """What :meth:`CamExplorer.set_image` hands its session: the file's bytes decoded, a
    shape scene entry made, anything else as it is; no model pass.

    Args:
        image: anything :func:`gradcam_widget.capture` takes, the bytes of an image file
            (``bytes``, ``bytearray`` or a ``memoryview``: an upload) or a :func:`sample_menu`
            entry.
        name: what the readout calls it (default: the file's or sample's name).

    Returns:
        ``(image, source)``: the image for the session and what the readout says of it.

    Raises:
        ValueError: for bytes that are empty, over :data:`MAX_UPLOAD_BYTES`, or no image
            Pillow reads (a message that names the file).
    """
    label = str(name) if name is not None else _image_name(image)
    sample, nbytes, given = NO_SAMPLE, None, None
    if _is_file_bytes(image):
        nbytes = memoryview(image).nbytes
        if nbytes > MAX_UPLOAD_BYTES:
            raise ValueError(
                f"{label!r} is {_size_text(nbytes)}, over the {_size_text(MAX_UPLOAD_BYTES)} "
                "limit for an uploaded image (gradcam_widget.widget.MAX_UPLOAD_BYTES): make it "
                "smaller, or pass its path to set_image"
            )
        if isinstance(image, memoryview):
            image = image.cast("B") if image.format != "B" or image.ndim != 1 else image
        image = images.open_image_bytes(image, label)
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise ValueError(
                f"{label!r} is {image.width}×{image.height} pixels, over the "
                f"{MAX_UPLOAD_PIXELS / 1e6:.0f}-megapixel limit for an uploaded image "
                "(gradcam_widget.widget.MAX_UPLOAD_PIXELS): make it smaller"
            )
        given = (image.height, image.width)  # the readout says the size as uploaded
        if max(image.size) > UPLOAD_KEPT_SIDE:  # keep no more than the model will ever see
            image.thumbnail((UPLOAD_KEPT_SIDE, UPLOAD_KEPT_SIDE), PILImage.Resampling.LANCZOS)
    elif (seed := _scene_seed(image)) is not None:
        sample = f"{SCENE_SAMPLE}{seed}"
        image = data.scene(seed, n_objects=1 + seed % 2).image
    elif isinstance(image, str) and image in data.SAMPLES and not Path(image).is_file():
        sample = image
    size = given if nbytes is not None else _source_size(image)
    return image, _ImageSource(label, size, nbytes, sample)


def _image_line(source: _ImageSource, cap: Capture) -> str:
    """The readout's line naming the image on screen: its size as given, as fed to the
    model."""
    height, width = cap.image.shape[:2]
    given = ""
    if source.size is not None and source.size != (height, width):
        given = f"{source.size[0]}×{source.size[1]}, "
    file = f" ({_size_text(source.nbytes)} file)" if source.nbytes is not None else ""
    fitted = "fitted to " if given else ""
    return f"image <b>{html.escape(source.name)}</b>{file} · {given}{fitted}{height}×{width}"


def _make_image_row() -> tuple[widgets.Dropdown, widgets.FileUpload]:
    """The Image control: the sample menu and the upload button (one file)."""
    menu = _dropdown(
        "Image",
        [("—", NO_SAMPLE), *((name, name) for name in sample_menu())],
        NO_SAMPLE,
        "a bundled sample: one model pass, every other setting kept",
    )
    menu.add_class("gw-image")
    upload = widgets.FileUpload(
        accept=UPLOAD_ACCEPT,
        multiple=False,
        description="Upload image",
        tooltip=f"your own image: png, jpg, webp or bmp, at most {_size_text(MAX_UPLOAD_BYTES)}",
        layout=widgets.Layout(width="180px"),
    )
    upload.add_class("gw-upload")
    return menu, upload


# --- the explorer -----------------------------------------------------------------------


class CamExplorer(widgets.VBox):
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

    Raises:
        ValueError: for a bad model, image, class index, target, layer or argument, or a
            model whose outputs need a ``target=`` (the widget needs a first view to exist;
            later errors go to its status line instead).

    Settable attributes (the UI follows), one per row of :data:`SETTINGS`: ``method``,
    ``layer``, ``pooling``, ``channels``, ``order``, ``score``, ``class_index`` (``None``:
    the top class), ``colormap``, ``opacity``, ``guided`` (``"off"``, ``"guided_backprop"``,
    ``"guided_gradcam"``, ``"smoothgrad"``: the Guided panel; a ValueError on a network with
    other activations than ReLU) and ``randomize`` (``0`` .. the number of blocks: the same
    view on a copy of the model whose top k blocks are re-initialised, seeded; ``0`` drops the
    copies). ``result`` is the :class:`~gradcam_widget.core.CamResult` on screen.

    The Image row above the controls: ``samples``, a menu of :func:`sample_menu`, and
    ``upload``, an ``ipywidgets.FileUpload`` (png, jpg, webp or bmp, at most
    :data:`MAX_UPLOAD_BYTES`); either replaces the image as :meth:`set_image` does, and the
    readout names it (``image_name``). A refused file says why in the status line; the view on
    screen stays.
    """

    CACHE_SIZE = ExplorerSession.CACHE_SIZE
    CACHE_BYTES = ExplorerSession.CACHE_BYTES

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
        chosen, class_index = explained(target, class_index)
        session = ExplorerSession(
            model,
            preprocess=preprocess,
            target=chosen,
            class_names=class_names,
            cache_size=cache_size,
            cache_bytes=cache_bytes,
        )
        super().__init__()
        self._session = session
        self._capture: Capture | None = None  # the capture the controls point at
        self.result: core.CamResult | None = None
        self.error: str | None = None
        self._closed = False
        self._quiet_depth = 0
        self._good: dict = {}
        self._pass_ran = self._filled_now = self._guided_ran = False
        self._guided: np.ndarray | None = None  # the input-gradient map on screen
        self._render_ms = 0.0
        self._drawn: Capture | None = None
        self._source: _ImageSource | None = None  # the image on screen, as the readout names it

        self._build()
        try:
            self._first_view(image, class_index, layer)
        except BaseException:  # a refused explorer leaves no widget and no capture behind
            self.close()
            raise

    def _first_view(self, image, class_index, layer):
        """Capture only the layer(s) on screen: one pass that stops at ``layer``."""
        passes = self.model_passes
        image, source = _read_new_image(image)
        first = self._session.set_image(
            image, class_index=class_index, layers=[None if layer == FUSED else layer]
        )
        self._source = source
        self._sync_menu(source)
        self._install_capture(first)
        if layer is not None:
            with self._quiet():
                self._controls["layer"].value = _check_layer(self, layer)
        self._refresh(passes=passes)
        if self.error:
            raise ValueError(self.error)

    def _build(self):
        """Make the controls, panels, readout and status line, and lay them out."""
        self._controls = controls = _make_controls()
        self._tooltips = {name: control.tooltip for name, control in controls.items()}
        for name, control in controls.items():
            control.observe(self._on_control(name), names="value")
        controls["randomize"].max = len(self._session.block_names)
        controls["randomize"].disabled = not self._session.block_names
        if self.target is not None:  # a target is explained, not a class: no class to pick
            for name in CLASS_CONTROLS:
                controls[name].layout.display = "none"
        self.samples, self.upload = _make_image_row()
        self.samples.observe(self._on_sample, names="value")
        self.upload.observe(self._on_upload, names="value")
        self._titles, self._panels = _make_panels()
        self.readout = widgets.HTML()
        self.readout.add_class("gw-readout")
        self.status = widgets.HTML()
        self.status.add_class("gw-status")
        rows = [
            widgets.HBox([self.samples, self.upload]),
            widgets.HBox([controls["method"], controls["layer"], controls["pooling"]]),
            widgets.HBox([controls["channels"], controls["order"], controls["score"]]),
            widgets.HBox([controls["class"], controls["class_index"], controls["colormap"]]),
            widgets.HBox([controls["opacity"], controls["guided"], controls["randomize"]]),
        ]
        self._boxes = {
            title: widgets.VBox([self._titles[title], self._panels[title]]) for title in PANELS
        }
        self._show_guided(False)
        panels = widgets.HBox([self._boxes[title] for title in PANELS])
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

    # --- pointing the controls at a capture -------------------------------------------

    def _shown_layers(self) -> list[str | None]:
        """The layers a new capture must record for the view on screen."""
        return self._session.layers_for(self._controls["layer"].value, self._capture)

    def _class_label(self, cap: Capture, index: int) -> str:
        return f"{self._session.class_name(cap, index)} · {cap.scores[index]:.3g}"

    def _install_capture(self, cap: Capture):
        """Point the controls at ``cap``: layer list, class list (top-5 + the chosen one)."""
        controls = self._controls
        with self._quiet():
            layer_options = _layer_options(cap)
            if list(controls["layer"].options) != layer_options:  # labels follow the grid
                previous = controls["layer"].value
                controls["layer"].options = layer_options
                values = [value for _, value in layer_options]
                controls["layer"].value = previous if previous in values else cap.default_layer
            if self.target is None and (
                self._session.blocks_of(cap) == 0 or self._capture is None
            ):  # a randomised copy's capture keeps the model's own top-5 list
                self._install_classes(cap)
            controls["score"].value = cap.score
        self._capture = cap

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

    def _refresh(
        self, changed: str | None = None, passes: int | None = None, announce: str | None = None
    ):
        """Recompute what ``changed`` affects and redraw. Never raises: errors go to the
        status line, the previous view and settings stay. ``passes``: the model-pass count
        before this change started (default: now); ``announce``: a new image's name, for the
        status line."""
        started = time.perf_counter()
        passes = self.model_passes if passes is None else passes
        values = self._values()
        session = self._session
        try:
            blocks = values["randomize"]
            if blocks and blocks not in session.clones:  # a copy to make and trace: seconds
                self.status.value = (
                    f"<span style='color:#555'>⏳ randomising the top {blocks} "
                    f"block{'s' if blocks > 1 else ''} of a copy of the model…</span>"
                )
            session.set_randomized(blocks)  # 0: every copy dropped
            cap = session.capture_for(values["class_index"], values["score"], self._shown_layers())
            if cap is not self._capture:
                self._install_capture(cap)
            filled = len(cap.fill_ins)
            restyle_only = changed in ("colormap", "opacity") and self.result is not None
            if not restyle_only:
                result = session.result_for(cap, values, on_miss=self._say_working)
            else:
                result = self.result
            cam_passes = self.model_passes - passes
            guided = self._guided
            if not restyle_only:
                guided = self._guided_map(cap, result, values["guided"])
            guided_passes = self.model_passes - passes - cam_passes
            self._draw(cap, result, values, restyle_only, guided)
            self._update_enabled(methods.get(values["method"]))
        except Exception as error:  # shown, never raised into the notebook
            self._fail(error)
            return
        finally:
            session.trim()  # the capture on screen may have grown (layers, input gradients)
        self.result = result
        self._drawn = cap
        self._guided = guided
        self._filled_now = len(cap.fill_ins) > filled
        self._pass_ran = cam_passes > self._filled_now  # not just the fill-in
        self._guided_ran = guided_passes > 0
        self._good = self._values()
        self.error = None
        self._render_ms = 1000 * (time.perf_counter() - started)
        self._write_readout(cap, result)
        news = "" if announce is None else f" · new image <b>{html.escape(announce)}</b>"
        self.status.value = f"<span style='color:#2a7a2a'>✓ ready{news}</span>" + "".join(
            f"<br>{_warning_html(note)}" for note in cap.warnings
        )

    def _say_working(self, method: methods.Method):
        """Before a map is computed: Score-CAM takes seconds, not milliseconds, so say so."""
        if method.runs_model:
            self.status.value = (
                f"<span style='color:#555'>⏳ {html.escape(method.label)}: forward passes…</span>"
            )

    def _guided_map(self, cap: Capture, result: core.CamResult, mode: str) -> np.ndarray | None:
        """The Guided panel's map for ``mode`` (``None`` when off): one pass to the input the
        first time for ``cap``, then cached on it."""
        if mode == "off":
            return None
        if not self._session.guided_cached(cap, mode):
            label = dict((value, label) for label, value in GUIDED_LABELS)[mode]
            self.status.value = (
                f"<span style='color:#555'>⏳ {html.escape(label)}: a pass to the input…</span>"
            )
        return self._session.guided_for(cap, mode, result.heatmap)

    def _show_guided(self, shown: bool):
        """Show or hide the Guided panel (its title, picture and box)."""
        display = None if shown else "none"
        for part in (self._boxes[GUIDED_PANEL], self._panels[GUIDED_PANEL]):
            if part.layout.display != display:
                part.layout.display = display

    def _update_enabled(self, method: methods.Method):
        """Disable the controls a method or the target ignores, and say why in their
        tooltips."""
        for name, why in _disabled_reasons(method, self.target).items():
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

    # --- drawing ----------------------------------------------------------------------

    def _draw(
        self,
        cap: Capture,
        result: core.CamResult,
        values: dict,
        restyle_only: bool,
        guided: np.ndarray | None,
    ):
        colormap, alpha = values["colormap"], values["opacity"]
        pictures = {
            "heatmap": render.colorize(result.heatmap, colormap),
            "overlay": render.overlay(cap.image, result.heatmap, colormap, alpha),
        }
        titles = _panel_titles(cap, result, alpha)
        if not restyle_only:
            pictures["raw map"] = render.raw_panel(result.raw)[0]
            if cap is not self._drawn:
                pictures["input"] = cap.image
            if guided is not None:
                pictures[GUIDED_PANEL] = render.saliency_image(guided)
                titles[GUIDED_PANEL] = _guided_title(cap, values["guided"], result.layer)
        encoded = {title: render.encode_png(rgb) for title, rgb in pictures.items()}
        if not restyle_only and guided is None:
            encoded[GUIDED_PANEL], titles[GUIDED_PANEL] = b"", ""  # off: hidden and emptied
        for title, png in encoded.items():
            if self._panels[title].value != png:
                self._panels[title].value = png
        for title, text in titles.items():
            self._titles[title].value = f"<b>{html.escape(text)}</b>" if text else ""
        if not restyle_only:
            self._show_guided(guided is not None)

    def _write_readout(self, cap: Capture, result: core.CamResult):
        target, captures = self.target, self._session.captures
        name = None if target is not None else self._session.class_name(cap, cap.class_index)
        pass_note = "just now" if self._pass_ran else "once, cached"
        layers_line = _layers_line(cap, self._filled_now)
        lines = [
            *([_image_line(self._source, cap)] if self._source is not None else []),
            *_tensor_lines(cap, result, methods.get(self.method).label),
            _explained_line(cap, target, name),
            f"model pass {cap.seconds * 1000:.0f} ms ({pass_note}; {len(captures)} "
            f"captures cached, {self.cached_bytes / 2**20:.1f} of "
            f"{captures.budget / 2**20:.0f} MB) · this view {self._render_ms:.1f} ms",
            *([layers_line] if layers_line else []),
            *(
                [_guided_line(self._guided, self.guided, self._guided_ran)]
                if self._guided is not None
                else []
            ),
            *(
                [_randomized_line(self._session.block_names[: self._session.blocks_of(cap)])]
                if self._session.blocks_of(cap) > 0
                else []
            ),
            *(_warning_html(note) for note in cap.warnings),
        ]
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
        return self._session.target

    @property
    def model_passes(self) -> int:
        """Model passes run so far for this explorer's model (all explorers share them)."""
        self._check_open()
        return self._session.model_passes

    @property
    def _captures(self):
        """The session's capture cache (benchmarks read it)."""
        return self._session.captures

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
        self._check_open()
        passes = self.model_passes
        label = str(name) if name is not None else _image_name(image)
        self.status.value = (
            f"<span style='color:#555'>⏳ new image {html.escape(label)}: one model pass…</span>"
        )
        try:
            image, source = _read_new_image(image, label)
            cap = self._session.set_image(image, score=self.score, layers=self._shown_layers())
        except Exception as error:
            self._fail(error)
            raise
        self._source = source
        self._sync_menu(source)
        self._install_capture(cap)
        self._refresh(passes=passes, announce=source.name)

    @property
    def image_name(self) -> str | None:
        """What the readout calls the image on screen (a file name, a sample name, ...)."""
        return None if self._source is None else self._source.name

    def _sync_menu(self, source: _ImageSource):
        """Point the sample menu at the image on screen: its entry, or a first entry that
        names it (a file, an array) and does nothing when chosen."""
        menu = self.samples
        entries = [value for _, value in menu.options if value != NO_SAMPLE]
        chosen = source.sample if source.sample in entries else NO_SAMPLE
        first = "—" if chosen != NO_SAMPLE else source.name
        options = [(first, NO_SAMPLE), *((entry, entry) for entry in entries)]
        with self._quiet():
            if list(menu.options) != options:
                menu.options = options
            menu.value = chosen

    def _on_sample(self, change):
        """A sample chosen in the menu: shown as :meth:`set_image` shows it; a failure is in
        the status line and the menu goes back."""
        if self._quiet_depth:
            return
        if change["new"] == NO_SAMPLE:  # "—" chosen: nothing to show, the menu names the image
            with self._quiet():
                self._sync_menu(self._source)
            return
        try:
            self.set_image(change["new"])
        except Exception:  # said in the status line; never raised into the notebook
            if not self._closed:
                with self._quiet():
                    self.samples.value = change["old"]

    def _on_upload(self, change):
        """A file uploaded: its bytes shown as :meth:`set_image` shows them, named by the file
        name; the upload button is emptied (its bytes not kept, the same file can come
        again)."""
        files = change["new"]
        if self._quiet_depth or not files:
            return
        entry = files[-1]
        content, name = entry["content"], str(entry.get("name") or "upload")
        with self._quiet():
            self.upload.value = ()
        with contextlib.suppress(Exception):  # said in the status line
            self.set_image(content, name=name)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by this explorer's caches (captures and maps)."""
        return self._session.cached_bytes

    def close(self):
        """Close every control and panel of the explorer and release its captures and maps.

        A closed explorer that nothing else refers to is freed; its setters raise
        RuntimeError."""
        self._closed = True
        if "_controls" not in vars(self):  # refused before it was built (ipywidgets' __del__)
            super().close()
            return
        self._session.close()
        self._capture = self._drawn = self.result = self._guided = None
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
        """Write the four panels as one titled figure (matplotlib, with colorbars; the Guided
        panel is not part of it)."""
        self._check_open()
        return render.save_figure(
            path, self._capture.image, self.result, self.colormap, self.opacity
        )

    def export_html(self, path, **options):
        """Write the static explorer of the view on screen: one self-contained HTML file that
        opens from ``file://`` with no kernel, server or network
        (:func:`gradcam_widget.export.write_capture`).

        The image and, for the class (or target) on screen, every combination of method ×
        layer × pooling × channels × order, precomputed from the capture on screen (one more
        pass when it holds only the layer on screen) with this explorer's colormap and
        opacity; the page opens on the current settings. Default layers: the default layer,
        the fusion layers, ``"fused"`` and the layer on screen; JPEG pictures. The file grows
        with the distinct pictures (at most 3 per layer for each method, 12 for Grad-CAM,
        each ~5–20 KB as JPEG); the shapes model's default export is about 1 MB, and a file over
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

        self._check_open()
        cap = self._capture
        if options.get("layers") is None:
            options["layers"] = export.default_layers(cap, self.layer)
        options.setdefault("colormap", self.colormap)
        options.setdefault("opacity", self.opacity)
        options.setdefault("selected", {name: getattr(self, name) for name in export.OPTIONS})
        if self.target is None:
            options.setdefault("class_name", self._session.class_name(cap, cap.class_index))
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
            self._session.trim()  # the capture may have grown (layers filled in)

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
        return self._panels[core.check_option("panel", title, PANELS)].value


for _name, _setting in SETTINGS.items():
    setattr(CamExplorer, _name, _SettingProperty(_name, _setting))
del _name, _setting

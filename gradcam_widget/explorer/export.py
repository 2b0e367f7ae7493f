"""The static explorer: one self-contained HTML file that works where no kernel runs.

Slides, a course web page, GitHub Pages, nbviewer and a PDF's companion folder run no Python,
so a live :class:`~gradcam_widget.widget.CamExplorer` there is a dead box. :func:`export_html`
(and ``ex.export_html(...)``, ``gradcam-widget export ...``) writes **one HTML file** instead:
the image and, for the explained class, every combination of the recipe's choices —
method × layer × pooling × channels × order × interpolation (:data:`MENUS`, values and labels
from :mod:`gradcam_widget.options`) — precomputed as embedded pictures (``data:`` URIs),
switched by plain HTML ``<select>`` controls and a few lines of inline script. No server, no
kernel, no network: no external font, script or style sheet; it opens from ``file://``, on
GitHub Pages and in a slide's iframe.

Every map comes from ONE capture of the image (the layers it needs are recorded by one
forward + backward pass; an explorer's capture that holds only the layer on screen is filled
in by one more pass). Every method but Score-CAM is numpy over those cached tensors; Score-CAM
runs forward passes on masked copies of the input (``max_channels`` = 64 masked images per
layer, and again per layer of the fusion for each order and interpolation): on the shapes
model that is most of the export's time (tens of seconds, not minutes).

Size. Each combination shows two pictures, the raw map (its cells) and the overlay; pictures
that come out byte-identical are stored once (a method that ignores pooling and channels gives
the same pictures for all four of their combinations; a layer's raw map depends on neither the
order nor the interpolation). So the file grows as::

    bytes ≈ input picture + distinct pictures × bytes per picture × 4/3 (base64)
    distinct pictures ≤ 1 + layers × (28 for Grad-CAM + 7 per other method)

(Grad-CAM: 4 raw maps and 24 overlays per layer; another method: 1 raw map and 6 overlays; the
fused layer's raw map also depends on the interpolation, 2 or 8 more), with the combinations
themselves ``methods × layers × 2 × 2 × 2 × 3`` entries of a small table. A 224×224 JPEG at
quality 85 is ~5–20 KB, a PNG 3–5 times that. The default — JPEG, the default layer, the
fusion layers and ``fused``, all seven methods — keeps the shapes model's export at about
2.5 MB (672 combinations, 205 distinct pictures), well under :data:`MAX_BYTES` (8 MB), which
refuses a larger file unless ``max_bytes=None``. More layers (``layers="all"``: 15 for the
shapes model) or PNG grow it linearly; fewer methods shrink it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from gradcam_widget import options as recipe
from gradcam_widget.cam import core
from gradcam_widget.cam import methods as registry
from gradcam_widget.captures.capturing import Capture
from gradcam_widget.data import render
from gradcam_widget.explorer.session import FUSED

FORMATS = ("jpeg", "png")
"""The picture formats of an export: JPEG (default, small) or PNG (lossless, 3–5× larger)."""

DEFAULT_QUALITY = 85
"""JPEG quality of an export's pictures (1–100)."""

MAX_BYTES = 8_000_000
"""The largest export written by default: 8 MB (``max_bytes=None`` lifts it)."""

MENUS = tuple(row.name for row in recipe.on(recipe.EXPORT))
"""The menus of the page, in the order of a combination's key (``"a|b|c|d|e|f"``): the
options of :data:`gradcam_widget.options.TABLE` offered on the export, values and labels from
there (method, layer, pooling, channels, order, interpolation)."""


class Export(NamedTuple):
    """What :func:`export_html` wrote.

    Attributes:
        path: the HTML file.
        nbytes: its size in bytes.
        combinations: the combinations of choices it holds (each once).
        pictures: the distinct pictures embedded (the input included).
        seconds: wall time of the export (maps, pictures and the file).
    """

    path: Path
    nbytes: int
    combinations: int
    pictures: int
    seconds: float


def combination_key(*values: str, **choices: str) -> str:
    """The key of one combination in the page's table: the values of :data:`MENUS` joined
    by ``|``, given in that order or by name (an option every method takes may be left out:
    its default).

    Raises:
        KeyError: for a menu given no value that has no default.
    """
    chosen = {**dict(zip(MENUS[: len(values)], values, strict=True)), **choices}
    for name in recipe.map_keywords():
        chosen.setdefault(name, recipe.option(name).default)
    return "|".join(str(chosen[name]) for name in MENUS)


def check_format(format: str, quality: int) -> tuple[str, int]:
    """``(format, quality)`` checked (``"jpg"`` is ``"jpeg"``).

    Raises:
        ValueError: naming the formats, or the range of the quality.
    """
    if isinstance(format, str) and format.lower() == "jpg":
        format = "jpeg"
    format = core.check_option("format", format.lower() if isinstance(format, str) else format,
                               FORMATS)  # fmt: skip
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ValueError(f"quality must be an int in 1..100; got {quality!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100; got {quality!r}")
    return format, int(quality)


def default_layers(cap: Capture, extra: str | None = None) -> tuple[str, ...]:
    """The layers an export includes by default: the fusion layers and the default layer
    (input to output), ``extra`` (a layer on screen) if given, then ``"fused"`` when the model
    has more than one fusion layer."""
    fused = cap.fusion_layers()
    chosen = {*fused, cap.default_layer}
    if extra is not None and extra != FUSED:
        chosen.add(cap.resolve(extra))
    ordered = [path for path in cap.layers if path in chosen]
    return (*ordered, FUSED) if len(fused) > 1 else tuple(ordered)


def check_layers(cap: Capture, layers) -> tuple[str, ...]:
    """The layers to export: ``None`` (:func:`default_layers`), ``"all"`` (every candidate
    layer, then ``"fused"``), or a list of names (full paths or unique bare names;
    ``"fused"`` for the multi-layer fusion), without repeats.

    Raises:
        ValueError: for an unknown or ambiguous layer (naming the candidates), ``"fused"`` on
            a model with a single fusion layer, or an empty list.
    """
    has_fused = len(cap.fusion_layers()) > 1
    if layers is None:
        return default_layers(cap)
    if isinstance(layers, str):
        if layers == "all":
            return (*cap.layers, FUSED) if has_fused else tuple(cap.layers)
        layers = [part for part in layers.split(",") if part.strip()]
    chosen: list[str] = []
    for name in layers:
        name = str(name).strip()
        if name == FUSED:
            if not has_fused:
                raise ValueError(f"layer {FUSED!r} needs more than one fusion layer; this model "
                                 f"has {', '.join(cap.fusion_layers()) or 'none'}")  # fmt: skip
            path = FUSED
        else:
            path = cap.resolve(name)
        if path not in chosen:
            chosen.append(path)
    if not chosen:
        raise ValueError("layers must name at least one layer (or be None for the default)")
    return tuple(chosen)


def check_methods(names) -> tuple[str, ...]:
    """The methods to export: ``None`` (every registered one, :func:`methods.names`), or a
    list (or comma-separated string) of names.

    Raises:
        ValueError: for an unknown method (naming them) or an empty list.
    """
    if names is None:
        return registry.names()
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    chosen = []
    for name in names:
        name = registry.get(name).name
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError("methods must name at least one method (or be None for all)")
    return tuple(chosen)


def _encode(rgb: np.ndarray, format: str, quality: int) -> bytes:
    """The bytes of an ``(H, W, 3)`` uint8 RGB picture as JPEG or PNG."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    if format == "png":
        ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    else:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a picture of shape {rgb.shape} as {format}")
    return buffer.tobytes()


class _Pictures:
    """The distinct pictures of an export as ``data:`` URIs, each stored once."""

    def __init__(self, format: str, quality: int):
        self.format, self.quality = format, quality
        self.uris: list[str] = []
        self._index: dict[bytes, int] = {}

    def add(self, rgb: np.ndarray) -> int:
        """The index of ``rgb``'s picture (added if new)."""
        encoded = _encode(rgb, self.format, self.quality)
        digest = hashlib.sha1(encoded).digest()
        if digest not in self._index:
            self._index[digest] = len(self.uris)
            payload = base64.b64encode(encoded).decode("ascii")
            self.uris.append(f"data:image/{self.format};base64,{payload}")
        return self._index[digest]


def _maps(cap: Capture, method: registry.Method, layer: str, shared: dict) -> dict:
    """``{tail: (raw, heatmap)}`` of one method, layer and its method options, ``tail`` the
    values of the options every method takes (:func:`gradcam_widget.options.map_keywords`:
    order, interpolation), in that order. A layer's raw map is computed once: those options
    are only the tail (:func:`core.to_heatmap`, :func:`core.fuse_maps`)."""
    names = recipe.map_keywords()
    tails = list(itertools.product(*(recipe.option(name).values for name in names)))
    if layer == FUSED:  # each fused layer's raw map once, fused per tail
        raws = [cap.cam(path, method=method.name, **shared).raw for path in cap.fusion_layers()]
        return {
            tail: core.fuse_maps(raws, cap.input_size, "max", **dict(zip(names, tail, strict=True)))
            for tail in tails
        }
    raw = cap.cam(layer, method=method.name, **shared).raw
    return {
        tail: (raw, core.to_heatmap(raw, cap.input_size, **dict(zip(names, tail, strict=True))))
        for tail in tails
    }


def _layer_label(cap: Capture, layer: str) -> str:
    """A layer's entry in the page's Layer menu: its path and grid, as the widget shows it."""
    if layer == FUSED:
        return f"{FUSED} · {'+'.join(cap.fusion_layers())}"
    h, w, c = cap.shape(layer)
    return f"{layer} · {h}×{w}×{c}"


def _caption(cap, method: registry.Method, layer: str, choices: dict, raw) -> str:
    """The line under the pictures naming the combination shown (a test reads it);
    ``choices`` holds the pooling, channels, order and interpolation."""
    shown_layer = "+".join(cap.fusion_layers()) if layer == FUSED else layer
    pooling, channels = choices["pooling"], choices["channels"]
    pooling = pooling if "pooling" in method.options else f"{pooling} (not used)"
    channels = channels if "channels" in method.options else f"{channels} (not used)"
    return (
        f"method {method.label} · layer {shown_layer}{' (fused)' if layer == FUSED else ''} · "
        f"pooling {pooling} · channels {channels} · order {choices['order']} · resize "
        f"{choices['interpolation']} · raw map {raw.shape[0]}×{raw.shape[1]} "
        f"(±{float(np.abs(raw).max()):.3g})"
    )


def _table(cap, layers, method_names, pictures: _Pictures, colormap: str, opacity: float):
    """``{key: [raw picture, overlay picture, caption]}`` for every combination."""
    combos = {}
    for name in method_names:
        method = registry.get(name)
        for layer in layers:
            # a method that ignores pooling or channels computes one map for all their values
            variants = {}
            own = recipe.method_keywords()  # pooling, channels: read by some methods only
            for values in itertools.product(*(recipe.option(name).values for name in own)):
                given = dict(zip(own, values, strict=True))
                shared = {option: given[option] for option in sorted(method.options)}
                frozen = tuple(shared.items())
                if frozen not in variants:
                    variants[frozen] = _maps(cap, method, layer, shared)
                for tail, (raw, heatmap) in variants[frozen].items():
                    choices = {**given, **dict(zip(recipe.map_keywords(), tail, strict=True))}
                    raw_index = pictures.add(render.raw_panel(raw)[0])
                    over = render.overlay(cap.image, heatmap, colormap, opacity)
                    key = combination_key(method=name, layer=layer, **choices)
                    caption = _caption(cap, method, layer, choices, raw)
                    combos[key] = [raw_index, pictures.add(over), caption]
    return combos


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.gw-subtitle { color: #555; margin-bottom: 1em; }
.gw-controls label { display: inline-block; margin: 0 1em .5em 0; }
.gw-controls select:disabled { color: #999; }
.gw-panels { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
.gw-panels figure { margin: 0; }
.gw-panels img { width: 224px; height: auto; image-rendering: pixelated; display: block; }
.gw-panels figcaption { font-size: .85em; color: #555; }
.gw-caption { margin: .8em 0; font-family: ui-monospace, monospace; font-size: .9em; }
.gw-note { color: #666; font-size: .85em; max-width: 60em; }
"""

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("gw-data").textContent);
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-option]"));
  function show() {
    var key = selects.map(function (s) { return s.value; }).join("|");
    var combo = data.combos[key];
    var uses = data.uses[selects[0].value];
    selects.forEach(function (s) {
      var option = s.getAttribute("data-option");
      s.disabled = (option === "pooling" || option === "channels") && uses.indexOf(option) < 0;
    });
    document.getElementById("gw-raw").src = data.pictures[combo[0]];
    document.getElementById("gw-overlay").src = data.pictures[combo[1]];
    document.getElementById("gw-caption").textContent = combo[2];
  }
  selects.forEach(function (s) { s.addEventListener("change", show); });
  show();
})();
"""


def _select(option: str, label: str, entries, value: str) -> str:
    """One ``<select>`` of the page, ``entries`` as ``(value, label)`` pairs (as
    :attr:`gradcam_widget.options.Option.choices`)."""
    items = "".join(
        f'<option value="{html.escape(entry)}"{" selected" if entry == value else ""}>'
        f"{html.escape(text)}</option>"
        for entry, text in entries
    )
    return (
        f'<label>{html.escape(label)} <select id="gw-{option}" data-option="{option}">'
        f"{items}</select></label>"
    )


def _page(cap, title, subtitle, controls, input_uri, table, note) -> str:
    # every <, > and & as a JSON escape: no text in the table can end or re-open the script
    data = (
        json.dumps(table, ensure_ascii=False, separators=(",", ":"))
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1 id="gw-title">{html.escape(title)}</h1>
<div class="gw-subtitle" id="gw-class">{html.escape(subtitle)}</div>
<div class="gw-controls">{controls}</div>
<div class="gw-panels">
<figure><img id="gw-input" alt="input" src="{input_uri}">
<figcaption>input {cap.image.shape[0]}×{cap.image.shape[1]}</figcaption></figure>
<figure><img id="gw-raw" alt="raw map"><figcaption>raw map (signed: blue &lt; 0 &lt; red)
</figcaption></figure>
<figure><img id="gw-overlay" alt="overlay"><figcaption>overlay</figcaption></figure>
</div>
<div class="gw-caption" id="gw-caption"></div>
<p class="gw-note">{html.escape(note)}</p>
<script type="application/json" id="gw-data">{data}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_capture(
    cap: Capture,
    path,
    *,
    layers=None,
    methods=None,
    format: str = "jpeg",
    quality: int = DEFAULT_QUALITY,
    colormap: str = "jet",
    opacity: float = 0.5,
    max_bytes: int | None = MAX_BYTES,
    title: str | None = None,
    class_name: str | None = None,
    selected: dict | None = None,
) -> Export:
    """Write the static explorer of one capture (its image and class) to ``path``.

    Args:
        cap: the :class:`~gradcam_widget.captures.Capture` whose class is explained.
        path: the HTML file to write (its folder must exist).
        layers: ``None`` (:func:`default_layers`), ``"all"``, or a list (or comma-separated
            string) of layer names, ``"fused"`` for the multi-layer fusion.
        methods: ``None`` (every method of :func:`gradcam_widget.methods.names`) or a list.
        format: ``"jpeg"`` (default) or ``"png"`` for the pictures.
        quality: JPEG quality, 1–100 (default :data:`DEFAULT_QUALITY`).
        colormap, opacity: the overlay's colours and heatmap opacity.
        max_bytes: refuse (ValueError, nothing written) a file larger than this (default
            :data:`MAX_BYTES`; ``None``: no limit).
        title: the page's title (default: the class explained).
        class_name: the explained class's name (default the capture's).
        selected: the values of :data:`MENUS` shown first (default Grad-CAM, the capture's
            default layer, then each option's default: mean, weighted, ReLU → resize, bilinear); one
            not exported is ignored.

    Returns:
        An :class:`Export`.

    Raises:
        ValueError: for an unknown layer or method, a bad format, quality, colormap or
            opacity, or a file over ``max_bytes``; all checked before any map is computed
            (but the size, known only at the end). Nothing is written then.
    """
    started = time.perf_counter()
    format, quality = check_format(format, quality)
    layers = check_layers(cap, layers)
    method_names = check_methods(methods)
    render.lookup_table(colormap)
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be a number in [0, 1]; got {opacity!r}")
    if max_bytes is not None:
        max_bytes = core.check_int("max_bytes", max_bytes)
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the HTML file to write")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: the folder {path.parent} does not exist")

    pictures = _Pictures(format, quality)
    input_uri = pictures.uris[pictures.add(cap.image)]
    combos = _table(cap, layers, method_names, pictures, colormap, float(opacity))

    name = class_name if class_name is not None else cap.class_name()
    if cap.class_index is None:
        explained = f"target {name} · value {cap.value:.4g}"
    else:
        score = cap.scores[cap.class_index]
        explained = f"class {cap.class_index} {name} · {cap.score} {score:.4g}"
    title = title if title is not None else f"Grad-CAM explorer · {name}"
    entries = {
        "method": [(name, registry.get(name).label) for name in method_names],
        "layer": [(path, _layer_label(cap, path)) for path in layers],
    }
    for name in MENUS[2:]:
        entries[name] = list(recipe.option(name).choices)
    start = {name: recipe.option(name).default for name in MENUS[2:]}
    start["method"] = "gradcam" if "gradcam" in method_names else method_names[0]
    start["layer"] = cap.default_layer if cap.default_layer in layers else layers[0]
    for option, value in (selected or {}).items():
        if option in entries and value in dict(entries[option]):
            start[option] = value
    controls = "".join(
        _select(name, recipe.option(name).label, entries[name], start[name]) for name in MENUS
    )
    table = {
        "combos": combos,
        "pictures": pictures.uris,
        "uses": {n: sorted(registry.get(n).options) for n in method_names},
    }
    note = (
        f"A static export of gradcam_widget: {len(combos)} combinations of the recipe "
        f"({len(method_names)} methods × {len(layers)} layers × {len(recipe.POOLINGS)} poolings "
        f"× {len(recipe.CHANNELS)} channel choices × {len(recipe.ORDERS)} orders × "
        f"{len(recipe.INTERPOLATIONS)} resizes), {len(pictures.uris)} distinct "
        f"{format.upper()} pictures, all computed from one capture of the image for "
        f"{explained}. Pooling and channels apply to Grad-CAM only; the others compute their "
        f"own channel weights. Colormap {colormap}, overlay opacity {float(opacity):.2f}. "
        "No server or network needed."
    )
    text = _page(cap, title, explained, controls, input_uri, table, note)
    encoded = text.encode("utf-8")
    if max_bytes is not None and len(encoded) > max_bytes:
        raise ValueError(
            f"the export would be {len(encoded) / 1e6:.1f} MB, over max_bytes="
            f"{max_bytes / 1e6:.1f} MB ({len(pictures.uris)} pictures for {len(combos)} "
            "combinations): export fewer layers or methods, use format='jpeg' or a lower "
            "quality, or pass max_bytes=None"
        )
    path.write_bytes(encoded)
    return Export(path, len(encoded), len(combos), len(pictures.uris),
                  time.perf_counter() - started)  # fmt: skip


def export_html(
    path,
    model="shapes",
    image="two_shapes",
    *,
    class_index: int | None = None,
    score: str = "logit",
    **options,
) -> Export:
    """Capture ``image`` with ``model`` once and write its static explorer to ``path``.

    >>> gw.export.export_html("lesson.html", "shapes", "two_shapes")   # doctest: +SKIP

    Args:
        path: the HTML file to write.
        model: a ``keras.Model``, a model entry or a shipped model's name (default
            ``"shapes"``).
        image: anything :func:`gradcam_widget.capture` takes (default ``"two_shapes"``).
        class_index: the class to explain (default: the top prediction).
        score: ``"logit"`` (default) or ``"probability"``.
        **options: as :func:`write_capture` (``layers``, ``methods``, ``format``,
            ``quality``, ``colormap``, ``opacity``, ``max_bytes``, ``title``).

    Returns:
        An :class:`Export`.

    Raises:
        ValueError: as :func:`gradcam_widget.capture` and :func:`write_capture`.
    """
    from gradcam_widget.captures.capturing import capture
    from gradcam_widget.explorer.session import resolve_model

    check_format(options.get("format", "jpeg"), options.get("quality", DEFAULT_QUALITY))
    cap = capture(resolve_model(model), image, class_index=class_index, score=score)
    return write_capture(cap, path, **options)

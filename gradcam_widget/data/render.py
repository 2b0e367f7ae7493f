"""Pictures of a CAM: colormaps, the raw-cell panel, the overlay, PNG bytes, the figure.

Pure numpy + OpenCV for the fast path the widget uses on every change (a colormap is a
256-entry lookup table; PNG encoding is OpenCV's), and matplotlib only for the exported
four-panel figure.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np

from gradcam_widget import options

COLORMAPS = options.COLORMAPS
DIVERGING = "RdBu_r"  # blue < 0 < red, white at zero
PANEL_TITLES = ("input", "raw map", "heatmap", "overlay")


@functools.lru_cache(maxsize=32)
def lookup_table(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB table of matplotlib colormap ``name``.

    Raises:
        ValueError: naming the known colormaps when ``name`` is not a matplotlib colormap.
    """
    import matplotlib

    try:
        colormap = matplotlib.colormaps[name]
    except (KeyError, TypeError):
        valid = ", ".join(COLORMAPS)
        raise ValueError(f"unknown colormap {name!r}; try one of {valid}") from None
    table = colormap(np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a ``[0, 1]`` heatmap ``(H, W)`` to ``(H, W, 3)`` uint8 RGB."""
    levels = np.clip(np.nan_to_num(heatmap) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lookup_table(colormap)[levels]


def colorize_signed(raw: np.ndarray, colormap: str = DIVERGING) -> tuple[np.ndarray, float]:
    """Map a signed map to RGB with zero at the colormap's centre.

    Args:
        raw: ``(h, w)`` signed values.
        colormap: a diverging matplotlib colormap.

    Returns:
        ``((h, w, 3) uint8, limit)`` where ``[-limit, limit]`` spans the colormap
        (``limit = max |raw|``; an all-zero map is drawn in the centre colour).
    """
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    limit = float(np.abs(raw).max()) if raw.size else 0.0
    scaled = raw / limit if limit > 0 else np.zeros_like(raw)
    return colorize((scaled + 1.0) / 2.0, colormap), limit


def cell_size(grid: tuple[int, int]) -> int:
    """Whole pixels per feature-map cell for the raw panel.

    A grid up to 14 cells wide is drawn 224 px wide (14x14 -> 16 px cells); larger grids get
    up to 448 px, never less than 1 px per cell, so a 28x28 map is visibly finer than 14x14.
    """
    cells = max(grid)
    return max(1, (224 if cells <= 14 else 448) // cells)


def raw_panel(raw: np.ndarray, colormap: str = DIVERGING) -> tuple[np.ndarray, float]:
    """The raw map as visible blocks: one ``cell x cell`` square per feature-map position.

    Returns:
        ``((h * cell, w * cell, 3) uint8, limit)``, see :func:`colorize_signed`.
    """
    rgb, limit = colorize_signed(raw, colormap)
    cell = cell_size(rgb.shape[:2])
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1), limit


def overlay(image: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5):
    """Blend the coloured heatmap over the image.

    Args:
        image: ``(H, W, 3)`` uint8.
        heatmap: ``(H, W)`` in ``[0, 1]``.
        colormap: matplotlib colormap name.
        alpha: heatmap opacity in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        ValueError: when the sizes differ or ``alpha`` is outside ``[0, 1]``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (overlay opacity) must be in [0, 1]; got {alpha!r}")
    if image.shape[:2] != heatmap.shape:
        raise ValueError(f"image {image.shape[:2]} and heatmap {heatmap.shape} sizes differ")
    return cv2.addWeighted(
        np.ascontiguousarray(image, dtype=np.uint8), 1.0 - float(alpha),
        colorize(heatmap, colormap), float(alpha), 0.0,
    )  # fmt: skip


SALIENCY_STYLES = ("seed", "abs")


def saliency_image(gradients: np.ndarray, style: str = "seed") -> np.ndarray:
    """An input-gradient map (Guided Backpropagation, Guided Grad-CAM, SmoothGrad) as a picture.

    ``"seed"``: as the code the article reads renders it — centre on the mean, scale to a
    standard deviation of 0.1, shift to 0.5, clip to ``[0, 1]``: grey is zero, colours show
    the sign per channel. ``"abs"``: the grey map papers print — the largest absolute value over
    the channels, divided by its 99th percentile and clipped (one outlier pixel does not
    darken the rest).

    Args:
        gradients: ``(H, W, C)`` float, signed.
        style: ``"seed"`` or ``"abs"``.

    Returns:
        ``(H, W, 3)`` uint8 (``"seed"`` with one channel, or ``"abs"``, is grey in all three).

    Raises:
        ValueError: for another shape, a NaN, or a bad style.
    """
    from gradcam_widget.cam import core

    core.check_option("style", style, SALIENCY_STYLES)
    array = np.asarray(gradients, dtype=np.float64)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"gradients must be an (H, W, C) array; got shape {np.shape(gradients)}")
    if np.isnan(array).any():
        raise ValueError("gradients contain NaN")
    if style == "seed":
        centred = array - array.mean()
        spread = centred.std()
        picture = np.clip(centred / spread * 0.1 + 0.5 if spread > 0 else centred + 0.5, 0, 1)
    else:
        magnitude = np.abs(array).max(axis=-1, keepdims=True)
        top = np.percentile(magnitude, 99)
        picture = np.clip(magnitude / top, 0, 1) if top > 0 else np.zeros_like(magnitude)
    if picture.shape[-1] != 3:
        picture = np.repeat(picture.mean(axis=-1, keepdims=True), 3, axis=-1)
    return np.round(picture * 255).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 RGB image (fast compression)."""
    ok, buffer = cv2.imencode(
        ".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_PNG_COMPRESSION, 1],
    )  # fmt: skip
    if not ok:
        raise ValueError(f"could not encode an image of shape {rgb.shape} as PNG")
    return buffer.tobytes()


def panels(image: np.ndarray, result, colormap: str = "jet", alpha: float = 0.5) -> dict:
    """The four panels of a result as RGB arrays: ``{title: (H, W, 3) uint8}``."""
    raw_rgb, _ = raw_panel(result.raw)
    return {
        "input": image,
        "raw map": raw_rgb,
        "heatmap": colorize(result.heatmap, colormap),
        "overlay": overlay(image, result.heatmap, colormap, alpha),
    }


def figure(image: np.ndarray, result, colormap: str = "jet", alpha: float = 0.5, title=None):
    """A titled matplotlib figure of the four panels, with colorbars.

    Args:
        image: ``(H, W, 3)`` uint8, the image as fed to the model.
        result: a :class:`~gradcam_widget.core.CamResult`.
        colormap, alpha: heatmap colormap and overlay opacity.
        title: figure title; default names the layer, class and options.

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot: no notebook side effects).
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 4)
    h, w = result.raw.shape
    limit = float(np.abs(result.raw).max()) or 1.0
    axes[0].imshow(image)
    axes[0].set_title(f"input {image.shape[0]}×{image.shape[1]}")
    raw_image = axes[1].imshow(
        result.raw, cmap=DIVERGING, norm=Normalize(-limit, limit), interpolation="nearest"
    )
    axes[1].set_title(f"raw map {h}×{w} (signed)")
    fig.colorbar(raw_image, ax=axes[1], shrink=0.8)
    heat = axes[2].imshow(result.heatmap, cmap=colormap, vmin=0.0, vmax=1.0)
    axes[2].set_title(f"heatmap {result.heatmap.shape[0]}×{result.heatmap.shape[1]}")
    fig.colorbar(heat, ax=axes[2], shrink=0.8)
    axes[3].imshow(overlay(image, result.heatmap, colormap, alpha))
    axes[3].set_title("overlay")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if title is None:
        title = (
            f"{result.method} · layer {result.layer} · class {result.class_index} · "
            f"pooling {result.pooling} · channels {result.channels} · {result.order}"
        )
    fig.suptitle(title)
    return fig


def figure_path(path):
    """The file :func:`save_figure` writes for ``path``, checked before anything is drawn.

    Args:
        path: a file name, ``str`` or path-like. Its extension picks the format (any that
            matplotlib writes: ``.png``, ``.pdf``, ``.svg``, ``.jpg`` ...); a name without one
            gets ``.png`` appended, as matplotlib itself does.

    Returns:
        The path to be written: a ``str`` for a ``str``, else a :class:`pathlib.Path`.

    Raises:
        IsADirectoryError: if ``path`` is an existing folder.
        FileNotFoundError: if the folder it would go into does not exist.
        ValueError: if matplotlib cannot write the format of its extension.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    text = os.fsdecode(os.fspath(path))
    if os.path.isdir(text):
        example = os.path.join(text, "gradcam.png")
        raise IsADirectoryError(f"{text!r} is a folder; give a file name such as {example!r}")
    if text.endswith(("/", os.sep)):
        raise FileNotFoundError(f"cannot write into {text!r}: that folder does not exist")
    extension = os.path.splitext(text)[1][1:]
    if not extension:
        text, extension = f"{text.rstrip('.')}.png", "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if extension.lower() not in supported:
        raise ValueError(
            f"cannot write {text!r}: matplotlib does not write .{extension} files; "
            f"use one of {', '.join('.' + name for name in sorted(supported))}"
        )
    folder = os.path.dirname(text)
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {text!r}: the folder {folder!r} does not exist")
    return text if isinstance(path, str) else Path(text)


def save_figure(path, image: np.ndarray, result, colormap="jet", alpha=0.5, title=None, dpi=100):
    """Write :func:`figure` to ``path``.

    Args:
        path: a file name (see :func:`figure_path`: the extension picks the format, none
            means ``.png``) or a writable binary file object (PNG).
        image, result, colormap, alpha, title: as :func:`figure`.
        dpi: dots per inch of the written figure (100: a 1400 x 420 PNG).

    Returns:
        The path actually written (:func:`figure_path` of ``path``), or the file object.

    Raises:
        IsADirectoryError, FileNotFoundError, ValueError: as :func:`figure_path`, before
            anything is drawn.
    """
    if isinstance(path, (str, bytes, os.PathLike)):
        path = figure_path(path)
        fig = figure(image, result, colormap, alpha, title)
        fig.savefig(path, dpi=dpi)
    else:
        fig = figure(image, result, colormap, alpha, title)
        fig.savefig(path, dpi=dpi, format="png")
    return path


# ---------------------------------------------------------------------------------------
# The seed's three maps: Grad-CAM, Guided Backpropagation, Guided Grad-CAM

SALIENCY_PANELS = ("Grad-CAM overlay", "Guided Backpropagation", "Guided Grad-CAM")
"""Titles of the three pictures of :func:`saliency_figure`, in order (the keys of
:func:`saliency_images`)."""

SALIENCY_FILES = {
    "Grad-CAM overlay": "gradcam",
    "Guided Backpropagation": "guided_backprop",
    "Guided Grad-CAM": "guided_gradcam",
}
"""Suffix of each picture's own PNG, ``<stem>_<suffix>.png``, in :func:`save_saliency`."""

SQUASHES = ("auto", "softmax", "sigmoid")
_NOISE_OPTIONS = ("smooth", "sigma", "seed")
_UNBYPASSED = "could not be bypassed"  # in the capture's warning when the logit is out of reach


def top_probabilities(cap, k: int = 5, squash: str = "auto") -> tuple[list, str]:
    """The ``k`` most probable classes of a capture, as the seed's driver printed them.

    A capture made with ``score="probability"`` (or whose softmax/sigmoid head could not be
    bypassed, see :attr:`~gradcam_widget.captures.Capture.warnings`) already holds
    probabilities, used as they are. Logits are squashed as the model's head would:
    ``"auto"`` takes a sigmoid per class for a multi-label entry (such as ``"shapes"``, whose
    classes can be present together) or a single output unit, else a softmax over the
    classes (then they sum to 1).

    Args:
        cap: a :class:`~gradcam_widget.captures.Capture` that explains a class.
        k: how many classes (fewer when the model has fewer).
        squash: ``"auto"``, ``"softmax"`` or ``"sigmoid"`` (the last two force the function
            applied to logits).

    Returns:
        ``([(index, name, probability), ...], how)``: highest first, and a few words saying
        where the probabilities come from (e.g. ``"softmax of the logits"``).

    Raises:
        ValueError: for a bad ``k`` or ``squash``, or ``"softmax"``/``"sigmoid"`` asked of
            scores that already are probabilities.
    """
    from gradcam_widget.cam import core

    core.check_option("squash", squash, SQUASHES)
    k = core.check_int("k", k)
    scores = np.asarray(cap.scores, dtype=np.float64)
    already = cap.score == "probability" or any(_UNBYPASSED in note for note in cap.warnings)
    if already:
        if squash != "auto":
            raise ValueError(
                f"squash={squash!r} applies to logits; this capture's scores already are the "
                "model's probabilities (use squash='auto')"
            )
        probabilities = scores
        how = (
            "the model's probabilities"
            if cap.score == "probability"
            else "the model's probabilities: its head could not be bypassed"
        )
    else:
        if squash == "auto":
            multi_label = bool(getattr(cap, "multi_label", False))
            squash = "sigmoid" if multi_label or scores.size == 1 else "softmax"
        probabilities = core.probabilities(scores, squash)
        how = f"{squash} of the logits"
    order = np.argsort(-probabilities, kind="stable")[:k]
    top = [(int(i), cap.class_name(int(i)), float(probabilities[i])) for i in order]
    return top, how


def _split_noise(cam_options: dict) -> tuple[dict, dict]:
    """``(cam options, SmoothGrad options)`` out of the keyword options of the functions below."""
    noise = {key: cam_options[key] for key in _NOISE_OPTIONS if key in cam_options}
    cam = {key: value for key, value in cam_options.items() if key not in _NOISE_OPTIONS}
    return cam, noise


def _saliency_maps(cap, layer, colormap, alpha, style, cam_options) -> dict:
    """The three pictures, keyed by :data:`SALIENCY_PANELS` (the heatmap is computed once: a
    Score-CAM overlay does not run its forward passes twice)."""
    from gradcam_widget.cam import core

    core.check_option("style", style, SALIENCY_STYLES)
    lookup_table(colormap)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (overlay opacity) must be in [0, 1]; got {alpha!r}")
    options, noise = _split_noise(cam_options)
    guided = cap.saliency("guided", **noise)  # first: a non-ReLU network fails before the CAM
    result = cap.cam(layer, **options)
    # The product of Capture.guided_grad_cam, from the same heatmap.
    guided_cam = (guided * result.heatmap[..., None]).astype(np.float32)
    pictures = {
        "Grad-CAM overlay": overlay(cap.image, result.heatmap, colormap, alpha),
        "Guided Backpropagation": saliency_image(guided, style),
        "Guided Grad-CAM": saliency_image(guided_cam, style),
    }
    return pictures


def saliency_images(
    cap, layer=None, colormap: str = "jet", alpha: float = 0.5, style: str = "seed", **cam_options
) -> dict:
    """The three pictures of the seed's driver: Grad-CAM overlay, Guided Backpropagation and
    Guided Grad-CAM (one guided pass down to the input, the first time per capture).

    Args:
        cap: a :class:`~gradcam_widget.captures.Capture` of a ReLU network.
        layer: the Grad-CAM layer (``None``: the capture's default layer).
        colormap, alpha: heatmap colormap and overlay opacity, as :func:`overlay`.
        style: how the two guided maps are drawn, as :func:`saliency_image` (``"seed"``:
            centred, scaled to a standard deviation of 0.1 around grey, clipped; ``"abs"``:
            the grey magnitude map).
        **cam_options: as :meth:`~gradcam_widget.captures.Capture.cam` (``pooling``,
            ``order``, ``method`` ...); ``smooth``, ``sigma`` and ``seed`` go to
            :meth:`~gradcam_widget.captures.Capture.saliency` (SmoothGrad of both guided maps).

    Returns:
        ``{title: (H, W, 3) uint8}`` keyed by :data:`SALIENCY_PANELS`, in that order; the
        guided pictures equal ``saliency_image(cap.saliency("guided"), style)`` and
        ``saliency_image(cap.guided_grad_cam(layer, **cam_options), style)``.

    Raises:
        ValueError: for a bad option, layer, colormap or opacity, or a network with another
            activation than ReLU (guided backpropagation is defined for ReLU networks).
    """
    return _saliency_maps(cap, layer, colormap, alpha, style, cam_options)


def _saliency_title(cap, layer, style: str, squash: str) -> str:
    """The figure's two title lines; checks ``squash``, ``style`` and ``layer`` (cheap: no
    model pass), so a bad option fails before the guided pass."""
    from gradcam_widget.cam import core

    core.check_option("style", style, SALIENCY_STYLES)
    path = cap.resolve(layer)
    top, how = top_probabilities(cap, 5, squash)
    ranked = " · ".join(f"{index} {name} {p:.3f}" for index, name, p in top)
    rendering = "centred, std 0.1 around grey" if style == "seed" else "|gradient|, grey"
    explained = (
        f"class {cap.class_index} '{cap.class_name()}'"
        if cap.class_index is not None
        else cap.class_name()
    )
    return (
        f"top {len(top)} ({how}): {ranked}\n"
        f"explaining {explained} ({cap.score}) · Grad-CAM at {path} · "
        f"guided maps: {rendering}"
    )


def _saliency_figure(pictures: dict, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), layout="constrained")
    for axis, (name, picture) in zip(fig.subplots(1, 3), pictures.items(), strict=True):
        axis.imshow(picture)
        axis.set_title(name)
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(title)
    return fig


def saliency_figure(
    cap,
    layer=None,
    colormap: str = "jet",
    alpha: float = 0.5,
    style: str = "seed",
    squash: str = "auto",
    **cam_options,
):
    """The seed's ``compute_saliency`` in one figure: the top-5 classes with their
    probabilities, then Grad-CAM overlay, Guided Backpropagation and Guided Grad-CAM.

    The title's first line lists the five most probable classes (``index name probability``)
    and says where the probabilities come from (see :func:`top_probabilities`); its second
    names the explained class, the score differentiated, the Grad-CAM layer and how the
    guided maps are drawn.

    Args:
        cap: a :class:`~gradcam_widget.captures.Capture` of a ReLU network.
        layer, colormap, alpha, style: as :func:`saliency_images`.
        **cam_options: as :func:`saliency_images`.
        squash: how logits become probabilities in the title, as :func:`top_probabilities`.

    Returns:
        A ``matplotlib.figure.Figure`` with three image axes titled :data:`SALIENCY_PANELS`
        (not attached to pyplot: no notebook side effects).

    Raises:
        ValueError: as :func:`saliency_images` and :func:`top_probabilities`.
    """
    title = _saliency_title(cap, layer, style, squash)
    pictures = _saliency_maps(cap, layer, colormap, alpha, style, cam_options)
    return _saliency_figure(pictures, title)


def saliency_paths(path) -> dict:
    """The files :func:`save_saliency` writes for ``path`` with ``separate=True``.

    Args:
        path: the figure's file name, as :func:`figure_path` takes it.

    Returns:
        ``{"figure": path, title: <stem>_<suffix>.png, ...}``, the pictures' files next to
        the figure (PNG whatever the figure's format), :data:`SALIENCY_FILES` suffixes.

    Raises:
        IsADirectoryError, FileNotFoundError, ValueError: as :func:`figure_path`.
    """
    written = figure_path(path)
    stem = os.path.splitext(os.fspath(written))[0]
    paths = {"figure": written}
    for name, suffix in SALIENCY_FILES.items():
        picture = f"{stem}_{suffix}.png"
        paths[name] = picture if isinstance(written, str) else Path(picture)
    return paths


def save_saliency(
    path,
    cap,
    layer=None,
    colormap: str = "jet",
    alpha: float = 0.5,
    style: str = "seed",
    squash: str = "auto",
    separate: bool = False,
    title=None,
    dpi: int = 100,
    **cam_options,
):
    """Write :func:`saliency_figure` to ``path`` and, with ``separate``, each of the three
    pictures to its own PNG next to it, as the seed saved three files.

    Everything is computed before anything is written: an error leaves no file behind.

    Args:
        path: a file name (see :func:`figure_path`: the extension picks the format, none
            means ``.png``) or, without ``separate``, a writable binary file object (PNG).
        cap, layer, colormap, alpha, style, squash: as :func:`saliency_figure`.
        **cam_options: as :func:`saliency_figure`.
        separate: also write ``<stem>_gradcam.png``, ``<stem>_guided_backprop.png`` and
            ``<stem>_guided_gradcam.png`` (see :func:`saliency_paths`), at the pictures' own
            resolution.
        title: the figure's title instead of the default (top-5 and what is explained).
        dpi: dots per inch of the written figure.

    Returns:
        The paths written, the figure's first (a list of one item, or four with
        ``separate``); the file object for a file object.

    Raises:
        IsADirectoryError, FileNotFoundError: as :func:`figure_path`, before anything is
            computed.
        ValueError: as :func:`figure_path` and :func:`saliency_figure`; ``separate`` with a
            file object.
    """
    named = isinstance(path, (str, bytes, os.PathLike))
    if separate and not named:
        raise ValueError("separate=True needs a file name to put the three PNGs next to")
    paths = saliency_paths(path) if named else {"figure": path}
    if title is None:
        title = _saliency_title(cap, layer, style, squash)
    pictures = _saliency_maps(cap, layer, colormap, alpha, style, cam_options)
    encoded = {name: encode_png(picture) for name, picture in pictures.items()} if separate else {}
    fig = _saliency_figure(pictures, title)
    if named:
        fig.savefig(paths["figure"], dpi=dpi)
    else:
        fig.savefig(path, dpi=dpi, format="png")
        return path
    for name, data in encoded.items():
        with open(paths[name], "wb") as file:
            file.write(data)
    return [paths["figure"], *(paths[name] for name in encoded)]

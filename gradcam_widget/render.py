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

COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "gray")
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
    from gradcam_widget import core

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

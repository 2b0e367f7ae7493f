"""Every image a user has, read as the ``(H, W, 3)`` float32 RGB in 0..255 the models take.

:func:`as_rgb_image` reads numpy arrays (and array-likes), PIL images of any mode, image files
(``str`` or :class:`pathlib.Path`) and the sample names of :mod:`gradcam_widget.data`.
:func:`fit` resizes an image to a model's input size, :func:`shown_image` turns it into the
uint8 picture the panels show.

How values are read (the dtype decides, never a guess from the values, with one exception
for floats):

- ``uint8``: as is.
- ``uint16``: divided by 257 (0..65535 -> 0..255).
- ``bool``: False -> 0, True -> 255.
- any other integer dtype: must lie in 0..255, else ValueError naming the range found.
- float, all values in 0..1: read as 0..1 and multiplied by 255, with one ``UserWarning``
  saying so (an all-zero image is black either way and does not warn).
- float in 0..255 (maximum above 1): as is.
- float with negative values or values above 255: ValueError (such an image has usually been
  preprocessed for a model already: pass the image before preprocessing and give
  ``preprocess=``).
- NaN or infinite values: ValueError.

Shapes: ``(H, W, 3)``; ``(H, W)`` and ``(H, W, 1)`` greyscale (repeated to 3 channels);
``(H, W, 4)`` RGBA (alpha dropped, not composited: transparent pixels keep their colour).
A batch ``(1, H, W, C)`` is refused (pass ``image[0]``).

PIL images: ``"1"`` as bool; ``"L"``, ``"RGB"`` as uint8; ``"I;16"`` (and ``"I;16L"``,
``"I;16B"``, ``"I;16N"``) as uint16; ``"I"`` (32-bit integers) as is when its values lie in
0..255 and like uint16 when its maximum is above 255 (values must then lie in 0..65535);
``"F"`` by the float rule; ``"P"`` and ``"PA"`` by their palette colours; ``"LA"``, ``"La"``,
``"RGBA"``, ``"RGBa"``, ``"RGBX"`` with alpha or padding dropped; ``"CMYK"``, ``"YCbCr"`` and
``"HSV"`` by Pillow's conversion to RGB; ``"LAB"`` to sRGB by LittleCMS
(:mod:`PIL.ImageCms`), since Pillow's plain ``convert`` copies LAB channels unchanged.

Files: decoded by Pillow's readers for :data:`FORMATS` only (PNG, JPEG, WebP, BMP, GIF, TIFF),
chosen by content, never by name; anything else (PostScript, PDF, SVG ...) is refused with one
line and never reaches another program (Pillow hands EPS to Ghostscript: a PostScript file
named ``upload.png`` would run the sender's program). EXIF orientation applied, then read as
their PIL image. A ``str``
that names no file but a sample of :data:`gradcam_widget.data.SAMPLES` gives that sample
(224 x 224, see :func:`gradcam_widget.data.sample`); an existing file wins over a sample name.
``bytes`` (or ``bytearray``) are the content of an image file, read the same way
(:func:`open_image_bytes`: an upload, a download); their image may hold at most Pillow's
``Image.MAX_IMAGE_PIXELS`` pixels (about 89 megapixels), where a file only warns.

Only numpy, OpenCV and Pillow are used here; this module never imports TensorFlow.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

EXPECTED = "an image of shape (H, W, 3), (H, W) or (H, W, 1) greyscale, or (H, W, 4) RGBA"
"""What :func:`as_rgb_image` accepts as an array, as its error messages say it."""

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
"""The only file formats decoded, by Pillow's format names; raster formats whose Pillow
readers are pure decoders. Every file and upload is read through :func:`_open` with this list."""

FORMATS_TEXT = "PNG, JPEG, WebP, BMP, GIF or TIFF"

_SIGNATURES = (
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "PostScript (binary EPS)"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML (SVG?)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"\x8aMNG", "MNG"),
    (b"8BPS", "Photoshop"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"SIMPLE", "FITS"),
)
"""First bytes of some formats that are refused, to name them in the refusal."""

UNIT_FLOAT_WARNING = (
    "float image with values in 0..1: read as 0..1 and scaled to 0..255; "
    "pass image * 255 (or uint8) to silence"
)
"""The warning :func:`as_rgb_image` gives when it scales a 0..1 float image."""

_UINT16_STEP = np.float32(257.0)  # 65535 / 255: uint16 levels per uint8 level


def as_rgb_image(image) -> np.ndarray:
    """Read any image as ``(H, W, 3)`` float32 RGB in 0..255.

    The value rules per dtype and PIL mode are in the module docstring.

    Args:
        image: an array or array-like ``(H, W, 3)``, ``(H, W)``, ``(H, W, 1)`` or
            ``(H, W, 4)`` (uint8, uint16, bool, other integers in 0..255, float 0..1 or
            0..255); a PIL image of any mode; a path (``str`` or :class:`pathlib.Path`) to an
            image file Pillow reads; or a sample name of
            :data:`gradcam_widget.data.SAMPLES`; or the ``bytes`` of an image file.

    Returns:
        ``(H, W, 3)`` float32 in 0..255, C-contiguous: a new array, never a view of
        ``image`` (which is never modified).

    Raises:
        ValueError: for a wrong shape (a batch ``(1, H, W, C)`` included), an empty image, a
            non-numeric dtype, NaN or infinite values, integers outside 0..255, floats
            outside 0..1 and 0..255, a path that is neither a file nor a sample name, a file
            (or bytes) Pillow cannot read, a PIL mode that has no RGB conversion, or a sample
            that needs scikit-image when it is not installed. The message says what was
            expected.

    Warns:
        UserWarning: once, when a float image in 0..1 is scaled to 0..255.
    """
    rgb, notes = read_rgb(image)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return rgb


def read_rgb(image) -> tuple[np.ndarray, tuple[str, ...]]:
    """:func:`as_rgb_image` without the warning: returns ``(rgb, notes)``, the notes being
    the warnings' texts, for a caller that passes them on (a capture records them, the
    widget shows them in its status line).

    Raises:
        ValueError: as :func:`as_rgb_image`.
    """
    if isinstance(image, (str, os.PathLike)):
        array = _read(image)
    elif isinstance(image, (bytes, bytearray)):
        array = _pil_array(open_image_bytes(image))
    elif isinstance(image, Image.Image):
        array = _pil_array(image)
    else:
        array = _as_array(image)
    rgb, scaled_from_unit = _rgb_from_array(array)
    return rgb, (UNIT_FLOAT_WARNING,) if scaled_from_unit else ()


def fit(rgb: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    """Resize an image to a model's input size, with the right interpolation per axis.

    An axis that shrinks is area-averaged (``cv2.INTER_AREA``: every source pixel counts, so
    fine texture averages out instead of aliasing); an axis that grows is interpolated
    bilinearly (``cv2.INTER_LINEAR``). When one axis shrinks and the other grows, the image
    is resized in two steps (shrink first, then grow) so that each axis gets its own
    interpolation.

    Args:
        rgb: ``(H, W, 3)`` float32 image (as :func:`as_rgb_image` returns; any channel count
            works).
        height: output height in pixels, or ``None`` to keep ``H``.
        width: output width in pixels, or ``None`` to keep ``W``.

    Returns:
        ``(height, width, 3)`` float32. ``rgb`` itself (not a copy) when it already has that
        size and is float32.

    Raises:
        ValueError: if ``rgb`` is not a non-empty ``(H, W, C)`` array, or ``height`` /
            ``width`` is neither ``None`` nor a positive integer.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or 0 in rgb.shape:
        raise ValueError(f"fit expects an (H, W, 3) image; got shape {rgb.shape}")
    source_height, source_width = rgb.shape[:2]
    target_height = source_height if height is None else _side("height", height)
    target_width = source_width if width is None else _side("width", width)
    if (target_height, target_width) == (source_height, source_width):
        return rgb
    if target_height <= source_height and target_width <= source_width:
        return _resize(rgb, target_height, target_width, cv2.INTER_AREA)
    if target_height >= source_height and target_width >= source_width:
        return _resize(rgb, target_height, target_width, cv2.INTER_LINEAR)
    if target_height < source_height:  # rows shrink, columns grow
        shrunk = _resize(rgb, target_height, source_width, cv2.INTER_AREA)
    else:  # columns shrink, rows grow
        shrunk = _resize(rgb, source_height, target_width, cv2.INTER_AREA)
    return _resize(shrunk, target_height, target_width, cv2.INTER_LINEAR)


def shown_image(rgb: np.ndarray) -> np.ndarray:
    """The uint8 picture of a float image, as the widget panels show it.

    Args:
        rgb: ``(H, W, 3)`` float in 0..255 (finite).

    Returns:
        ``(H, W, 3)`` uint8: values rounded to the nearest integer, then clipped to 0..255.
    """
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32)), 0, 255).astype(np.uint8)


# --- sources ----------------------------------------------------------------------------


def _as_array(image) -> np.ndarray:
    """``np.asarray(image)``, with a clear error for things that are no array at all."""
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as error:  # e.g. ragged nested lists
        raise ValueError(f"expected {EXPECTED}; got a {type(image).__name__} ({error})") from None
    if array.dtype == object:
        raise ValueError(
            f"expected {EXPECTED}, a PIL image, an image file or a sample name; "
            f"got a {type(image).__name__} (dtype object)"
        )
    return array


def _read(source: str | os.PathLike) -> np.ndarray:
    """The pixels of an image file, or of a sample when ``source`` is a sample name."""
    path = Path(source).expanduser()
    if not path.is_file():
        samples = _sample_names()
        if isinstance(source, str) and source in samples:
            return _sample(source)
        if path.is_dir():
            raise ValueError(f"{os.fspath(source)!r} is a folder, not an image file")
        raise ValueError(
            f"no image file {os.fspath(source)!r} and no sample of that name; "
            f"samples: {', '.join(samples)}"
        )
    return _pil_array(_open(path, f"image file {os.fspath(path)!r}"))


def open_image_bytes(data, name: str | None = None) -> Image.Image:
    """Decode the content of an image file held in memory (an upload) as a PIL image.

    Read as a file is (:func:`as_rgb_image`): only the formats of :data:`FORMATS` (PNG, JPEG,
    WebP, BMP, GIF, TIFF), recognised by content whatever the name says, EXIF orientation
    applied. The decoded image is refused when it has more
    pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels): a small file can
    hold a huge image, and bytes usually come from someone else.

    Args:
        data: ``bytes``, ``bytearray`` or a ``memoryview`` of the file's content.
        name: what the error message calls it (default ``"image bytes"``), e.g. the file name.

    Returns:
        The loaded PIL image (its pixels read, no file left open), of the file's own mode.

    Raises:
        ValueError: for empty bytes, bytes of no format of :data:`FORMATS` (PostScript, PDF,
            not an image), a truncated image or an image over the pixel limit; one line that
            names ``name``.
    """
    label = "image bytes" if name is None else repr(str(name))
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{label}: expected bytes of an image file; got {type(data).__name__}")
    if memoryview(data).nbytes == 0:
        raise ValueError(f"cannot read {label}: it is empty (0 bytes)")
    return _open(io.BytesIO(data), label, refuse_over_limit=True)


def _open(source, label: str, refuse_over_limit: bool = False) -> Image.Image:
    """Open, load and EXIF-orient an image file (a path or a binary file object) with the
    readers of :data:`FORMATS` only; any failure is one ValueError that names ``label``.
    ``refuse_over_limit``: an image over Pillow's ``MAX_IMAGE_PIXELS`` is refused before it is
    decoded (checked here, not by a warnings filter: that is process-wide state, and other
    threads -- the classroom app's tabs -- decode meanwhile)."""
    try:
        with Image.open(source, formats=FORMATS) as opened:
            if opened.format not in (*FORMATS, "MPO"):  # MPO: JPEG's reader, phone photos
                raise Image.UnidentifiedImageError(opened.format)
            limit = Image.MAX_IMAGE_PIXELS
            pixels = opened.size[0] * opened.size[1]
            if refuse_over_limit and limit is not None and pixels > limit:
                raise Image.DecompressionBombWarning(
                    f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be "
                    "decompression bomb DOS attack."
                )
            opened.load()
            return ImageOps.exif_transpose(opened)
    except Exception as error:  # any decoder failure: one line that names the file
        if isinstance(error, Image.UnidentifiedImageError):
            found = _sniff(source)
            reason = f"its content is {found}, " if found else "its content is "
            reason += f"not a {FORMATS_TEXT} image"
        else:
            reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(f"cannot read {label}: {reason}") from None


def _sniff(source) -> str | None:
    """The name of a refused format from a file's first bytes, or None."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                head = file.read(64)
        else:
            source.seek(0)
            head = source.read(64)
    except (OSError, ValueError):
        return None
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def _sample_names() -> tuple[str, ...]:
    from gradcam_widget.data import scenes as data

    return data.SAMPLES


def _sample(name: str) -> np.ndarray:
    from gradcam_widget.data import scenes as data

    try:
        return data.sample(name)
    except ImportError:
        raise ValueError(
            f"sample {name!r} needs scikit-image: pip install scikit-image "
            "(or pip install 'gradcam_widget[photos]')"
        ) from None


def _pil_array(image: Image.Image) -> np.ndarray:
    """The pixels of a PIL image as an array the dtype rules apply to."""
    mode = image.mode
    if mode in ("1", "L", "RGB", "F") or mode.startswith("I;16"):
        return np.asarray(image)  # bool, uint8, float32, uint16 (maybe big-endian)
    if mode == "I":
        return _int32_levels(np.asarray(image))
    if mode == "LAB":
        return _lab_to_rgb(image)
    if mode == "La":  # premultiplied: Pillow converts it to "LA" only
        image = image.convert("LA")
    elif mode == "PA" or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # Pillow's P -> RGB warns about some transparency
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as error:
        raise ValueError(f"cannot convert a PIL image of mode {mode!r} to RGB ({error})") from None


def _int32_levels(values: np.ndarray) -> np.ndarray:
    """A PIL ``"I"`` image: as is in 0..255, as uint16 when its maximum is above 255."""
    if values.size == 0:
        return values
    low, high = int(values.min()), int(values.max())
    if high <= 255:
        return values  # the integer rule applies (and rejects negative values)
    if low < 0 or high > 65535:
        raise ValueError(
            f"a PIL mode 'I' image must hold values in 0..255 or 0..65535; found {low}..{high}"
        )
    return values.astype(np.uint16)


@functools.lru_cache(maxsize=1)
def _lab_transform():
    from PIL import ImageCms

    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )


def _lab_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL ``"LAB"`` image (L 0..255 for 0..100, signed a and b) as sRGB uint8."""
    try:
        from PIL import ImageCms

        return np.asarray(ImageCms.applyTransform(image, _lab_transform()))
    except Exception as error:  # no LittleCMS in this Pillow build, or a failed transform
        raise ValueError(
            f"cannot convert a PIL 'LAB' image to RGB (needs Pillow with LittleCMS): {error}"
        ) from None


# --- values -----------------------------------------------------------------------------


def _rgb_from_array(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """Check shape and dtype, apply the value rules; ``(rgb, scaled from 0..1)``."""
    dtype = array.dtype
    if not (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"expected {EXPECTED}, with a numeric dtype (uint8, uint16, bool, int or float); "
            f"got dtype {dtype}"
        )
    if array.ndim == 4 and array.shape[0] == 1:
        raise ValueError(f"expected {EXPECTED}; got a batch of shape {array.shape}: pass image[0]")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"expected {EXPECTED}; got shape {array.shape}")
    if array.shape[-1] == 4:
        array = array[:, :, :3]  # alpha dropped before the value checks: it is not shown
    if not dtype.isnative:  # e.g. PIL "I;16B": big-endian uint16
        array = array.astype(dtype.newbyteorder("="))
    rgb, scaled_from_unit = _levels(array)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.ascontiguousarray(rgb), scaled_from_unit


def _levels(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """float32 0..255 by the dtype rules (always a new array); ``(levels, scaled from 0..1)``."""
    dtype = array.dtype
    if dtype == np.bool_:
        return array.astype(np.float32) * np.float32(255.0), False
    if dtype == np.uint8:
        return array.astype(np.float32), False
    if dtype == np.uint16:
        return array.astype(np.float32) / _UINT16_STEP, False
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"expected integer pixel values in 0..255 (or a uint8 or uint16 image); "
                f"got {dtype} values in {low}..{high}"
            )
        return array.astype(np.float32), False
    if not np.isfinite(array).all():
        raise ValueError("the image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 255.0:
        raise ValueError(
            f"expected float pixel values in 0..1 or 0..255; got {low:.4g}..{high:.4g}. "
            "If the image was already preprocessed for the model, pass the image before "
            "preprocessing and give preprocess= instead"
        )
    levels = array.astype(np.float32)
    if 0.0 < high <= 1.0:
        return levels * np.float32(255.0), True
    return levels, False


def _side(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    return int(value)


def _resize(rgb: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    resized = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interpolation)
    if resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, None]
    return resized

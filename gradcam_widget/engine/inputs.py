"""Input checks: images and class indices become what the model takes, or one clear error.

Numpy only. The model's side of each check (its input size ``(H, W, C)``, its number of
classes) is handed in by the caller, which asked the engine.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from gradcam_widget.data import images


class ModelCheckError(ValueError):
    """The model, or what is asked of it, does not fit: found while tracing its pass, and
    passed on as it is (not reworded as a failure of the model on the input)."""


def check_class_index(class_index, num_classes: int | None) -> int | None:
    """``class_index`` as an int in ``0..num_classes - 1`` (``None`` passes through).

    Raises:
        ValueError: for a bool, a non-int or an index out of range, naming the range.
    """
    if class_index is None:
        return None
    if isinstance(class_index, (bool, np.bool_)) or not isinstance(class_index, (int, np.integer)):
        raise ValueError(f"class_index must be an int or None; got {class_index!r}")
    class_index = int(class_index)
    upper = "num_classes - 1" if num_classes is None else num_classes - 1
    if class_index < 0 or (num_classes is not None and class_index >= num_classes):
        raise ValueError(f"class_index must be in 0..{upper}; got {class_index}")
    return class_index


def prepare(image, input_size: tuple, preprocess) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One image fitted to the model and preprocessed.

    Args:
        image: anything :func:`gradcam_widget.images.read_rgb` reads.
        input_size: ``(H, W, C)`` the model fixes, ``None`` where free.
        preprocess: called on the ``(1, H, W, 3)`` float32 batch, or ``None``.

    Returns:
        ``(shown, inputs, notes)``: the image as fed to the model ``(H, W, 3)`` uint8, the
        model input ``(1, H, W, C)`` float32, and one line per thing the caller should know
        about how the image was read (to be issued as warnings).

    Raises:
        ValueError: for a bad image or a preprocess that fails or returns the wrong shape.
    """
    height, width, _ = input_size
    rgb, notes = images.read_rgb(image)
    rgb = images.fit(rgb, height, width)
    return images.shown_image(rgb), model_batch(rgb[None].copy(), preprocess, input_size), notes


def image_label(index: int, count: int | None = None, place: str | None = None) -> str:
    """How a message names image ``index`` (counting from 0) of ``count`` images (``None``:
    of a stream of unknown length), found at ``place`` in what was handed in (``None``:
    ``images[index]``): ``"image 3 of 5 (images[3])"``, ``"image 3 of 5 (images[1][0])"``,
    ``"image 3 (from the iterator, counting from 0)"``."""
    if count is None:
        return f"image {index} (from the iterator, counting from 0)"
    return f"image {index} of {count} ({place or f'images[{index}]'})"


def about_image(error: Exception, label: str) -> str:
    """``error``'s message about one image said of the image ``label`` names
    (:func:`image_label`): ``"the image contains NaN ..."`` becomes ``"image 3 of 5
    (images[3]) contains NaN ..."``."""
    text = str(error)
    if text.startswith("the image "):
        return f"{label} {text[len('the image ') :]}"
    return f"{label}: {text}"


def images_count(source) -> int | None:
    """How many images :func:`image_stream` gives from ``source`` when that is known
    beforehand (an array, or a list or tuple of images, ``(image, label, ...)`` tuples or
    batches ``(n, H, W, C)``), else ``None``."""
    labels = image_labels(source)
    return None if labels is None else labels.count


class ImageLabels:
    """How messages name the images :func:`image_stream` gives from one source
    (:func:`image_labels`): ``labels(3)`` is :func:`image_label` of image 3, at its place in
    the source."""

    def __init__(self, count: int | None, places: list | None = None):
        self.count = count
        self._places = places  # (first image, entry index, inside a tuple, a batch) per entry

    def __call__(self, index: int) -> str:
        if self.count is None or self._places is None or not 0 <= index < self.count:
            return image_label(index, self.count)
        firsts = [place[0] for place in self._places]
        first, entry, tupled, batch = self._places[bisect.bisect_right(firsts, index) - 1]
        place = f"images[{entry}]" + ("[0]" if tupled else "")
        if batch:
            place += f"[{index - first}]"
        return image_label(index, self.count, place)


def image_labels(source) -> ImageLabels | None:
    """:class:`ImageLabels` for ``source``: each image named by its index of how many there
    are and its place (``images[3]``, ``images[3][0]`` for the image of an ``(image, label)``
    tuple, ``images[1][2]`` for image 2 of a batch in entry 1) when that is known beforehand
    (an array, a list or a tuple), else by its index in the stream (a generator, a dataset)."""
    if isinstance(source, np.ndarray):
        return ImageLabels(len(source) if source.ndim == 4 else None)
    if not isinstance(source, (list, tuple)):
        return ImageLabels(None)
    places, count = [], 0
    for entry, item in enumerate(source):
        tupled = isinstance(item, tuple) and bool(item)
        image = item[0] if tupled else item
        batch = len(getattr(image, "shape", ())) == 4  # a batch of images in one entry
        places.append((count, entry, tupled, batch))
        try:
            count += int(image.shape[0]) if batch else 1
        except (TypeError, ValueError):  # a batch of a size not known (a symbolic tensor)
            return ImageLabels(None)
    return ImageLabels(count, places)


def _first_non_finite(batch: np.ndarray) -> int | None:
    """The index of the first image of ``batch`` with a NaN or infinite value, else None."""
    finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def model_batch(
    batch: np.ndarray,
    preprocess: Callable | None,
    input_size: tuple,
    start: int = 0,
    labels: Callable[[int], str] | None = None,
) -> np.ndarray:
    """``(N, H, W, 3)`` float32 RGB in 0..255 -> the model's input.

    ``preprocess`` is applied, RGB is averaged for a one-channel model, and the result is
    checked against the model's ``(H, W, C)`` (``None`` = any) and for finite values.

    Args:
        batch, preprocess, input_size: as above.
        start, labels: the batch is images ``start..`` of several, each named by
            ``labels(index)`` (:class:`ImageLabels`); ``None``: the batch is all there is (an
            image of several named ``images[i]``).

    Raises:
        ValueError: naming what the model takes (and the image, for NaN or infinity in a
            batch of several); for a preprocess that fails, one line saying so, the
            exception it raised chained (resource errors -- out of memory, too deep a
            recursion -- propagate as they are).
    """
    count, in_height, in_width = batch.shape[:3]
    if preprocess is not None:
        try:
            batch = np.asarray(preprocess(batch), dtype=np.float32)
        except (MemoryError, RecursionError):
            raise
        except Exception as error:
            raise ValueError(
                f"preprocess failed on a ({count}, H, W, 3) float32 batch: {error_said(error)}"
            ) from error
        if batch.ndim != 4 or batch.shape[0] != count:
            raise ValueError(
                f"preprocess must return a ({count}, H, W, C) batch; got {batch.shape}"
            )
    height, width, channels = input_size
    if channels == 1 and batch.shape[-1] == 3:
        batch = batch.mean(axis=-1, keepdims=True)
    wanted = (count, height or batch.shape[1], width or batch.shape[2], channels or batch.shape[3])
    if batch.shape != wanted:
        model_takes = f"(N, {height}, {width}, {channels})"
        if channels is not None and batch.shape[-1] != channels:
            raise ValueError(
                f"the model takes {channels} input channels, the image gives {batch.shape[-1]}: "
                f"pass preprocess= that turns the ({count}, H, W, 3) RGB batch into "
                f"{channels} channels (the model takes {model_takes})"
            )
        raise ValueError(
            f"preprocess returned {batch.shape} from a ({count}, {in_height}, {in_width}, 3) "
            f"batch; the model takes {model_takes}"
        )
    bad = _first_non_finite(batch)
    if bad is not None:
        if count == 1 and start == 0 and labels is None:
            raise ValueError("the preprocessed input contains NaN or infinite values")
        label = image_label(bad, count) if labels is None else labels(start + bad)
        raise ValueError(f"the preprocessed input of {label} contains NaN or infinite values")
    return batch.astype(np.float32)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def error_said(error: BaseException) -> str:
    """``"ValueError: its first line"`` of ``error`` (ANSI colours left out, at most 300
    characters); ``"ValueError"`` for an empty message, ``"Weird (its message could not be
    read)"`` when reading it raises."""
    kind = type(error).__name__
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - whatever __str__ raises, the message is unreadable
        return f"{kind} (its message could not be read)"
    text = _ANSI.sub("", text)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = line if len(line) <= 300 else line[:299] + "…"
    return f"{kind}: {line}" if line else kind


def check_image_batch(batch, input_size: tuple) -> np.ndarray:
    """An ``(N, H, W, 3)`` batch in 0..255 at the model's size, as float32.

    Raises:
        ValueError: for another shape, a size the model does not take, or NaN/infinity.
    """
    height, width, _ = input_size
    array = np.asarray(batch)
    expected = f"(N, {height or 'H'}, {width or 'W'}, 3)"
    if (
        array.ndim != 4
        or array.shape[-1] != 3
        or 0 in array.shape
        or (height is not None and array.shape[1] != height)
        or (width is not None and array.shape[2] != width)
    ):
        raise ValueError(f"images must be a batch {expected} in 0..255; got shape {array.shape}")
    array = array.astype(np.float32)
    bad = _first_non_finite(array)
    if bad is not None:
        raise ValueError(f"{image_label(bad, len(array))} contains NaN or infinite values")
    return array


def image_stream(source) -> Iterator:
    """The images of ``source`` one at a time: an ``(N, H, W, C)`` array, a list, a generator
    or a ``tf.data.Dataset`` of images (anything iterable; tensors are turned into arrays).

    Two dataset shapes are read as people make them: an element that is a tuple
    ``(image, label, ...)`` gives its image, and an element that is itself a batch
    ``(n, H, W, C)`` (``dataset.batch(n)``, ``image_dataset_from_directory``) gives its n
    images.

    Raises:
        ValueError: for a single image (``(H, W, 3)``) or something that is not iterable.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "getpixel"):
        raise ValueError(
            "images must be several images (an (N, H, W, 3) array, a list, a generator or a "
            f"dataset); got a single {type(source).__name__}: use gw.capture for one image"
        )
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise ValueError(
                f"images must be an (N, H, W, 3) array (or a list of images); got shape "
                f"{source.shape}: use gw.capture for one image"
            )
        return iter(source)
    if not isinstance(source, Iterable):
        raise ValueError(
            "images must be an (N, H, W, 3) array, a list, a generator or a dataset of images; "
            f"got {type(source).__name__}"
        )
    return _flattened(source)


def _flattened(source) -> Iterator:
    for item in source:
        if isinstance(item, tuple) and item:
            item = item[0]  # (image, label, ...): the image
        if hasattr(item, "numpy"):
            item = item.numpy()
        if isinstance(item, np.ndarray) and item.ndim == 4:
            yield from item  # a batch of images
        else:
            yield item

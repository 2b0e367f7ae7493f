"""What every audit source gives: numbered :class:`Item` objects (an image, or why it could
not be read) from a :class:`Source`, and the helpers sources share (printable names of files
whose names are not text, fingerprints, reading an image given as an array). See
:mod:`gradcam_widget.auditing.sources`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gradcam_widget.auditing.store_io import one_line
from gradcam_widget.data import images


@dataclass(frozen=True, eq=False)
class Item:
    """One image of a source.

    Attributes:
        index: its number in the source.
        id: a name for people: the path relative to the folder (a path given in a list:
            absolute), ``scenes-<seed>`` / ``shortcut-<seed>``, or the number; always valid
            text (a file name that is not: :func:`printable_name` of it).
        image: ``(H, W, 3)`` float32 RGB in 0..255 (fitted to the source's
            :meth:`~Source.set_size` when set), or ``None`` when it could not be read.
        error: why it could not be read (one line), else ``None``.
        true_class: the class index of the image's label, ``None`` if unknown (or several).
        true_label: the label's name (several joined by ``+``), ``None`` if unknown.
        masks: ``{class index: (H, W) bool}`` object masks when known (scenes), else ``None``.
        file_fingerprint: for an image file, :func:`file_fingerprint` of it as it was read
            (size, modification time and content hash), else ``None``.
    """

    index: int
    id: str
    image: np.ndarray | None = None
    error: str | None = None
    true_class: int | None = None
    true_label: str | None = None
    masks: Mapping[int, np.ndarray] | None = None
    tagged: bool | None = None
    file_fingerprint: str | None = None


class Source:
    """Numbered images; subclasses say how to read image ``i``.

    Attributes:
        description: what the images are, for the manifest and messages.
        has_labels: True when items carry their true class.
        has_masks: True when items carry object masks.
    """

    description: str = "images"
    has_labels: bool = False
    has_masks: bool = False
    size: tuple[int, int] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A text that changes when the images change."""
        raise NotImplementedError

    def items(self, start: int, stop: int) -> Iterator[Item]:
        """Items ``start ..< stop``, in order."""
        raise NotImplementedError

    def shards(self, shard_size: int, skip=frozenset()) -> Iterator[tuple[int, list[Item]]]:
        """``(shard number, items)`` for every shard of ``shard_size`` consecutive images
        whose number is not in ``skip``; the images of skipped shards are never read."""
        count = len(self)
        for shard in range(-(-count // shard_size)):
            if shard in skip:
                continue
            start = shard * shard_size
            yield shard, list(self.items(start, min(start + shard_size, count)))

    def set_class_names(self, class_names: Sequence[str] | None) -> None:
        """Map label names to the model's class indices (folders name their class)."""

    def set_size(self, size: tuple[int, int] | None) -> None:
        """Fit every image to ``(H, W)`` as it is read, so that a shard of large photos holds
        model-sized images only."""
        self.size = None if size is None else (int(size[0]), int(size[1]))

    @property
    def distributable(self) -> bool:
        """True when the source can be sent to other processes (Ray workers)."""
        return True


def encoded(text: str) -> bytes:
    """``text`` as UTF-8, a file name's undecodable bytes (surrogateescape) as the bytes they
    were; any other lone surrogate as its UTF-8 form (surrogatepass). The same bytes as
    ``text.encode()`` for any valid text, so fingerprints of valid names do not change."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def printable_name(name: str) -> str:
    """``name`` as valid text: itself when it is; else (a file name that is not valid UTF-8)
    each undecodable byte written ``\\xNN`` (``'bad\\udcff.png'`` gives ``'bad\\\\xff.png'``),
    and any other lone surrogate ``\\udNNN``. For the table and the manifest, which hold
    UTF-8 text only, and for people."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def name_of_id(name: str) -> str:
    """The file name an :attr:`Item.id` was made from by :func:`printable_name` (each
    ``\\xNN`` of a byte from 0x80 on back to the byte, as Python names it). Ambiguous for a
    name that holds such text itself: try the id as it is first."""
    return _ESCAPED_BYTE.sub(lambda match: chr(0xDC00 + int(match[1], 16)), name)


def hash_parts(*parts) -> str:
    """A short hash of ``parts`` (bytes as they are, anything else as its text, a file name's
    undecodable bytes as those bytes): what a source's fingerprint is made of."""
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else encoded(str(part)))
        digest.update(b"\0")
    return digest.hexdigest()


def fitted(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``rgb`` fitted to ``size`` (``(H, W)``; ``None``: as it is)."""
    if size is None or rgb.shape[:2] == tuple(size):
        return rgb
    return images.fit(rgb, *size)


def error_text(error: BaseException) -> str:
    """An error's message on one line, made printable (an :attr:`Item.error`)."""
    return printable_name(one_line(error))


def read_array(index: int, image, name: str, size=None, **labels) -> Item:
    """The :class:`Item` of an image given as an array (with an ``error`` when it is not an
    image, or holds NaN or infinite values), fitted to ``size``."""
    try:
        rgb, _ = images.read_rgb(image)
    except ValueError as error:
        return Item(index=index, id=name, error=error_text(error), **labels)
    if not np.isfinite(rgb).all():
        return Item(index=index, id=name, error="the image contains NaN or infinite values",
                    **labels)  # fmt: skip
    return Item(index=index, id=name, image=fitted(rgb, size), **labels)


def label_fields(label, class_names) -> dict:
    """``true_class`` and ``true_label`` of one label (an index or a name)."""
    if label is None:
        return {}
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        label = int(label)  # 3.0 from a float label array is class 3
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        name = class_names[label] if class_names and 0 <= label < len(class_names) else None
        return {"true_class": int(label), "true_label": name or str(int(label))}
    name = str(label)
    if class_names and name in class_names:
        return {"true_class": class_names.index(name), "true_label": name}
    return {"true_label": printable_name(name)}  # stored: valid text only

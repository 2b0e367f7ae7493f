"""Where an audit's images come from: a folder, a list of paths, an array, a dataset, scenes.

Every source numbers its images ``0, 1, 2 ...`` in a fixed order (a folder: its files sorted
by path), so that an image's number names it across runs: an audit cut into shards of
consecutive numbers can stop anywhere and resume where it stopped. A source also has a
*fingerprint*: a short text that changes when its images change (a file added, an array
edited), so that an audit never resumes on other images.

An image that cannot be read (a corrupt file, a text file named ``.jpg``, NaN pixels) is an
:class:`Item` with an ``error`` instead of an image: the audit lists it and goes on. So is a
name that is no regular file (a broken symbolic link, a symbolic link loop, a FIFO, a socket,
a device): it is listed with the reason and never opened, so a FIFO never blocks the run.

**Names that are not text.** A file system may hold names that are not valid UTF-8 (any
bytes but ``/`` and NUL); Python gives them as ``str`` with the undecodable bytes as lone
surrogates (``b"bad\\xff.png"`` is ``"bad\\udcff.png"``). Such a file is read like any
other: its name is hashed into the fingerprint as its bytes (:func:`os.fsencode`,
surrogateescape), and its :attr:`Item.id`, which goes into the Parquet table (UTF-8 text
only) and the manifest, is the name made printable by :func:`printable_name`: each
undecodable byte written as a backslash, ``x`` and two hex digits (``bad\\xff.png``);
:func:`name_of_id` turns it back into the file's name. A folder label is made printable
the same way.

The sources are kept in :mod:`~gradcam_widget.auditing.source_items` (the item, the
source, shared helpers) and :mod:`~gradcam_widget.auditing.source_files` (paths and folders),
whose names this module gives too; here: arrays, scenes, datasets and :func:`as_source`.

Only numpy, OpenCV and Pillow are used by the sources (a ``tf.data.Dataset`` is read as it
comes); they never import TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradcam_widget.auditing.source_files import (  # noqa: F401 - the sources' names, here too
    IMAGE_EXTENSIONS,
    Folder,
    Paths,
    file_fingerprint,
    file_problem,
    match_folders,
)
from gradcam_widget.auditing.source_items import (  # noqa: F401 - the sources' names, here too
    Item,
    Source,
    encoded,
    error_text,
    fitted,
    hash_parts,
    label_fields,
    name_of_id,
    printable_name,
    read_array,
)
from gradcam_widget.data import scenes as data

SCENE_KINDS = ("scenes", "shortcut")
"""Kinds of generated scenes: :func:`gradcam_widget.data.scene` (one object unless asked) and
:func:`gradcam_widget.data.shortcut_scene` (one object; stars mostly tagged)."""

_SCENE_SPEC = re.compile(r"^(?P<kind>[a-z]+):(?P<start>\d+)-(?P<stop>\d+)$")


class Arrays(Source):
    """Images in an ``(N, H, W, C)`` array (or a list of arrays), with optional labels.

    Args:
        images: the images (any dtype :func:`gradcam_widget.images.as_rgb_image` reads).
        labels: optional ``(N,)`` class indices or names.
        masks: optional per-image ``{class index: (H, W) bool}`` object masks.
    """

    def __init__(self, images_, labels=None, masks: Sequence[Mapping] | None = None):
        if isinstance(images_, np.ndarray) and (
            images_.ndim not in (3, 4) or (images_.ndim == 3 and images_.shape[-1] in (3, 4))
        ):
            raise ValueError(
                "images must be an (N, H, W, 3) array or a list of images; got shape "
                f"{images_.shape}"
            )
        self.images = images_
        count = len(images_)
        if count == 0:
            raise ValueError("there are no images to audit")
        for name, values in (("labels", labels), ("masks", masks)):
            if values is not None and len(values) != count:
                raise ValueError(f"{name} has {len(values)} entries for {count} images")
        self.labels = None if labels is None else list(labels)
        self.masks = masks
        self.class_names = None
        self.has_labels, self.has_masks = labels is not None, masks is not None
        self.description = f"{count} images in an array"

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=12)
        for image in self.images:
            array = np.ascontiguousarray(image)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
        digest.update(repr(self.labels).encode())
        return digest.hexdigest()

    def set_class_names(self, class_names) -> None:
        self.class_names = None if class_names is None else tuple(class_names)

    def items(self, start: int, stop: int) -> Iterator[Item]:
        for index in range(start, stop):
            fields = {} if self.labels is None else label_fields(self.labels[index],
                                                                  self.class_names)  # fmt: skip
            if self.masks is not None:
                fields["masks"] = self.masks[index]
            yield read_array(index, self.images[index], f"{index:06d}", self.size, **fields)


class Scenes(Source):
    """Generated shape scenes by seed, with their labels and object masks.

    Args:
        start, stop: seeds ``start ..< stop`` (evaluation seeds start at 1_000_000; the
            shipped models never saw them).
        kind: ``"scenes"`` (:func:`gradcam_widget.data.scene`) or ``"shortcut"``
            (:func:`gradcam_widget.data.shortcut_scene`: one object, stars mostly tagged).
        n_objects: objects per scene for ``"scenes"`` (one object gives one true class).
    """

    has_labels = True
    has_masks = True

    def __init__(self, start: int, stop: int, kind: str = "scenes", n_objects: int = 1):
        if kind not in SCENE_KINDS:
            raise ValueError(f"kind must be one of {SCENE_KINDS}; got {kind!r}")
        if not 0 <= start < stop:
            raise ValueError(f"scenes need 0 <= start < stop; got {start}..{stop}")
        if kind == "shortcut" and n_objects != 1:
            raise ValueError("shortcut scenes hold one object each (n_objects=1)")
        self.start, self.stop, self.kind, self.n_objects = int(start), int(stop), kind, n_objects
        self.description = f"{stop - start} {kind} (seeds {start}..{stop - 1})"

    @classmethod
    def parse(cls, spec: str) -> Scenes:
        """``"scenes:1000000-1000500"`` or ``"shortcut:1000000-1000500"`` (the CLI's form)."""
        match = _SCENE_SPEC.match(spec)
        if not match or match["kind"] not in SCENE_KINDS:
            raise ValueError(
                f"scenes are named KIND:START-STOP with KIND one of {SCENE_KINDS}, e.g. "
                f"scenes:1000000-1000500; got {spec!r}"
            )
        return cls(int(match["start"]), int(match["stop"]), kind=match["kind"])

    def __len__(self) -> int:
        return self.stop - self.start

    def fingerprint(self) -> str:
        return hash_parts("scenes", self.kind, self.start, self.stop, self.n_objects)

    def scene(self, index: int) -> data.Scene:
        seed = self.start + index
        if self.kind == "shortcut":
            return data.shortcut_scene(seed)
        return data.scene(seed, n_objects=self.n_objects)

    def items(self, start: int, stop: int) -> Iterator[Item]:
        for index in range(start, stop):
            item = self.scene(index)
            names = item.class_names
            yield Item(
                index=index,
                id=f"{self.kind}-{item.seed}",
                image=fitted(item.image.astype(np.float32), self.size),
                true_class=item.labels[0] if len(item.labels) == 1 else None,
                true_label="+".join(names) if names else None,
                masks=item.masks,
                tagged=getattr(item, "tagged", None) if self.kind == "shortcut" else None,
            )


@dataclass(eq=False)
class DatasetSource(Source):
    """A ``tf.data.Dataset`` of images, ``(image, label)`` pairs, or batches of either.

    Its images are numbered in the order the dataset gives them (shuffle it with a fixed
    seed, or not at all, to resume an audit). A dataset cannot be fingerprinted without
    reading it all: the fingerprint holds its element spec and length, so resuming on a
    changed dataset of the same shape is the caller's care. It cannot be sent to Ray workers.
    """

    dataset: object
    labels: bool = False
    class_names: tuple | None = field(default=None)

    def __post_init__(self):
        cardinality = int(self.dataset.cardinality())
        if cardinality == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                "the dataset repeats forever (.repeat() without a count): an audit needs a "
                "finite one, e.g. dataset.take(n)"
            )
        self._cardinality = cardinality
        spec = self.dataset.element_spec
        image_spec = spec[0] if isinstance(spec, tuple) else spec
        batched = len(getattr(image_spec, "shape", ())) == 4
        # a batched dataset counts batches, not images: its image count is known once read
        self._length = cardinality if cardinality >= 0 and not batched else None
        self.has_labels = self.labels
        self.description = "a tf.data.Dataset" + (
            f" ({cardinality} {'batches' if batched else 'images'})" if cardinality >= 0 else ""
        )

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("the dataset's length is unknown")
        return self._length

    @property
    def length(self) -> int | None:
        return self._length

    @property
    def distributable(self) -> bool:
        return False

    def fingerprint(self) -> str:
        return hash_parts("dataset", repr(self.dataset.element_spec), self._cardinality)

    def set_class_names(self, class_names) -> None:
        self.class_names = None if class_names is None else tuple(class_names)

    def _stream(self) -> Iterator[tuple]:
        for element in self.dataset:
            label = None
            if isinstance(element, tuple):
                if self.labels and len(element) > 1:
                    label = np.asarray(element[1])
                element = element[0]
            array = np.asarray(element)
            if array.ndim == 4:
                labels = label if label is not None else [None] * len(array)
                yield from zip(array, labels, strict=True)
            else:
                yield array, label

    def shards(self, shard_size: int, skip=frozenset()):
        shard, batch, index = 0, [], 0
        for image, label in self._stream():
            if shard not in skip:
                fields = {} if label is None else label_fields(_scalar_label(label),
                                                                self.class_names)  # fmt: skip
                batch.append(read_array(index, image, f"{index:06d}", self.size, **fields))
            index += 1
            if index % shard_size == 0:
                if shard not in skip:
                    yield shard, batch
                shard, batch = shard + 1, []
        if batch:
            yield shard, batch
        self._length = index

    def items(self, start: int, stop: int) -> Iterator[Item]:
        for _, shard_items in self.shards(stop - start):
            for item in shard_items:
                if start <= item.index < stop:
                    yield item


def _scalar_label(label: np.ndarray):
    """A class index from a label: an int, or the argmax of a one-hot vector."""
    label = np.asarray(label)
    if label.ndim == 0:
        value = label.item()
        return value.decode() if isinstance(value, bytes) else value
    return int(np.argmax(label))


def as_source(source, labels=None) -> Source:
    """Any supported source as a :class:`Source`.

    Args:
        source: a :class:`Source`; a folder path; a list of image paths; an ``(N, H, W, C)``
            array or a list of arrays; a ``tf.data.Dataset``; or a scene spec
            ``"scenes:START-STOP"`` / ``"shortcut:START-STOP"``.
        labels: for a folder, ``"folders"`` takes classes from sub-folder names; for paths
            or arrays, one label per image; for a dataset, ``True`` reads ``(image, label)``
            pairs' labels.

    Raises:
        ValueError: for anything else, naming what is accepted.
    """
    if isinstance(source, Source):
        return source
    if isinstance(labels, str) and not (
        isinstance(source, (str, os.PathLike)) and Path(os.fspath(source)).is_dir()
    ):
        raise ValueError(
            f"labels={labels!r} names the classes of a folder's images by sub-folder; for "
            "paths or arrays pass one label per image (labels=[...])"
        )
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if _SCENE_SPEC.match(text) and not Path(text).exists():
            return Scenes.parse(text)
        if Path(os.path.expanduser(text)).is_dir():
            return Folder(text, labels=labels)
        raise ValueError(
            f"{text!r} is neither a folder of images nor a scene spec like 'scenes:1000000-1000500'"
        )
    if type(source).__module__.startswith("tensorflow") and hasattr(source, "element_spec"):
        return DatasetSource(source, labels=bool(labels))
    if isinstance(source, np.ndarray):
        return Arrays(source, labels=labels)
    if isinstance(source, Sequence) and source:
        if all(isinstance(entry, (str, os.PathLike)) for entry in source):
            return Paths(source, labels=labels)
        return Arrays(source, labels=labels)
    raise ValueError(
        "source must be a folder, a list of image paths, an (N, H, W, 3) array, a "
        "tf.data.Dataset or a scene spec like 'scenes:1000000-1000500'; got "
        f"{type(source).__name__}"
    )

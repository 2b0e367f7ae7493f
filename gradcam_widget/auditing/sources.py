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

Only numpy, OpenCV and Pillow are used here (a ``tf.data.Dataset`` is read as it comes);
this module never imports TensorFlow.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradcam_widget.data import images
from gradcam_widget.data import scenes as data

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File name endings a :class:`Folder` reads (any case)."""

SCENE_KINDS = ("scenes", "shortcut")
"""Kinds of generated scenes: :func:`gradcam_widget.data.scene` (one object unless asked) and
:func:`gradcam_widget.data.shortcut_scene` (one object; stars mostly tagged)."""

_SCENE_SPEC = re.compile(r"^(?P<kind>[a-z]+):(?P<start>\d+)-(?P<stop>\d+)$")


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


def _encoded(text: str) -> bytes:
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


def _hash(*parts) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else _encoded(str(part)))
        digest.update(b"\0")
    return digest.hexdigest()


def _fitted(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or rgb.shape[:2] == tuple(size):
        return rgb
    return images.fit(rgb, *size)


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def file_problem(path) -> str | None:
    """Why ``path`` cannot be an image file without opening it (one line), else ``None``:
    ``"broken symbolic link ..."``, ``"symbolic link loop"`` or ``"not a regular file
    (FIFO)"`` (socket, character device, block device, a folder). A missing file or one that
    cannot be looked at gives ``None``: reading it says why."""
    try:
        status = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if error.errno == errno.ENOENT and os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                return "broken symbolic link"
            return f"broken symbolic link (its target {target!r} does not exist)"
        return None
    if stat.S_ISREG(status.st_mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(status.st_mode)), "unknown kind")
    return f"not a regular file ({kind})"


def file_fingerprint(path) -> str:
    """``"<size>:<modification time, ns>:<content hash>"`` of a file: what an audit's row can
    keep to tell, later, that the file is still the picture it explained.

    Raises:
        OSError: for a file that cannot be read; ValueError for one that is no regular file
            (opened without blocking and looked at before any read: a FIFO never blocks).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(status.st_mode)), "unknown")
            raise ValueError(f"{os.fspath(path)!r} is not a regular file ({kind})")
        digest = hashlib.blake2b(digest_size=12)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{status.st_size}:{status.st_mtime_ns}:{digest.hexdigest()}"


def _read_file(index: int, path: Path, name: str, size=None, **labels) -> Item:
    problem = file_problem(path)  # looked at, not opened: a FIFO would block the read
    if problem:
        return Item(index=index, id=name, error=problem, **labels)
    try:
        fingerprint = file_fingerprint(path)  # before the read: a file changed in between
        rgb, _ = images.read_rgb(path)  # is found changed later, never taken as unchanged
    except (ValueError, OSError) as error:
        return Item(index=index, id=name, error=_one_line(error), **labels)
    return Item(index=index, id=name, image=_fitted(rgb, size), file_fingerprint=fingerprint,
                **labels)  # fmt: skip


def _one_line(error: BaseException) -> str:
    return printable_name(" ".join(str(error).split())[:300] or type(error).__name__)


def _read_array(index: int, image, name: str, size=None, **labels) -> Item:
    try:
        rgb, _ = images.read_rgb(image)
    except ValueError as error:
        return Item(index=index, id=name, error=_one_line(error), **labels)
    if not np.isfinite(rgb).all():
        return Item(index=index, id=name, error="the image contains NaN or infinite values",
                    **labels)  # fmt: skip
    return Item(index=index, id=name, image=_fitted(rgb, size), **labels)


class Paths(Source):
    """Image files by path, in the order given.

    Args:
        paths: image file paths.
        labels: optional true class per path (a class index or a class name).
        root: paths are named relative to it (default: as given).
    """

    def __init__(self, paths: Sequence, labels: Sequence | None = None, root=None):
        self.paths = [Path(os.path.expanduser(str(path))).absolute() for path in paths]
        if not self.paths:
            raise ValueError("there are no image paths to audit")
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(f"labels has {len(labels)} entries for {len(self.paths)} paths")
        self.labels = None if labels is None else list(labels)
        self.root = None if root is None else Path(root).absolute()
        self.class_names: tuple[str, ...] | None = None
        self.has_labels = labels is not None
        self.description = f"{len(self.paths)} image files"

    def __len__(self) -> int:
        return len(self.paths)

    def _file_name(self, path: Path) -> str:
        """Its name as the file system gives it (maybe not valid text: see the module)."""
        if self.root is not None:
            return path.relative_to(self.root).as_posix()
        return str(path)

    def _name(self, path: Path) -> str:
        """Its :attr:`Item.id`: its name, printable."""
        return printable_name(self._file_name(path))

    def fingerprint(self) -> str:
        entries = []
        for path in self.paths:
            try:
                stat = path.stat()
                size, modified = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, modified = -1, -1
            entries.append(f"{self._file_name(path)}\t{size}\t{modified}")
        return _hash("paths", *entries, *(self.labels or ()))

    def set_class_names(self, class_names) -> None:
        self.class_names = None if class_names is None else tuple(class_names)

    def _label(self, index: int) -> dict:
        if self.labels is None:
            return {}
        return _label_fields(self.labels[index], self.class_names)

    def items(self, start: int, stop: int) -> Iterator[Item]:
        for index in range(start, stop):
            path = self.paths[index]
            yield _read_file(index, path, self._name(path), self.size, **self._label(index))


def _label_fields(label, class_names) -> dict:
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


class Folder(Paths):
    """Every image file under a folder (recursive), sorted by path.

    Args:
        root: the folder.
        labels: ``"folders"`` to take each image's class from the name of the sub-folder it
            is in (``root/star/001.png`` is a ``star``), matched to the model's class names
            (or, for a model without names, the sorted sub-folder names are classes
            ``0, 1, ...`` as ``keras.utils.image_dataset_from_directory`` numbers them).
            A sub-folder named as no class is matched to one whose name differs only in case
            (``Star`` is ``star``) when exactly one does; the images of a sub-folder matched to
            no class have no true class, and :meth:`set_class_names` warns, naming it.
            ``None``: no labels.

    Names ending otherwise than :data:`IMAGE_EXTENSIONS` are not images and are not listed;
    hidden files and folders (a leading ``.``) are left out, and so are folders. Any other
    entry with an image name is listed, a broken symbolic link or a FIFO included: reading it
    gives an :class:`Item` whose ``error`` says why it is no image (the audit lists it as
    skipped).
    """

    def __init__(self, root, labels: str | None = None):
        root = Path(os.path.expanduser(str(root)))
        if not root.is_dir():
            raise ValueError(f"{str(root)!r} is not a folder of images")
        if labels not in (None, "folders"):
            raise ValueError(f"labels must be None or 'folders'; got {labels!r}")
        paths = sorted(
            path
            for path in root.rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in path.relative_to(root).parts)
            and not path.is_dir()  # a folder named x.png: its files are listed
        )
        if not paths:
            raise ValueError(
                f"{str(root)!r} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        folder_labels = None
        if labels == "folders":  # a label is text: a folder's name made printable
            folder_labels = [printable_name(path.relative_to(root).parts[0]) for path in paths]
            if any(len(path.relative_to(root).parts) < 2 for path in paths):
                loose = next(p for p in paths if len(p.relative_to(root).parts) < 2)
                raise ValueError(
                    f"labels='folders' takes the class from the sub-folder, but "
                    f"{loose.relative_to(root).as_posix()!r} is not in a sub-folder of "
                    f"{str(root)!r}"
                )
        super().__init__(paths, labels=folder_labels, root=root)
        self.folder_names = sorted(set(folder_labels or ()))
        self.folder_classes: dict[str, str] = {}
        """Sub-folder name -> the class name it was matched to, where they differ (case)."""
        self.unmatched_folders: dict[str, str] = {}
        """Sub-folder name -> why it is matched to no class (its images have none)."""
        self.description = f"{len(paths)} images under {root}" + (
            " (classes from sub-folders)" if labels else ""
        )

    def fingerprint(self) -> str:
        listed = super().fingerprint()
        if not self.folder_classes:  # as before matching by case existed
            return listed
        matches = (f"{folder}\t{name}" for folder, name in sorted(self.folder_classes.items()))
        return _hash("folder classes", listed, *matches)

    def set_class_names(self, class_names) -> None:
        """Match the sub-folders to ``class_names`` (see ``labels``); warns once, naming the
        sub-folders matched to no class and how many images they hold."""
        names = tuple(class_names) if class_names else tuple(self.folder_names)
        self.class_names = names
        self.folder_classes, self.unmatched_folders = _match_folders(self.folder_names, names)
        if not self.unmatched_folders:
            return
        counts = {folder: 0 for folder in self.unmatched_folders}
        for folder in self.labels or ():
            if folder in counts:
                counts[folder] += 1
        listed = "; ".join(
            f"{folder!r} ({counts[folder]} image{'s' if counts[folder] != 1 else ''}: {why})"
            for folder, why in self.unmatched_folders.items()
        )
        images_without = sum(counts.values())
        warnings.warn(
            f"labels='folders': {images_without} of {len(self)} images have no true class, "
            f"their sub-folder matching no class of the model: {listed}; the classes are "
            f"{', '.join(map(repr, names))}",
            UserWarning,
            stacklevel=2,
        )

    def _label(self, index: int) -> dict:
        if self.labels is None:
            return {}
        folder = self.labels[index]
        return _label_fields(self.folder_classes.get(folder, folder), self.class_names)


def _match_folders(folders, class_names) -> tuple[dict[str, str], dict[str, str]]:
    """``({folder: class name} for folders matched by case only, {folder: why} for folders
    matched to no class)``. A folder named exactly as a class is that class; else the one
    class whose name equals it ignoring case; else (none, or several) no class."""
    by_case: dict[str, list[str]] = {}
    for name in class_names:
        by_case.setdefault(str(name).casefold(), []).append(str(name))
    exact = {str(name) for name in class_names}
    matched, unmatched = {}, {}
    for folder in folders:
        if folder in exact:
            continue
        candidates = by_case.get(folder.casefold(), [])
        if len(candidates) == 1:
            matched[folder] = candidates[0]
        elif candidates:
            unmatched[folder] = (
                f"it matches {' and '.join(map(repr, candidates))} but for case: ambiguous"
            )
        else:
            unmatched[folder] = "no class of that name"
    return matched, unmatched


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
            fields = {} if self.labels is None else _label_fields(self.labels[index],
                                                                  self.class_names)  # fmt: skip
            if self.masks is not None:
                fields["masks"] = self.masks[index]
            yield _read_array(index, self.images[index], f"{index:06d}", self.size, **fields)


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
        return _hash("scenes", self.kind, self.start, self.stop, self.n_objects)

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
                image=_fitted(item.image.astype(np.float32), self.size),
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
        return _hash("dataset", repr(self.dataset.element_spec), self._cardinality)

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
                fields = {} if label is None else _label_fields(_scalar_label(label),
                                                                self.class_names)  # fmt: skip
                batch.append(_read_array(index, image, f"{index:06d}", self.size, **fields))
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

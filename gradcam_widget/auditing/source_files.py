"""Sources of image files: a list of paths (:class:`Paths`) and a folder read recursively
(:class:`Folder`), with what tells a file is readable (:func:`file_problem`) and whether it
changed (:func:`file_fingerprint`). See :mod:`gradcam_widget.auditing.sources`."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from gradcam_widget.auditing.source_items import (
    Item,
    Source,
    error_text,
    fitted,
    hash_parts,
    label_fields,
    printable_name,
)
from gradcam_widget.data import images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File name endings a :class:`Folder` reads (any case)."""


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
        return Item(index=index, id=name, error=error_text(error), **labels)
    return Item(index=index, id=name, image=fitted(rgb, size), file_fingerprint=fingerprint,
                **labels)  # fmt: skip


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
        return hash_parts("paths", *entries, *(self.labels or ()))

    def set_class_names(self, class_names) -> None:
        self.class_names = None if class_names is None else tuple(class_names)

    def label_of(self, index: int) -> dict:
        """``true_class`` and ``true_label`` of image ``index`` (empty when it has no label)."""
        if self.labels is None:
            return {}
        return label_fields(self.labels[index], self.class_names)

    def items(self, start: int, stop: int) -> Iterator[Item]:
        for index in range(start, stop):
            path = self.paths[index]
            yield _read_file(index, path, self._name(path), self.size, **self.label_of(index))


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
        return hash_parts("folder classes", listed, *matches)

    def set_class_names(self, class_names) -> None:
        """Match the sub-folders to ``class_names`` (see ``labels``); warns once, naming the
        sub-folders matched to no class and how many images they hold."""
        names = tuple(class_names) if class_names else tuple(self.folder_names)
        self.class_names = names
        self.folder_classes, self.unmatched_folders = match_folders(self.folder_names, names)
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

    def label_of(self, index: int) -> dict:
        """``true_class`` and ``true_label`` of image ``index`` (empty when it has no label)."""
        if self.labels is None:
            return {}
        folder = self.labels[index]
        return label_fields(self.folder_classes.get(folder, folder), self.class_names)


def match_folders(folders, class_names) -> tuple[dict[str, str], dict[str, str]]:
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

"""What a folder holds before a run: what the package wrote there (:func:`own_temporary`,
:func:`foreign_entries`) and what is where the store keeps its own files but is not one
(:func:`unusual_entries`); see *The folder, before and after* in
:mod:`gradcam_widget.auditing.store`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gradcam_widget.auditing.store_io import kind_of, open_regular, read_json
from gradcam_widget.auditing.store_layout import (
    LEGACY_SINCE,
    LEGACY_TEMPORARY,
    LOCK,
    LOCK_LIMIT,
    LOCK_MARK,
    MANIFEST,
    OWN_FOLDERS,
    SHARD_FILES,
    SIGNATURES,
    TEMPORARY,
)

# --- the folder before a run ----------------------------------------------------------------


def _is_lock_content(content) -> bool:
    """Whether parsed JSON is what a run writes into ``.lock``: marked with
    :data:`LOCK_MARK`, or exactly the ``pid``, ``host`` and ``since`` that versions before the
    mark wrote (a UTC time to the second)."""
    if not isinstance(content, dict):
        return False
    if content.get("lock") == LOCK_MARK:
        return True
    return (
        set(content) == {"pid", "host", "since"}
        and type(content["pid"]) is int
        and isinstance(content["host"], str)
        and isinstance(content["since"], str)
        and LEGACY_SINCE.match(content["since"]) is not None
    )


def _lock_file_is_ours(path: Path) -> bool:
    """Whether ``path`` is a lock file the package wrote (see :func:`_is_lock_content`); an
    empty one, or one of other content, is a user's."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        content = read_json(path, LOCK_LIMIT)
    except (OSError, ValueError):
        return False
    return _is_lock_content(content)


def _begins_as_ours(path: Path, name: str) -> bool:
    """Whether the regular file ``path``, named as an earlier version named a file being
    written (``<name>.<pid>``), begins as the package's files named ``name`` do (a file
    shorter than that beginning: as far as it goes; an empty file is not the package's)."""
    signature = next((sig for ending, sig in SIGNATURES if name.endswith(ending)), None)
    if signature is None:
        return False
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open_regular(path) as handle:
            start = handle.read(len(signature))
    except OSError:
        return False
    return bool(start) and signature.startswith(start)


def own_temporary(path) -> bool:
    """Whether ``path`` in ``.partial/`` is a file the package was writing when a run was
    killed: a regular file named as :func:`atomic_write` names them, or named as earlier
    versions did and beginning as the package's file of that name (see the module's *The
    folder, before and after*)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    if TEMPORARY.match(path.name):
        return True
    match = LEGACY_TEMPORARY.match(path.name)
    return match is not None and _begins_as_ours(path, match[1])


def foreign_entries(folder) -> list[str]:
    """What in a folder without a manifest the package did not write (sorted names relative
    to it): anything but the store's empty folders, ``.lock`` and half-written manifests and
    lock files in ``.partial/`` (all a run killed before its manifest leaves)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    foreign = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        name = entry.name
        if name == LOCK and entry.is_file(follow_symlinks=False):
            if not _lock_file_is_ours(Path(entry.path)):
                foreign.append(name)
        elif name == ".partial" and entry.is_dir(follow_symlinks=False):
            for inner in sorted(os.listdir(entry.path)):
                if not (
                    inner.startswith((f"{MANIFEST}.", f"{LOCK}."))
                    and own_temporary(Path(entry.path, inner))
                ):
                    foreign.append(f".partial/{inner}")
        elif name in OWN_FOLDERS and entry.is_dir(follow_symlinks=False):
            foreign += [f"{name}/{inner}" for inner in sorted(os.listdir(entry.path))]
        else:
            foreign.append(name)
    return foreign


def unusual_entries(folder) -> list[str]:
    """What in a results folder, at a name the store reads, writes or removes, is not what
    the store puts there (each with what it is: ``"commits/00001.json (a folder)"``, sorted
    as found): ``manifest.json`` and ``.lock`` must be regular files, the store's folders
    folders, and a shard file in them (``part-00001.parquet``, ``00001.npy``,
    ``00001.jpg.bin``, ``00001.json``) a regular file. A FIFO, socket, device, symbolic link
    or folder there is the user's: a run refuses the folder rather than block on it or
    replace it. Nothing is opened: each entry is looked at (``lstat``)."""
    folder = Path(folder)
    found = []

    def look(name: str, folder_wanted: bool) -> bool:
        try:
            mode = os.lstat(folder / name).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        wanted = stat.S_ISDIR(mode) if folder_wanted else stat.S_ISREG(mode)
        if not wanted:
            found.append(f"{name} ({kind_of(mode)})")
        return wanted

    for name in (MANIFEST, LOCK):
        look(name, False)
    for name in (*OWN_FOLDERS, ".partial"):
        if look(name, True) and name in SHARD_FILES:
            with os.scandir(folder / name) as entries:
                for entry in sorted(entries, key=lambda entry: entry.name):
                    if SHARD_FILES[name].match(entry.name) and not entry.is_file(
                        follow_symlinks=False
                    ):
                        mode = entry.stat(follow_symlinks=False).st_mode
                        found.append(f"{name}/{entry.name} ({kind_of(mode)})")
    return found


def is_empty(folder) -> bool:
    """True when ``folder`` is missing, empty, or holds only what a run killed before its
    manifest leaves (see :func:`foreign_entries`)."""
    return not foreign_entries(folder)

"""Files of the audit store read and written safely: only regular files are read, without
blocking (a FIFO is never opened), and every file is written into ``.partial/``, flushed to
disk and moved into place atomically (see :mod:`gradcam_widget.auditing.store`)."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from gradcam_widget.auditing.store_layout import PARTIAL_MARK

# --- reading only regular files --------------------------------------------------------------

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, other than a regular file (``"a FIFO"``)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class NotRegularFile(OSError):
    """An entry the store would read that is not a regular file (it was not opened)."""


_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def open_regular(path):
    """``path`` open for reading (binary) when it is a regular file (a symbolic link to one
    is followed). Anything else is never opened: it is looked at first (``stat``), then
    opened without blocking and looked at again (``fstat``), so a FIFO never blocks the
    caller and a device is never opened.

    Raises:
        NotRegularFile: naming what it is (``"a FIFO"``); OSError when it cannot be read.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(f"{kind_of(mode)}, not a file")
    descriptor = os.open(path, _READ_FLAGS)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):  # swapped between the look and the open
            raise NotRegularFile(f"{kind_of(mode)}, not a file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_json(path, limit: int | None = None):
    """The JSON in the regular file ``path``.

    Raises:
        ValueError: (one line) when it is not UTF-8 JSON, is nested too deeply to parse, or
            is longer than ``limit`` bytes.
        NotRegularFile, OSError: as :func:`open_regular`.
    """
    with open_regular(path) as handle:
        content = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(content) > limit:
        raise ValueError(f"longer than {limit} bytes")
    try:
        return json.loads(content.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def one_line(error: BaseException) -> str:
    """An error's message on one line, at most 300 characters (its type when it has none)."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def atomic_write(folder: Path, final: Path, write) -> None:
    """Write through ``write(path)`` into ``.partial/`` and move the file to ``final``."""
    partial = folder / ".partial"
    partial.mkdir(exist_ok=True)
    temporary = partial / f"{final.name}{PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    write(temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)


def write_json(folder: Path, name: str, content: dict) -> None:
    """Write ``folder/name`` as JSON, atomically."""
    text = json.dumps(content, indent=2, sort_keys=False) + "\n"
    atomic_write(folder, folder / name, lambda path: path.write_text(text))

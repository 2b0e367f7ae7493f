"""One writer at a time: the results folder's ``.lock`` (``fcntl.flock``), taken by a run
(:func:`lock`) and looked at without writing (:func:`lock_holder`, :func:`check_unlocked`);
see *One writer at a time* in :mod:`gradcam_widget.auditing.store`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import time
from pathlib import Path

from gradcam_widget.auditing.store_io import kind_of
from gradcam_widget.auditing.store_layout import (
    LOCK,
    LOCK_LIMIT,
    LOCK_MARK,
    PARTIAL_MARK,
    AuditStoreError,
)

# --- the lock -------------------------------------------------------------------------------


def _flock():
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        return None
    return fcntl


def _take(fcntl, handle, patience: float = 0.5) -> bool:
    """Lock ``handle`` exclusively; ``False`` if another holds it for ``patience`` seconds (a
    run holds it for its whole length; :func:`lock_holder` of another process only for an
    instant)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _describe_holder(handle) -> str:
    """Who holds a lock, from what it wrote into the lock file."""
    for _ in range(40):  # it writes right after locking: give it a moment to have done so
        handle.seek(0)
        try:
            content = json.loads(handle.read(LOCK_LIMIT) or "null")
        except (ValueError, RecursionError):
            content = None
        if isinstance(content, dict) and "pid" in content:
            return (
                f"pid {content.get('pid')} on {content.get('host', '?')}, since "
                f"{content.get('since', '?')}"
            )
        time.sleep(0.05)
    return "a process that has not written its pid yet"


def _busy(folder: Path, holder: str) -> AuditStoreError:
    return AuditStoreError(
        f"another audit is writing to {folder} ({holder}): wait for it to finish, or stop it, "
        "before running this one"
    )


def _not_a_lock(path: Path, mode: int) -> AuditStoreError:
    return AuditStoreError(
        f"{path} is {kind_of(mode)}, not a lock file this package wrote: remove it, or "
        "choose another out="
    )


def _open_lock(path: Path, create: bool):
    """``.lock`` open (text; read and write when ``create``, creating it), when it is a
    regular file; a FIFO, a symbolic link or anything else there is never opened.

    Raises:
        AuditStoreError: naming what is there instead.
        FileNotFoundError: when there is none and ``create`` is false.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if not create:
            raise
    else:
        if not stat.S_ISREG(mode):
            raise _not_a_lock(path, mode)
    flags = (
        (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY)
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOCTTY", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:  # made a symbolic link since it was looked at
            raise _not_a_lock(path, stat.S_IFLNK) from None
        raise
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_lock(path, mode)
        return os.fdopen(descriptor, "r+" if create else "r", encoding="utf-8",
                         errors="replace")  # fmt: skip
    except BaseException:
        os.close(descriptor)
        raise


def lock_holder(folder) -> str | None:
    """Who holds ``folder``'s lock (``"pid 123 on host, since ..."``), or ``None`` when no
    run does. Writes nothing: the lock file is opened for reading only when it exists, and
    only when it is a regular file.

    Raises:
        AuditStoreError: if ``.lock`` is not a regular file (a FIFO, a symbolic link ...).
    """
    path = Path(folder) / LOCK
    fcntl = _flock()
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        handle = _open_lock(path, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with handle:
        if not _take(fcntl, handle):
            return _describe_holder(handle)
        return None  # closing the file releases it


def check_unlocked(folder) -> None:
    """Raise :class:`AuditStoreError` naming the holder when a run holds ``folder``'s lock."""
    holder = lock_holder(folder)
    if holder is not None:
        raise _busy(Path(folder), holder)


def _link_new_lock(folder: Path, path: Path, content: str) -> None:
    """Make ``.lock`` with ``content`` already in it: written in ``.partial/`` and linked to
    its name, so that a run killed at any moment never leaves an empty ``.lock`` (which would
    be no proof the package wrote it). Another run linking first wins; its lock is taken."""
    partial = folder / ".partial"
    made = not partial.exists()
    partial.mkdir(exist_ok=True)
    temporary = partial / f"{LOCK}{PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(content)
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):  # another run's file in it: left
                partial.rmdir()


@contextlib.contextmanager
def lock(folder):
    """Hold ``folder/.lock`` exclusively for a run, with this process's pid, host and start
    time written in it, marked as the package's (the folder is created if needed, and the
    folders above it). At the end the lock file is removed while still held, and the
    folders this call created, from the deepest up, as long as they are empty (the run
    wrote nothing into them).

    Raises:
        AuditStoreError: if another process holds it (the message names that process), or
            ``.lock`` is not a regular file.
    """
    folder = Path(folder)
    created = []  # the folders this call creates, deepest first
    probe = folder
    while not os.path.lexists(probe) and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    path = folder / LOCK
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    content = json.dumps({"lock": LOCK_MARK, "pid": os.getpid(),
                          "host": socket.gethostname(), "since": since}) + "\n"  # fmt: skip
    fcntl = _flock()
    handle = None
    try:
        while handle is None:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(path):
                _link_new_lock(folder, path, content)
            opened = _open_lock(path, create=True)  # held for the whole run
            if fcntl is None:  # pragma: no cover - Windows
                handle = opened
                break
            if not _take(fcntl, opened):
                holder = _describe_holder(opened)
                opened.close()
                raise _busy(folder, holder)
            try:  # the file locked is still the one named .lock (not removed by its holder)
                same = os.path.samestat(os.fstat(opened.fileno()), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                handle = opened
            else:
                opened.close()
        handle.seek(0)
        if handle.read(LOCK_LIMIT) != content:  # a lock a killed run left: this run's now
            handle.seek(0)
            handle.truncate()
            handle.write(content)
            handle.flush()
        yield
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # while held: see the module's *One writer*
            handle.close()
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty: the run wrote into it (and so into those above)
                break

"""The audit store: one folder that an audit fills shard by shard and a gallery reads.

Layout of ``out/``::

    manifest.json                    the job (model name and hash, source, every option),
                                     the package version, progress, skipped files
    explanations.parquet/            a Parquet dataset, one part per shard:
        part-00000.parquet           one row per image (see COLUMNS)
    maps/00000.npy                   the shard's raw maps, (n, h, w) float16
    thumbs/00000.jpg.bin             the shard's overlay thumbnails, JPEG files end to end
    commits/00000.json               the shard's commit record: its rows, and the size and
                                     SHA-256 of each of its three files
    .partial/                        files being written (never read), each named
                                     ``<its final name>.gw-partial-<pid>-<8 hex digits>``
    .lock                            while a run writes the folder: who (pid, host, since),
                                     as JSON marked ``"lock": "gradcam_widget"``

**Commit protocol.** A shard is written as maps, then thumbnails, then its Parquet part, each
into ``.partial/`` and moved into place with :func:`os.replace` (atomic on one file system),
and then its commit record ``commits/NNNNN.json``, moved into place the same way. The record
is the shard's commit: a shard is done exactly when its record exists and its three files
match it, and only shards with a record are read (a stray ``part-00099.parquet`` copied in by
hand is never read). A run killed at any moment leaves only committed shards (and maybe
unreferenced files in ``.partial/``, or a shard's files without its record, both rewritten by
the next run), so a rerun computes the missing shards and nothing twice. Each file is flushed
to disk (``fsync``) before it is moved, so a record never names files that a power cut lost.

**Verification.** Every run, and :class:`AuditResults` when it opens a folder, checks each
committed shard against its record (:func:`check_shards`): the three files exist with the
sizes recorded, and the part and the maps have the recorded SHA-256. A rerun recomputes a
shard that fails (a truncated part, a deleted map file); :class:`AuditResults` refuses the
folder with one error naming the shard and what is wrong. The thumbnails (about 80 % of the
bytes) are checked by size only: hashing them would make opening a 100,000-image gallery
read 300 MB, and a damaged thumbnail shows as a broken picture, never as a wrong number; the
part and the maps, where a damaged byte would be a wrong number or an unreadable table, are
small (a few hundred bytes per image) and hashed in full. A folder of format 1 (no
``commits/``) is checked by its parts' footers and its files' sizes, and a run on it writes
the records.

A record is read only when it is a regular file of at most 1 MiB holding JSON of a record's
shape (``shard`` its own number, ``rows``, and for each of the three files an object with its
``size`` and ``sha256``); anything else is "not a valid record of shard N", named by
:class:`AuditResults` and recomputed by a run. The shards read are only those numbered
below the audit's shard count (its ``shards``): a record, a part or a map file copied in
under a higher number is never opened, by a run (not even to count its rows at the end) or
by :class:`AuditResults`. The manifest's counts are checked for plausibility before anything
uses them (:func:`check_manifest`: ``shards`` is the shard count of ``images`` at
``shard_size``, ``rows`` at most ``images``), and shard numbers are compared with the count
arithmetically, never by building the range of numbers it names.

**The folder, before and after.** The manifest is written before anything else, so a folder
is recognised as this job's from its first file on. A folder without a manifest is used only
when it holds nothing but what a run killed before its manifest leaves (the store's empty
folders, ``.lock``, a half-written manifest in ``.partial/``): any other file in it, even in
a folder named like the store's, refuses the run (:func:`foreign_entries`), so nothing the
package did not write is deleted or overwritten.

What the package recognises as its own is told by marks a user's file is unlikely to carry:
a ``.lock`` is the package's when it holds JSON with ``"lock": "gradcam_widget"`` (or, as
versions before that mark wrote it, exactly ``pid``, ``host`` and ``since`` with a UTC time
``YYYY-MM-DDTHH:MM:SSZ``); an empty ``.lock`` or one with other content is the user's. A
file in ``.partial/`` is the package's when named ``<name>.gw-partial-<pid>-<8 hex>``, or,
named ``<name>.<pid>`` as earlier versions named them, when its first bytes are those the
package writes there (a manifest or a record's JSON opening, a Parquet or ``.npy`` magic, a
JPEG marker); only such files are removed by :func:`prepare`, any other is left alone.
In a folder with a manifest (a results folder), every name the store reads, writes or
removes (``manifest.json``, ``.lock``, the store's folders and the shard files in them) must
be what the store puts there, a regular file (a folder for its folders): a FIFO, socket,
device, symbolic link or folder at such a name refuses the run, named
(:func:`unusual_entries`), for the store would block reading it or replace the user's thing.
There, ``.lock`` is the store's own name: a regular file of that name is taken for a lock a
killed run left, whatever it holds (the marks above tell the package's ``.lock`` only in a
folder that is not yet a results folder).
Whatever the store reads is opened only after it is seen to be a regular file, and then
without blocking (``O_NONBLOCK``) and looked at again (``fstat``): a FIFO is never opened,
so nothing here waits forever on one.

**One writer at a time.** A run holds an exclusive lock on ``.lock`` (``fcntl.flock``) from
before its first write to its end, whichever runs its shards (here or on Ray: the driver
writes), and writes its pid, host and start time into it. A second run on the folder is
refused before it writes anything, with one line naming the holder (:func:`lock_holder`
checks without writing). The kernel releases the lock when its process dies, even by
SIGKILL, so a killed run never blocks the next one. ``.lock`` is removed at the end of a
run, while still held; a run that takes the lock checks that the file it locked is still the
one named ``.lock``, so two runs never hold locks on two different files.
A run that creates ``out`` (and the folders above it) removes what it created and left
empty when it ends, so a refused run (a bad layer, found by the first shard) leaves nothing.

**Why raw maps in float16 ``.npy`` shards.** The raw map (the signed map on the layer's grid,
14 x 14 for ``shapes``) is the whole result: the heatmap at any size is
:func:`gradcam_widget.core.to_heatmap` of it, with the options in the manifest. At 14 x 14 a
map is 392 bytes in float16 (a 224 x 224 heatmap would be 100 KB: 1 GB per 10,000 images).
``.npy`` needs no extra library, is written atomically as one file, and opens memory-mapped,
so reading one map reads one map. float16 keeps 3 significant digits, far below what a
colour map shows. Thumbnails are JPEG (about 3 KB at 96 px), end to end in one file per
shard, each found by its byte offset and size in its row, so a gallery page reads a few
kilobytes per image and recomputes nothing.

Only numpy, pyarrow and pandas are used here; this module never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
TABLE = "explanations.parquet"
COMMITS = "commits"
LOCK = ".lock"
FORMAT_VERSION = 2
"""2: shards committed by records in ``commits/``; 1: by their parts alone (still read)."""

_PART = re.compile(r"^part-(\d{5,})\.parquet$")
_RECORD = re.compile(r"^(\d{5,})\.json$")
_OWN_FOLDERS = (TABLE, "maps", "thumbs", COMMITS)
_SHARD_FILES = {
    TABLE: _PART,
    "maps": re.compile(r"^\d{5,}\.npy$"),
    "thumbs": re.compile(r"^\d{5,}\.jpg\.bin$"),
    COMMITS: _RECORD,
}
"""The names of shard files in each of the store's folders."""
_FINAL_NAMES = r"(manifest\.json|part-\d{5,}\.parquet|\d{5,}\.npy|\d{5,}\.jpg\.bin|\d{5,}\.json)"
_PARTIAL_MARK = ".gw-partial-"
_TEMPORARY = re.compile(rf"^{_FINAL_NAMES}\.gw-partial-\d+-[0-9a-f]{{8}}$")
"""Names of the files :func:`_atomic_write` leaves in ``.partial/`` when killed."""
_LEGACY_TEMPORARY = re.compile(rf"^{_FINAL_NAMES}\.\d+$")
"""Names earlier versions gave them (``<name>.<pid>``): the package's only when their
content begins as the package's files do (:data:`_SIGNATURES`)."""
_SIGNATURES = (
    ("manifest.json", b'{\n  "format": '),  # write_json of a manifest: "format" comes first
    (".json", b'{\n "shard": '),  # write_record
    (".parquet", b"PAR1"),
    (".npy", b"\x93NUMPY"),
    (".jpg.bin", b"\xff\xd8\xff"),
)
"""How each kind of file the store writes begins."""
LOCK_MARK = "gradcam_widget"
"""The value of ``"lock"`` in the JSON a run writes into ``.lock``: what tells the package's
lock file from a user's file of that name."""
_LEGACY_SINCE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_CHUNK = 1 << 20
RECORD_LIMIT = 1 << 20
"""Largest commit record read, in bytes (a record is a few hundred)."""
_LOCK_LIMIT = 1 << 16
MAX_INPUT_SIDE = 1 << 15
"""Largest ``input_size`` side a manifest may give (a heatmap of it is rebuilt in memory)."""
OPEN_MAPS = 32
"""Shards whose maps a reader keeps memory-mapped at once (least recently used closed)."""

COLUMNS: dict[str, str] = {
    "index": "int64",
    "id": "string",
    "shard": "int32",
    "row": "int32",
    "true_class": "int64?",
    "true_label": "string?",
    "predicted_class": "int64",
    "predicted_label": "string",
    "predicted_score": "float32",
    "explained_class": "int64",
    "explained_label": "string",
    "explained_score": "float32",
    "correct": "bool?",
    "peak_y": "float32",
    "peak_x": "float32",
    "raw_max": "float32",
    "entropy": "float32",
    "centre_share": "float32",
    "pointing_hit": "bool?",
    "object_share": "float32",
    "tagged": "bool?",
    "file_fingerprint": "string?",
    "thumb_offset": "int64",
    "thumb_size": "int32",
}
"""Columns of ``explanations.parquet`` and their types (``?``: may be missing).

``index``/``id``: the image's number in the source and its name (its path, ``scenes-<seed>``).
``true_*``: its label when known. ``predicted_*``: the top class and its probability.
``explained_*``: the class the map explains and its probability. ``correct``: predicted is
the true class (one of them, for a scene of several objects). ``peak_y``/``peak_x``: where the
heatmap peaks, as fractions of the height and width (NaN for a flat map). ``raw_max``: the
raw map's maximum (at most 0: nothing speaks for the class). ``entropy``: of the heatmap as a
distribution over pixels, divided by its maximum ``log(H W)`` (1: spread evenly, low:
concentrated). ``centre_share``: share of the heatmap's mass in the centre box (the middle
half of each side, a quarter of the area). ``pointing_hit`` and ``object_share`` (the share
of the map's mass on the explained class's object mask) when masks are known and that class
is in the image. ``tagged``: the image carries the shortcut tag (shortcut scenes).
``file_fingerprint``: for an image read from a file, its size, modification time and content
hash as read (:func:`gradcam_widget.sources.file_fingerprint`): a gallery tells from it that
the file changed since the audit.
``shard``/``row``/``thumb_*``: where its map and thumbnail are stored.
"""


class AuditStoreError(ValueError):
    """A results folder that belongs to another job, that is not a results folder (or its
    manifest is not of a manifest's shape), whose shards were damaged since written, or that
    another run is writing."""


def _arrow_schema():
    import pyarrow as pa

    types = {
        "int64": pa.int64(), "int32": pa.int32(), "float32": pa.float32(),
        "string": pa.string(), "bool": pa.bool_(),
    }  # fmt: skip
    return pa.schema([pa.field(name, types[kind.rstrip("?")]) for name, kind in COLUMNS.items()])


@dataclass
class ShardResult:
    """Everything one shard adds to the store.

    Attributes:
        shard: the shard's number.
        rows: one dict per image explained, keys as :data:`COLUMNS` (``shard``, ``row`` and
            ``thumb_*`` are filled in by :func:`commit`).
        raw: ``(n, h, w)`` float16 raw maps, row ``i`` for ``rows[i]``.
        thumbnails: one JPEG file's bytes per row.
        skipped: ``{"index", "id", "error"}`` per image that could not be read.
        layer: the layer explained (known once a shard ran).
    """

    shard: int
    rows: list[dict]
    raw: np.ndarray
    thumbnails: list[bytes]
    skipped: list[dict] = field(default_factory=list)
    layer: str | None = None


# --- reading only regular files --------------------------------------------------------------

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind_of(mode: int) -> str:
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


def _open_regular(path):
    """``path`` open for reading (binary) when it is a regular file (a symbolic link to one
    is followed). Anything else is never opened: it is looked at first (``stat``), then
    opened without blocking and looked at again (``fstat``), so a FIFO never blocks the
    caller and a device is never opened.

    Raises:
        NotRegularFile: naming what it is (``"a FIFO"``); OSError when it cannot be read.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(f"{_kind_of(mode)}, not a file")
    descriptor = os.open(path, _READ_FLAGS)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):  # swapped between the look and the open
            raise NotRegularFile(f"{_kind_of(mode)}, not a file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _read_json(path, limit: int | None = None):
    """The JSON in the regular file ``path``.

    Raises:
        ValueError: (one line) when it is not UTF-8 JSON, is nested too deeply to parse, or
            is longer than ``limit`` bytes.
        NotRegularFile, OSError: as :func:`_open_regular`.
    """
    with _open_regular(path) as handle:
        content = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(content) > limit:
        raise ValueError(f"longer than {limit} bytes")
    try:
        return json.loads(content.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _atomic_write(folder: Path, final: Path, write) -> None:
    """Write through ``write(path)`` into ``.partial/`` and move the file to ``final``."""
    partial = folder / ".partial"
    partial.mkdir(exist_ok=True)
    temporary = partial / f"{final.name}{_PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    write(temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)


def write_json(folder: Path, name: str, content: dict) -> None:
    """Write ``folder/name`` as JSON, atomically."""
    text = json.dumps(content, indent=2, sort_keys=False) + "\n"
    _atomic_write(folder, folder / name, lambda path: path.write_text(text))


# --- the manifest ---------------------------------------------------------------------------

_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true or false"}  # fmt: skip

_MANIFEST_FIELDS = (
    # (dotted key, type, required): optional keys may also be null
    ("format", int, True),
    ("job", dict, True),
    ("job.model", dict, True),
    ("job.model.name", str, True),
    ("job.model.hash", str, True),
    ("job.source", dict, True),
    ("job.source.description", str, True),
    ("job.source.fingerprint", str, True),
    ("job.options", dict, True),
    ("job.options.cam_options", dict, True),
    ("status", str, True),
    ("input_size", list, False),
    ("class_names", list, False),
    ("layer", str, False),
    ("images", int, False),
    ("shards", int, False),
    ("rows", int, False),
    ("skipped", list, False),
)
"""What :func:`read_manifest` requires of a manifest (what this module and the gallery read)."""


def _kind(value) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_manifest(content, path) -> dict:
    """``content`` if it has the shape of a manifest (:data:`_MANIFEST_FIELDS`).

    Raises:
        AuditStoreError: one line naming ``path``, the key and what was expected.
    """

    def refuse(problem: str):
        raise AuditStoreError(f"{path} is not a valid audit manifest: {problem}")

    if not isinstance(content, dict):
        refuse(f"it holds {_kind(content)}, expected an object with 'job', 'status', ...")
    for key, kind, required in _MANIFEST_FIELDS:
        parent, _, name = key.rpartition(".")
        holder = content
        for step in parent.split(".") if parent else ():
            holder = holder[step]  # checked above: every parent is an object
        if name not in holder or holder[name] is None:
            if required:
                refuse(f"'{key}' is missing (expected {_TYPE_NAMES[kind]})")
            continue
        value = holder[name]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            refuse(f"'{key}' is {_kind(value)} ({value!r:.40}), expected {_TYPE_NAMES[kind]}")
    if content["status"] not in ("running", "complete"):
        refuse(f"'status' is {content['status']!r}, expected 'running' or 'complete'")
    size = content.get("input_size")
    if size is not None and (
        len(size) != 2 or not all(type(side) is int and 0 < side <= MAX_INPUT_SIDE for side in size)
    ):
        refuse(
            f"'input_size' is {size!r:.60}, expected [height, width], two positive integers "
            f"of at most {MAX_INPUT_SIDE}"
        )
    names = content.get("class_names")
    if names is not None and not all(isinstance(name, str) for name in names):
        refuse("'class_names' holds something other than strings, expected a list of names")
    skipped = content.get("skipped")
    if skipped is not None and not all(isinstance(entry, dict) for entry in skipped):
        refuse("'skipped' holds something other than objects, expected {index, id, error}s")
    _check_counts(content, refuse)
    return content


def _check_counts(content: dict, refuse) -> None:
    """The manifest's counts are plausible: none negative, ``shards`` the shard count of
    ``images`` (in shards of ``job.options.shard_size``; at most ``images`` when that is not
    given), ``rows`` at most ``images``. Compared as numbers, never as ranges."""
    shard_size = content["job"]["options"].get("shard_size")
    if shard_size is not None and (type(shard_size) is not int or shard_size < 1):
        refuse(f"'job.options.shard_size' is {shard_size!r:.40}, expected a positive integer")
    for key in ("images", "shards", "rows"):
        value = content.get(key)
        if value is not None and value < 0:
            refuse(f"'{key}' is {value}, expected a count (0 or more)")
    images, shards, rows = (content.get(key) for key in ("images", "shards", "rows"))
    if images is None:
        return
    if shards is not None:
        if shard_size is not None and shards != -(-images // shard_size):
            refuse(
                f"'shards' is {shards}, expected {-(-images // shard_size)} ('images' "
                f"{images} in shards of {shard_size})"
            )
        if shards > images:
            refuse(f"'shards' is {shards}, more than its {images} images")
    if rows is not None and rows > images:
        refuse(f"'rows' is {rows}, more than its {images} images")


def read_manifest(folder) -> dict | None:
    """The manifest of ``folder``, or ``None`` when there is none.

    Raises:
        AuditStoreError: if it is not a regular file (never opened then: a FIFO would
            block), not JSON (or nested too deeply to read), or not of a manifest's shape
            (:func:`check_manifest`).
    """
    path = Path(folder) / MANIFEST
    try:
        content = _read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise AuditStoreError(f"{path} is not a readable manifest ({_one_line(error)})") from None
    return check_manifest(content, path)


# --- shards and their commit records --------------------------------------------------------


def part_path(folder, shard: int) -> Path:
    return Path(folder) / TABLE / f"part-{shard:05d}.parquet"


def maps_path(folder, shard: int) -> Path:
    return Path(folder) / "maps" / f"{shard:05d}.npy"


def thumbs_path(folder, shard: int) -> Path:
    return Path(folder) / "thumbs" / f"{shard:05d}.jpg.bin"


def record_path(folder, shard: int) -> Path:
    return Path(folder) / COMMITS / f"{shard:05d}.json"


def _shard_files(folder, shard: int) -> dict[str, Path]:
    """The files of a shard, by their names relative to the folder (as records name them)."""
    folder = Path(folder)
    paths = (part_path(folder, shard), maps_path(folder, shard), thumbs_path(folder, shard))
    return {path.relative_to(folder).as_posix(): path for path in paths}


def _hashed(name: str) -> bool:
    """Whether a file's SHA-256 is checked (the part and the maps; see the module's
    *Verification*)."""
    return not name.startswith("thumbs/")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_regular(path) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _numbers(folder: Path, pattern: re.Pattern) -> set[int]:
    if not folder.is_dir():
        return set()
    return {int(match[1]) for name in os.listdir(folder) if (match := pattern.match(name))}


def _legacy(folder: Path) -> bool:
    """A folder of format 1: parts without commit records (read as their parts say)."""
    if (folder / COMMITS).is_dir():
        return False
    try:
        manifest = read_manifest(folder)
    except AuditStoreError:
        return False
    return manifest is not None and manifest["format"] < 2


def done_shards(folder) -> set[int]:
    """Numbers of the shards committed: those with a record in ``commits/`` (in a folder of
    format 1, those with a part), not yet checked against it (see :func:`check_shards`)."""
    folder = Path(folder)
    if _legacy(folder):
        return _numbers(folder / TABLE, _PART)
    return _numbers(folder / COMMITS, _RECORD)


def write_record(folder, shard: int, rows: int) -> None:
    """Commit a shard whose three files are in place: write its record, atomically."""
    folder = Path(folder)
    files = {}
    for name, path in _shard_files(folder, shard).items():
        files[name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    text = json.dumps({"shard": shard, "rows": rows, "files": files}, indent=1) + "\n"
    (folder / COMMITS).mkdir(exist_ok=True)
    _atomic_write(folder, record_path(folder, shard), lambda path: path.write_text(text))


def _record_problem(record, shard: int, names) -> str | None:
    """Why ``record`` (parsed JSON) is not of a commit record's shape for ``shard`` whose
    files are ``names``, else ``None``."""
    if not isinstance(record, dict):
        return f"it holds {_kind(record)}, expected an object"
    number = record.get("shard")
    if type(number) is not int or number != shard:
        return f"it names shard {number!r:.40}"
    rows = record.get("rows")
    if type(rows) is not int or rows < 0:
        return f"'rows' is {_kind(rows)} ({rows!r:.40}), expected a count"
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != set(names):
        return f"'files' does not name {', '.join(names)}"
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and type(entry.get("size")) is int
            and entry["size"] >= 0
            and isinstance(entry.get("sha256"), str)
        ):
            return f"'files' gives {name} {_kind(entry)} ({entry!r:.40}), expected {{size, sha256}}"
    return None


def _file_problem(name: str, path: Path) -> str | None:
    """Why a shard's file ``path`` cannot be checked: missing, not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as error:
        return f"{name} cannot be looked at ({_one_line(error)})"
    if not stat.S_ISREG(mode):
        return f"{name} is {_kind_of(mode)}, not a file"
    return None


def _check_record(folder: Path, shard: int) -> str | None:
    """What is wrong with a committed shard's files (``None``: they match its record)."""
    path = record_path(folder, shard)
    name = path.relative_to(folder).as_posix()
    files = _shard_files(folder, shard)
    try:
        record = _read_json(path, RECORD_LIMIT)
        problem = _record_problem(record, shard, files)
    except FileNotFoundError:
        return f"its commit record {name} is missing"
    except (NotRegularFile, ValueError) as error:
        problem = _one_line(error)
    except OSError as error:
        return f"its commit record {name} is unreadable ({_one_line(error)})"
    if problem is not None:
        return f"{name} is not a valid record of shard {shard} ({problem})"
    for file, expected in record["files"].items():
        problem = _file_problem(file, files[file])
        if problem is not None:
            return problem
        size = files[file].stat().st_size
        if size != expected["size"]:
            return f"{file} has {size} bytes, {expected['size']} were committed"
        if _hashed(file):
            try:
                digest = _sha256(files[file])
            except OSError as error:
                return f"{file} is unreadable ({_one_line(error)})"
            if digest != expected["sha256"]:
                return f"{file} differs from what was committed (SHA-256)"
    return None


def _check_legacy(folder: Path, shard: int) -> str | None:
    """What is wrong with a format-1 shard: its part unreadable, its maps or thumbnails not
    of the sizes its rows give."""
    import pyarrow.parquet as pq

    files = _shard_files(folder, shard)
    part, maps, thumbs = files.values()
    part_name, maps_name, thumbs_name = files
    for name, path in files.items():  # never opened unless a regular file (a FIFO blocks)
        problem = _file_problem(name, path)
        if problem is not None:
            return problem
    try:
        rows = pq.ParquetFile(part).metadata.num_rows
        sizes = pq.read_table(part, columns=["thumb_size"]).column(0).to_pylist()
    except Exception as error:  # noqa: BLE001 - any failure to read says the same
        return f"{part_name} is unreadable ({type(error).__name__}: {error})"
    try:
        count = len(np.load(maps, mmap_mode="r")) if rows else 0
    except FileNotFoundError:
        return f"{maps_name} is missing"
    except (OSError, ValueError) as error:
        return f"{maps_name} is unreadable ({error})"
    if count != rows:
        return f"{maps_name} holds {count} maps, {part_name} {rows} rows"
    try:
        size = thumbs.stat().st_size
    except FileNotFoundError:
        return f"{thumbs_name} is missing"
    if size != sum(sizes):
        return f"{thumbs_name} has {size} bytes, its rows name {sum(sizes)}"
    return None


def check_shards(folder, count: int | None = None) -> tuple[set[int], dict[int, str]]:
    """Check each committed shard against its commit record (see the module's
    *Verification*).

    Args:
        folder: the results folder.
        count: the audit's number of shards, when known: records of shards beyond it are
            not the audit's and are left out, never opened.

    Returns:
        ``(good, damaged)``: the numbers of the shards whose files match their records, and
        ``{shard: what is wrong}`` for the others.
    """
    folder = Path(folder)
    legacy = _legacy(folder)
    check = _check_legacy if legacy else _check_record
    good, damaged = set(), {}
    for shard in sorted(done_shards(folder)):
        if count is not None and shard >= count:
            continue
        problem = check(folder, shard)
        if problem is None:
            good.add(shard)
        else:
            damaged[shard] = problem
    return good, damaged


def missing_shards(good, count: int) -> tuple[int | None, int]:
    """``(the first shard number below count not in good, how many are not)``, ``(None, 0)``
    when none is missing; ``good`` holds numbers below ``count`` (as :func:`check_shards`
    gives them). Counted, not listed: ``count`` may be any size a manifest says."""
    numbers = sorted(good)
    if len(numbers) >= count:
        return None, 0
    first = next((i for i, number in enumerate(numbers) if number != i), len(numbers))
    return first, count - len(numbers)


def shard_count(manifest: dict) -> int | None:
    """The audit's number of shards: its ``shards``, else from ``images`` and ``shard_size``
    when the manifest gives both, else ``None`` (unknown)."""
    count = manifest.get("shards")
    images = manifest.get("images")
    shard_size = manifest["job"]["options"].get("shard_size")
    if count is None and images is not None and shard_size:
        count = -(-images // shard_size)
    return count


def adopt_legacy(folder, shards) -> None:
    """Write commit records for the shards of a format-1 folder that :func:`check_shards`
    found good (nothing for a folder of format 2)."""
    if not _legacy(Path(folder)):
        return
    for shard in sorted(shards):
        write_record(folder, shard, part_rows(folder, shard))


def damage_message(folder, damaged: dict[int, str]) -> str:
    """One line naming the damaged shards of ``folder`` and what is wrong with the first."""
    shards = sorted(damaged)
    names = ", ".join(str(shard) for shard in shards[:8]) + (" ..." if len(shards) > 8 else "")
    what = "shard" if len(shards) == 1 else "shards"
    return (
        f"{folder}: {what} {names} damaged since written (shard {shards[0]}: "
        f"{damaged[shards[0]]}): run the same audit again to recompute "
        f"{'it' if len(shards) == 1 else 'them'}"
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
        and _LEGACY_SINCE.match(content["since"]) is not None
    )


def _lock_file_is_ours(path: Path) -> bool:
    """Whether ``path`` is a lock file the package wrote (see :func:`_is_lock_content`); an
    empty one, or one of other content, is a user's."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        content = _read_json(path, _LOCK_LIMIT)
    except (OSError, ValueError):
        return False
    return _is_lock_content(content)


def _begins_as_ours(path: Path, name: str) -> bool:
    """Whether the regular file ``path``, named as an earlier version named a file being
    written (``<name>.<pid>``), begins as the package's files named ``name`` do (a file
    shorter than that beginning: as far as it goes; an empty file is not the package's)."""
    signature = next((sig for ending, sig in _SIGNATURES if name.endswith(ending)), None)
    if signature is None:
        return False
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with _open_regular(path) as handle:
            start = handle.read(len(signature))
    except OSError:
        return False
    return bool(start) and signature.startswith(start)


def own_temporary(path) -> bool:
    """Whether ``path`` in ``.partial/`` is a file the package was writing when a run was
    killed: a regular file named as :func:`_atomic_write` names them, or named as earlier
    versions did and beginning as the package's file of that name (see the module's *The
    folder, before and after*)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    if _TEMPORARY.match(path.name):
        return True
    match = _LEGACY_TEMPORARY.match(path.name)
    return match is not None and _begins_as_ours(path, match[1])


def foreign_entries(folder) -> list[str]:
    """What in a folder without a manifest the package did not write (sorted names relative
    to it): anything but the store's empty folders, ``.lock`` and half-written manifests in
    ``.partial/`` (all a run killed before its manifest leaves)."""
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
                    inner.startswith(f"{MANIFEST}.") and own_temporary(Path(entry.path, inner))
                ):
                    foreign.append(f".partial/{inner}")
        elif name in _OWN_FOLDERS and entry.is_dir(follow_symlinks=False):
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
            found.append(f"{name} ({_kind_of(mode)})")
        return wanted

    for name in (MANIFEST, LOCK):
        look(name, False)
    for name in (*_OWN_FOLDERS, ".partial"):
        if look(name, True) and name in _SHARD_FILES:
            with os.scandir(folder / name) as entries:
                for entry in sorted(entries, key=lambda entry: entry.name):
                    if _SHARD_FILES[name].match(entry.name) and not entry.is_file(
                        follow_symlinks=False
                    ):
                        mode = entry.stat(follow_symlinks=False).st_mode
                        found.append(f"{name}/{entry.name} ({_kind_of(mode)})")
    return found


def is_empty(folder) -> bool:
    """True when ``folder`` is missing, empty, or holds only what a run killed before its
    manifest leaves (see :func:`foreign_entries`)."""
    return not foreign_entries(folder)


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
            content = json.loads(handle.read(_LOCK_LIMIT) or "null")
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
        f"{path} is {_kind_of(mode)}, not a lock file this package wrote: remove it, or "
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
    fcntl = _flock()
    handle = None
    try:
        while handle is None:
            folder.mkdir(parents=True, exist_ok=True)
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
        handle.truncate()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        handle.write(json.dumps({"lock": LOCK_MARK, "pid": os.getpid(),
                                 "host": socket.gethostname(), "since": since}) + "\n")  # fmt: skip
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


def prepare(folder) -> Path:
    """Create the store's folders; drop what an interrupted run left in ``.partial/`` (only
    the package's own files, :func:`own_temporary`: anything else there is left alone)."""
    folder = Path(folder)
    for name in (*_OWN_FOLDERS, ".partial"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for leftover in (folder / ".partial").iterdir():
        if own_temporary(leftover):
            leftover.unlink(missing_ok=True)
    return folder


def commit(folder, result: ShardResult) -> None:
    """Write one shard: maps, thumbnails, its Parquet part, then its commit record (the
    commit; a record of an earlier try of the shard is removed first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    record_path(folder, result.shard).unlink(missing_ok=True)
    offsets = np.cumsum([0] + [len(thumb) for thumb in result.thumbnails])
    rows = []
    for position, row in enumerate(result.rows):
        row = dict(row, shard=result.shard, row=position)
        row["thumb_offset"] = int(offsets[position])
        row["thumb_size"] = len(result.thumbnails[position])
        rows.append(row)
    raw = np.asarray(result.raw, dtype=np.float16)

    def write_maps(path):
        with open(path, "wb") as handle:
            np.save(handle, raw)

    def write_thumbs(path):
        with open(path, "wb") as handle:
            for thumb in result.thumbnails:
                handle.write(thumb)

    for name in _OWN_FOLDERS:
        (folder / name).mkdir(exist_ok=True)
    _atomic_write(folder, maps_path(folder, result.shard), write_maps)
    _atomic_write(folder, thumbs_path(folder, result.shard), write_thumbs)
    schema = _arrow_schema().with_metadata(
        {"skipped": json.dumps(result.skipped), "layer": json.dumps(result.layer)}
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    _atomic_write(folder, part_path(folder, result.shard),
                  lambda path: pq.write_table(table, path))  # fmt: skip
    write_record(folder, result.shard, len(rows))


def part_rows(folder, shard: int) -> int:
    """Rows in a shard's part, read from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(part_path(folder, shard)).metadata.num_rows


def part_metadata(folder, shard: int) -> dict:
    """``{"skipped": [...], "layer": ...}`` recorded with a shard's part."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(part_path(folder, shard)).metadata or {}
    return {key.decode(): json.loads(value) for key, value in metadata.items()}


def read_table(folder, shards: Sequence[int] | None = None):
    """The rows of ``shards`` (default: the committed ones) as a pandas DataFrame, sorted by
    ``index``; parts without a commit record are never read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numbers = sorted(done_shards(folder) if shards is None else shards)
    tables = [pq.read_table(part_path(folder, shard)) for shard in numbers]
    if not tables:
        table = _arrow_schema().empty_table()
    else:
        # promote: parts written before a column existed read it as missing
        table = pa.concat_tables(
            [t.replace_schema_metadata(None) for t in tables], promote_options="default"
        )
    frame = table.to_pandas(types_mapper=_pandas_types)
    return frame.sort_values("index", kind="stable").reset_index(drop=True) if len(frame) else frame


def _pandas_types(arrow_type):
    import pandas as pd
    import pyarrow as pa

    return {
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(),
    }.get(arrow_type)


class MapReader:
    """Random access to stored raw maps and thumbnails, with each shard's maps memory-mapped.

    Args:
        folder: the results folder.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def raw(self, shard: int, row: int) -> np.ndarray:
        """``(h, w)`` float32 raw map."""
        if shard in self._maps:
            self._maps.move_to_end(shard)
        else:
            self._maps[shard] = np.load(maps_path(self.folder, shard), mmap_mode="r")
            while len(self._maps) > OPEN_MAPS:  # bounded: each map keeps a file open
                self._maps.popitem(last=False)
        return np.array(self._maps[shard][row], dtype=np.float32)

    def thumbnail(self, shard: int, offset: int, size: int) -> bytes:
        """The JPEG bytes of one thumbnail."""
        with open(thumbs_path(self.folder, shard), "rb") as handle:
            handle.seek(int(offset))
            return handle.read(int(size))


class AuditResults:
    """An audit's results folder, read lazily.

    Args:
        folder: the folder :func:`gradcam_widget.audit` wrote.
        computed_shards: how many shards the run that returned it computed (0: it found the
            audit complete and did nothing).

    Attributes:
        folder: the folder.
        manifest: the manifest (job, options, status, skipped files).
        computed_shards: as given.
        shards: the numbers of the committed shards, each checked against its commit record
            (only these are read).

    Raises:
        AuditStoreError: if ``folder`` holds no manifest, a manifest not of a manifest's
            shape, a shard damaged since it was written (named, with what is wrong), or
            misses a shard of a complete audit.
    """

    def __init__(self, folder, computed_shards: int | None = None):
        self.folder = Path(os.path.expanduser(os.fspath(folder)))
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise AuditStoreError(f"{self.folder} holds no audit results ({MANIFEST} missing)")
        self.manifest = manifest
        count = shard_count(manifest)
        good, damaged = check_shards(self.folder, count)
        if damaged:
            raise AuditStoreError(damage_message(self.folder, damaged))
        first, missing = missing_shards(good, count or 0)
        if self.complete and missing:
            raise AuditStoreError(
                f"{self.folder}: shard {first} of this complete audit is missing (no "
                f"{record_path(self.folder, first).relative_to(self.folder)}"
                f"{f', and {missing - 1} more' if missing > 1 else ''}): run the "
                "same audit again to recompute it"
            )
        self.shards = tuple(sorted(good))
        self.computed_shards = computed_shards
        self._table = None
        self._positions: dict[int, int] | None = None
        self._reader = MapReader(self.folder)

    def __repr__(self) -> str:
        job = self.manifest["job"]
        return (
            f"AuditResults({str(self.folder)!r}: {len(self.table)} images, model "
            f"{job['model']['name']!r}, {job['source']['description']}, {self.status})"
        )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def status(self) -> str:
        """``"complete"`` or ``"running"`` (interrupted, or still being written)."""
        return self.manifest.get("status", "running")

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def table(self):
        """One row per image (pandas DataFrame, sorted by ``index``; columns: :data:`COLUMNS`)."""
        if self._table is None:
            self._table = read_table(self.folder, self.shards)
        return self._table

    @property
    def class_names(self) -> tuple[str, ...] | None:
        names = self.manifest.get("class_names")
        return None if names is None else tuple(names)

    @property
    def options(self) -> dict:
        return self.manifest["job"]["options"]

    @property
    def skipped(self) -> list[dict]:
        """``{"index", "id", "error"}`` of each image that could not be read."""
        return list(self.manifest.get("skipped", []))

    def _row(self, index: int):
        if self._positions is None:
            self._positions = {int(i): p for p, i in enumerate(self.table["index"])}
        position = self._positions.get(int(index))
        if position is None:
            raise KeyError(f"no image {index} in {self.folder}")
        return self.table.iloc[position]

    def raw(self, index: int) -> np.ndarray:
        """The stored ``(h, w)`` raw map of image ``index`` (float16 precision)."""
        row = self._row(index)
        return self._reader.raw(int(row["shard"]), int(row["row"]))

    def heatmap(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """The ``(H, W)`` heatmap of image ``index`` rebuilt from its raw map with the audit's
        ``order`` and ``interpolation`` (default size: the model's input size)."""
        from gradcam_widget.cam import core

        options = self.options["cam_options"]
        size = tuple(size or self.manifest.get("input_size") or (224, 224))
        return core.to_heatmap(
            self.raw(index),
            size,
            order=options.get("order", "relu_first"),
            interpolation=options.get("interpolation", "bilinear"),
        )

    def thumbnail(self, index: int) -> bytes:
        """The JPEG bytes of image ``index``'s overlay thumbnail."""
        row = self._row(index)
        return self.thumbnail_of(row)

    def thumbnail_of(self, row) -> bytes:
        """The JPEG bytes of the thumbnail of a table row."""
        return self._reader.thumbnail(int(row["shard"]), int(row["thumb_offset"]),
                                      int(row["thumb_size"]))  # fmt: skip

    def image(self, index: int) -> np.ndarray | None:
        """Image ``index`` read again from its source (``(H, W, 3)`` float32), or ``None`` when
        the source cannot be opened again (an array or a dataset given in memory)."""
        from gradcam_widget.auditing import sources
        from gradcam_widget.data import images

        spec = self.manifest["job"]["source"].get("reopen")
        if spec is None:
            return None
        row = self._row(index)
        if spec["kind"] == "scenes":
            scenes = sources.Scenes.parse(spec["spec"])
            scenes.n_objects = spec.get("n_objects", 1)
            return scenes.scene(index).image.astype(np.float32)
        base = spec["path"] if spec["kind"] == "folder" else spec.get("root")
        name = str(row["id"])
        path = os.path.join(base, name) if base else name
        original = sources.name_of_id(name)  # a name that was not text (see sources)
        if original != name and not os.path.lexists(path):
            path = os.path.join(base, original) if base else original
        return images.as_rgb_image(Path(path) if base else path)

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
    .partial/                        files being written (never read)
    .lock                            while a run writes the folder: who (pid, host, since)

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

**The folder, before and after.** The manifest is written before anything else, so a folder
is recognised as this job's from its first file on. A folder without a manifest is used only
when it holds nothing but what a run killed before its manifest leaves (the store's empty
folders, ``.lock``, a half-written manifest in ``.partial/``): any other file in it, even in
a folder named like the store's, refuses the run (:func:`foreign_entries`), so nothing the
package did not write is deleted or overwritten.

**One writer at a time.** A run holds an exclusive lock on ``.lock`` (``fcntl.flock``) from
before its first write to its end, whichever runs its shards (here or on Ray: the driver
writes), and writes its pid, host and start time into it. A second run on the folder is
refused before it writes anything, with one line naming the holder (:func:`lock_holder`
checks without writing). The kernel releases the lock when its process dies, even by
SIGKILL, so a killed run never blocks the next one. ``.lock`` is removed at the end of a
run, while still held; a run that takes the lock checks that the file it locked is still the
one named ``.lock``, so two runs never hold locks on two different files.

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
import hashlib
import json
import os
import re
import socket
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
_TEMPORARY = re.compile(
    r"^(manifest\.json|part-\d{5,}\.parquet|\d{5,}\.npy|\d{5,}\.jpg\.bin|\d{5,}\.json)\.\d+$"
)
"""Names of the files :func:`_atomic_write` leaves in ``.partial/`` when killed."""
_CHUNK = 1 << 20
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


def _atomic_write(folder: Path, final: Path, write) -> None:
    """Write through ``write(path)`` into ``.partial/`` and move the file to ``final``."""
    partial = folder / ".partial"
    partial.mkdir(exist_ok=True)
    temporary = partial / f"{final.name}.{os.getpid()}"
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
        len(size) != 2 or not all(type(side) is int and side > 0 for side in size)
    ):
        refuse(f"'input_size' is {size!r}, expected [height, width], two positive integers")
    names = content.get("class_names")
    if names is not None and not all(isinstance(name, str) for name in names):
        refuse("'class_names' holds something other than strings, expected a list of names")
    skipped = content.get("skipped")
    if skipped is not None and not all(isinstance(entry, dict) for entry in skipped):
        refuse("'skipped' holds something other than objects, expected {index, id, error}s")
    return content


def read_manifest(folder) -> dict | None:
    """The manifest of ``folder``, or ``None`` when there is none.

    Raises:
        AuditStoreError: if it is not JSON, or not of a manifest's shape
            (:func:`check_manifest`).
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AuditStoreError(f"{path} is not a readable manifest ({error})") from None
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
    with open(path, "rb") as handle:
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


def _check_record(folder: Path, shard: int) -> str | None:
    """What is wrong with a committed shard's files (``None``: they match its record)."""
    path = record_path(folder, shard)
    name = path.relative_to(folder).as_posix()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return f"its commit record {name} is unreadable ({error})"
    files = _shard_files(folder, shard)
    if (
        not isinstance(record, dict)
        or record.get("shard") != shard
        or not isinstance(record.get("files"), dict)
        or set(record["files"]) != set(files)
    ):
        return f"{name} is not the commit record of shard {shard}"
    for file, expected in record["files"].items():
        try:
            size = files[file].stat().st_size
        except FileNotFoundError:
            return f"{file} is missing"
        if size != expected.get("size"):
            return f"{file} has {size} bytes, {expected.get('size')} were committed"
        if _hashed(file) and _sha256(files[file]) != expected.get("sha256"):
            return f"{file} differs from what was committed (SHA-256)"
    return None


def _check_legacy(folder: Path, shard: int) -> str | None:
    """What is wrong with a format-1 shard: its part unreadable, its maps or thumbnails not
    of the sizes its rows give."""
    import pyarrow.parquet as pq

    files = _shard_files(folder, shard)
    part, maps, thumbs = files.values()
    part_name, maps_name, thumbs_name = files
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
            not the audit's and are left out.

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


def _lock_file_is_ours(path: Path) -> bool:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False
    if not text:
        return True
    try:
        content = json.loads(text)
    except ValueError:
        return False
    return isinstance(content, dict) and "pid" in content


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
                if not (inner.startswith(f"{MANIFEST}.") and _TEMPORARY.match(inner)):
                    foreign.append(f".partial/{inner}")
        elif name in _OWN_FOLDERS and entry.is_dir(follow_symlinks=False):
            foreign += [f"{name}/{inner}" for inner in sorted(os.listdir(entry.path))]
        else:
            foreign.append(name)
    return foreign


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
            content = json.loads(handle.read() or "null")
        except ValueError:
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


def lock_holder(folder) -> str | None:
    """Who holds ``folder``'s lock (``"pid 123 on host, since ..."``), or ``None`` when no
    run does. Writes nothing: the lock file is opened for reading only when it exists."""
    path = Path(folder) / LOCK
    fcntl = _flock()
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        handle = open(path)  # noqa: SIM115 - closed below
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
    time written in it (the folder is created if needed). At the end the lock file is
    removed while still held, and the folder too if this call created it and the run wrote
    nothing into it.

    Raises:
        AuditStoreError: if another process holds it (the message names that process).
    """
    folder = Path(folder)
    created = not folder.exists()
    path = folder / LOCK
    fcntl = _flock()
    handle = None
    try:
        while handle is None:
            folder.mkdir(parents=True, exist_ok=True)
            opened = open(path, "a+")  # noqa: SIM115 - held for the whole run
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
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": since}) + "\n")  # fmt: skip
        handle.flush()
        yield
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # while held: see the module's *One writer*
            handle.close()
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                folder.rmdir()


def prepare(folder) -> Path:
    """Create the store's folders; drop what an interrupted run left in ``.partial/`` (only
    files named as :func:`_atomic_write` names them)."""
    folder = Path(folder)
    for name in (*_OWN_FOLDERS, ".partial"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for leftover in (folder / ".partial").iterdir():
        if _TEMPORARY.match(leftover.name) and leftover.is_file():
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
        count = manifest.get("shards")
        good, damaged = check_shards(self.folder, count)
        if damaged:
            raise AuditStoreError(damage_message(self.folder, damaged))
        missing = sorted(set(range(count or 0)) - good)
        if self.complete and missing:
            raise AuditStoreError(
                f"{self.folder}: shard {missing[0]} of this complete audit is missing (no "
                f"{record_path(self.folder, missing[0]).relative_to(self.folder)}"
                f"{f', and {len(missing) - 1} more' if len(missing) > 1 else ''}): run the "
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
        from gradcam_widget import core

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
        from gradcam_widget import images, sources

        spec = self.manifest["job"]["source"].get("reopen")
        if spec is None:
            return None
        row = self._row(index)
        if spec["kind"] == "scenes":
            scenes = sources.Scenes.parse(spec["spec"])
            scenes.n_objects = spec.get("n_objects", 1)
            return scenes.scene(index).image.astype(np.float32)
        if spec["kind"] == "folder":
            return images.as_rgb_image(Path(spec["path"]) / row["id"])
        root = spec.get("root")
        return images.as_rgb_image(Path(root) / row["id"] if root else row["id"])

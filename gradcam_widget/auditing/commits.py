"""The audit store's shards and their commit records: writing a shard (:func:`commit`), and
telling which shards are done and whole (:func:`check_shards`; see the *Commit protocol* and
*Verification* of :mod:`gradcam_widget.auditing.store`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from gradcam_widget.auditing.manifest import read_manifest, type_name
from gradcam_widget.auditing.store_folder import own_temporary
from gradcam_widget.auditing.store_io import (
    NotRegularFile,
    atomic_write,
    kind_of,
    one_line,
    open_regular,
    read_json,
)
from gradcam_widget.auditing.store_layout import (
    CHUNK,
    COMMITS,
    OWN_FOLDERS,
    PART_NAME,
    RECORD_LIMIT,
    RECORD_NAME,
    TABLE,
    AuditStoreError,
    ShardResult,
    arrow_schema,
)

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
    with open_regular(path) as handle:
        while chunk := handle.read(CHUNK):
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
        return _numbers(folder / TABLE, PART_NAME)
    return _numbers(folder / COMMITS, RECORD_NAME)


def write_record(folder, shard: int, rows: int) -> None:
    """Commit a shard whose three files are in place: write its record, atomically."""
    folder = Path(folder)
    files = {}
    for name, path in _shard_files(folder, shard).items():
        files[name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    text = json.dumps({"shard": shard, "rows": rows, "files": files}, indent=1) + "\n"
    (folder / COMMITS).mkdir(exist_ok=True)
    atomic_write(folder, record_path(folder, shard), lambda path: path.write_text(text))


def _record_problem(record, shard: int, names) -> str | None:
    """Why ``record`` (parsed JSON) is not of a commit record's shape for ``shard`` whose
    files are ``names``, else ``None``."""
    if not isinstance(record, dict):
        return f"it holds {type_name(record)}, expected an object"
    number = record.get("shard")
    if type(number) is not int or number != shard:
        return f"it names shard {number!r:.40}"
    rows = record.get("rows")
    if type(rows) is not int or rows < 0:
        return f"'rows' is {type_name(rows)} ({rows!r:.40}), expected a count"
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
            shown = f"{type_name(entry)} ({entry!r:.40})"
            return f"'files' gives {name} {shown}, expected {{size, sha256}}"
    return None


def _file_problem(name: str, path: Path) -> str | None:
    """Why a shard's file ``path`` cannot be checked: missing, not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as error:
        return f"{name} cannot be looked at ({one_line(error)})"
    if not stat.S_ISREG(mode):
        return f"{name} is {kind_of(mode)}, not a file"
    return None


def _check_record(folder: Path, shard: int) -> str | None:
    """What is wrong with a committed shard's files (``None``: they match its record)."""
    path = record_path(folder, shard)
    name = path.relative_to(folder).as_posix()
    files = _shard_files(folder, shard)
    try:
        record = read_json(path, RECORD_LIMIT)
        problem = _record_problem(record, shard, files)
    except FileNotFoundError:
        return f"its commit record {name} is missing"
    except (NotRegularFile, ValueError) as error:
        problem = one_line(error)
    except OSError as error:
        return f"its commit record {name} is unreadable ({one_line(error)})"
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
                return f"{file} is unreadable ({one_line(error)})"
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


def prepare(folder) -> Path:
    """Create the store's folders; drop what an interrupted run left in ``.partial/`` (only
    the package's own files, :func:`own_temporary`: anything else there is left alone)."""
    folder = Path(folder)
    for name in (*OWN_FOLDERS, ".partial"):
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

    for name in OWN_FOLDERS:
        (folder / name).mkdir(exist_ok=True)
    atomic_write(folder, maps_path(folder, result.shard), write_maps)
    atomic_write(folder, thumbs_path(folder, result.shard), write_thumbs)
    schema = arrow_schema().with_metadata(
        {"skipped": json.dumps(result.skipped), "layer": json.dumps(result.layer)}
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    atomic_write(folder, part_path(folder, result.shard),
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

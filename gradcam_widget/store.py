"""The audit store: one folder that an audit fills shard by shard and a gallery reads.

Layout of ``out/``::

    manifest.json                    the job (model name and hash, source, every option),
                                     the package version, progress, skipped files
    explanations.parquet/            a Parquet dataset, one part per shard:
        part-00000.parquet           one row per image (see COLUMNS)
    maps/00000.npy                   the shard's raw maps, (n, h, w) float16
    thumbs/00000.jpg.bin             the shard's overlay thumbnails, JPEG files end to end
    .partial/                        files being written (never read)
    .lock                            held by the run writing the folder (one at a time)

**Commit protocol.** A shard is written as maps, then thumbnails, each into ``.partial/``
and moved into place with :func:`os.replace` (atomic on one file system); its Parquet part is
moved into ``explanations.parquet/`` last. The part is the shard's commit: a shard is done
exactly when its part exists, and a part exists only when its maps and thumbnails do. A run
killed at any moment leaves only finished parts (and maybe unreferenced files in
``.partial/`` or a shard's maps without its part, both rewritten by the next run), so a rerun
computes the missing shards and nothing twice. Each file is flushed to disk (``fsync``) before
it is moved, so a part never names maps that a power cut lost. The manifest is written before
anything else, so a folder is recognised as this job's from its first file on. A run holds an
exclusive lock on ``.lock`` (``fcntl.flock``): a second run on the same folder is refused
rather than let two writers interleave.

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
import json
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
TABLE = "explanations.parquet"
FORMAT_VERSION = 1

_PART = re.compile(r"^part-(\d{5,})\.parquet$")
_OWN_NAMES = {TABLE, "maps", "thumbs", ".partial", ".lock"}
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
``shard``/``row``/``thumb_*``: where its map and thumbnail are stored.
"""


class AuditStoreError(ValueError):
    """A results folder that belongs to another job, or that is not a results folder."""


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


def read_manifest(folder) -> dict | None:
    """The manifest of ``folder``, or ``None`` when there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AuditStoreError(f"{path} is not a readable manifest ({error})") from None


def done_shards(folder) -> set[int]:
    """Numbers of the shards whose Parquet part is in place."""
    table = Path(folder) / TABLE
    if not table.is_dir():
        return set()
    return {int(match[1]) for name in os.listdir(table) if (match := _PART.match(name))}


def part_path(folder, shard: int) -> Path:
    return Path(folder) / TABLE / f"part-{shard:05d}.parquet"


def maps_path(folder, shard: int) -> Path:
    return Path(folder) / "maps" / f"{shard:05d}.npy"


def thumbs_path(folder, shard: int) -> Path:
    return Path(folder) / "thumbs" / f"{shard:05d}.jpg.bin"


def is_empty(folder) -> bool:
    """True when ``folder`` is missing, empty, or holds only a store's own empty folders (a
    run killed before its manifest was written)."""
    folder = Path(folder)
    if not folder.is_dir():
        return True
    names = set(os.listdir(folder))
    return names <= _OWN_NAMES and not done_shards(folder)


@contextlib.contextmanager
def lock(folder):
    """Hold ``folder/.lock`` exclusively for a run (the folder is created if needed, and
    removed again if the run wrote nothing into it).

    Raises:
        AuditStoreError: if another process holds it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditStoreError(
                    f"another audit is writing to {folder} now; wait for it to finish (or stop "
                    "it) before running this one"
                ) from None
        yield
    finally:
        handle.close()
        if created and set(os.listdir(folder)) <= {".lock"}:
            path.unlink(missing_ok=True)
            folder.rmdir()


def prepare(folder) -> Path:
    """Create the store's folders; drop what an interrupted run left in ``.partial/``."""
    folder = Path(folder)
    for name in (TABLE, "maps", "thumbs", ".partial"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for leftover in (folder / ".partial").iterdir():
        leftover.unlink(missing_ok=True)
    return folder


def commit(folder, result: ShardResult) -> None:
    """Write one shard: maps, thumbnails, then its Parquet part (the commit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
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

    _atomic_write(folder, maps_path(folder, result.shard), write_maps)
    _atomic_write(folder, thumbs_path(folder, result.shard), write_thumbs)
    schema = _arrow_schema().with_metadata(
        {"skipped": json.dumps(result.skipped), "layer": json.dumps(result.layer)}
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    _atomic_write(folder, part_path(folder, result.shard),
                  lambda path: pq.write_table(table, path))  # fmt: skip


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
    """The rows of the finished shards as a pandas DataFrame, sorted by ``index``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numbers = sorted(done_shards(folder) if shards is None else shards)
    tables = [pq.read_table(part_path(folder, shard)) for shard in numbers]
    if not tables:
        table = _arrow_schema().empty_table()
    else:
        table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
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

    Raises:
        AuditStoreError: if ``folder`` holds no manifest.
    """

    def __init__(self, folder, computed_shards: int | None = None):
        self.folder = Path(os.path.expanduser(os.fspath(folder)))
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise AuditStoreError(f"{self.folder} holds no audit results ({MANIFEST} missing)")
        self.manifest = manifest
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
            self._table = read_table(self.folder)
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

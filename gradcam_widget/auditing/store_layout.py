"""The audit store's layout: the names of its files and folders, the columns of its table
(:data:`COLUMNS`), what one shard adds (:class:`ShardResult`) and the store's error
(:class:`AuditStoreError`). See :mod:`gradcam_widget.auditing.store` for the whole design."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

MANIFEST = "manifest.json"
TABLE = "explanations.parquet"
COMMITS = "commits"
LOCK = ".lock"
FORMAT_VERSION = 2
"""2: shards committed by records in ``commits/``; 1: by their parts alone (still read)."""

PART_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
"""A shard's Parquet part's name (group 1: the shard's number)."""
RECORD_NAME = re.compile(r"^(\d{5,})\.json$")
"""A shard's commit record's name (group 1: the shard's number)."""
OWN_FOLDERS = (TABLE, "maps", "thumbs", COMMITS)
"""The store's folders of shard files."""
SHARD_FILES = {
    TABLE: PART_NAME,
    "maps": re.compile(r"^\d{5,}\.npy$"),
    "thumbs": re.compile(r"^\d{5,}\.jpg\.bin$"),
    COMMITS: RECORD_NAME,
}
"""The names of shard files in each of the store's folders."""
_FINAL_NAMES = (
    r"(manifest\.json|\.lock|part-\d{5,}\.parquet|\d{5,}\.npy|\d{5,}\.jpg\.bin|\d{5,}\.json)"
)
PARTIAL_MARK = ".gw-partial-"
"""What a file being written in ``.partial/`` has between its final name and its pid."""
TEMPORARY = re.compile(rf"^{_FINAL_NAMES}\.gw-partial-\d+-[0-9a-f]{{8}}$")
"""Names of the files :func:`atomic_write` leaves in ``.partial/`` when killed."""
LEGACY_TEMPORARY = re.compile(rf"^{_FINAL_NAMES}\.\d+$")
"""Names earlier versions gave them (``<name>.<pid>``): the package's only when their
content begins as the package's files do (:data:`SIGNATURES`)."""
SIGNATURES = (
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
LEGACY_SINCE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
"""A lock's ``since`` as versions before :data:`LOCK_MARK` wrote it (a UTC time)."""
CHUNK = 1 << 20
"""Bytes read at a time when a file is hashed."""
RECORD_LIMIT = 1 << 20
"""Largest commit record read, in bytes (a record is a few hundred)."""
LOCK_LIMIT = 1 << 16
"""Largest ``.lock`` read, in bytes (a lock is a few dozen)."""
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


def arrow_schema():
    """The ``pyarrow`` schema of :data:`COLUMNS`."""
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

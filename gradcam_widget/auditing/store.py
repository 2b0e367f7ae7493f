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

The store is kept in one module per job, all of whose names this module gives too:
:mod:`~gradcam_widget.auditing.store_layout` (names, columns, :class:`ShardResult`),
:mod:`~gradcam_widget.auditing.store_io` (reading regular files, atomic writes),
:mod:`~gradcam_widget.auditing.manifest`, :mod:`~gradcam_widget.auditing.commits` (writing a
shard, checking shards against their records), :mod:`~gradcam_widget.auditing.store_folder`
(what a folder holds before a run), :mod:`~gradcam_widget.auditing.store_lock` (one writer at
a time); here: reading the results (:class:`AuditResults`).

Only numpy, pyarrow and pandas are used by the store; it never imports TensorFlow.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gradcam_widget.auditing.commits import (  # noqa: F401 - the store's names, here too
    adopt_legacy,
    check_shards,
    commit,
    damage_message,
    done_shards,
    maps_path,
    missing_shards,
    part_metadata,
    part_path,
    part_rows,
    prepare,
    record_path,
    shard_count,
    thumbs_path,
    write_record,
)
from gradcam_widget.auditing.manifest import (  # noqa: F401 - the store's names, here too
    check_manifest,
    read_manifest,
    type_name,
)
from gradcam_widget.auditing.store_folder import (  # noqa: F401 - the store's names, here too
    foreign_entries,
    is_empty,
    own_temporary,
    unusual_entries,
)
from gradcam_widget.auditing.store_io import (  # noqa: F401 - the store's names, here too
    NotRegularFile,
    atomic_write,
    kind_of,
    one_line,
    open_regular,
    read_json,
    write_json,
)
from gradcam_widget.auditing.store_layout import (  # noqa: F401 - the store's names, here too
    CHUNK,
    COLUMNS,
    COMMITS,
    FORMAT_VERSION,
    LEGACY_SINCE,
    LEGACY_TEMPORARY,
    LOCK,
    LOCK_LIMIT,
    LOCK_MARK,
    MANIFEST,
    MAX_INPUT_SIDE,
    OPEN_MAPS,
    OWN_FOLDERS,
    PART_NAME,
    PARTIAL_MARK,
    RECORD_LIMIT,
    RECORD_NAME,
    SHARD_FILES,
    SIGNATURES,
    TABLE,
    TEMPORARY,
    AuditStoreError,
    ShardResult,
    arrow_schema,
)
from gradcam_widget.auditing.store_lock import (  # noqa: F401 - the store's names, here too
    check_unlocked,
    lock,
    lock_holder,
)


def read_table(folder, shards: Sequence[int] | None = None):
    """The rows of ``shards`` (default: the committed ones) as a pandas DataFrame, sorted by
    ``index``; parts without a commit record are never read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numbers = sorted(done_shards(folder) if shards is None else shards)
    tables = [pq.read_table(part_path(folder, shard)) for shard in numbers]
    if not tables:
        table = arrow_schema().empty_table()
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
        from gradcam_widget import options as recipe
        from gradcam_widget.cam import core

        options = self.options["cam_options"]
        size = tuple(size or self.manifest.get("input_size") or (224, 224))
        return core.to_heatmap(
            self.raw(index),
            size,
            order=options.get("order", recipe.TABLE["order"].default),
            interpolation=options.get("interpolation", recipe.TABLE["interpolation"].default),
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

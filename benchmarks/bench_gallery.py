"""CamGallery on 10,000 rows: how long a page change, a sort and a filter take, from code.

The results folder is made cheaply: one real audit of ``--audit`` scenes (the ``shapes``
model), whose rows, raw maps and thumbnails are then **replicated** into a store of
``--rows`` rows (copy ``k`` of image ``i`` gets ``index = k * audit + i`` and the id
``"<id>~k"``), written part by part with :func:`gradcam_widget.store.commit` as an audit
writes them. The values repeat every ``--audit`` rows, so sorts see many ties; the sizes
(table, thumbnail files, one part per shard) are those of a real 10,000-image audit.

Each change is timed with ``time.perf_counter`` from the call to every cell holding its new
thumbnail, caption and button label and the summary written (the setters are synchronous):

* next page: a click on the "next" button (back to page 1 after the last);
* jump to page: the page box set to a random page, as the browser sets it;
* sort change: another sort column or direction (the selection is sorted again);
* filter change: another class, correct/wrong filter or threshold (filtered and sorted again).

Without a front-end no message leaves the kernel: sending the page's thumbnails to the browser
and drawing them is not part of these numbers.

Run::

    .venv/bin/python benchmarks/bench_gallery.py
    .venv/bin/python benchmarks/bench_gallery.py --changes 50 --out /tmp/gallery10k
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import gradcam_widget as gw
from gradcam_widget.auditing import store
from gradcam_widget.auditing.gallery import CamGallery

STORAGE = ("shard", "row", "thumb_offset", "thumb_size")
SORTS = [("entropy", False), ("predicted_score", True), ("centre_share", False),
         ("object_share", True), ("raw_max", True), ("id", False)]  # fmt: skip
TARGET_MS = 200.0


def plain_rows(table) -> list[dict]:
    """A table's rows as dicts :func:`store.commit` takes (no storage columns, ``None`` for
    missing values, Python scalars)."""
    rows = []
    for row in table.to_dict("records"):
        rows.append(
            {
                name: None
                if pd.isna(row[name])
                else (row[name].item() if isinstance(row[name], np.generic) else row[name])
                for name in store.COLUMNS
                if name not in STORAGE
            }
        )
    return rows


def replicated_store(audit: store.AuditResults, out: Path, rows: int, shard_size: int):
    """Write ``rows`` rows into ``out``: the rows of ``audit`` again and again, each copy
    with a new ``index`` and ``id``, maps and thumbnails copied with them."""
    store.prepare(out)
    table = audit.table
    source = plain_rows(table)
    thumbs = [audit.thumbnail_of(row) for row in table.to_dict("records")]
    raws = np.stack([audit.raw(int(index)) for index in table["index"]]).astype(np.float16)
    count = len(source)
    for shard, start in enumerate(range(0, rows, shard_size)):
        positions = [(start + offset) % count for offset in range(min(shard_size, rows - start))]
        part = []
        for offset, position in enumerate(positions):
            copy = (start + offset) // count
            row = dict(
                source[position], index=start + offset, id=f"{source[position]['id']}~{copy}"
            )
            part.append(row)
        result = store.ShardResult(shard, part, raws[positions], [thumbs[p] for p in positions])
        store.commit(out, result)
    manifest = json.loads(json.dumps(audit.manifest))
    manifest.update(rows=rows, images=rows, shards=-(-rows // shard_size), replicated=count)
    store.write_json(out, store.MANIFEST, manifest)
    return store.AuditResults(out)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(gallery: CamGallery, changes: int, rng) -> dict[str, list[float]]:
    """Seconds of each kind of change, ``changes`` samples each, interleaved."""
    sorts = itertools.cycle(SORTS)
    classes = itertools.cycle([*range(len(gallery.results.class_names or [0])), None])
    thresholds = itertools.cycle([("object_share", "<=", 0.3), ("entropy", ">=", 0.86), None])
    corrects = itertools.cycle(["correct", "all"])
    filters = itertools.cycle(["class", "threshold", "correct"])

    def next_page():
        if gallery.page == gallery.page_count:
            gallery.page = 1
        else:
            gallery._next.click()

    def jump():
        gallery.controls["page"].value = int(rng.integers(1, gallery.page_count + 1))

    def sort():
        gallery.sort_by, gallery.ascending = next(sorts)

    def filter_change():
        kind = next(filters)
        if kind == "class":
            gallery.class_filter = next(classes)
        elif kind == "threshold":
            gallery.threshold = next(thresholds)
        else:
            gallery.correct_filter = next(corrects)

    kinds = {"next page": next_page, "jump to page": jump, "sort change": sort,
             "filter change": filter_change}  # fmt: skip
    times = {name: [] for name in kinds}
    for _ in range(changes):
        for name, change in kinds.items():
            times[name].append(timed(change))
            assert gallery.error is None, gallery.error
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the store")
    parser.add_argument("--audit", type=int, default=256, help="real scenes audited")
    parser.add_argument("--changes", type=int, default=30, help="samples per kind of change")
    parser.add_argument("--page-size", type=int, default=24)
    parser.add_argument("--out", type=Path, help="keep the stores here (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as temporary:
        root = args.out or Path(temporary)
        started = time.perf_counter()
        audit = gw.audit("shapes", f"scenes:1000000-{1000000 + args.audit}",
                         out=root / "audit", shard_size=args.audit, progress=False)  # fmt: skip
        audit_s = time.perf_counter() - started
        big = root / f"replicated{args.rows}"
        started = time.perf_counter()
        results = (
            store.AuditResults(big)
            if (big / store.MANIFEST).is_file()
            else replicated_store(audit, big, args.rows, args.audit)
        )
        write_s = time.perf_counter() - started

        started = time.perf_counter()
        results = store.AuditResults(big)
        gallery = CamGallery(results, page_size=args.page_size)
        build_s = time.perf_counter() - started
        assert len(gallery.selection) == args.rows
        times = measure(gallery, args.changes, np.random.default_rng(0))
        gallery.close()

    print(
        f"CamGallery, {args.rows:,} rows ({args.audit} audited scenes replicated), "
        f"{args.page_size} thumbnails a page; CPU, no front-end; {args.changes} samples each"
    )
    print(f"audit {audit_s:.1f} s · replicated store written in {write_s:.1f} s · gallery "
          f"made (table read, first page drawn) in {1000 * build_s:.0f} ms")  # fmt: skip
    print(f"\n| change | median ms | max ms | target ≤ {TARGET_MS:.0f} ms |\n|---|---:|---:|---|")
    for name, samples in times.items():
        median, worst = 1000 * statistics.median(samples), 1000 * max(samples)
        verdict = "yes" if worst <= TARGET_MS else "NO"
        print(f"| {name} | {median:.1f} | {worst:.1f} | {verdict} |")


if __name__ == "__main__":
    main()

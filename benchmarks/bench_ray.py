"""Audit speed: locally, and on Ray Data actors (1 and 2 workers), side by side in one run.

The same audit (``gw.audit("shapes", "scenes:1000000-1000256", shard_size=32)`` by default)
into a fresh folder per contender:

* ``local``: ``ray=None``, one process (TensorFlow uses every core);
* ``ray x1``: ``ray=True`` with one actor of 2 CPUs (``GW_RAY_WORKERS=1 GW_RAY_CPUS=2``: the
  actor's TensorFlow runs 2 threads, like the local run);
* ``ray x2``: two actors of 1 CPU each (``GW_RAY_WORKERS=2 GW_RAY_CPUS=1``).

Ray runs on a local Ray of ``--cpus`` CPUs (default 2) started once before timing (its start
is reported, not counted). Each contender's time is the wall time of the ``gw.audit`` call:
for Ray it includes starting the actors (a process each, importing TensorFlow and loading the
model, compiling its passes), reported apart as *first shard* (time until the first shard was
committed); *steady* is the rate after that. The shapes model is loaded once before timing
(``gw.audit`` loads it on the driver in every mode). Results are checked equal to the local
run's (classes, ids, scores).

**This machine has 2 cores**, shared with other jobs: two actors compete with each other,
with the driver (which commits the results) and with Ray's own processes, so ``ray x2`` cannot
beat ``local`` here; the point of the table is the overhead of Ray on one machine. On a
cluster each actor has its own cores or GPU and the rate grows with the actors. Run::

    .venv/bin/python benchmarks/bench_ray.py                 # ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_ray.py --images 64 --shard-size 16   # smoke
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

CONTENDERS = {
    "local": None,
    "ray x1": {"GW_RAY_WORKERS": "1", "GW_RAY_CPUS": "2"},
    "ray x2": {"GW_RAY_WORKERS": "2", "GW_RAY_CPUS": "1"},
}


def run(name: str, settings, folder: Path, args) -> dict:
    import gradcam_widget as gw
    from gradcam_widget.auditing import store

    for key in ("GW_RAY_WORKERS", "GW_RAY_CPUS"):
        os.environ.pop(key, None)
    os.environ.update(settings or {})
    commits = []
    original = store.commit

    def timed_commit(out, result):
        original(out, result)
        commits.append((time.perf_counter(), len(result.rows) + len(result.skipped)))

    store.commit = timed_commit
    try:
        started = time.perf_counter()
        results = gw.audit(
            "shapes",
            f"scenes:1000000-{1000000 + args.images}",
            out=folder / name.replace(" ", "_"),
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            progress=False,
            ray=None if settings is None else True,
        )
        wall = time.perf_counter() - started
    finally:
        store.commit = original
    first_time, first_count = commits[0]
    rest = args.images - first_count
    steady = rest / (commits[-1][0] - first_time) if len(commits) > 1 else float("nan")
    return {
        "name": name,
        "wall": wall,
        "rate": args.images / wall,
        "first": first_time - started,
        "steady": steady,
        "table": results.table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()

    import ray

    from gradcam_widget.data import models

    models.load("shapes")
    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="warning")  # fmt: skip
    ray_start = time.perf_counter() - started
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows = []
    try:
        for name, settings in CONTENDERS.items():
            rows.append(run(name, settings, folder, args))
            print(f"  {name}: {rows[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        ray.shutdown()

    local = rows[0]
    for row in rows[1:]:
        for column in ("id", "predicted_class", "explained_class"):
            assert (row["table"][column] == local["table"][column]).all(), (row["name"], column)
        np.testing.assert_allclose(
            row["table"]["predicted_score"], local["table"]["predicted_score"], atol=1e-4
        )
    print(
        f"\n{args.images} scenes, shard_size {args.shard_size}, batch_size {args.batch_size}, "
        f"{os.cpu_count()} cores; local Ray of {args.cpus} CPUs started in {ray_start:.1f} s "
        "(not counted)\n"
    )
    header = (
        f"{'':8} {'wall s':>7} {'img/s':>7} {'vs local':>9} {'first shard s':>14} "
        f"{'steady img/s':>13} {'vs local':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:8} {row['wall']:7.1f} {row['rate']:7.1f} "
            f"{row['rate'] / local['rate']:8.2f}x {row['first']:14.1f} "
            f"{row['steady']:13.1f} {row['steady'] / local['steady']:8.2f}x"
        )
    print("\nresults equal to the local run's: yes")


if __name__ == "__main__":
    main()

"""What an audit costs over the explanations it stores, and whether its memory stays flat.

Run from the repository root (takes a few minutes on 2 cores)::

    python benchmarks/bench_audit.py [--small 200] [--large 2000]

Two measurements, each in fresh subprocesses so that peak RSS is the job's own:

1. **Throughput, side by side:** the same held-out scenes through ``gw.explain`` alone (maps
   in memory, nothing measured or written) and through ``gw.audit`` (maps measured, thumbnails
   encoded, shards committed to disk), alternating, three rounds; images/s and the ratio.
2. **Memory:** peak RSS (``ru_maxrss``) of an audit of ``--small`` and of ``--large`` scenes;
   the ratio must stay near 1 (the acceptance bound is 1.2x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import resource, sys, time
import numpy as np
import gradcam_widget as gw
from gradcam_widget import data
kind, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
entry = gw.models.load("shapes")
gw.explain(entry, np.stack([data.scene(0, n_objects=1).image] * 2))  # compile outside the clock
started = time.perf_counter()
if kind == "explain":
    for start in range(0, count, 256):
        seeds = range(1_000_000 + start, 1_000_000 + min(start + 256, count))
        batch = np.stack([data.scene(seed, n_objects=1).image for seed in seeds])
        gw.explain(entry, batch, batch_size=32)
else:
    gw.audit(entry, f"scenes:1000000-{1_000_000 + count}", out=out, batch_size=32,
             shard_size=256, progress=False)
seconds = time.perf_counter() - started
print(count / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def run(kind: str, count: int) -> tuple[float, int]:
    """``(images/s, peak RSS bytes)`` of one job in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, "-c", JOB, kind, str(count), str(Path(folder) / "results")],
            env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    rate, peak = result.stdout.split()[-2:]
    return float(rate), int(peak)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--throughput-images", type=int, default=512)
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {"explain": [], "audit": []}
    for _ in range(args.rounds):
        for kind in rates:
            rates[kind].append(run(kind, args.throughput_images)[0])
    explain_rate, audit_rate = (statistics.median(rates[k]) for k in ("explain", "audit"))
    print(f"throughput on {args.throughput_images} scenes, median of {args.rounds} rounds:")
    print(f"  gw.explain only        {explain_rate:7.1f} images/s")
    print(f"  gw.audit (to disk)     {audit_rate:7.1f} images/s  "
          f"({explain_rate / audit_rate:.2f}x the time of explain)")  # fmt: skip

    _, small = run("audit", args.small)
    _, large = run("audit", args.large)
    print("peak RSS of an audit:")
    print(f"  {args.small:5d} scenes  {small / 2**20:7.0f} MiB")
    print(f"  {args.large:5d} scenes  {large / 2**20:7.0f} MiB  ({large / small:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

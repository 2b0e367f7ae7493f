"""Memory of a long explorer session on VGG16 (random weights): does it fit Binder's ~2 GB?

The session: VGG16 + a CamExplorer on a photo, then ``--changes`` class changes (each a new
class: one model pass, one capture) and every layer shown once. For each TensorFlow set-up
(its defaults, and oneDNN switched off with ``TF_ENABLE_ONEDNN_OPTS=0`` as binder/start does)
one fresh process runs the session and reports: the RSS with the model built; the process's
peak RSS (the kernel's high-water mark ``VmHWM``: building VGG16 is included) and the peak of
the session alone (the mark reset once the model is built); the anonymous part of the RSS
(what a container's memory limit really holds; shared-library pages can be dropped); the RSS
after change 10 and after the last change and the growth between them; the bytes the
explorer's caches hold.

    .venv/bin/python benchmarks/bench_memory.py
    .venv/bin/python benchmarks/bench_memory.py --cache-bytes 134217728 --json out.json

Targets (issue 11): peak RSS <= 1.8 GB; growth between change 10 and change 30 <= 50 MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from rss import MB, reset_peak, status

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def session(changes: int, cache_bytes: int | None) -> dict:
    """One explorer session in this process; returns its figures in MB."""
    import gradcam_widget as gw
    from gradcam_widget.engine._tf import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None)
    image = gw.data.sample("grace_hopper")
    gc.collect()
    rss_model, peak_model = status("VmRSS"), status("VmHWM")
    session_peak_known = reset_peak()
    options = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    started = time.perf_counter()
    explorer = gw.CamExplorer(model, image, **options)
    first = explorer.class_index
    rss_after = []
    classes = [index for index in range(changes + 1) if index != first][:changes]
    for class_index in classes:
        explorer.class_index = class_index
        assert explorer.error is None, explorer.error
        gc.collect()
        rss_after.append(status("VmRSS"))
    for layer in explorer.capture.layers:
        explorer.layer = layer
        assert explorer.error is None, explorer.error
    gc.collect()
    seconds = time.perf_counter() - started
    tenth = rss_after[min(9, len(rss_after) - 1)]
    session_peak = status("VmHWM") if session_peak_known else float("nan")
    return {
        "changes": len(classes),
        "layers_shown": len(explorer.capture.layers),
        "cache_budget_mb": explorer.captures.budget / MB,
        "rss_with_model_mb": rss_model / MB,
        "peak_rss_mb": max(peak_model, session_peak) / MB,
        "session_peak_rss_mb": session_peak / MB,
        "rss_after_change_10_mb": tenth / MB,
        "rss_after_last_change_mb": rss_after[-1] / MB,
        "growth_10_to_last_mb": (rss_after[-1] - tenth) / MB,
        "rss_at_end_mb": status("VmRSS") / MB,
        "anonymous_rss_at_end_mb": status("RssAnon") / MB,
        "cached_bytes_mb": explorer.cached_bytes / MB,
        "captures_cached": len(explorer.captures),
        "session_seconds": seconds,
    }


SETUPS = {"TF defaults": {}, "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30, help="class changes (default 30)")
    parser.add_argument("--cache-bytes", type=int, default=None, help="CamExplorer cache_bytes")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one session, figures as JSON on stdout
        print(json.dumps(session(args.changes, args.cache_bytes)))
        return 0

    results = {}
    for name, env in SETUPS.items():  # one fresh process each, one after the other
        command = [sys.executable, __file__, "--child", "--changes", str(args.changes)]
        if args.cache_bytes is not None:
            command += ["--cache-bytes", str(args.cache_bytes)]
        done = subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = list(next(iter(results.values())))
    width = max(len(row) for row in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{name:>12}" for name in results))
    for row in rows:
        cells = [results[name][row] for name in results]
        print(f"{row:<{width}}  " + "  ".join(
            f"{cell:>12.1f}" if isinstance(cell, float) else f"{cell:>12}" for cell in cells
        ))  # fmt: skip
    for name, figures in results.items():
        print(
            f"{name}: peak RSS {figures['peak_rss_mb']:.0f} MB "
            f"({'met' if figures['peak_rss_mb'] <= 1843 else 'MISSED'} <= 1843 MB), session "
            f"peak {figures['session_peak_rss_mb']:.0f} MB "
            f"({'met' if figures['session_peak_rss_mb'] <= 1843 else 'MISSED'}); growth "
            f"{figures['growth_10_to_last_mb']:.1f} MB "
            f"({'met' if figures['growth_10_to_last_mb'] <= 50 else 'MISSED'} <= 50 MB)"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

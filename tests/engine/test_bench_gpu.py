"""The GPU benchmark's CPU path: ``benchmarks/bench_gpu.py --smoke`` under ``KERAS_BACKEND=jax``.

The script runs in a fresh process (the backend is chosen when Keras is imported), on a tiny
CNN, batches of 1 and 4, one round. It must exit 0, print the Markdown table, and write JSON
with ``gw.explain`` and floor rows of positive throughput for both batches, ``gw.explain``
maps that passed their checks, and a PyTorch row that either ran or says torch is missing.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
EXPLAIN, FLOOR, TORCH = "gw.explain", "floor: jit forward alone", "PyTorch hooks"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed: bench_gpu.py --smoke runs Keras with KERAS_BACKEND=jax",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``(completed process, JSON figures or None)`` of one ``--smoke`` run."""
    out = tmp_path_factory.mktemp("bench_gpu") / "bench_gpu.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    return done, json.loads(out.read_text()) if out.exists() else None


def test_smoke_exits_cleanly(smoke):
    done, figures = smoke
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert figures is not None, "no JSON written"
    assert figures["failures"] == []
    assert figures["environment"]["keras backend"] == "jax"
    assert figures["settings"]["batches"] == [1, 4]


def test_smoke_rows_have_positive_throughput(smoke):
    done, figures = smoke
    assert figures is not None, done.stderr[-4000:]
    rows = {(row["contender"], row["batch"]): row for row in figures["rows"]}
    for batch in (1, 4):
        for contender in (EXPLAIN, FLOOR):
            row = rows[(contender, batch)]
            assert row["status"] == "ok", row
            assert row["images_per_s"] > 0, row
            assert len(row["seconds_per_image"]) == 1  # one round
            # the printed table has the same row, with a positive figure
            line = re.search(
                rf"^\| tiny \| float32 \| {batch} \| {re.escape(contender)} \| ([0-9.]+) \|",
                done.stdout,
                re.MULTILINE,
            )
            assert line and float(line.group(1)) > 0, (contender, batch, done.stdout[-3000:])
        torch_row = rows[(TORCH, batch)]
        if importlib.util.find_spec("torch") is None:
            assert torch_row["status"] == "torch not installed", torch_row
        else:
            assert torch_row["status"] == "ok" and torch_row["images_per_s"] > 0, torch_row


def test_smoke_checks_the_maps(smoke):
    done, figures = smoke
    assert figures is not None, done.stderr[-4000:]
    checks = {(check["check"], check["batch"]): check for check in figures["checks"]}
    for batch in (1, 4):
        maps = checks[(f"{EXPLAIN} maps", batch)]
        assert maps["ok"] is True, maps
        assert f"({batch}, 32, 32)" in maps["value"], maps
        scores = checks[(f"max |softmax({EXPLAIN} scores) - floor output|", batch)]
        assert scores["ok"] is True, scores

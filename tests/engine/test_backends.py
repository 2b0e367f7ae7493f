"""The backend matrix: the same checks on Keras's TensorFlow, JAX and PyTorch backends, each in
its own process (Keras picks its backend once per process), and their maps compared.

``tests/engine/backend_worker.py`` holds the checks: VGG16 (random weights) and a MobileNetV2 nested
in a Sequential against a longhand reference that uses the backend's own gradient, a softmax
head (logit and probability), a softmax inside a Lambda, a sigmoid head, every method and
option, fusion, vanilla and guided saliency, Guided Grad-CAM, targets (a class per image, a
callable, a regression value, a region), the metrics, an audit and the widget; and what a failing
model gets (a layer that raises, a model that fails only while traced, an image too small, layer
names TensorFlow's name scopes refuse, a NaN image among several, an error the model raises while
handling its layer's, a size no multiple of 8, a crop of everything, unreadable messages, resource
errors and the package's own, a failing batch's shape), also run alone, check by check
(:data:`ERROR_CHECKS`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("backend_worker.py")
BACKENDS = ("tensorflow", "jax", "torch")
INSTALLED = {backend: importlib.util.find_spec(backend) is not None for backend in ("jax", "torch")}
INSTALL = {"jax": "pip install 'gradcam_widget[jax]'", "torch": "pip install torch"}

pytestmark = pytest.mark.slow


def run_workers(folder: Path, checks: tuple[str, ...] = ()) -> dict:
    """Each installed backend's worker, in a process of its own (all its checks, or only the
    ``*_check`` functions named): ``{backend: (process, npz path)}``."""
    found = {}
    for backend in BACKENDS:
        if not INSTALLED.get(backend, True):
            continue
        out = folder / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        process = subprocess.run(
            [sys.executable, str(WORKER), str(out), *checks],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        found[backend] = (process, out)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each backend's worker, run once: ``{backend: (process, npz path)}``."""
    return run_workers(tmp_path_factory.mktemp("backends"))


ERROR_CHECKS = (
    "failing_layer_check",  # a layer that raises: its own message, not "too small"
    "traced_failure_check",  # a model that fails only while traced: one line
    "too_small_check",  # an image really too small: said from the shapes
    "scope_names_check",  # layers named "conv 1", "é": explained
    "nan_index_check",  # a NaN image among several: named by its index
    "handled_failure_check",  # the model's own error raised handling a layer's: its own
    "shapes_hint_check",  # too small only where the shapes run out, the original kept
    "message_reading_check",  # an unreadable message, a message() method: read safely
    "resource_errors_check",  # MemoryError and the package's own errors: as they are
    "batch_shape_check",  # a failing batch named by its own shape on every backend
)


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """Each backend's error checks alone (one process per backend, every check run even when
    one fails), run once: ``{backend: (process, npz path)}``."""
    return run_workers(tmp_path_factory.mktemp("backend-errors"), ERROR_CHECKS)


def error_summary(error_runs, backend) -> dict:
    if backend not in error_runs:
        pytest.skip(f"{backend} is not installed ({INSTALL[backend]})")
    process, _ = error_runs[backend]
    lines = process.stdout.strip().splitlines()
    assert lines, process.stderr[-4000:]
    return json.loads(lines[-1])


def summary(runs, backend) -> dict:
    if backend not in runs:
        pytest.skip(f"{backend} is not installed ({INSTALL[backend]})")
    process, _ = runs[backend]
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_check_passes_on_the_backend(runs, backend):
    found = summary(runs, backend)
    assert found["backend"] == backend
    assert len(found["checks"]) >= 15, found["checks"]
    assert found["maps"] > 100


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_never_import_tensorflow(runs, backend):
    assert summary(runs, backend)["tensorflow_imported"] is False


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_backends_agree_with_tensorflow(runs, backend):
    summary(runs, "tensorflow")
    summary(runs, backend)
    tf_maps = np.load(runs["tensorflow"][1])
    other_maps = np.load(runs[backend][1])
    assert sorted(tf_maps.files) == sorted(other_maps.files)
    worst = {}
    for key in tf_maps.files:
        a, b = tf_maps[key], other_maps[key]
        assert a.shape == b.shape, key
        if key.startswith("audit|"):
            np.testing.assert_array_equal(a, b, err_msg=key)
            continue
        # heatmaps are in 0..1; scores, curves and input gradients compared to their scale
        scale = 1.0 if "|" in key and a.max() <= 1.0 and a.min() >= 0.0 else np.abs(a).max()
        worst[key] = float(np.abs(a - b).max() / max(scale, 1e-30))
    # XGrad-CAM divides each channel by its activations' sum, which is near zero for a conv
    # before a batch norm (its outputs are centred): float32 round-off is amplified there; a
    # mixed_bfloat16 model computes with 8 bits of mantissa on every backend
    bounds = {"|xgradcam": 1e-3, "mixed|": 1e-2}

    def bound(key):
        return next((value for part, value in bounds.items() if part in key), 1e-4)

    over = {key: value for key, value in worst.items() if value > bound(key)}
    assert not over, sorted(over.items(), key=lambda kv: -kv[1])[:5]
    assert max(worst.values()) > 0  # the comparison compares something


@pytest.mark.parametrize("check", ERROR_CHECKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_model_failures_are_said_clearly_on_the_backend(error_runs, backend, check):
    found = error_summary(error_runs, backend)
    assert found["backend"] == backend
    assert check not in found["failed"], found["failed"][check][-3000:]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_backends_agree_on_unusual_names_and_sizes(error_runs, backend):
    for name in ("tensorflow", backend):
        failed = error_summary(error_runs, name)["failed"]
        assert not failed, f"{name}: {sorted(failed)}"
    tf_maps = np.load(error_runs["tensorflow"][1])
    other_maps = np.load(error_runs[backend][1])
    assert sorted(tf_maps.files) == sorted(other_maps.files)
    assert any(key.startswith("names|conv 1|") for key in tf_maps.files)
    for key in tf_maps.files:
        a, b = tf_maps[key], other_maps[key]
        scale = max(float(np.abs(a).max()), 1e-30)
        assert float(np.abs(a - b).max()) / scale < 1e-4, key

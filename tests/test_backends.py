"""The backend matrix: the same checks on Keras's TensorFlow, JAX and PyTorch backends, each in
its own process (Keras picks its backend once per process), and their maps compared.

``tests/backend_worker.py`` holds the checks: VGG16 (random weights) and a MobileNetV2 nested
in a Sequential against a longhand reference that uses the backend's own gradient, a softmax
head (logit and probability), a softmax inside a Lambda, a sigmoid head, every method and
option, fusion, vanilla and guided saliency, Guided Grad-CAM, targets (a class per image, a
callable, a regression value, a region), the metrics, an audit and the widget.
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each backend's worker, run once: ``{backend: (process, npz path)}``."""
    folder = tmp_path_factory.mktemp("backends")
    found = {}
    for backend in BACKENDS:
        if not INSTALLED.get(backend, True):
            continue
        out = folder / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        process = subprocess.run(
            [sys.executable, str(WORKER), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        found[backend] = (process, out)
    return found


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

"""How the package imports Keras (:mod:`gradcam_widget.engine._keras`): on the backend the user
chose (``KERAS_BACKEND``, else ``keras.json``, else TensorFlow), quietly, and refusing one it
has no engine for. Each case in a fresh process: the backend is fixed at Keras's first import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradcam_widget.engine import _keras

ROOT = Path(__file__).resolve().parents[2]
ASK = (
    "import sys; from gradcam_widget.engine import _keras; "
    "print(_keras.chosen_backend(), _keras.BACKEND, 'tensorflow' in sys.modules)"
)


def _ask(tmp_path, backend=None, config=None):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    if backend:
        env["KERAS_BACKEND"] = backend
    if config is not None:
        (tmp_path / "keras.json").write_text(config)
    done = subprocess.run(
        [sys.executable, "-c", ASK], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split(), done.stderr


def test_this_process_runs_a_supported_backend():
    assert _keras.BACKEND in _keras.SUPPORTED_BACKENDS
    assert _keras.check_backend() == _keras.BACKEND == _keras.keras.backend.backend()


def test_without_a_choice_it_is_tensorflow_imported_quietly(tmp_path):
    (chosen, backend, tensorflow), stderr = _ask(tmp_path)
    assert (chosen, backend, tensorflow) == ("tensorflow", "tensorflow", "True")
    assert "oneDNN" not in stderr and "cuda" not in stderr.lower()


@pytest.mark.slow
def test_the_keras_json_choice_is_read_and_jax_needs_no_tensorflow(tmp_path):
    pytest.importorskip("jax")
    (chosen, backend, tensorflow), _ = _ask(tmp_path, config=json.dumps({"backend": "jax"}))
    assert (chosen, backend, tensorflow) == ("jax", "jax", "False")


def test_an_unreadable_keras_json_falls_back_to_tensorflow(tmp_path):
    (chosen, backend, _), _ = _ask(tmp_path, config="{not json")
    assert (chosen, backend) == ("tensorflow", "tensorflow")


def test_a_backend_without_an_engine_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(_keras, "BACKEND", "openvino")
    with pytest.raises(RuntimeError, match="tensorflow, jax or torch backend; this process runs"):
        _keras.check_backend()

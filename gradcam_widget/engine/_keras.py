"""Import Keras quietly, on the backend the user chose.

Keras 3 runs on TensorFlow, JAX or PyTorch, picked when ``keras`` is first imported (the
``KERAS_BACKEND`` environment variable, else ``~/.keras/keras.json``, else TensorFlow). This
module is where the package imports Keras: on TensorFlow it goes through
:mod:`gradcam_widget.engine._tf` (which silences TensorFlow's start-up log), on JAX it imports
Keras alone -- TensorFlow is then
not imported by this package (Keras's own ``clone_model`` imports it when it is installed).
:data:`BACKEND` says which backend this process runs. Other folders take ``keras`` and
``BACKEND`` from :mod:`gradcam_widget.engine`.
"""

from __future__ import annotations

import json
import os
import sys

from gradcam_widget._quiet import silenced_stderr_fd

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def chosen_backend() -> str:
    """The backend Keras uses (or will use when it is imported) in this process."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        try:
            with open(os.path.join(home, "keras.json"), encoding="utf-8") as config:
                name = json.load(config).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or "tensorflow"


def _import():
    if chosen_backend() == "tensorflow":
        from gradcam_widget.engine._tf import keras
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if "keras" in sys.modules:
            import keras
        else:
            with silenced_stderr_fd():
                import keras
    return keras


keras = _import()
BACKEND: str = keras.backend.backend()
"""``"tensorflow"``, ``"jax"`` or ``"torch"`` (the engines this package has); see
:func:`check_backend`."""


def check_backend() -> str:
    """The backend, when this package can run passes on it.

    Raises:
        RuntimeError: for a backend it has no engine for (OpenVINO), saying which it has.
    """
    if BACKEND not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"gradcam_widget computes on Keras's tensorflow, jax or torch backend; this process "
            f"runs Keras on {BACKEND!r}. Set KERAS_BACKEND to one of those before Keras is "
            "first imported"
        )
    return BACKEND


__all__ = ["BACKEND", "SUPPORTED_BACKENDS", "check_backend", "chosen_backend", "keras"]

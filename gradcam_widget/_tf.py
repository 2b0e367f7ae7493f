"""Import TensorFlow and Keras quietly.

TensorFlow >= 2.20 writes absl log lines ("Could not find cuda drivers", oneDNN notices) to
file descriptor 2 *before* its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` alone
does not silence them, and ipykernel forwards fd-level output into notebook cells. This
module is the single place the package imports TensorFlow: it sets the log level and
silences fd 2 for the duration of the first import only.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _silenced_stderr_fd():
    """Point file descriptor 2 at /dev/null for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        import tensorflow
    else:
        with _silenced_stderr_fd():
            import tensorflow
    import keras

    tensorflow.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):  # absl is a TF dependency; be lenient anyway
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tensorflow, keras


tf, keras = _import()

__all__ = ["tf", "keras"]

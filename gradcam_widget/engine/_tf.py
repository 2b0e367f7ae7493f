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

from gradcam_widget._quiet import silenced_stderr_fd


def _import():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        import tensorflow
    else:
        with silenced_stderr_fd():
            import tensorflow
    import keras

    tensorflow.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):  # absl is a TF dependency; be lenient anyway
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tensorflow, keras


tf, keras = _import()

__all__ = ["tf", "keras"]

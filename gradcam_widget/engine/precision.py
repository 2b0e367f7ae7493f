"""The precision of a pass: float32, or bfloat16 through TensorFlow's oneDNN rewrite, a global
option switched on only around the passes that asked for it (:func:`precision_scope`).
"""

from __future__ import annotations

import contextlib
import threading

from gradcam_widget.cam import core
from gradcam_widget.engine._keras import BACKEND

PRECISIONS = ("float32", "bfloat16")
_GRAPPLER_BF16 = "auto_mixed_precision_onednn_bfloat16"
_PRECISION_LOCK = threading.RLock()
_active_precision: list[str] = []  # the precision of the enclosing precision_scope blocks


def bfloat16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (Intel AMX or AVX512-BF16).

    Only then does ``precision="bfloat16"`` pay off; elsewhere oneDNN would emulate it.
    Reads ``/proc/cpuinfo`` (Linux); False when that cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            flags = set(next((line for line in info if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def check_precision(precision: str) -> str:
    """Validate ``precision``; ``"bfloat16"`` also needs a CPU that computes it natively.

    Raises:
        ValueError: naming the choices, or saying why bfloat16 is not available here.
    """
    core.check_option("precision", precision, PRECISIONS)
    if precision == "bfloat16" and BACKEND != "tensorflow":
        raise ValueError(
            "precision='bfloat16' is TensorFlow's oneDNN rewrite; on Keras's "
            f"{BACKEND} backend, build the model under "
            "keras.config.set_dtype_policy('mixed_bfloat16') instead and use "
            "precision='float32'"
        )
    if precision == "bfloat16" and not bfloat16_supported():
        raise ValueError(
            "precision='bfloat16' needs a CPU with AMX or AVX512-BF16 (it would be emulated, "
            "and slower, here); use precision='float32'"
        )
    return precision


@contextlib.contextmanager
def precision_scope(precision: str):
    """Run the enclosed model passes in ``precision``; every pass of the package goes here.

    bfloat16 is oneDNN's Grappler rewrite, a *global* option, switched on only around the
    enclosed calls. TensorFlow also remembers the option a thread saw at its first call, so
    float32 passes take the same lock: no pass of this package, in any thread, can run while
    the option is on unless it asked for bfloat16. (TensorFlow code outside this package that
    runs in another thread during a bfloat16 block is not covered.)

    Raises:
        RuntimeError: when a block of one precision is opened inside a block of the other in
            the same thread (it would silently get the outer one).
    """
    core.check_option("precision", precision, PRECISIONS)
    with _PRECISION_LOCK:
        if _active_precision and _active_precision[-1] != precision:
            raise RuntimeError(
                f"a {precision} pass cannot run inside a {_active_precision[-1]} pass"
            )
        switch = precision == "bfloat16" and not _active_precision
        if switch:
            from gradcam_widget.engine._tf import tf

            before = tf.config.optimizer.get_experimental_options().get(_GRAPPLER_BF16, False)
            tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: True})
        _active_precision.append(precision)
        try:
            yield
        finally:
            _active_precision.pop()
            if switch:
                tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: before})

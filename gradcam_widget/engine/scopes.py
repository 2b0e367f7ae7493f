"""Layer names as TensorFlow name scopes, while this package traces a pass (TensorFlow only).

Keras calls each layer inside a name scope of the layer's name. Keras allows any name without
"/" ("conv 1", "é"), TensorFlow's graphs only ``[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*``: in a traced
function such a layer raises "... is not a valid scope name" (eagerly, TensorFlow checks
nothing). While this package traces a pass, the TensorFlow scope of such a name is the name
with every other character replaced by "_" (Keras's own name for the scope, and so every
variable path and layer name, are left as they are).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading

from gradcam_widget.engine._tf import tf

_INSTALLED = "_gradcam_scope_names"  # set on Keras's name_scope once it is wrapped

_VALID_SCOPE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_scopes = threading.local()  # .depth: scope_names blocks open in this thread


def scope_name(name):
    """``name`` as a valid TensorFlow name scope (unchanged when it is one)."""
    if not isinstance(name, str) or not name or _VALID_SCOPE.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", name)
    return cleaned if _VALID_SCOPE.match(cleaned) else f"layer{cleaned}"


@contextlib.contextmanager
def scope_names():
    """Inside this block, in this thread only, Keras's name scopes of names TensorFlow refuses
    open the scope of :func:`scope_name` instead (see above)."""
    _install_scope_names()
    _scopes.depth = getattr(_scopes, "depth", 0) + 1
    try:
        yield
    finally:
        _scopes.depth -= 1


def _install_scope_names() -> None:
    """Wrap Keras's TensorFlow ``name_scope`` once: the TensorFlow scope it opens gets
    :func:`scope_name` of its name inside a :func:`scope_names` block."""
    try:
        from keras.src.backend.tensorflow.core import name_scope
    except ImportError:  # pragma: no cover - another Keras: layer names are left as they are
        return
    if getattr(name_scope, _INSTALLED, False):
        return
    original = name_scope.__init__

    @functools.wraps(original)
    def __init__(self, name, *args, **kwargs):
        original(self, name, *args, **kwargs)
        if getattr(_scopes, "depth", 0) and scope_name(name) != name:
            self._tf_name_scope = tf.name_scope(scope_name(name))

    name_scope.__init__ = __init__
    setattr(name_scope, _INSTALLED, True)

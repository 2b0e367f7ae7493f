"""gradcam_widget: see why a TensorFlow/Keras image classifier decided what it did.

>>> import gradcam_widget as gw
>>> cap = gw.capture(model, image)          # one compiled forward + backward pass
>>> res = cap.cam(layer="block5_conv3", pooling="max", order="resize_first")
>>> res.raw.shape, res.heatmap.shape        # ((14, 14), (224, 224))
>>> ex = gw.explain(model, images, targets=[3, 1, 7])   # one compiled pass per batch
>>> ex.heatmaps.shape                                    # (3, 224, 224)

``core`` is pure numpy; the engines (``engine_tf`` on Keras's TensorFlow backend,
``engine_jax`` on its JAX backend) are the only modules that run the model. The widget
(:class:`CamExplorer`) is imported lazily so the core needs no Jupyter.
"""

from gradcam_widget import core, targets
from gradcam_widget.captures import (
    Capture,
    capture,
    class_scores,
    grad_cam,
    guided_grad_cam,
    saliency,
    set_token_grid,
)
from gradcam_widget.core import CamResult
from gradcam_widget.explanations import Explanations, explain, iter_explain

__version__ = "0.1.0"

_LAZY = {
    "data", "models", "render", "widget", "methods", "metrics", "sanity",
    "sources", "store", "auditing", "gallery", "distributed", "export",
}  # fmt: skip
_LAZY_NAMES = {
    "CamExplorer": "widget",
    "CamGallery": "gallery",
    "audit": "auditing",
    "AuditResults": "store",
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return importlib.import_module(f"gradcam_widget.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"gradcam_widget.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'gradcam_widget' has no attribute {name!r}")


__all__ = [
    "AuditResults",
    "CamExplorer",
    "CamGallery",
    "CamResult",
    "Capture",
    "Explanations",
    "audit",
    "capture",
    "class_scores",
    "core",
    "explain",
    "grad_cam",
    "guided_grad_cam",
    "saliency",
    "set_token_grid",
    "iter_explain",
    "targets",
    "__version__",
]

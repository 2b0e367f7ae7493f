"""gradcam_widget: see why a TensorFlow/Keras image classifier decided what it did.

>>> import gradcam_widget as gw
>>> cap = gw.capture(model, image)          # one compiled forward + backward pass
>>> res = cap.cam(layer="block5_conv3", pooling="max", order="resize_first")
>>> res.raw.shape, res.heatmap.shape        # ((14, 14), (224, 224))

``core`` is pure numpy; ``capture`` is the only module that runs the model. The widget
(:class:`CamExplorer`) is imported lazily so the core needs no Jupyter.
"""

from gradcam_widget import core
from gradcam_widget.capture import Capture, capture, grad_cam
from gradcam_widget.core import CamResult

__version__ = "0.1.0"

_LAZY = {"data", "models", "render", "widget", "methods", "metrics"}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return importlib.import_module(f"gradcam_widget.{name}")
    if name == "CamExplorer":
        return importlib.import_module("gradcam_widget.widget").CamExplorer
    raise AttributeError(f"module 'gradcam_widget' has no attribute {name!r}")


__all__ = ["CamExplorer", "CamResult", "Capture", "capture", "core", "grad_cam", "__version__"]

"""gradcam_widget: see why a TensorFlow/Keras image classifier decided what it did.

>>> import gradcam_widget as gw
>>> entry, image = gw.models.load("shapes"), gw.data.sample("two_shapes")
>>> cap = gw.capture(entry, image)          # one compiled forward + backward pass
>>> res = cap.cam(layer="block5_conv3", pooling="max", order="resize_first")
>>> res.raw.shape, res.heatmap.shape
((14, 14), (224, 224))
>>> images = [gw.data.scene(seed).image for seed in (1, 2, 3)]
>>> ex = gw.explain(entry, images, targets=[3, 1, 0])   # one compiled pass per batch
>>> ex.heatmaps.shape
(3, 224, 224)

The folders, lowest first (a module imports only from its own layer or a lower one):
``options.py`` (the recipe's choices); ``cam`` (numpy only) and ``data`` (scenes, images,
drawing; its ``models`` sits with ``captures``); ``engine`` (the only code that runs a model);
``captures`` (what one pass recorded, explain, targets); ``checks``; ``explorer`` (the widget,
its session, the static export); ``auditing`` (audits, their store, the gallery);
``commands`` (the CLI). See docs/architecture.md. The widgets are imported lazily so the
core needs no Jupyter.
"""

from gradcam_widget import _aliases
from gradcam_widget._version import __version__
from gradcam_widget.cam import core
from gradcam_widget.cam.core import CamResult
from gradcam_widget.captures import targets
from gradcam_widget.captures.capturing import (
    Capture,
    capture,
    class_scores,
    grad_cam,
    guided_grad_cam,
    saliency,
    set_token_grid,
)
from gradcam_widget.captures.explanations import Explanations, explain, iter_explain

_aliases.install()  # the old flat module names (gradcam_widget.render, ...) still import

_FOLDERS = {"cam", "engine", "captures", "checks", "explorer", "auditing", "data", "options"}
_LAZY_NAMES = {
    "CamExplorer": "explorer.widget",
    "CamGallery": "auditing.gallery",
    "audit": "auditing.run",
    "AuditResults": "auditing.store",
}


def __getattr__(name):
    import importlib

    if name in _FOLDERS:
        return importlib.import_module(f"gradcam_widget.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"gradcam_widget.{_LAZY_NAMES[name]}"), name)
    module = _aliases.moved(name)
    if module is not None:
        return module
    raise AttributeError(f"module 'gradcam_widget' has no attribute {name!r}")


def __dir__():
    """The module's names and the lazy ones (so ``dir(gw)``, tab completion and the API
    reference see ``gw.CamExplorer``, ``gw.audit``... before their first use)."""
    public_old_names = {name for name in _aliases.MOVED if not name.startswith("_")}
    return sorted(set(globals()) | set(_LAZY_NAMES) | _FOLDERS | public_old_names)


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

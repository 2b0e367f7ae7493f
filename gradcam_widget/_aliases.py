"""The modules' names before the package was split into folders, kept importable.

``import gradcam_widget.core`` or ``from gradcam_widget import render`` still work: each old
name is the very module object under its new name (``gradcam_widget.cam.core``), so a setting
or a patch made through either name is seen through both. (A name a folder re-exports, such as
``gradcam_widget.engine.bfloat16_supported``, is a second reference: patch it where it is
defined, ``gradcam_widget.engine.precision``.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "core": "cam.core",
    "methods": "cam.methods",
    "engine_tf": "engine.tf",
    "engine_jax": "engine.jax",
    "engine_torch": "engine.torch",
    "tapping": "engine.tapping",
    "inputs": "engine.inputs",
    "layers": "engine.layers",
    "_tf": "engine._tf",
    "_keras": "engine._keras",
    "explanations": "captures.explanations",
    "targets": "captures.targets",
    "cache": "explorer.cache",
    "session": "explorer.session",
    "widget": "explorer.widget",
    "export": "explorer.export",
    "sanity": "checks.sanity",
    "metrics": "checks.metrics",
    "distributed": "auditing.ray",
    "store": "auditing.store",
    "sources": "auditing.sources",
    "gallery": "auditing.gallery",
    "images": "data.images",
    "render": "data.render",
    "models": "data.models",
}
"""Old module name -> its module now, relative to ``gradcam_widget``. (``engine``, ``captures``,
``auditing`` and ``data`` became the folders of the same name, which offer what the module did.)"""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old ``gradcam_widget.<name>`` import with the module under its new name."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "gradcam_widget" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"gradcam_widget.{MOVED[spec.name.partition('.')[2]]}")
        spec.loader_state = module.__spec__  # importlib sets __spec__ to this alias's spec
        return module

    def exec_module(self, module):
        """The module ran under its new name already: give it back its own spec."""
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())


def moved(name: str):
    """The module an old top-level name refers to, or None."""
    if name not in MOVED:
        return None
    return importlib.import_module(f"gradcam_widget.{MOVED[name]}")


def offering(module: str):
    """A folder's ``__getattr__`` that offers what the old module of the folder's name did.

    Lazy, so importing one module of the folder never imports the others: a name that is a
    module of the folder (``from gradcam_widget.auditing import sources``) is that module,
    imported alone; any other name is looked up in ``module``."""
    folder = "gradcam_widget." + module.rpartition(".")[0]

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"{folder}.{name}") is not None:
            return importlib.import_module(f"{folder}.{name}")
        return getattr(importlib.import_module(f"gradcam_widget.{module}"), name)

    return __getattr__

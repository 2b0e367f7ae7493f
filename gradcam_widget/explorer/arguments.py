"""The arguments of an explorer and its session, checked: the model (a name is loaded), the
class names, what is explained (a class or a target), and the guided modes' options.

Numpy and the package's capture machinery only; no widget library.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.captures import targets

GUIDED_MODES = ("off", "guided_backprop", "guided_gradcam", "smoothgrad")
SMOOTHGRAD = {"smooth": 16, "sigma": 0.15, "seed": 0}  # the guided SmoothGrad of the explorer


def resolve_model(model):
    """``model`` itself, or the entry :func:`gradcam_widget.models.load` gives for a name.

    Args:
        model: a ``keras.Model``, a model entry, or the name of a shipped model.

    Returns:
        The model or entry to capture with.

    Raises:
        ValueError: for a name :func:`gradcam_widget.models.load` does not know.
    """
    if isinstance(model, str):
        from gradcam_widget.data import models

        return models.load(model)
    return model


def check_class_names(names) -> tuple[str, ...] | None:
    """The class names as a tuple of strings (``None`` stays ``None``).

    Args:
        names: a sequence of class names, one per class, or ``None``.

    Returns:
        The names as strings, or ``None``.

    Raises:
        ValueError: for a string, a mapping or anything that is not a sequence.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes, dict)) or not isinstance(names, Iterable):
        raise ValueError(
            f"class_names must be a sequence of class names, one per class; got {names!r}"
        )
    return tuple(str(name) for name in names)


def _is_index(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def explained(target, class_index) -> tuple[targets.Target | None, int | None]:
    """Split an explorer's ``target=`` and ``class_index=`` into what it explains.

    ``target=None`` or an int keeps classes (an int, or a ``Class(k)`` for one class, is a
    class index); anything else is explained as it is.

    Args:
        target: ``None``, a class index, or anything :func:`targets.as_target` takes.
        class_index: the class to explain first, or ``None``.

    Returns:
        ``(target, class_index)``: the target (``None``: classes are explained) and the first
        class index (``None``: the top class, or a target is explained).

    Raises:
        ValueError: for both arguments given, or a target :func:`targets.as_target` refuses.
    """
    if target is not None and class_index is not None:
        raise ValueError("give class_index or target, not both")
    if target is None or _is_index(target):
        return None, class_index if target is None else int(target)
    chosen = targets.as_target(target)
    if isinstance(chosen, targets.Class) and chosen.per_image is None:
        return None, chosen.class_index  # a class target is explained as a class
    return chosen, None


def saliency_options(mode: str) -> dict | None:
    """The :meth:`~gradcam_widget.captures.Capture.saliency` options of a guided mode.

    Args:
        mode: one of :data:`GUIDED_MODES`.

    Returns:
        The keyword arguments (``None`` for ``"off"``): guided backpropagation, with
        :data:`SMOOTHGRAD` for ``"smoothgrad"``.

    Raises:
        ValueError: naming the modes for another value.
    """
    core.check_option("guided", mode, GUIDED_MODES)
    if mode == "off":
        return None
    options = {"kind": "guided", "smooth": 0, "sigma": SMOOTHGRAD["sigma"], "seed": 0}
    return {**options, **SMOOTHGRAD} if mode == "smoothgrad" else options

"""Which methods the sanity checks take and what each one's maps are: method names
(:func:`method_names`), the options each method takes (:func:`route_options`) and the
``(absolute, signed)`` maps of one capture (:func:`maps`).

CAM methods (:func:`gradcam_widget.methods.names`): the heatmap as shown (ReLU, resized,
``/ max``) is the *absolute* map; the raw signed map resized to the input size (before the
ReLU) is the *signed* map. Input-gradient methods (:data:`GRADIENT_METHODS`): the
``(H, W, C)`` gradient's largest absolute value over the channels is the *absolute* map, its
sum over the channels the *signed* map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core, methods

__all__ = ["GRADIENT_METHODS", "SMOOTHGRAD_COPIES", "maps", "method_list", "method_names",
           "route_options"]  # fmt: skip

GRADIENT_METHODS: tuple[str, ...] = ("guided", "vanilla", "smoothgrad", "guided_gradcam")
"""Input-gradient methods the checks accept besides the CAM methods."""

SMOOTHGRAD_COPIES = 16
"""Default number of noisy copies for ``"smoothgrad"`` (option ``smooth``)."""

CAM_SHARED = options.cam_keywords()
"""The keywords of ``Capture.cam`` the table declares (pooling, channels: read by the methods
that declare them; order, interpolation: by every method)."""


def method_names() -> tuple[str, ...]:
    """Every method the checks take: the CAM methods, then :data:`GRADIENT_METHODS`."""
    return methods.names() + GRADIENT_METHODS


def method_list(method) -> tuple[tuple[str, ...], bool]:
    """``(names, single)`` from one name or a sequence of them."""
    single = isinstance(method, str)
    names = (method,) if single else tuple(method)
    if not names:
        raise ValueError("method must name at least one method")
    valid = method_names()
    for name in names:
        core.check_option("method", name, valid)
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat; got {names}")
    return names, single


def route_options(names: Sequence[str], options: dict) -> dict[str, dict]:
    """The options each method takes from ``options``.

    Raises:
        ValueError: for an option none of the methods takes.
    """
    routed: dict[str, dict] = {}
    taken: set[str] = set()
    for name in names:
        if name in methods.names():
            accepts = set(CAM_SHARED) | set(methods.get(name).parameters)
        elif name == "smoothgrad":
            accepts = {"smooth", "sigma"}
        elif name == "guided_gradcam":
            accepts = set(CAM_SHARED)
        else:
            accepts = set()
        routed[name] = {key: value for key, value in options.items() if key in accepts}
        taken |= accepts
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} are taken by none of the methods {list(names)}"
        )
    return routed


def maps(cap, method: str, layer: str, options: dict, seed: int) -> tuple:
    """``(absolute (H, W), signed (H, W))`` float32 maps of ``method`` for one capture."""
    if method in methods.names():
        result = cap.cam(layer, method=method, **options)
        signed = core.resize(result.raw, cap.input_size, result.interpolation)
        return result.heatmap, signed
    if method == "smoothgrad":
        copies = options.get("smooth", SMOOTHGRAD_COPIES)
        gradients = cap.saliency(
            "vanilla", smooth=copies, sigma=options.get("sigma", 0.15), seed=seed
        )
    elif method == "guided_gradcam":
        gradients = cap.guided_grad_cam(layer, **options)
    else:
        gradients = cap.saliency(method)
    gradients = np.asarray(gradients, dtype=np.float32)
    return np.abs(gradients).max(axis=-1), gradients.sum(axis=-1)

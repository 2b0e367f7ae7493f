"""CAM methods beyond Grad-CAM, each a small function over one layer's cached tensors.

A method turns the activations ``A`` and gradients ``G`` of one layer (each ``(h, w, C)``)
into a signed ``(h, w)`` map and the ``(C,)`` channel weights it applied; the shared tail
(ReLU and resize in the chosen order, then ``/ max``) is :func:`gradcam_widget.core.to_heatmap`.

==============  =============================================================  ==========
name            map                                                             reads
==============  =============================================================  ==========
``gradcam``     ``A . pool(G)`` (mean or max pooling, weighted or top channel)  pooling,
                                                                                channels
``gradcam++``   ``A . sum_ij alpha_ij relu(G_ij)``, alpha from 2nd/3rd powers
``hirescam``    ``sum_c (G * A)``: no pooling, each position its own gradient
``xgradcam``    ``A . sum_ij (A_ij / sum A) G_ij``
``layercam``    ``sum_c (relu(G) * A)``: made for shallow layers
``eigencam``    first principal component of ``A`` (class-agnostic, no G)
``scorecam``    ``A . softmax_k(score(x * upsampled A_k))``: forward passes only
==============  =============================================================  ==========

Register a new one with :func:`register`; ``Capture.cam(method=name)`` finds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core

_EPS = np.float32(1e-7)


@dataclass(frozen=True)
class Method:
    """A registered CAM method.

    Attributes:
        name: the key for ``cam(method=...)``.
        compute: ``compute(capture, layer, **options) -> (raw (h, w), weights (C,))``; the
            keyword parameters after ``layer`` are the options it declares, with defaults.
        label: the name people know it by (the widget's menu).
        parameters: ``{option: default}``, read from ``compute``'s signature.
        options: which of the shared options (``"pooling"``, ``"channels"``) it reads; the
            widget disables the others and says why.
        uses_gradients: False for gradient-free methods (Eigen-CAM, Score-CAM).
        runs_model: True when it needs more forward passes (Score-CAM).
        summary: one line for tooltips and docs.
    """

    name: str
    compute: Callable
    label: str = ""
    uses_gradients: bool = True
    runs_model: bool = False
    summary: str = ""
    parameters: dict = field(default_factory=dict)

    @property
    def options(self) -> frozenset:
        return frozenset(SHARED_OPTIONS) & frozenset(self.parameters)

    def bind(self, **given) -> dict:
        """The options this method uses, from ``given``: the shared ones it reads (the others
        are ignored) and its own, which must be ones it declares.

        Raises:
            ValueError: for a bad shared option value, or an option the method does not take,
                naming the ones it does.
        """
        for name, choices in SHARED_OPTIONS.items():
            if name in given:
                core.check_option(name, given[name], choices)
        unknown = [name for name in given if name not in SHARED_OPTIONS and name not in
                   self.parameters]  # fmt: skip
        if unknown:
            own = [name for name in self.parameters if name not in SHARED_OPTIONS]
            takes = ", ".join(own) if own else "no options of its own"
            raise ValueError(
                f"method {self.name!r} does not take {', '.join(map(repr, unknown))}; it takes "
                f"{takes}"
            )
        used = {name: given.get(name, default) for name, default in self.parameters.items()}
        return used


REGISTRY: dict[str, Method] = {}
SHARED_OPTIONS = {name: options.option(name).values for name in options.method_keywords()}
"""The options of the table a method reads only if it declares them (pooling, channels)."""


def register(name: str, label: str = "", uses_gradients=True, runs_model=False, summary=""):
    """Decorator: register ``compute(capture, layer, **options)`` as method ``name``.

    The keyword parameters of ``compute`` after ``layer`` are the options it declares
    (``pooling`` and ``channels`` are the shared ones the widget offers)."""

    def wrap(compute):
        parameters = list(inspect.signature(compute).parameters.values())[2:]
        for parameter in parameters:
            if parameter.default is inspect.Parameter.empty:
                raise TypeError(f"method {name!r}: option {parameter.name!r} needs a default")
        REGISTRY[name] = Method(
            name,
            compute,
            label or name,
            uses_gradients,
            runs_model,
            summary,
            {parameter.name: parameter.default for parameter in parameters},
        )
        return compute

    return wrap


def get(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        ValueError: naming the registered methods.
    """
    core.check_option("method", name, tuple(REGISTRY))
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered method names, Grad-CAM first."""
    return tuple(REGISTRY)


# --- gradient-weighted channel sums ----------------------------------------------------


@register(
    "gradcam",
    label="Grad-CAM",
    summary="channel weights = pooled gradients (the paper: global average)",
)
def gradcam(capture, layer, pooling="mean", channels="weighted"):
    gradients = capture.gradients(layer)
    weights = core.select_channels(core.channel_weights(gradients, pooling), channels)
    return core.combine(capture.activations(layer), weights), weights


def gradcam_plus_plus_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ channel weights ``sum_ij alpha_ij^k relu(G_ij^k)``.

    With an exponential score, higher derivatives are powers of the first, giving
    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (0 where ``G`` is 0).

    Args:
        activations, gradients: ``(h, w, C)``.

    Returns:
        ``(C,)`` float32.
    """
    # float64: the two terms of the denominator can nearly cancel for negative gradients
    gradients = np.asarray(gradients, dtype=np.float64)
    squared = gradients**2
    cubed = squared * gradients
    denominator = 2.0 * squared + activations.sum(axis=(0, 1), dtype=np.float64) * cubed
    nonzero = np.abs(denominator) > 1e-30
    alpha = np.where(nonzero, squared / np.where(nonzero, denominator, 1.0), 0.0)
    return (alpha * np.maximum(gradients, 0)).sum(axis=(0, 1)).astype(np.float32)


@register(
    "gradcam++",
    label="Grad-CAM++",
    summary="pixel-wise weighted positive gradients (Chattopadhay et al.)",
)
def gradcam_plus_plus(capture, layer):
    activations, gradients = capture.activations(layer), capture.gradients(layer)
    weights = gradcam_plus_plus_weights(activations, gradients)
    return core.combine(activations, weights), weights


@register(
    "xgradcam",
    label="XGrad-CAM",
    summary="gradients weighted by normalised activations (Fu et al.)",
)
def xgradcam(capture, layer):
    activations, gradients = capture.activations(layer), capture.gradients(layer)
    totals = activations.sum(axis=(0, 1))
    safe = np.where(np.abs(totals) > _EPS, totals, np.float32(1.0))
    weights = (activations * gradients).sum(axis=(0, 1)) / safe
    weights = np.where(np.abs(totals) > _EPS, weights, 0.0).astype(np.float32)
    return core.combine(activations, weights), weights


# --- element-wise (no pooling) ----------------------------------------------------------


@register(
    "hirescam",
    label="HiResCAM",
    summary="sum of gradient x activation, no pooling (Draelos & Carin)",
)
def hirescam(capture, layer):
    activations, gradients = capture.activations(layer), capture.gradients(layer)
    raw = (gradients * activations).sum(axis=-1, dtype=np.float32)
    return raw, gradients.mean(axis=(0, 1), dtype=np.float32)


@register(
    "layercam",
    label="LayerCAM",
    summary="sum of relu(gradient) x activation: for shallow layers (Jiang et al.)",
)
def layercam(capture, layer):
    activations, gradients = capture.activations(layer), capture.gradients(layer)
    positive = np.maximum(gradients, 0)
    raw = (positive * activations).sum(axis=-1, dtype=np.float32)
    return raw, positive.mean(axis=(0, 1), dtype=np.float32)


# --- gradient-free ----------------------------------------------------------------------


def first_component(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project the activations on their first principal direction.

    The activations are centred over positions; the sign is chosen so that the map agrees
    with the mean activation (an SVD sign is arbitrary).

    Args:
        activations: ``(h, w, C)``.

    Returns:
        ``(raw (h, w), direction (C,))`` float32.
    """
    h, w, channels = activations.shape
    flat = activations.reshape(h * w, channels).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    if not np.any(centred):
        return np.zeros((h, w), np.float32), np.zeros(channels, np.float32)
    if h * w <= channels:  # eigenvector of the smaller Gram matrix, mapped back
        gram = centred @ centred.T
        direction = centred.T @ np.linalg.eigh(gram)[1][:, -1]
    else:
        direction = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    direction /= max(np.linalg.norm(direction), 1e-300)
    projection = flat @ direction
    if np.dot(projection - projection.mean(), flat.mean(axis=1) - flat.mean()) < 0:
        direction, projection = -direction, -projection
    return projection.reshape(h, w).astype(np.float32), direction.astype(np.float32)


@register(
    "eigencam",
    label="Eigen-CAM (class-agnostic)",
    uses_gradients=False,
    summary="first principal component of the activations: class-agnostic (Muhammad & Yeasin)",
)
def eigencam(capture, layer):
    return first_component(capture.activations(layer))


@register(
    "scorecam",
    label="Score-CAM (runs the model)",
    uses_gradients=False,
    runs_model=True,
    summary="channel weights from the score of the input masked by each channel (Wang et al.)",
)
def scorecam(capture, layer, max_channels=64, batch_size=32, precision="float32"):
    """Score-CAM over the ``max_channels`` channels of largest activation variance.

    Each kept channel is upsampled to the input size, scaled to ``[0, 1]`` and multiplies
    the model input; the class score of each masked input (logit or probability, as the
    capture's ``score``) is softmax-normalised over the channels into their weights.
    The softmax over channels is what pytorch-grad-cam and tf-keras-vis do; it suits the
    default ``score="logit"``. With ``score="probability"`` the scores lie in ``[0, 1]``, so
    the weights can differ by a factor of ``e`` at most: a flatter, more Grad-CAM-like mix.
    ``precision="bfloat16"`` runs those forward passes in bfloat16 on CPUs that compute it
    natively (AMX, AVX512-BF16): faster there, with weights that differ slightly (measured in
    the README).
    """
    activations = capture.activations(layer)
    channels = activations.shape[-1]
    max_channels = core.check_int("max_channels", max_channels)
    batch_size = core.check_int("batch_size", batch_size)
    variance = activations.reshape(-1, channels).var(axis=0)
    kept = np.sort(np.argsort(-variance, kind="stable")[:max_channels])
    masks = np.stack(
        [core.normalize_range(core.resize(activations[..., k], capture.input_size)) for k in kept]
    )
    scores = capture.masked_scores(masks, batch_size=batch_size, precision=precision)
    shifted = np.exp(scores - scores.max())
    weights = np.zeros(channels, np.float32)
    weights[kept] = shifted / shifted.sum()
    return core.combine(activations, weights), weights

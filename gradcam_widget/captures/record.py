"""One image, every layer: :func:`capture` and the :class:`Capture` it returns.

:func:`capture` runs the model once (one compiled forward + backward pass, see
:mod:`gradcam_widget.engine`) and keeps, for every layer whose output is a 4-D feature map
(nested models included), the activations ``A`` and the gradients ``d target / d A``. Every
later :meth:`Capture.cam`, for any layer and any option, is numpy over that cache.

``score="logit"`` differentiates the pre-softmax score: when an output ends in a softmax or
sigmoid (a ``Dense(..., activation="softmax")`` or a separate ``Softmax``/``Activation``
layer), that final activation is bypassed inside the traced pass only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gradcam_widget import options as recipe
from gradcam_widget.cam import core, methods
from gradcam_widget.captures import targets
from gradcam_widget.captures.gate import Request
from gradcam_widget.engine import (
    PassResult,
    check_precision,
    engine_for,
    layers,
    model_errors,
)

__all__ = ["Capture", "capture_of"]

SALIENCY_KINDS = ("guided", "vanilla")
SALIENCY_CACHE = 4  # input-gradient maps kept per capture, oldest dropped first


@dataclass(frozen=True)
class Source:
    """What it takes to run the model again for one capture (fill-in, saliency, Score-CAM).

    Attributes:
        model: the ``keras.Model`` (a capture keeps its model alive).
        inputs: ``(1, H, W, C)`` the model input, after preprocess.
        target: the target, with the class fixed to the one explained.
        score: ``"logit"`` or ``"probability"``.
        multi_label: whether the model's classes are independent (sigmoid).
    """

    model: object
    inputs: np.ndarray
    target: targets.Target
    score: str
    multi_label: bool

    def run(self, layers: tuple[str, ...] | None) -> PassResult:
        """One pass recording ``layers`` (``None``: every candidate layer)."""
        return engine_for(self.model).run(
            self.inputs, self.target, self.score, self.multi_label, layers
        )

    def input_gradients(self, kind: str, copies: np.ndarray | None) -> PassResult:
        """One pass differentiating down to the model input (``kind``: ``"vanilla"`` or
        ``"guided"``), over ``copies`` ``(n, H, W, C)`` of the input when given (SmoothGrad)."""
        batch = self.inputs if copies is None else copies
        return engine_for(self.model).run(
            batch, self.target, self.score, self.multi_label, (), to_input=kind
        )

    def masked_values(self, masks: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
        """The target's value for the input times each of ``masks`` ``(N, H, W)``."""
        return engine_for(self.model).forward_values(
            self.inputs * masks[..., None],
            self.target,
            self.score,
            self.multi_label,
            batch_size,
            precision,
        )


def saliency_key(kind: str, smooth: int, sigma: float, seed: int) -> tuple:
    """The key an input-gradient map is cached under: the noise settings count only with
    ``smooth`` (one noise-free map whatever ``sigma`` and ``seed`` say)."""
    return (kind, smooth, float(sigma) if smooth else 0.0, int(seed) if smooth else 0)


class _Held:
    """The mutable part of a :class:`Capture`, made with it: the layers' tensors (filled in
    on first use of a layer outside a restricted pass), its input-gradient maps (a bounded
    cache) and the wall times of the fill-in passes. The capture itself stays frozen."""

    def __init__(self, activations: dict, gradients: dict, complete: bool):
        self.activations = activations
        self.gradients = gradients
        self.complete = complete  # every layer held (else filled in on first use of another)
        self.fill_ins: list[float] = []
        self.saliencies: dict = {}  # saliency_key(...) -> (H, W, C)
        _read_only(*activations.values(), *gradients.values())

    def fill_in(self, everything: PassResult) -> None:
        """Hold every layer of ``everything`` (a pass over all candidate layers)."""
        self.activations.update({p: a[0] for p, a in everything.activations.items()})
        self.gradients.update({p: g[0] for p, g in everything.gradients.items()})
        _read_only(*self.activations.values(), *self.gradients.values())
        self.fill_ins.append(everything.seconds)
        self.complete = True

    def keep_saliency(self, key: tuple, gradients: np.ndarray) -> None:
        """Cache one input-gradient map, dropping the oldest beyond :data:`SALIENCY_CACHE`
        (a sweep over seeds stays bounded)."""
        _read_only(gradients)
        self.saliencies[key] = gradients
        while len(self.saliencies) > SALIENCY_CACHE:
            self.saliencies.pop(next(iter(self.saliencies)))


def _read_only(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.flags.writeable = False


@dataclass(frozen=True, eq=False)
class Capture:
    """Activations and gradients of every candidate layer for one image and one target.

    Build it with :func:`capture`. Arrays are ``(h, w, C)`` float32, the batch axis dropped.

    Attributes:
        layers: candidate layer paths (4-D outputs, and token layers read as patch grids), in
            input -> output order.
        default_layer: the last conv-like feature map before the head.
        class_index: the explained class; ``None`` for a target without one (a regression).
        scores: ``(K,)`` float32 scores of the output explained (logits or probabilities,
            per ``score``; for a segmentation map, averaged over its pixels).
        score: ``"logit"`` or ``"probability"``.
        image: ``(H, W, 3)`` uint8, the image as fed to the model.
        input_size: ``(H, W)``, the heatmap size.
        seconds: wall time of the model pass that made this capture.
        class_names: names of the classes when known, else ``None``.
        target: the :class:`~gradcam_widget.targets.Target` explained.
        value: the target's value for this image (what was differentiated).
        warnings: what the caller should know about how the image was read (a float image
            read as 0..1) and how the score was taken (a softmax that could not be bypassed,
            a single output unit), each one line; also issued as ``UserWarning`` by
            :func:`capture`.

    Every array a capture hands out (activations, gradients, scores, image) is read-only:
    the cache cannot be changed from outside.
    """

    layers: tuple[str, ...]
    default_layer: str
    class_index: int | None
    scores: np.ndarray
    score: str
    image: np.ndarray
    input_size: tuple[int, int]
    seconds: float
    class_names: tuple[str, ...] | None
    _held: _Held = field(repr=False)  # the tensors and maps, filled in and cached on use
    _source: Source | None = None
    _layer_classes: dict = field(default_factory=dict)
    _shapes: dict = field(default_factory=dict)
    _tokens: dict = field(default_factory=dict)  # path -> (prefix, h, w)
    target: targets.Target | None = None
    value: float = float("nan")
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        _read_only(self.scores, self.image)

    # The held tensors and maps under their names of old, read by tests of other folders;
    # code reads them through the public queries (held_layers, has_saliency, model ...).
    @property
    def _activations(self) -> dict:
        return self._held.activations

    @property
    def _gradients(self) -> dict:
        return self._held.gradients

    @property
    def _saliencies(self) -> dict:
        return self._held.saliencies

    @property
    def fill_ins(self) -> list[float]:
        """Wall times, in seconds, of the passes that filled in layers outside a restricted
        ``layers=`` list (at most one)."""
        return self._held.fill_ins

    @property
    def model(self):
        """The ``keras.Model`` this capture runs again (fill-in, saliency, Score-CAM), or
        ``None`` when it keeps no model."""
        return None if self._source is None else self._source.model

    @property
    def model_input(self) -> np.ndarray | None:
        """``(1, H, W, C)`` float32, the model input of this image (after preprocess), as a
        read-only view; ``None`` when the capture keeps no model."""
        if self._source is None:
            return None
        view = self._source.inputs.view()
        view.flags.writeable = False
        return view

    @property
    def multi_label(self) -> bool:
        """Whether the model's classes are independent (a multi-label entry, sigmoid outputs)."""
        return self._source is not None and bool(self._source.multi_label)

    def has_saliency(
        self, kind: str = "guided", smooth: int = 0, sigma: float = 0.15, seed: int = 0
    ) -> bool:
        """Whether :meth:`~gradcam_widget.Capture.saliency` with these settings is cached (would
        run no pass).

        Args:
            kind, smooth, sigma, seed: as :meth:`~gradcam_widget.Capture.saliency`.
        """
        return saliency_key(kind, smooth, sigma, seed) in self._held.saliencies

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this capture holds (grows when layers are filled in)."""
        held = self._held
        arrays = (self.scores, self.image, *held.activations.values(), *held.gradients.values(),
                  *held.saliencies.values())  # fmt: skip
        return sum(array.nbytes for array in arrays)

    @property
    def held_layers(self) -> tuple[str, ...]:
        """The layers whose tensors are held now (every layer once filled in)."""
        return tuple(path for path in self.layers if path in self._held.activations)

    def shape(self, layer: str | None = None) -> tuple[int, int, int]:
        """``(h, w, C)`` of ``layer``'s output for this image, without filling it in."""
        path = self.resolve(layer)
        if path in self._shapes:
            return self._shapes[path]
        return tuple(self._cached(self._held.activations, path).shape)

    def tokens(self, layer: str | None = None) -> tuple[int, int, int] | None:
        """``(prefix, h, w)`` when ``layer`` is a token layer ``(N, prefix + h*w, C)`` read as
        an ``h x w`` patch grid (its prefix tokens, a class token say, left out), else
        ``None`` (a conv feature map)."""
        return self._tokens.get(self.resolve(layer))

    def resolve(self, layer: str | None) -> str:
        """Full path of ``layer`` (``None`` -> :attr:`default_layer`).

        Raises:
            ValueError: naming the candidate layers when ``layer`` is unknown or ambiguous.
        """
        return self.default_layer if layer is None else layers.resolve(layer, self.layers)

    def _cached(self, store: dict, layer: str | None) -> np.ndarray:
        path = self.resolve(layer)
        if path not in store and not self._held.complete and self._source is not None:
            self._held.fill_in(self._source.run(None))
        return store[path]

    def activations(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 output of ``layer`` for this image (read-only).

        A capture made with a restricted ``layers=`` list runs one more pass, the first time
        a layer outside that list is asked for, and then holds every layer.
        """
        return self._cached(self._held.activations, layer)

    def gradients(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 d target / d activations of ``layer``, read-only (see
        :meth:`activations`)."""
        return self._cached(self._held.gradients, layer)

    def saliency(
        self, kind: str = "guided", smooth: int = 0, sigma: float = 0.15, seed: int = 0
    ) -> np.ndarray:
        """The gradient of the target with respect to the model input: one more pass, down to
        the input, the first time per setting (then cached, read-only).

        Args:
            kind: ``"guided"`` (Guided Backpropagation: every ReLU's backward pass lets only
                positive gradients through at positive inputs, inside that pass only; ReLU
                networks only) or ``"vanilla"`` (the plain gradient, any network).
            smooth: SmoothGrad: the average over this many noisy copies of the input, run as
                one batch (``0``: no noise).
            sigma: the noise's standard deviation as a fraction of the input's range.
            seed: the noise's seed.

        Returns:
            ``(H, W, C)`` float32, signed, in the model input's space (after ``preprocess``).

        Raises:
            ValueError: for a bad option, or ``kind="guided"`` on a network with another
                activation than ReLU (naming the layer).
        """
        core.check_option("kind", kind, SALIENCY_KINDS)
        smooth = core.check_int("smooth", smooth, minimum=0)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma must be a positive number; got {sigma!r}")
        key = saliency_key(kind, smooth, sigma, seed)
        if key in self._held.saliencies:
            return self._held.saliencies[key]
        if self._source is None:
            raise ValueError("this capture cannot run the model (no model kept)")
        copies = None
        if smooth:
            inputs = self._source.inputs
            spread = float(inputs.max() - inputs.min()) or 1.0
            noise = np.random.default_rng(seed).normal(
                0.0, sigma * spread, (smooth, *inputs.shape[1:])
            )
            copies = (inputs + noise).astype(np.float32)
        with model_errors(self._source.inputs.shape, engine_for(self._source.model).input_size):
            result = self._source.input_gradients(kind, copies)
        gradients = result.input_gradients.mean(axis=0).astype(np.float32)
        self._held.keep_saliency(key, gradients)
        return gradients

    def guided_grad_cam(self, layer: str | None = None, **cam_options) -> np.ndarray:
        """Guided Grad-CAM: Guided Backpropagation times the upsampled Grad-CAM heatmap of
        ``layer`` (Selvaraju et al.): fine detail, only where the class map points.

        Args:
            layer: as :meth:`cam`.
            **cam_options: as :meth:`cam` (``pooling``, ``order``, ``method`` ...);
                ``smooth``, ``sigma`` and ``seed`` go to :meth:`~gradcam_widget.Capture.saliency`.

        Returns:
            ``(H, W, C)`` float32, signed.
        """
        noise = {
            key: cam_options.pop(key) for key in ("smooth", "sigma", "seed") if key in cam_options
        }
        heatmap = self.cam(layer, **cam_options).heatmap
        return (self.saliency("guided", **noise) * heatmap[..., None]).astype(np.float32)

    def layer_class(self, layer: str | None = None) -> str:
        """Class name of ``layer`` (e.g. ``"Conv2D"``)."""
        return self._layer_classes.get(self.resolve(layer), "")

    def cam(
        self,
        layer: str | None = None,
        pooling: str = "mean",
        channels: str = "weighted",
        order: str = "relu_first",
        interpolation: str = "bilinear",
        method: str = "gradcam",
        **method_options,
    ) -> core.CamResult:
        """A class-activation map for ``layer`` from the cached tensors.

        Args:
            layer: a path from :attr:`layers`, a unique bare inner name, or ``None`` for
                :attr:`default_layer`.
            pooling: ``"mean"`` (default) | ``"max"`` gradient pooling (Grad-CAM only).
            channels: ``"weighted"`` (default) | ``"top"`` (Grad-CAM only).
            order: ``"relu_first"`` (default) | ``"resize_first"``.
            interpolation: ``"bilinear"`` (default) | ``"nearest"`` | ``"bicubic"``.
            method: a name from :func:`gradcam_widget.methods.names` (default ``"gradcam"``).
            **method_options: a method's own options, as it declares them
                (:attr:`gradcam_widget.methods.Method.options`), e.g. Score-CAM's
                ``max_channels``.

        Returns:
            A :class:`~gradcam_widget.core.CamResult`: ``raw`` ``(h, w)``, ``heatmap``
            ``(H, W)`` = :attr:`input_size`, ``weights`` ``(C,)``; it records the options
            its method used. Only Score-CAM runs the model (forward passes on masked
            inputs); every other method is numpy only.

        Raises:
            ValueError: naming the valid choices for a bad layer, method or option.
        """
        chosen = methods.get(method)
        path = self.resolve(layer)
        core.check_option("order", order, core.ORDERS)
        core.check_option("interpolation", interpolation, core.INTERPOLATIONS)
        used = chosen.bind(pooling=pooling, channels=channels, **method_options)
        raw, weights = chosen.compute(self, path, **used)
        return core.CamResult(
            raw=np.array(raw, dtype=np.float32),
            heatmap=core.to_heatmap(raw, self.input_size, order, interpolation),
            weights=np.array(weights, dtype=np.float32),
            layer=path,
            class_index=self.class_index,
            method=method,
            pooling=used.get("pooling"),
            channels=used.get("channels"),
            order=order,
            interpolation=interpolation,
            score=self.score,
            options={k: v for k, v in used.items() if k not in recipe.method_keywords()},
        ).freeze()

    def fusion_layers(self, count: int = 3) -> tuple[str, ...]:
        """The last conv-like layer of each of the ``count`` coarsest grids, shallow first
        (VGG16: ``block3_conv3``, ``block4_conv3``, ``block5_conv3``); for a vision
        transformer, its last ``count`` blocks up to the default layer."""
        shapes = {path: self.shape(path) for path in self.layers}
        return layers.fusion_layers(
            self.layers, shapes, self._layer_classes, count, self.default_layer, self._tokens
        )

    def fuse(
        self,
        layers=None,
        method: str = "layercam",
        combine: str = "max",
        order: str = "relu_first",
        interpolation: str = "bilinear",
        **options,
    ) -> core.CamResult:
        """Multi-layer fusion: one map per layer, each normalised, then combined.

        Shallow layers give fine but noisy maps, the last block coarse but reliable ones;
        LayerCAM's fusion keeps the detail where the deep map agrees.

        Args:
            layers: a layer name or a list of them (default :meth:`fusion_layers`).
            method: the per-layer method (default ``"layercam"``).
            combine: ``"max"`` (default) or ``"mean"`` of the per-layer maps.
            order, interpolation: as :meth:`cam`.
            **options: as :meth:`cam`.

        Returns:
            A :class:`~gradcam_widget.core.CamResult` whose ``raw`` is the fused map on the
            finest grid, ``layer`` the joined names (``"a+b+c"``), ``weights`` those of the
            last layer.

        Raises:
            ValueError: for bad layers or options.
        """
        core.check_option("combine", combine, ("max", "mean"))
        if layers is None:
            layers = self.fusion_layers()
        elif isinstance(layers, str):
            layers = [layers]
        elif not isinstance(layers, Iterable):
            raise ValueError(f"layers must be a layer name or a list of names; got {layers!r}")
        paths = [self.resolve(name) for name in layers]
        if not paths:
            raise ValueError("fuse needs at least one layer; got an empty list")
        results = [self.cam(path, order=order, interpolation=interpolation, method=method,
                            **options) for path in paths]  # fmt: skip
        raw, heatmap = core.fuse_maps(
            [result.raw for result in results], self.input_size, combine, order, interpolation
        )
        last = results[-1]
        return core.CamResult(
            raw=raw,
            heatmap=heatmap,
            weights=last.weights,
            layer="+".join(paths),
            class_index=self.class_index,
            method=f"{method} fused ({combine})",
            pooling=last.pooling,
            channels=last.channels,
            order=order,
            interpolation=interpolation,
            score=self.score,
            options=last.options,
        ).freeze()

    def masked_scores(
        self, masks: np.ndarray, batch_size: int = 32, precision: str = "float32"
    ) -> np.ndarray:
        """The target's value for the model input multiplied by each mask (forward passes
        only).

        Args:
            masks: ``(N, H, W)`` float in ``[0, 1]`` at :attr:`input_size`.
            batch_size: images per forward pass.
            precision: ``"float32"`` (default, exact) or ``"bfloat16"`` (see
                :func:`gradcam_widget.engine.check_precision`).

        Returns:
            ``(N,)`` float32: the score of :attr:`class_index` (logit or probability, per
            :attr:`score`), or the target's value.
        """
        if self._source is None:
            raise ValueError("this capture cannot run the model (no model kept)")
        check_precision(precision)
        return self._source.masked_values(np.asarray(masks, dtype=np.float32), batch_size,
                                          precision)  # fmt: skip

    def class_name(self, index: int | None = None) -> str:
        """Name of class ``index`` (default: :attr:`class_index`), ``"class N"`` if unknown;
        the target's own name when it explains no class."""
        if index is None and self.class_index is None:
            return self.target.label if self.target is not None else "target"
        index = self.class_index if index is None else int(index)
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def top(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` highest-scoring classes as ``(index, name, score)``."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(int(i), self.class_name(int(i)), float(self.scores[i])) for i in order]


def capture_of(
    request: Request,
    result: PassResult,
    *,
    index: int,
    shown: np.ndarray,
    inputs: np.ndarray,
    default: str,
    notes: tuple[str, ...],
    complete: bool,
) -> Capture:
    """The :class:`Capture` of one image of a pass.

    Args:
        request: the checked request the pass ran for.
        result: the pass's numpy result.
        index: the image's position in the batch.
        shown: the image as fed to the model, ``(H, W, 3)`` uint8.
        inputs: that image's model input ``(1, H, W, C)`` (kept for fill-in and Score-CAM).
        default: the default layer.
        notes: warnings for this image.
        complete: whether the pass kept every candidate layer.
    """
    chosen = int(result.class_indices[index])
    class_index = chosen if chosen >= 0 else None
    own = request.target.subset(index, index + 1).for_class(class_index)  # this image's
    return Capture(
        layers=result.candidates,
        default_layer=default,
        class_index=class_index,
        scores=result.scores[index],
        score=request.score,
        image=shown,
        input_size=(shown.shape[0], shown.shape[1]),
        seconds=result.seconds,
        class_names=request.class_names,
        _held=_Held(
            {path: array[index] for path, array in result.activations.items()},
            {path: array[index] for path, array in result.gradients.items()},
            complete,
        ),
        _source=Source(
            model=request.model,
            inputs=inputs,
            target=own,
            score=request.score,
            multi_label=request.multi_label,
        ),
        _layer_classes=request.engine.layer_classes,
        _shapes=result.shapes,
        _tokens=dict(result.tokens),
        target=own,
        value=float(result.values[index]),
        warnings=notes,
    )

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

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from gradcam_widget.cam import core, methods
from gradcam_widget.captures import targets
from gradcam_widget.engine import (
    PassResult,
    check_precision,
    engine_for,
    inputs,
    layers,
    model_errors,
    model_outputs,
    num_classes,
    unwrap,
)

__all__ = ["Capture", "capture", "class_scores", "grad_cam", "guided_grad_cam", "saliency"]

SALIENCY_KINDS = ("guided", "vanilla")
SALIENCY_CACHE = 4  # input-gradient maps kept per capture, oldest dropped first


@dataclass(frozen=True)
class _Source:
    """What it takes to run the model again for one capture (fill-in, Score-CAM)."""

    model: object  # the keras.Model: a capture keeps its model alive
    inputs: np.ndarray  # (1, H, W, C) model input
    target: targets.Target  # with the class fixed to the one explained
    score: str
    multi_label: bool

    def run(self, layers: tuple[str, ...] | None) -> PassResult:
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
        return engine_for(self.model).forward_values(
            self.inputs * masks[..., None],
            self.target,
            self.score,
            self.multi_label,
            batch_size,
            precision,
        )


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
    _activations: dict
    _gradients: dict
    _source: _Source | None = None
    _layer_classes: dict = field(default_factory=dict)
    _shapes: dict = field(default_factory=dict)
    _tokens: dict = field(default_factory=dict)  # path -> (prefix, h, w) of token layers
    _complete: bool = True  # every layer held (else filled in on first use of another)
    target: targets.Target | None = None
    value: float = float("nan")
    warnings: tuple[str, ...] = ()
    fill_ins: list = field(default_factory=list)  # wall times of the passes that filled in
    _saliencies: dict = field(default_factory=dict)  # (kind, smooth, sigma, seed) -> (H, W, C)

    def __post_init__(self):
        for array in (self.scores, self.image, *self._activations.values(),
                      *self._gradients.values()):  # fmt: skip
            array.flags.writeable = False

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this capture holds (grows when layers are filled in)."""
        arrays = (self.scores, self.image, *self._activations.values(), *self._gradients.values(),
                  *self._saliencies.values())  # fmt: skip
        return sum(array.nbytes for array in arrays)

    @property
    def held_layers(self) -> tuple[str, ...]:
        """The layers whose tensors are held now (every layer once filled in)."""
        return tuple(path for path in self.layers if path in self._activations)

    def shape(self, layer: str | None = None) -> tuple[int, int, int]:
        """``(h, w, C)`` of ``layer``'s output for this image, without filling it in."""
        path = self.resolve(layer)
        if path in self._shapes:
            return self._shapes[path]
        return tuple(self._cached(self._activations, path).shape)

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
        if path not in store and not self._complete and self._source is not None:
            everything = self._source.run(None)
            self._activations.update({p: a[0] for p, a in everything.activations.items()})
            self._gradients.update({p: g[0] for p, g in everything.gradients.items()})
            for array in (*self._activations.values(), *self._gradients.values()):
                array.flags.writeable = False
            self.fill_ins.append(everything.seconds)
            object.__setattr__(self, "_complete", True)
        return store[path]

    def activations(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 output of ``layer`` for this image (read-only).

        A capture made with a restricted ``layers=`` list runs one more pass, the first time
        a layer outside that list is asked for, and then holds every layer.
        """
        return self._cached(self._activations, layer)

    def gradients(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 d target / d activations of ``layer``, read-only (see
        :meth:`activations`)."""
        return self._cached(self._gradients, layer)

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
        key = (kind, smooth, float(sigma) if smooth else 0.0, int(seed) if smooth else 0)
        if key in self._saliencies:
            return self._saliencies[key]
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
        gradients.flags.writeable = False
        self._saliencies[key] = gradients
        while len(self._saliencies) > SALIENCY_CACHE:  # a sweep over seeds stays bounded
            self._saliencies.pop(next(iter(self._saliencies)))
        return gradients

    def guided_grad_cam(self, layer: str | None = None, **cam_options) -> np.ndarray:
        """Guided Grad-CAM: Guided Backpropagation times the upsampled Grad-CAM heatmap of
        ``layer`` (Selvaraju et al.): fine detail, only where the class map points.

        Args:
            layer, **cam_options: as :meth:`cam` (``pooling``, ``order``, ``method`` ...);
                ``smooth``, ``sigma`` and ``seed`` go to :meth:`saliency`.

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
            options={k: v for k, v in used.items() if k not in ("pooling", "channels")},
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
            order, interpolation, **options: as :meth:`cam`.

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
        finest = max(
            (result.raw.shape for result in results), key=lambda shape: shape[0] * shape[1]
        )
        grid = [
            core.normalize(core.resize(core.relu(r.raw), finest, interpolation)) for r in results
        ]
        heat = [result.heatmap for result in results]
        pick = np.max if combine == "max" else np.mean
        last = results[-1]
        return core.CamResult(
            raw=pick(np.stack(grid), axis=0),
            heatmap=core.normalize(pick(np.stack(heat), axis=0)),
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


def _score_warnings(
    facts: PassResult, target: targets.Target, score: str, head, scores, names=()
) -> tuple:
    """One line for each way the requested score is not what the caller may think.

    Args:
        facts: what the traced pass found (``squashed`` per output).
        target: the target explained; only the output it reads matters.
        score: ``"logit"`` or ``"probability"``.
        head: the squashing head of a one-output model, or ``None``.
        scores: ``(K,)`` scores of one image.
        names: the model's output names, in order (to find a named output).
    """
    notes = []
    output = target.output
    if isinstance(output, str) and output in names:
        output = list(names).index(output)
    if isinstance(output, int) and 0 <= output < len(facts.squashed):
        squashed = facts.squashed[output]
    elif len(facts.squashed) == 1 or isinstance(target, targets._Callable):
        squashed = next((kind for kind in facts.squashed if kind), None)
    else:
        squashed = None
    if score == "logit" and squashed is not None and target.uses_score:
        notes.append(
            f"score='logit' but the model's output comes out of a {squashed} that could "
            f"not be bypassed (inside a Lambda or a custom layer): the map explains the "
            f"{squashed} output, not the logit; end the model with a Dense/Activation/"
            "Softmax layer, or pass a model that returns logits"
        )
    if score == "probability" and scores.shape[-1] == 1 and isinstance(target, targets.Class):
        if head == "softmax" or squashed == "softmax":
            notes.append(
                "score='probability' on a softmax over one output unit: it is always 1, so "
                "every map is zero; use score='logit'"
            )
        elif head is None:
            notes.append(
                "the model has one output unit: score='probability' is its sigmoid (a softmax "
                "over one unit would be constant)"
            )
    return tuple(notes)


def set_token_grid(model, grid=None, prefix: int | None = None, layer: str | None = None):
    """Say how a vision transformer's token layers map onto the image, where inference cannot
    decide or decides wrongly.

    Token layers ``(N, T, C)`` are read as ``prefix`` tokens (a class token, registers) then
    an ``h x w`` patch grid in row-major order; by default both are inferred from ``T`` and
    the input size (:func:`gradcam_widget.layers.token_grid`). This sets them for ``layer``
    (a path or a unique bare name) or, with ``layer=None``, for every token layer whose ``T``
    they fit. It holds for every later pass of this model in this process (every capture,
    explorer and batch of it); ``grid=None, prefix=None`` goes back to inference.

    Args:
        model: a ``keras.Model`` or a loaded entry.
        grid: ``(h, w)`` patches, or ``None`` to infer it from ``prefix``.
        prefix: the number of tokens before the patches, or ``None`` (``T - h*w``).
        layer: one layer, or ``None`` for all token layers.

    Raises:
        ValueError: for an unknown layer, or (at the next pass) an override that does not add
            up to the layer's ``T`` (naming ``T``, the input size and the grids that fit).
    """
    engine = engine_for(model)
    path = None
    if layer is not None:
        path = layers.resolve(layer, [leaf_path for leaf_path, _ in engine.leaves])
    if grid is not None:
        try:
            h, w = (int(side) for side in grid)
        except (TypeError, ValueError):
            raise ValueError(f"grid must be (h, w), two positive integers; got {grid!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"grid must be (h, w), two positive integers; got {grid!r}")
    if prefix is not None and (isinstance(prefix, bool) or int(prefix) != prefix or prefix < 0):
        raise ValueError(f"prefix must be an integer >= 0; got {prefix!r}")
    engine.set_token_grid(path, grid, prefix)


def _gradient_notes(
    target: targets.Target,
    score: str,
    result: PassResult,
    default: str | None = None,
    reaching=None,
) -> tuple[str, ...]:
    """A line when the gradient is zero at every kept layer for some image: its map is empty
    because the score does not change with those layers there (a saturated probability, dead
    units, or a custom target that does not depend on the outputs). ``reaching``: the token
    layers whose patch tokens reach the outputs at all (:meth:`Engine.reaching_tokens`)."""
    if not result.gradients:
        return ()
    notes = _token_notes(target, result, default, reaching)
    count = len(result.values)
    alive = np.zeros(count, bool)
    for gradients in result.gradients.values():
        alive |= gradients.reshape(count, -1).any(axis=1)
    covered = len(notes) == len(result.layers)  # every kept layer already explained
    if alive.all() or covered:
        return notes
    hint = (
        " (a probability of exactly 0 or 1 has no gradient: score='logit' explains it)"
        if score == "probability"
        else ""
    )
    return notes + (
        f"the gradient of {target.label} is zero at every recorded layer for "
        f"{int((~alive).sum())} of {count} image(s), so those maps are empty: the score does "
        f"not change with these layers there{hint}",
    )


def _token_notes(
    target: targets.Target, result: PassResult, default: str | None = None, reaching=None
):
    """A line per token layer asked for (or the default layer, when every layer was
    recorded) whose patch tokens get no gradient at all, by the model's structure (not in
    ``reaching``): if the score reads only prefix tokens after that layer (a class token),
    its map is empty for every image. (A zero for this image only -- a saturated probability
    -- is left to the general note.)"""
    asked = result.layers if result.layers != result.candidates else (default,)
    notes = []
    for path in asked:
        layout = result.tokens.get(path)
        if reaching is not None and path in reaching:
            continue
        if layout is not None and path in result.gradients and not np.any(result.gradients[path]):
            notes.append(
                f"the patch tokens of {path} ({layers.describe_tokens(layout)}) get no gradient "
                f"from {target.label}, so its maps are empty: if the score reads only prefix "
                "tokens (a class token) after this layer, explain an earlier block"
            )
    return tuple(notes)


@dataclass(frozen=True)
class _Request:
    """A checked request: the model, how to read its images, and what to explain."""

    model: object
    preprocess: Callable | None
    class_names: tuple[str, ...] | None
    multi_label: bool
    target: targets.Target
    score: str

    @property
    def engine(self):
        return engine_for(self.model)


def _request(model, target, score: str, preprocess, class_index=None) -> _Request:
    """The one validation gate of every public entry point that runs the model."""
    core.check_option("score", score, core.SCORES)
    keras_model, entry_preprocess, class_names, multi_label = unwrap(model)
    if class_index is not None:  # named as the caller named it, with the model's range
        inputs.check_class_index(class_index, num_classes(keras_model))
    chosen = targets.as_target(target, class_index)
    chosen.check(model_outputs(keras_model), score)
    return _Request(
        model=keras_model,
        preprocess=entry_preprocess if preprocess is None else preprocess,
        class_names=None if class_names is None else tuple(class_names),
        multi_label=multi_label,
        target=chosen,
        score=score,
    )


def _checked_pass(request: _Request, batch: np.ndarray, layer_names) -> tuple:
    """Describe and run one pass over ``batch``; ``(facts, default layer, result)``."""
    engine = request.engine
    with model_errors(batch.shape, engine.input_size):
        facts = engine.describe(batch.shape, request.target, request.score, request.multi_label)
    reaching = engine.reaching_tokens(batch.shape) if facts.tokens else None
    default = layers.default_layer(
        facts.candidates, facts.static_shapes, engine.layer_classes, facts.tokens, reaching
    )
    wanted = layers.requested(layer_names, facts.candidates, default)
    with model_errors(batch.shape, engine.input_size):
        result = engine.run(batch, request.target, request.score, request.multi_label, wanted)
    if result.values.shape != (len(batch),):
        raise targets.TargetError(
            f"target {request.target.label} must return one score per image: it returned "
            f"shape {result.values.shape} for {len(batch)} images"
        )
    width = result.scores.shape[-1]
    if (result.class_indices >= width).any():
        raise ValueError(
            f"class_index must be in 0..{width - 1}; got {int(result.class_indices.max())}"
        )
    if not np.isfinite(result.scores).all() or not np.isfinite(result.values).all():
        raise ValueError("the model produced NaN or infinite scores for this image")
    return facts, default, result


def _capture_of(
    request: _Request,
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
        _activations={path: array[index] for path, array in result.activations.items()},
        _gradients={path: array[index] for path, array in result.gradients.items()},
        _source=_Source(
            model=request.model,
            inputs=inputs,
            target=own,
            score=request.score,
            multi_label=request.multi_label,
        ),
        _layer_classes=request.engine.layer_classes,
        _shapes=result.shapes,
        _tokens=dict(result.tokens),
        _complete=complete,
        target=own,
        value=float(result.values[index]),
        warnings=notes,
    )


def capture(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layers: str | Iterable[str] = "all",
    target=None,
) -> Capture:
    """Run the model once and record activations and gradients of every candidate layer.

    Args:
        model: a ``keras.Model`` (Functional, Sequential, nested bases included, or a
            subclassed model that has been built) or an entry from
            :func:`gradcam_widget.models.load`, whose preprocess and class names are then
            used. It must take one ``(N, H, W, C)`` input.
        image: anything :func:`gradcam_widget.images.as_rgb_image` reads: an ``(H, W, 3)``
            uint8 or float array (0..255, or 0..1 with a warning), grayscale, RGBA, uint16, a
            PIL image of any mode, a file path or a sample name. Resized to the sizes the
            model fixes (area averaging to shrink, bilinear to enlarge).
        class_index: the class to explain; ``None`` takes the top-scoring class.
        score: ``"logit"`` (default; the pre-softmax score, as in the Grad-CAM paper) or
            ``"probability"`` (the softmax/sigmoid output, as in the article).
        preprocess: called on the ``(1, H, W, 3)`` float32 batch before the model; default
            the entry's own (none for a bare ``keras.Model``).
        layers: ``"all"`` (default) records gradients for every candidate layer in one pass;
            a layer name or a list of them records them only down to those layers, which is
            cheaper (the backward pass stops early); other layers are then filled in by one
            more pass on first use.
        target: what to explain instead of a class index: a :mod:`gradcam_widget.targets`
            target (``Output``, ``Region``, ``Regression`` ...) or a callable
            ``outputs -> (N,)``. Needed for a model with several outputs or a non-classifier
            output.

    Returns:
        A :class:`Capture`.

    Raises:
        ValueError: for a bad image, option, class index, target or layer name, a model
            whose outputs the target cannot read, or an input the model cannot run on,
            naming what was expected. Nothing is cached when it raises.

    Warns:
        UserWarning: when ``score="logit"`` meets a softmax it cannot bypass, or the model has
            one output unit (see :attr:`Capture.warnings`).
    """
    request = _request(model, target, score, preprocess, class_index)
    engine = request.engine
    shown, batch, image_notes = inputs.prepare(image, engine.input_size, request.preprocess)
    facts, default, result = _checked_pass(request, batch, layers)
    notes = image_notes + _score_warnings(
        facts, request.target, request.score, engine.head, result.scores[0], engine.output_names
    )
    reaching = engine.reaching_tokens(batch.shape) if result.tokens else None
    notes += _gradient_notes(request.target, request.score, result, default, reaching)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    complete = result.layers == result.candidates
    return _capture_of(request, result, index=0, shown=shown, inputs=batch, default=default,
                       notes=notes, complete=complete)  # fmt: skip


def class_scores(
    model,
    images,
    class_index: int,
    score: str = "probability",
    preprocess: Callable | None = None,
    batch_size: int = 32,
    target=None,
) -> np.ndarray:
    """Score of one class (or a target's value) for a batch of images: forward passes only,
    compiled once.

    This is what the perturbation metrics (:mod:`gradcam_widget.metrics`) run: the images
    are edited in pixel space (0..255) and each one is preprocessed as the model expects.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        images: ``(N, H, W, 3)`` RGB, uint8 or float 0..255, at the model's input size.
        class_index: the class whose score is returned (``None`` with ``target=``).
        score: ``"probability"`` (default; softmax, or sigmoid for a multi-label entry) or
            ``"logit"`` (the pre-activation score).
        preprocess: as :func:`capture` (default: the entry's own).
        batch_size: images per forward pass.
        target: a target instead of ``class_index`` (see :func:`capture`).

    Returns:
        ``(N,)`` float32 scores.

    Raises:
        ValueError: for a bad batch, class index, score or batch size, naming what was
            expected.
    """
    if class_index is None and target is None:
        raise ValueError("class_index must be an int; got None")
    request = _request(model, target, score, preprocess, class_index)
    batch_size = core.check_int("batch_size", batch_size)
    engine = request.engine
    batch = inputs.check_image_batch(images, engine.input_size)
    batch = inputs.model_batch(batch, request.preprocess, engine.input_size)
    with model_errors(batch.shape, engine.input_size):
        values = engine.forward_values(
            batch, request.target, request.score, request.multi_label, batch_size
        )
    if not np.isfinite(values).all():
        raise ValueError("the model produced NaN or infinite scores for these images")
    return values


def grad_cam(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layer: str | None = None,
    pooling: str = "mean",
    channels: str = "weighted",
    order: str = "relu_first",
    interpolation: str = "bilinear",
    method: str = "gradcam",
    target=None,
    **method_options,
) -> core.CamResult:
    """``capture(...).cam(...)`` in one call, backpropagating only as deep as ``layer``.

    Args and Raises: as :func:`capture` and :meth:`Capture.cam`.

    Returns:
        The :class:`~gradcam_widget.core.CamResult` for ``layer`` (default: the last
        conv-like layer).
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[layer], target=target)
    return cap.cam(
        layer,
        pooling=pooling,
        channels=channels,
        order=order,
        interpolation=interpolation,
        method=method,
        **method_options,
    )


def saliency(
    model,
    image,
    kind: str = "guided",
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    target=None,
    smooth: int = 0,
    sigma: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """The input-gradient map of one image: Guided Backpropagation or the vanilla gradient,
    optionally SmoothGrad. Arguments as :func:`capture` and :meth:`Capture.saliency`.

    Returns:
        ``(H, W, C)`` float32, signed (render it with
        :func:`gradcam_widget.render.saliency_image`).
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[], target=target)
    return cap.saliency(kind, smooth=smooth, sigma=sigma, seed=seed)


def guided_grad_cam(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layer: str | None = None,
    target=None,
    **cam_options,
) -> np.ndarray:
    """Guided Grad-CAM of one image: :meth:`Capture.guided_grad_cam` in one call (two passes:
    one to ``layer``, one guided pass to the input).

    Returns:
        ``(H, W, C)`` float32, signed.
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[layer], target=target)
    return cap.guided_grad_cam(layer, **cam_options)

"""What passes between the engine (:mod:`.base`) and a backend: what a pass is asked for
(:class:`PassRequest`), what the backend compiled (:class:`CompiledPass`), what the objective
computed (:class:`Objective`), and what a pass returns (:class:`PassResult`, the same object
inside a trace -- tensors, carried through ``tf.nest`` -- and out of it: numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class PassResult:
    """What one compiled pass found and computed.

    Inside the trace the arrays are tensors; :meth:`Engine.run` returns numpy arrays.

    Attributes:
        candidates: paths of the layers with a 4-D ``(N, h, w, C)`` output, or a token output
            ``(N, T, C)`` that is prefix tokens plus a patch grid of the input (see
            :func:`gradcam_widget.layers.token_grid`), in call order.
        static_shapes: ``{path: (h, w, C)}`` as traced, ``None`` where it follows the image.
        tokens: ``{path: (prefix, h, w)}`` of the token layers among the candidates: their
            activations and gradients are given as ``(N, h, w, C)`` grids, prefix tokens left
            out.
        squashed: per model output, ``"softmax"``/``"sigmoid"`` when that output still comes
            out of a squashing op that could not be bypassed, else ``None``.
        layers: the layers whose activations and gradients were kept.
        scores: ``(N, K)`` scores of the output the target reads (logits or probabilities).
        values: ``(N,)`` the target's value per image: what was differentiated.
        class_indices: ``(N,)`` the class explained per image, ``-1`` when the target has none.
        activations, gradients: ``{path: (N, h, w, C)}`` for :attr:`layers`.
        shapes: ``{path: (h, w, C)}`` of every candidate for these inputs.
        input_gradients: ``(N, H, W, C)`` d value / d model input when asked for (plain, or
            guided: see :func:`gradcam_widget.tapping.guided_replacements`), else ``None``.
        seconds: wall time of the pass.
    """

    candidates: tuple[str, ...]
    static_shapes: dict
    squashed: tuple
    layers: tuple[str, ...]
    tokens: dict = field(default_factory=dict)
    scores: object = None
    values: object = None
    class_indices: object = None
    activations: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    input_gradients: object = None
    seconds: float = 0.0

    # tf.nest protocol: the Python facts travel as metadata, the tensors as components, so
    # that a traced function can return this object (and a concrete function describes it).
    def __tf_flatten__(self):
        metadata = (
            self.candidates,
            tuple((path, self.static_shapes[path]) for path in self.candidates),
            self.squashed,
            self.layers,
            tuple(sorted(self.tokens.items())),
            self.input_gradients is not None,
        )
        components = (
            self.scores,
            self.values,
            self.class_indices,
            *(self.activations[path] for path in self.layers),
            *(self.gradients[path] for path in self.layers),
            *(self.shapes[path] for path in self.candidates),
            *(() if self.input_gradients is None else (self.input_gradients,)),
        )
        return metadata, components

    @classmethod
    def __tf_unflatten__(cls, metadata, components):
        candidates, static_shapes, squashed, layers, tokens, has_input = metadata
        scores, values, class_indices, *rest = components
        input_gradients = rest.pop() if has_input else None
        count = len(layers)
        return cls(
            candidates=candidates,
            static_shapes=dict(static_shapes),
            squashed=squashed,
            layers=layers,
            tokens=dict(tokens),
            scores=scores,
            values=values,
            class_indices=class_indices,
            activations=dict(zip(layers, rest[:count], strict=True)),
            gradients=dict(zip(layers, rest[count : 2 * count], strict=True)),
            shapes=dict(zip(candidates, rest[2 * count :], strict=True)),
            input_gradients=input_gradients,
        )

    def numpy(self, seconds: float = 0.0) -> PassResult:
        """This result with every tensor (of any backend) turned into a numpy array."""

        def arrays(store: dict) -> dict:
            return {path: np.asarray(tensor) for path, tensor in store.items()}

        return replace(
            self,
            scores=np.asarray(self.scores),
            values=np.asarray(self.values),
            class_indices=np.asarray(self.class_indices),
            activations=arrays(self.activations),
            gradients=arrays(self.gradients),
            shapes={p: tuple(int(s) for s in np.asarray(t)) for p, t in self.shapes.items()},
            input_gradients=None
            if self.input_gradients is None
            else np.asarray(self.input_gradients),
            seconds=seconds,
        )


# ---------------------------------------------------------------------------------------
# What passes between this module and a backend


@dataclass(frozen=True)
class PassRequest:
    """What one pass computes: one compiled pass per distinct request.

    Attributes:
        signature: ``(None, H, W, C)`` of the inputs (:meth:`Engine.signature`).
        target: a :class:`gradcam_widget.captures.targets.Target`.
        score: ``"logit"`` or ``"probability"``.
        multi_label: sigmoid instead of softmax for probabilities.
        layers: the layer paths to keep (``None``: every candidate; ``()``: none).
        to_input: also differentiate down to the input: ``"vanilla"``, ``"guided"`` or
            ``None``.
    """

    signature: tuple
    target: object
    score: str
    multi_label: bool
    layers: tuple[str, ...] | None = None
    to_input: str | None = None

    @property
    def key(self) -> tuple:
        """What tells one compiled pass from another (the target by its trace key)."""
        return (
            self.signature,
            self.target.trace_key,
            self.score,
            self.multi_label,
            self.layers,
            self.to_input,
        )

    def kept(self, candidates) -> tuple[str, ...]:
        """The requested layers among ``candidates``, in the request's order (all of them
        for ``layers=None``)."""
        candidates = tuple(candidates)
        if self.layers is None:
            return candidates
        return tuple(path for path in self.layers if path in candidates)


@dataclass(frozen=True)
class CompiledPass:
    """What a backend's ``_make_*`` hook compiled, handed back to its ``_call_*`` hook.

    Attributes:
        request: the request it serves (``None`` for a raw-outputs pass).
        function: the backend's compiled callable (``None`` for an eager backend).
        facts: the pass's facts without arrays (its kept layers included), where the
            backend reads them before the pass runs.
        layer_facts: the backend's :class:`~gradcam_widget.engine.grids.LayerFacts` of the
            model at this size, where it has them.
        pads: whether a batch may be padded to a bucket size (the target has no per-image
            data).
    """

    request: PassRequest | None
    function: object = None
    facts: PassResult | None = None
    layer_facts: object = None
    pads: bool = False


@dataclass(frozen=True)
class Objective:
    """What :meth:`Engine.objective` computed: tensors of the backend.

    Attributes:
        record: the tapped layers' outputs (:func:`~gradcam_widget.engine.tapping.tapped`).
        outputs: the model's outputs as it returned them.
        values: ``(N,)`` the target's value per image.
        class_indices: ``(N,)`` the class explained per image (``-1``: none).
        scores: ``(N, K)`` the scores the target read.
    """

    record: dict
    outputs: object
    values: object
    class_indices: object
    scores: object


class ForwardValues(NamedTuple):
    """What a forward-only pass of a target gives (:meth:`Engine._call_forward`).

    Attributes:
        values: ``(n,)`` numpy values of the target, one per image.
        width: the number of scores the target reads (class indices are checked against it).
    """

    values: np.ndarray
    width: int

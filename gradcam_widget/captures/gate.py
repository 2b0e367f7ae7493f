"""The one validation gate of every public entry point that runs the model: a model and what
to explain become a checked :class:`Request` (:func:`check_request`), and a batch becomes one
checked pass (:func:`checked_pass`). :func:`gradcam_widget.capture`, the one-call wrappers,
:func:`gradcam_widget.explain` and :meth:`ModelEntry.predict
<gradcam_widget.data.models.ModelEntry.predict>` all go through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core
from gradcam_widget.captures import targets
from gradcam_widget.engine import (
    engine_for,
    inputs,
    layers,
    model_errors,
    model_outputs,
    num_classes,
    unwrap,
)

__all__ = ["Request", "check_request", "checked_pass"]


@dataclass(frozen=True)
class Request:
    """A checked request: the model, how to read its images, and what to explain.

    Attributes:
        model: the ``keras.Model`` (unwrapped from an entry).
        preprocess: what the model's images go through (the caller's, else the entry's).
        class_names: the entry's class names, or ``None``.
        multi_label: whether the entry's classes are independent (sigmoid).
        target: the checked :class:`~gradcam_widget.targets.Target`.
        score: ``"logit"`` or ``"probability"``.
    """

    model: object
    preprocess: Callable | None
    class_names: tuple[str, ...] | None
    multi_label: bool
    target: targets.Target
    score: str

    @property
    def engine(self):
        """The (cached) engine that runs this model (:func:`gradcam_widget.engine.engine_for`)."""
        return engine_for(self.model)


def check_request(model, target, score: str, preprocess, class_index=None) -> Request:
    """The one validation gate of every public entry point that runs the model.

    Args:
        model: a ``keras.Model`` or a loaded entry.
        target: a target, a callable or ``None`` (see :func:`gradcam_widget.capture`).
        score: ``"logit"`` or ``"probability"``.
        preprocess: the caller's preprocess, or ``None`` for the entry's own.
        class_index: the class the caller named, checked against the model's range.

    Returns:
        The checked :class:`Request`.

    Raises:
        ValueError: for a bad score, model, class index or target, naming what was expected.
    """
    core.check_option("score", score, options.SCORES)
    keras_model, entry_preprocess, class_names, multi_label = unwrap(model)
    if class_index is not None:  # named as the caller named it, with the model's range
        inputs.check_class_index(class_index, num_classes(keras_model))
    chosen = targets.as_target(target, class_index)
    chosen.check(model_outputs(keras_model), score)
    return Request(
        model=keras_model,
        preprocess=entry_preprocess if preprocess is None else preprocess,
        class_names=None if class_names is None else tuple(class_names),
        multi_label=multi_label,
        target=chosen,
        score=score,
    )


def checked_pass(request: Request, batch: np.ndarray, layer_names) -> tuple:
    """Describe and run one pass over ``batch``.

    Args:
        request: the checked request.
        batch: ``(N, H, W, C)`` model inputs.
        layer_names: ``"all"``, a layer name or a list of them (the layers to record).

    Returns:
        ``(facts, default layer, result)``: what the traced pass found, the default layer
        and the pass's :class:`~gradcam_widget.engine.PassResult`.

    Raises:
        ValueError: for a bad layer, a target that gives not one score per image, a class
            index outside the output, or NaN/infinite scores; a model failure as one line.
    """
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

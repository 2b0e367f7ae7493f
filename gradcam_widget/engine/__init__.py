"""The only code that runs a model: the backend contract (:mod:`.base`), one module per backend
(:mod:`.tf`, :mod:`.jax`, :mod:`.torch`) and the factory :func:`engine_for`, which picks the
backend Keras runs on. Nothing here imports a backend library until a backend is chosen.
"""

from __future__ import annotations

import threading
import weakref

from gradcam_widget.engine._keras import check_backend
from gradcam_widget.engine.base import (
    MAX_TRACES,
    PRECISIONS,
    Engine,
    ModelCallError,
    PassResult,
    StatelessEngine,
    as_grid,
    bfloat16_supported,
    check_precision,
    empty_output,
    feature_maps,
    model_code,
    model_errors,
    model_failure,
    model_input_size,
    model_outputs,
    num_classes,
    only_output,
    ops,
    output_parts,
    perturbation,
    raised_by_model,
    resource_error,
    said_failure,
    scored_outputs,
    too_small,
    trim_oldest,
    unwrap,
)

_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def engine_class() -> type[Engine]:
    """The engine for Keras's backend in this process.

    Raises:
        RuntimeError: for a backend this package has no engine for.
    """
    backend = check_backend()
    if backend == "jax":
        from gradcam_widget.engine.jax import JaxEngine

        return JaxEngine
    if backend == "torch":
        from gradcam_widget.engine.torch import TorchEngine

        return TorchEngine
    from gradcam_widget.engine.tf import TfEngine

    return TfEngine


def engine_for(model) -> Engine:
    """The (cached) engine that runs passes of ``model`` (a keras.Model or a loaded entry).

    Cached per model, weakly: dropping the model frees the engine and its traces."""
    keras_model = unwrap(model)[0]
    with _ENGINES_LOCK:
        engine = _ENGINES.get(keras_model)
        if engine is None:
            engine = _ENGINES[keras_model] = engine_class()(keras_model)
        return engine


__all__ = [
    "as_grid",
    "bfloat16_supported",
    "check_precision",
    "empty_output",
    "Engine",
    "engine_class",
    "engine_for",
    "feature_maps",
    "MAX_TRACES",
    "model_code",
    "model_errors",
    "model_failure",
    "model_input_size",
    "model_outputs",
    "ModelCallError",
    "num_classes",
    "only_output",
    "ops",
    "output_parts",
    "PassResult",
    "perturbation",
    "PRECISIONS",
    "raised_by_model",
    "resource_error",
    "said_failure",
    "scored_outputs",
    "StatelessEngine",
    "too_small",
    "trim_oldest",
    "unwrap",
]

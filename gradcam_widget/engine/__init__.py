"""The only code that runs a model: the backend contract (:mod:`.base`), one module per backend
(:mod:`.tf`, :mod:`.jax`, :mod:`.torch`) and the factory :func:`engine_for`, which picks the
backend Keras runs on. Nothing here imports a backend library until a backend is chosen.

Beside them: what is read off a model (:mod:`.model`), how its failures are said
(:mod:`.errors`), the precision lock (:mod:`.precision`), token grids (:mod:`.grids`), what
passes between the engine and a backend (:mod:`.result`), what the stateless engines share
(:mod:`.stateless`), TensorFlow's name scopes (:mod:`.scopes`), and the tapping, input checks
and layer choices the passes use (:mod:`.tapping`, :mod:`.inputs`, :mod:`.layers`).
"""

from __future__ import annotations

import threading
import weakref

from gradcam_widget.engine._keras import BACKEND, check_backend, keras
from gradcam_widget.engine.base import MAX_TRACES, Engine, ops, scored_outputs, trim_oldest
from gradcam_widget.engine.errors import (
    ModelCallError,
    empty_output,
    model_code,
    model_errors,
    model_failure,
    raised_by_model,
    resource_error,
    said_failure,
    too_small,
)
from gradcam_widget.engine.grids import as_grid, feature_maps
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.model import (
    ModelRef,
    model_input_size,
    model_outputs,
    num_classes,
    only_output,
    output_parts,
    unwrap,
)
from gradcam_widget.engine.precision import (
    PRECISIONS,
    bfloat16_supported,
    check_precision,
    precision_scope,
)
from gradcam_widget.engine.result import CompiledPass, PassRequest, PassResult
from gradcam_widget.engine.stateless import StatelessEngine, perturbation

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
    "BACKEND",
    "ModelCheckError",
    "keras",
    "as_grid",
    "bfloat16_supported",
    "check_precision",
    "CompiledPass",
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
    "ModelRef",
    "num_classes",
    "only_output",
    "ops",
    "output_parts",
    "PassRequest",
    "PassResult",
    "perturbation",
    "PRECISIONS",
    "precision_scope",
    "raised_by_model",
    "resource_error",
    "said_failure",
    "scored_outputs",
    "StatelessEngine",
    "too_small",
    "trim_oldest",
    "unwrap",
]

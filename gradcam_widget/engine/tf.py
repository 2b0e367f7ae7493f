"""The TensorFlow engine: the compiled pass on Keras's TensorFlow backend.

The pass is one ``tf.function`` (no autograph) with a ``(None, H, W, C)`` input signature: one
trace serves every batch size and, where the model leaves it free, every image size. Inside it,
:func:`~gradcam_widget.tapping.tapped` records every leaf layer's output while a
``GradientTape`` watches the call, and the tape differentiates the target's values with respect
to the requested layers (and the input, for saliency). The traced function returns a
:class:`~gradcam_widget.engine.PassResult` through ``tf.nest``.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import weakref

import numpy as np

from gradcam_widget.engine._tf import tf
from gradcam_widget.engine.base import (
    Engine,
    PassResult,
    as_grid,
    feature_maps,
    model_code,
    only_output,
    output_parts,
    scored_outputs,
)
from gradcam_widget.engine.tapping import squashed_output, tapped


def _function(run, signature: tuple, feed_spec: tuple | None = None):
    """``run`` compiled for float32 inputs of ``signature`` (and a feed of ``feed_spec``),
    traced with every layer's name made a valid TensorFlow name scope (:func:`scope_names`)."""
    specs = [tf.TensorSpec(signature, tf.float32)]
    if feed_spec is not None:
        specs.append(tf.TensorSpec(*feed_spec))

    @functools.wraps(run)
    def traced(*args):
        with scope_names():
            return run(*args)

    return tf.function(traced, input_signature=specs, autograph=False)


# ---------------------------------------------------------------------------------------
# Layer names as name scopes
#
# Keras calls each layer inside a name scope of the layer's name. Keras allows any name
# without "/" ("conv 1", "é"), TensorFlow's graphs only ``[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*``: in
# a traced function such a layer raises "... is not a valid scope name" (eagerly, TensorFlow
# checks nothing). While this package traces a pass, the TensorFlow scope of such a name is
# the name with every other character replaced by "_" (Keras's own name for the scope, and so
# every variable path and layer name, are left as they are).

_VALID_SCOPE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_scopes = threading.local()  # .depth: scope_names blocks open in this thread


def scope_name(name):
    """``name`` as a valid TensorFlow name scope (unchanged when it is one)."""
    if not isinstance(name, str) or not name or _VALID_SCOPE.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", name)
    return cleaned if _VALID_SCOPE.match(cleaned) else f"layer{cleaned}"


@contextlib.contextmanager
def scope_names():
    """Inside this block, in this thread only, Keras's name scopes of names TensorFlow refuses
    open the scope of :func:`scope_name` instead (see above)."""
    _install_scope_names()
    _scopes.depth = getattr(_scopes, "depth", 0) + 1
    try:
        yield
    finally:
        _scopes.depth -= 1


def _install_scope_names() -> None:
    """Wrap Keras's TensorFlow ``name_scope`` once: the TensorFlow scope it opens gets
    :func:`scope_name` of its name inside a :func:`scope_names` block."""
    try:
        from keras.src.backend.tensorflow.core import name_scope
    except ImportError:  # pragma: no cover - another Keras: layer names are left as they are
        return
    if getattr(name_scope, "_gradcam_scope_names", False):
        return
    original = name_scope.__init__

    @functools.wraps(original)
    def __init__(self, name, *args, **kwargs):
        original(self, name, *args, **kwargs)
        if getattr(_scopes, "depth", 0) and scope_name(name) != name:
            self._tf_name_scope = tf.name_scope(scope_name(name))

    name_scope.__init__ = __init__
    name_scope._gradcam_scope_names = True


class TfEngine(Engine):
    """The engine on TensorFlow (see the module docstring)."""

    backend = "tensorflow"

    def _make_pass(
        self,
        signature: tuple,
        target,
        score: str,
        multi_label: bool,
        layers: tuple[str, ...] | None,
        to_input: str | None = None,
    ):
        # The traced function holds the engine weakly and the model not at all: TensorFlow
        # keeps the Python function from its C++ side, where the garbage collector cannot see
        # a cycle through it, so a strong reference here would keep both alive for ever.
        engine_ref = weakref.ref(self)

        def run(inputs, feed):
            engine = engine_ref()
            engine.traces += 1
            model = engine.model
            guided = model if to_input == "guided" else None
            with (
                tapped(engine.leaves, model if score == "logit" else None, guided) as record,
                tf.GradientTape() as tape,
            ):
                # watched always: a tape records only ops that read a watched tensor or a
                # variable, so without it the output of a layer with no weights before the first
                # one that has some (Rescaling, Resizing) would get no gradient: an empty map
                tape.watch(inputs)
                with model_code():
                    outputs = model(inputs, training=False)
                scored = scored_outputs(
                    outputs, engine.output_names, score, multi_label, target.adds_squash
                )
                values, chosen, scores = target.traced(scored, feed)
                total = tf.reduce_sum(values)
            maps, tokens = feature_maps(record, inputs.shape, engine.token_overrides)
            kept = tuple(maps) if layers is None else tuple(p for p in layers if p in maps)
            sources = [maps[path] for path in kept] + ([inputs] if to_input else [])
            with model_code():  # the backward pass through the model (its own gradients)
                gradients = tape.gradient(
                    total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
            input_gradients = gradients.pop() if to_input else None
            # token layers: differentiated as tokens, returned as grids (prefix tokens dropped)
            gradients = [
                as_grid(gradient, tokens.get(path))
                for path, gradient in zip(kept, gradients, strict=True)
            ]
            maps = {path: as_grid(tensor, tokens.get(path)) for path, tensor in maps.items()}
            squashed = tuple(
                squashed_output(part) if score == "logit" else None
                for part in output_parts(outputs)
            )
            return PassResult(
                candidates=tuple(maps),
                static_shapes={path: tuple(tensor.shape[1:]) for path, tensor in maps.items()},
                squashed=squashed,
                layers=kept,
                tokens=tokens,
                scores=scores,
                values=values,
                class_indices=chosen,
                activations={path: maps[path] for path in kept},
                gradients=dict(zip(kept, gradients, strict=True)),
                shapes={path: tf.shape(tensor)[1:] for path, tensor in maps.items()},
                input_gradients=input_gradients,
            )

        return _function(run, signature, target.feed_spec)

    def _call_pass(self, function, inputs: np.ndarray, feed: np.ndarray) -> PassResult:
        return function(tf.constant(inputs), tf.constant(feed)).numpy()

    def _trace_facts(self, signature, target, score, multi_label, count=None) -> PassResult:
        # a gradient-free pass, traced (compiled, not run): it also serves later passes that
        # keep no layer
        function = self._pass(signature, target, score, multi_label, ())
        traced = function.get_concrete_function().structured_outputs
        # keep the facts only: a symbolic tensor would keep its whole graph alive
        return PassResult(
            traced.candidates,
            traced.static_shapes,
            traced.squashed,
            traced.layers,
            tokens=traced.tokens,
        )

    def _make_forward(self, signature, target, score: str, multi_label: bool):
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def forward(inputs, feed):
            engine = engine_ref()
            model = engine.model
            with tapped((), model if score == "logit" else None):
                with model_code():
                    outputs = model(inputs, training=False)
                scored = scored_outputs(
                    outputs, engine.output_names, score, multi_label, target.adds_squash
                )
                values, _, scores = target.traced(scored, feed)
                return values, tf.shape(scores)[-1]

        return _function(forward, signature, target.feed_spec)

    def _call_forward(self, function, chunk: np.ndarray, fed: np.ndarray):
        values, width = function(tf.constant(chunk), tf.constant(fed))
        return values.numpy(), int(width)

    def _make_outputs(self, signature):
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def forward(inputs):
            with model_code():
                outputs = engine_ref().model(inputs, training=False)
            return tf.cast(only_output(outputs), tf.float32)

        return _function(forward, signature)

    def _call_outputs(self, function, chunk: np.ndarray) -> np.ndarray:
        return function(tf.constant(chunk)).numpy()

    def _find_reaching(self, signature: tuple) -> frozenset:
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def reach(inputs):
            engine = engine_ref()
            model = engine.model
            with tapped(engine.leaves, model) as record, tf.GradientTape() as tape:
                tape.watch(inputs)  # as in _make_pass
                with model_code():
                    outputs = model(inputs, training=False)
                total = tf.add_n(
                    [
                        tf.reduce_sum(
                            tf.cast(part, tf.float32)
                            * tf.random.stateless_normal(tf.shape(part), seed=(index, 1))
                        )
                        for index, part in enumerate(output_parts(outputs))
                        if part.dtype.is_floating
                    ]
                    or [tf.constant(0.0)]
                )
            maps, tokens = feature_maps(record, inputs.shape, engine.token_overrides)
            paths = list(tokens)
            with model_code():
                gradients = tape.gradient(
                    total,
                    [maps[path] for path in paths],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            return {
                path: tf.reduce_any(as_grid(gradient, tokens[path]) != 0)
                for path, gradient in zip(paths, gradients, strict=True)
            }

        found = _function(reach, signature)(tf.constant(self._noise(signature)))
        return frozenset(path for path, reached in found.items() if bool(reached))

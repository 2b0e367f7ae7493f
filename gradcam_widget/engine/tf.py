"""The TensorFlow engine: the compiled pass on Keras's TensorFlow backend.

The pass is one ``tf.function`` (no autograph) with a ``(None, H, W, C)`` input signature: one
trace serves every batch size and, where the model leaves it free, every image size. Inside it,
:func:`~gradcam_widget.tapping.tapped` records every leaf layer's output while a
``GradientTape`` watches the call, and the tape differentiates the target's values with respect
to the requested layers (and the input, for saliency). The traced function returns a
:class:`~gradcam_widget.engine.PassResult` through ``tf.nest``.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import replace

import numpy as np

from gradcam_widget.engine._tf import tf
from gradcam_widget.engine.base import Engine
from gradcam_widget.engine.errors import model_code
from gradcam_widget.engine.grids import as_grid, feature_maps
from gradcam_widget.engine.model import only_output, output_parts
from gradcam_widget.engine.result import CompiledPass, ForwardValues, PassRequest, PassResult
from gradcam_widget.engine.scopes import scope_name, scope_names
from gradcam_widget.engine.tapping import squashed_output, tapped

__all__ = ["TfEngine", "scope_name", "scope_names"]


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


class TfEngine(Engine):
    """The engine on TensorFlow (see the module docstring)."""

    backend = "tensorflow"

    def _make_pass(self, request: PassRequest) -> CompiledPass:
        # The traced function holds the engine weakly and the model not at all: TensorFlow
        # keeps the Python function from its C++ side, where the garbage collector cannot see
        # a cycle through it, so a strong reference here would keep both alive for ever.
        engine_ref = weakref.ref(self)
        to_input = request.to_input

        def run(inputs, feed):
            engine = engine_ref()
            engine.traces += 1
            with tf.GradientTape() as tape:
                # watched always: a tape records only ops that read a watched tensor or a
                # variable, so without it the output of a layer with no weights before the first
                # one that has some (Rescaling, Resizing) would get no gradient: an empty map
                tape.watch(inputs)
                found = engine.objective(inputs, feed, request)
                total = tf.reduce_sum(found.values)
            maps, tokens = feature_maps(found.record, inputs.shape, engine.token_overrides)
            kept = request.kept(maps)
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
                squashed_output(part) if request.score == "logit" else None
                for part in output_parts(found.outputs)
            )
            return PassResult(
                candidates=tuple(maps),
                static_shapes={path: tuple(tensor.shape[1:]) for path, tensor in maps.items()},
                squashed=squashed,
                layers=kept,
                tokens=tokens,
                scores=found.scores,
                values=found.values,
                class_indices=found.class_indices,
                activations={path: maps[path] for path in kept},
                gradients=dict(zip(kept, gradients, strict=True)),
                shapes={path: tf.shape(tensor)[1:] for path, tensor in maps.items()},
                input_gradients=input_gradients,
            )

        return CompiledPass(request, _function(run, request.signature, request.target.feed_spec))

    def _call_pass(self, compiled: CompiledPass, inputs: np.ndarray, feed: np.ndarray):
        return compiled.function(tf.constant(inputs), tf.constant(feed)).numpy()

    def _trace_facts(self, request: PassRequest, count: int | None = None) -> PassResult:
        # a gradient-free pass, traced (compiled, not run): it also serves later passes that
        # keep no layer
        compiled = self._pass(replace(request, layers=(), to_input=None))
        traced = compiled.function.get_concrete_function().structured_outputs
        # keep the facts only: a symbolic tensor would keep its whole graph alive
        return PassResult(
            traced.candidates,
            traced.static_shapes,
            traced.squashed,
            traced.layers,
            tokens=traced.tokens,
        )

    def _make_forward(self, request: PassRequest) -> CompiledPass:
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def forward(inputs, feed):
            found = engine_ref().objective(inputs, feed, request, leaves=())
            return found.values, tf.shape(found.scores)[-1]

        return CompiledPass(
            request, _function(forward, request.signature, request.target.feed_spec)
        )

    def _call_forward(self, compiled: CompiledPass, chunk: np.ndarray, feed: np.ndarray):
        values, width = compiled.function(tf.constant(chunk), tf.constant(feed))
        return ForwardValues(values.numpy(), int(width))

    def _make_outputs(self, signature: tuple) -> CompiledPass:
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def forward(inputs):
            return tf.cast(only_output(engine_ref().call_model(inputs)), tf.float32)

        return CompiledPass(None, _function(forward, signature))

    def _call_outputs(self, compiled: CompiledPass, chunk: np.ndarray) -> np.ndarray:
        return compiled.function(tf.constant(chunk)).numpy()

    def _find_reaching(self, signature: tuple) -> frozenset:
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def reach(inputs):
            engine = engine_ref()
            with tapped(engine.leaves, engine.model) as record, tf.GradientTape() as tape:
                tape.watch(inputs)  # as in _make_pass
                outputs = engine.call_model(inputs)
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

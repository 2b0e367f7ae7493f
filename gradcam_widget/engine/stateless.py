"""What the JAX and PyTorch engines share: the model called statelessly (its variables' values
passed in), what it computes read once per image size (:class:`~.grids.LayerFacts`), and the
zeros added to the explained layers' last calls (:func:`perturbation`), with respect to which
those engines differentiate.
"""

from __future__ import annotations

import abc

import numpy as np

from gradcam_widget.engine._keras import keras
from gradcam_widget.engine.base import Engine, trim_oldest
from gradcam_widget.engine.errors import model_code
from gradcam_widget.engine.grids import LayerFacts, layer_facts
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.result import PassRequest, PassResult


class StatelessEngine(Engine):
    """An engine whose model is called statelessly (its variables' values passed in), the
    facts of a pass read per image size (:meth:`model_facts`). A subclass also implements
    :meth:`_read_model` and :meth:`_zero`."""

    def __init__(self, model):
        super().__init__(model)
        self._traced: dict[tuple, LayerFacts] = {}  # (signature, bypass) -> model_facts

    def set_token_grid(self, layer, grid, prefix) -> None:
        with self._lock:
            super().set_token_grid(layer, grid, prefix)
            self._traced.clear()

    def signature(self, inputs_shape: tuple) -> tuple:
        """``(None, H, W, C)`` of the inputs themselves: the facts of a pass are read per
        image size (and ``jax.jit`` compiles per shape)."""
        return (None, *(int(side) for side in inputs_shape[1:4]))

    @abc.abstractmethod
    def _read_model(self, signature: tuple, bypass: bool) -> LayerFacts:
        """What the model computes for inputs of ``signature`` (its squashing heads bypassed
        or not), found by tracing or calling it once.

        Returns:
            The :class:`~gradcam_widget.engine.grids.LayerFacts`, ``squashed`` and
            ``outputs`` filled.
        """

    @staticmethod
    @abc.abstractmethod
    def _zero(shape: tuple, dtype):
        """A zero tensor of the backend, of ``shape`` and ``dtype``, that a gradient can be
        taken with respect to."""

    def model_facts(self, signature: tuple, bypass: bool) -> LayerFacts:
        """:meth:`_read_model`'s facts for inputs of ``signature``, read once and kept for a
        bounded number of sizes."""
        key = (signature, bypass)
        if key not in self._traced:
            self._traced[key] = self._read_model(signature, bypass)
            trim_oldest(self._traced)
        return self._traced[key]

    def _layer_facts(self, record, input_shape) -> LayerFacts:
        """:func:`~gradcam_widget.engine.grids.layer_facts` of a tapped call's record, token
        layers read as this engine's overrides say."""
        return layer_facts(record, input_shape, self.token_overrides)

    @staticmethod
    def _facts_result(facts: LayerFacts, request: PassRequest, layers: tuple = ()) -> PassResult:
        """The :class:`PassResult` facts (no arrays) of a pass that keeps ``layers``."""
        squashed = facts.squashed if request.score == "logit" else (None,) * len(facts.squashed)
        return PassResult(
            candidates=tuple(facts.grids),
            static_shapes=dict(facts.grids),
            squashed=squashed,
            layers=layers,
            tokens=dict(facts.tokens),
        )

    def _zeros(self, facts: LayerFacts, paths, count: int) -> dict:
        """``{path: zeros}`` shaped like those layers' outputs for ``count`` images: what the
        pass differentiates with respect to (see :func:`perturbation`)."""
        return {
            path: self._zero((count, *facts.raw[path][0]), facts.raw[path][1]) for path in paths
        }

    def state(self) -> tuple[list, list]:
        """The values of the model's variables now (trainable, non-trainable), each as
        :meth:`_value` gives it; a subclassed model never called is built on a blank image.

        Raises:
            ModelCheckError: for a model that is not built and declares no input size.
        """
        model = self.model
        if not model.built:
            height, width, channels = self.input_size
            if None in (height, width, channels):
                raise ModelCheckError(
                    "the model is not built and its input size is not declared: call it once "
                    "on an image first"
                )
            model(np.zeros((1, height, width, channels), np.float32), training=False)
        return (
            [self._value(variable) for variable in model.trainable_variables],
            [self._value(variable) for variable in model.non_trainable_variables],
        )

    @staticmethod
    def _value(variable):
        return variable.value

    def call_model(self, inputs, state=None):
        """The model's outputs for ``inputs``, its variables' values passed in (``state``:
        :meth:`state`'s, else read now); nothing on the model is changed."""
        trainable, non_trainable = self.state() if state is None else state
        model = self.model
        mapping = [
            *zip(model.trainable_variables, trainable, strict=True),
            *zip(model.non_trainable_variables, non_trainable, strict=True),
        ]
        # the model called as usual inside the scope (not model.stateless_call, which hands
        # training= to a call() that may not take it)
        with keras.StatelessScope(state_mapping=mapping), model_code():
            return model(inputs, training=False)


def perturbation(perturb: dict, calls: dict) -> dict:
    """``{path: zeros}`` as :func:`~gradcam_widget.engine.tapping.tapped` takes it: each zero
    tensor added to its layer's last call (the call the record keeps; ``calls`` counted them)."""
    return {path: (calls[path], zeros) for path, zeros in perturb.items()}

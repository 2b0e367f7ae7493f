"""The PyTorch engine: the pass on Keras's PyTorch backend (``KERAS_BACKEND=torch``).

Keras on PyTorch runs eagerly, so nothing is compiled: each pass calls the model once
(statelessly, its weights passed in detached: autograd records nothing for a weight gradient
that is never asked for) with a zero tensor added to the output of each layer it explains
(:func:`~gradcam_widget.tapping.tapped`'s ``perturb``, as on JAX) and asks
``torch.autograd.grad`` for the gradient with respect to those zeros only -- the gradient with
respect to the layers' outputs; autograd walks back no further than the shallowest of them and
computes no weight gradient. Whether an output still comes out of a softmax or sigmoid is read
off the autograd graph (``SoftmaxBackward0``, ``SigmoidBackward0``).

What a pass finds (candidate layers, token layouts, shapes) is read once per image size from one
forward pass over two blank images.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from gradcam_widget.engine._keras import keras
from gradcam_widget.engine.errors import model_code
from gradcam_widget.engine.grids import LayerFacts, as_grid
from gradcam_widget.engine.model import only_output, output_parts
from gradcam_widget.engine.result import CompiledPass, ForwardValues, PassRequest, PassResult
from gradcam_widget.engine.stateless import StatelessEngine, perturbation
from gradcam_widget.engine.tapping import squashed_output, tapped

FACTS_BATCH = 2  # blank images in the forward pass the facts are read from
ops = keras.ops


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()


class TorchEngine(StatelessEngine):
    """The engine on PyTorch (see the module docstring)."""

    backend = "torch"

    @staticmethod
    def _value(variable):
        # detached: autograd then keeps no activation for a weight gradient that is never
        # asked for (only what lies after the first tensor that needs a gradient)
        return variable.value.detach()

    @staticmethod
    def _zero(shape, dtype):
        device = ops.zeros(()).device  # Keras's device for this backend
        return torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)

    def _read_model(self, signature: tuple, bypass: bool) -> LayerFacts:
        """The model's facts read from one call on blank images (gradients enabled, so that
        each output's softmax or sigmoid shows in its autograd graph)."""
        model = self.model
        blank = ops.zeros((FACTS_BATCH, *signature[1:]), "float32")
        blank.requires_grad_(True)  # so that the outputs carry their autograd graph
        with torch.enable_grad(), tapped(self.leaves, model if bypass else None) as record:
            outputs = self.call_model(blank)
        return replace(
            self._layer_facts(record, tuple(blank.shape)),
            squashed=tuple(squashed_output(part) for part in output_parts(outputs)),
            # zeros shaped like the outputs (a few numbers per image): what a target is
            # checked on
            outputs=keras.tree.map_structure(lambda part: torch.zeros_like(part.detach()), outputs),
        )

    def _trace_facts(self, request: PassRequest, count: int | None = None) -> PassResult:
        facts = self.model_facts(request.signature, request.score == "logit")
        target = request.target
        if target.per_image is None and target.pads:
            # the target read against outputs of the facts' shapes: a misfit is said now (one
            # with per-image data is read by the pass, at its own batch)
            feed = ops.convert_to_tensor(target.feed(FACTS_BATCH))
            self.score(facts.outputs, feed, request, facts.squashed)
        return self._facts_result(facts, request)

    # Nothing to compile: a compiled pass is what the pass needs to know.

    def _make_pass(self, request: PassRequest) -> CompiledPass:
        facts = self.describe(request.signature, request.target, request.score, request.multi_label)
        return CompiledPass(request, facts=replace(facts, layers=request.kept(facts.candidates)))

    def _call_pass(self, compiled: CompiledPass, inputs: np.ndarray, feed: np.ndarray):
        request, facts = compiled.request, compiled.facts
        kept, to_input = facts.layers, request.to_input
        traced = self.model_facts(request.signature, request.score == "logit")
        tokens = traced.tokens
        perturb = self._zeros(traced, kept, len(inputs))
        batch = ops.convert_to_tensor(inputs, "float32")
        if to_input:
            batch.requires_grad_(True)
        with torch.enable_grad():
            found = self.objective(
                batch,
                ops.convert_to_tensor(feed),
                request,
                perturb=perturbation(perturb, traced.calls),
                squashed=traced.squashed,
            )
            sources = [perturb[path] for path in kept] + ([batch] if to_input else [])
            total = ops.sum(ops.cast(found.values, "float32"))
            with model_code():  # the backward pass through the model
                gradients = (
                    torch.autograd.grad(total, sources, allow_unused=True)
                    if sources and total.requires_grad
                    else [None] * len(sources)
                )
        gradients = [
            torch.zeros_like(source) if gradient is None else gradient
            for source, gradient in zip(sources, gradients, strict=True)
        ]
        input_gradients = _numpy(gradients.pop()) if to_input else None
        return replace(
            facts,
            scores=_numpy(found.scores),
            values=_numpy(found.values),
            class_indices=found.class_indices.detach().cpu().numpy(),
            activations={
                path: _numpy(as_grid(found.record[path], tokens.get(path))) for path in kept
            },
            gradients={
                path: _numpy(as_grid(gradient, tokens.get(path)))
                for path, gradient in zip(kept, gradients, strict=True)
            },
            shapes=dict(facts.static_shapes),
            input_gradients=input_gradients,
        )

    def _make_forward(self, request: PassRequest) -> CompiledPass:
        self.describe(request.signature, request.target, request.score, request.multi_label)
        traced = self.model_facts(request.signature, request.score == "logit")
        return CompiledPass(request, layer_facts=traced)

    def _call_forward(self, compiled: CompiledPass, chunk: np.ndarray, feed: np.ndarray):
        with torch.no_grad():
            found = self.objective(
                ops.convert_to_tensor(chunk, "float32"),
                ops.convert_to_tensor(feed),
                compiled.request,
                leaves=(),
                squashed=compiled.layer_facts.squashed,
            )
        return ForwardValues(_numpy(found.values), int(found.scores.shape[-1]))

    def _make_outputs(self, signature: tuple) -> CompiledPass:
        return CompiledPass(None)

    def _call_outputs(self, compiled: CompiledPass, chunk: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            outputs = self.call_model(ops.convert_to_tensor(chunk, "float32"))
        return _numpy(only_output(outputs))

    def _find_reaching(self, signature: tuple) -> frozenset:
        traced = self.model_facts(signature, False)
        tokens = traced.tokens
        if not tokens:
            return frozenset()
        noise = ops.convert_to_tensor(self._noise(signature))
        device = noise.device
        perturb = self._zeros(traced, tokens, len(noise))
        generator = torch.Generator(device="cpu").manual_seed(1)
        handles = perturbation(perturb, traced.calls)
        with torch.enable_grad():
            with tapped(self.leaves, None, None, handles):
                outputs = self.call_model(noise)
            total = sum(
                (part.float() * torch.randn(part.shape, generator=generator).to(device)).sum()
                for part in output_parts(outputs)
                if part.is_floating_point()
            )
            if not torch.is_tensor(total) or not total.requires_grad:
                return frozenset()
            paths = list(tokens)
            with model_code():  # the backward pass through the model
                gradients = torch.autograd.grad(
                    total, [perturb[path] for path in paths], allow_unused=True
                )
        return frozenset(
            path
            for path, gradient in zip(paths, gradients, strict=True)
            if gradient is not None and bool((as_grid(gradient, tokens[path]) != 0).any())
        )

"""The JAX engine: the compiled pass on Keras's JAX backend (``KERAS_BACKEND=jax``).

JAX has no tape to watch a layer's output. The pass therefore adds a zero tensor to the output
of each layer it explains (:func:`~gradcam_widget.tapping.tapped`'s ``perturb``) and takes the
gradient with respect to those zeros: it is the gradient with respect to the layer's output,
and the backward pass stops at the shallowest requested layer (no weight gradient is computed).
The model runs statelessly (called inside a ``keras.StatelessScope``) with its variables' values
passed in, so one ``jax.jit`` of ``jax.value_and_grad`` serves every call with inputs of one
shape (it compiles once per batch and image size) and sees the weights as they are at each call.

What a pass finds (candidate layers, token layouts, output shapes, whether an output still comes
out of a softmax or sigmoid) is read once per image size from the traced program
(``jax.make_jaxpr``), without running it.
"""

from __future__ import annotations

import weakref
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from gradcam_widget.engine.errors import model_code
from gradcam_widget.engine.grids import LayerFacts, as_grid
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.model import only_output, output_parts
from gradcam_widget.engine.result import CompiledPass, ForwardValues, PassRequest, PassResult
from gradcam_widget.engine.stateless import StatelessEngine, perturbation
from gradcam_widget.engine.tapping import tapped

FACTS_BATCH = 2  # images in the abstract batch the facts are traced with


def bucket(count: int) -> int:
    """The batch size a batch of ``count`` images is compiled for: the next power of two.

    ``jax.jit`` compiles once per shape; padding a batch up to a power of two (with copies of
    its last image, dropped from the results) bounds the compiled programs to a handful per
    image size, where the TensorFlow engine's one trace serves every batch size. The images of
    a batch are independent in inference mode, so the padding changes no result."""
    return 1 << max(int(count) - 1, 0).bit_length()


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with its last row repeated up to ``size`` rows."""
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


class JaxEngine(StatelessEngine):
    """The engine on JAX (see the module docstring)."""

    backend = "jax"

    @staticmethod
    def _zero(shape, dtype):
        return jnp.zeros(shape, dtype)

    def _read_model(self, signature: tuple, bypass: bool) -> LayerFacts:
        """The model's facts read from its traced program (``jax.make_jaxpr``, nothing run):
        besides the layers', each output's structure and whether it comes out of a softmax or
        sigmoid."""
        model = self.model
        trainable, non_trainable = self.state()
        found: list = []

        def forward(trainable, non_trainable, inputs):
            with tapped(self.leaves, model if bypass else None) as record:
                outputs = self.call_model(inputs, (trainable, non_trainable))
            found.append(self._layer_facts(record, inputs.shape))
            return output_parts(outputs), outputs

        abstract = jax.ShapeDtypeStruct((FACTS_BATCH, *signature[1:]), jnp.float32)
        closed, (_, structure) = jax.make_jaxpr(forward, return_shape=True)(
            trainable, non_trainable, abstract
        )
        count = len(output_parts(structure))
        squashed = tuple(
            _squashing(closed.jaxpr, closed.jaxpr.outvars[index]) for index in range(count)
        )
        return replace(found[-1], squashed=squashed, outputs=structure)

    # -- the hooks of Engine ----------------------------------------------------------------

    def _trace_facts(self, request: PassRequest, count: int | None = None) -> PassResult:
        facts = self.model_facts(request.signature, request.score == "logit")
        if not facts.grids and facts.outside:
            raise ModelCheckError(
                "every layer that could be explained runs inside a loop, a branch or a "
                f"checkpoint of its own ({', '.join(facts.outside[:4])}): its outputs "
                "cannot be read from outside on JAX; explain the model on Keras's torch backend"
            )
        # the target read against the outputs' shapes, at the batch it is first asked for (a
        # callable may hold per-image data): a misfit is said now, not at the pass
        count = FACTS_BATCH if count is None else int(count)
        shape, dtype = request.target.feed_spec
        feed = jax.ShapeDtypeStruct((count, *shape[1:]), dtype)
        outputs = jax.tree_util.tree_map(
            lambda part: jax.ShapeDtypeStruct((count, *part.shape[1:]), part.dtype),
            facts.outputs,
        )
        jax.eval_shape(
            lambda outputs, feed: self.score(outputs, feed, request, facts.squashed),
            outputs,
            feed,
        )
        return self._facts_result(facts, request)

    def _make_pass(self, request: PassRequest) -> CompiledPass:
        self.describe(request.signature, request.target, request.score, request.multi_label)
        facts = self.model_facts(request.signature, request.score == "logit")
        kept = request.kept(facts.grids)
        tokens = facts.tokens
        engine_ref = weakref.ref(self)  # the compiled function must not keep the engine alive
        forward_done: list = []  # appended once the objective's forward part has run

        def objective(perturb, inputs, trainable, non_trainable, feed):
            engine = engine_ref()
            engine.traces += 1
            found = engine.objective(
                inputs,
                feed,
                request,
                perturb=perturbation(perturb, facts.calls),
                squashed=facts.squashed,
                state=(trainable, non_trainable),
            )
            values = found.values.astype(jnp.float32)
            activations = {
                path: as_grid(found.record[path], tokens.get(path)).astype(jnp.float32)
                for path in kept
            }
            aux = {
                "scores": found.scores.astype(jnp.float32),
                "values": values,
                "chosen": found.class_indices,
                "activations": activations,
            }
            forward_done.append(True)
            return jnp.sum(values), aux

        differentiate = jax.value_and_grad(
            objective, argnums=(0, 1) if request.to_input else 0, has_aux=True
        )

        def step(perturb, inputs, trainable, non_trainable, feed):
            forward_done.clear()
            with model_code(after=forward_done):  # the backward pass through the model
                (_, aux), gradients = differentiate(perturb, inputs, trainable, non_trainable, feed)
            to_layers, to_inputs = gradients if request.to_input else (gradients, None)
            aux["gradients"] = {
                path: as_grid(to_layers[path], tokens.get(path)).astype(jnp.float32)
                for path in kept
            }
            aux["input_gradients"] = to_inputs
            return aux

        return CompiledPass(
            request,
            jax.jit(step),
            facts=self._facts_result(facts, request, kept),
            layer_facts=facts,
            pads=request.target.pads,
        )

    def _call_pass(self, compiled: CompiledPass, inputs: np.ndarray, feed: np.ndarray):
        facts = compiled.facts
        count = len(inputs)
        size = bucket(count) if compiled.pads else count
        perturb = self._zeros(compiled.layer_facts, facts.layers, size)
        trainable, non_trainable = self.state()
        out = compiled.function(
            perturb, _padded(inputs, size), trainable, non_trainable, _padded(feed, size)
        )
        out = jax.tree_util.tree_map(lambda array: np.asarray(array)[:count], out)
        return PassResult(
            candidates=facts.candidates,
            static_shapes=facts.static_shapes,
            squashed=facts.squashed,
            layers=facts.layers,
            tokens=facts.tokens,
            scores=np.asarray(out["scores"]),
            values=np.asarray(out["values"]),
            class_indices=np.asarray(out["chosen"]),
            activations={path: np.asarray(a) for path, a in out["activations"].items()},
            gradients={path: np.asarray(g) for path, g in out["gradients"].items()},
            shapes=dict(facts.static_shapes),
            input_gradients=None
            if out["input_gradients"] is None
            else np.asarray(out["input_gradients"], np.float32),
        )

    def _make_forward(self, request: PassRequest) -> CompiledPass:
        self.describe(request.signature, request.target, request.score, request.multi_label)
        squashed = self.model_facts(request.signature, request.score == "logit").squashed
        engine_ref = weakref.ref(self)

        def forward(inputs, trainable, non_trainable, feed):
            found = engine_ref().objective(
                inputs,
                feed,
                request,
                leaves=(),
                squashed=squashed,
                state=(trainable, non_trainable),
            )
            return found.values.astype(jnp.float32), found.scores.shape[-1]

        return CompiledPass(request, jax.jit(forward), pads=request.target.pads)

    def _call_forward(self, compiled: CompiledPass, chunk: np.ndarray, feed: np.ndarray):
        trainable, non_trainable = self.state()
        size = bucket(len(chunk)) if compiled.pads else len(chunk)
        values, width = compiled.function(
            _padded(chunk, size), trainable, non_trainable, _padded(np.asarray(feed), size)
        )
        return ForwardValues(np.asarray(values)[: len(chunk)], int(width))

    def _make_outputs(self, signature: tuple) -> CompiledPass:
        engine_ref = weakref.ref(self)

        def forward(inputs, trainable, non_trainable):
            outputs = engine_ref().call_model(inputs, (trainable, non_trainable))
            return only_output(outputs).astype(jnp.float32)

        return CompiledPass(None, jax.jit(forward))

    def _call_outputs(self, compiled: CompiledPass, chunk: np.ndarray) -> np.ndarray:
        trainable, non_trainable = self.state()
        outputs = compiled.function(_padded(chunk, bucket(len(chunk))), trainable, non_trainable)
        return np.asarray(outputs)[: len(chunk)]

    def _find_reaching(self, signature: tuple) -> frozenset:
        facts = self.model_facts(signature, False)
        tokens = facts.tokens
        if not tokens:
            return frozenset()
        noise = self._noise(signature)
        perturb = self._zeros(facts, tokens, len(noise))
        trainable, non_trainable = self.state()

        forward_done: list = []

        def projected(perturb):
            with tapped(self.leaves, None, None, perturbation(perturb, facts.calls)):
                outputs = self.call_model(jnp.asarray(noise), (trainable, non_trainable))
            total = jnp.float32(0.0)
            for index, part in enumerate(output_parts(outputs)):
                if jnp.issubdtype(part.dtype, jnp.floating):
                    weights = jax.random.normal(jax.random.key(index), part.shape, jnp.float32)
                    total = total + jnp.sum(part.astype(jnp.float32) * weights)
            forward_done.append(True)
            return total

        with model_code(after=forward_done):  # the backward pass through the model
            gradients = jax.grad(projected)(perturb)
        return frozenset(
            path for path in tokens if bool(jnp.any(as_grid(gradients[path], tokens[path]) != 0))
        )


# ---------------------------------------------------------------------------------------
# Reading a softmax or a sigmoid off the traced program

_PASS_THROUGH = ("convert_element_type", "reshape", "copy", "copy_p", "squeeze")
_CALLS = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint")


def _producers(jaxpr) -> dict:
    return {id(var): equation for equation in jaxpr.eqns for var in equation.outvars}


def _inner_jaxpr(equation):
    inner = equation.params.get("jaxpr") or equation.params.get("call_jaxpr")
    return getattr(inner, "jaxpr", inner)


def _squashing(jaxpr, var, depth: int = 0) -> str | None:
    """``"softmax"``/``"sigmoid"`` when ``var`` of ``jaxpr`` is computed by that function
    (through casts, reshapes and nested calls), else ``None``: the JAX counterpart of
    :func:`gradcam_widget.tapping.squashed_output`. A sigmoid is JAX's ``logistic``; a softmax
    is ``exp(x) / sum(exp(x))`` over an axis (the shift by the maximum before it aside)."""
    producers = _producers(jaxpr)
    equation = producers.get(id(var))
    while equation is not None and equation.primitive.name in _PASS_THROUGH:
        var = equation.invars[0]
        equation = producers.get(id(var))
    if equation is None:
        return None
    name = equation.primitive.name
    if name in _CALLS and depth < 8:
        inner = _inner_jaxpr(equation)
        if inner is None:
            return None
        index = [id(out) for out in equation.outvars].index(id(var))
        return _squashing(inner, inner.outvars[index], depth + 1)
    if name == "logistic":
        return "sigmoid"
    if name == "div" and len(equation.invars) == 2:
        numerator, denominator = (_through(producers, var) for var in equation.invars)
        exp = producers.get(id(numerator))
        if exp is None or exp.primitive.name != "exp":
            return None
        total = producers.get(id(denominator))
        while total is not None and total.primitive.name == "broadcast_in_dim":
            total = producers.get(id(_through(producers, total.invars[0])))
        if total is not None and total.primitive.name == "reduce_sum":
            # the sum of the same exponentials (a bfloat16 softmax sums a float32 copy)
            return "softmax" if _through(producers, total.invars[0]) is numerator else None
    return None


def _through(producers: dict, var):
    """``var`` followed back through casts, reshapes and copies."""
    equation = producers.get(id(var))
    while equation is not None and equation.primitive.name in _PASS_THROUGH:
        var = equation.invars[0]
        equation = producers.get(id(var))
    return var

"""The compiled pass: the contract every backend's engine fulfils, and what they share.

An :class:`Engine` belongs to one model; :func:`gradcam_widget.engine.engine_for` gives the one
for Keras's backend: ``engine.tf.TfEngine`` (``tf.function``, a ``GradientTape``),
``engine.jax.JaxEngine`` (``jax.jit`` of ``jax.value_and_grad``) or ``engine.torch.TorchEngine``
(eager, ``torch.autograd.grad``). This module holds what they share and imports no backend.

A pass takes a batch ``(N, H, W, C)`` and one integer per image (a class index, ``-1`` for the
top class), calls the model while :func:`~gradcam_widget.engine.tapping.tapped` records every
leaf layer's output, turns the outputs into one value per image with a target
(:mod:`gradcam_widget.captures.targets`), and differentiates the sum of those values with
respect to the requested layers. That chain -- tap, call, score, target -- is written once,
:meth:`Engine.objective`, and every backend's pass runs it. Each image's gradient is its own: a
model in inference mode treats the images of a batch independently.

The pass returns what it found as a :class:`~gradcam_widget.engine.result.PassResult`
(candidate layers, their shapes, the scores, the activations and gradients); nothing is written
on the engine while it is traced. Everything above this module works on the numpy arrays it
returns.

The backend contract
--------------------

A backend is one module with one subclass of :class:`Engine` (or of
:class:`~gradcam_widget.engine.stateless.StatelessEngine`, for a backend that calls the model
statelessly and reads its facts per image size), plus one line in
:func:`gradcam_widget.engine.engine_class`. Its class sets ``backend`` (the name Keras gives the
backend) and implements these eight methods; what passes between them and this module is a
:class:`PassRequest` (what to compute), a :class:`CompiledPass` (what the backend compiled) and
a :class:`~gradcam_widget.engine.result.PassResult` (what it found):

- ``_trace_facts(request, count) -> PassResult``: the facts of a pass (candidates, static
  shapes, token layouts, squashed outputs; no arrays), found without running the model; the
  target is checked against the outputs here.
- ``_make_pass(request) -> CompiledPass``: the forward + backward pass, compiled.
- ``_call_pass(compiled, inputs, feed) -> PassResult``: run it; numpy arrays.
- ``_make_forward(request) -> CompiledPass``: a forward-only pass giving the target's values.
- ``_call_forward(compiled, chunk, feed) -> ForwardValues``: run it (values, scores' width).
- ``_make_outputs(signature) -> CompiledPass``: a one-output model's raw outputs, compiled.
- ``_call_outputs(compiled, chunk) -> np.ndarray``: run it.
- ``_find_reaching(signature) -> frozenset``: the token layers whose patch tokens reach the
  outputs (:meth:`Engine.reaching_tokens`).

It may override ``call_model(inputs, state)`` (how the model is called; the default calls it
as it is) and ``signature(inputs_shape)`` (what one compiled pass serves). Its passes score
the outputs with :meth:`Engine.objective` (or :meth:`Engine.score`, for outputs already at
hand), never by hand.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gradcam_widget.engine._keras import keras
from gradcam_widget.engine.errors import (
    ModelCallError,
    empty_output,
    model_code,
    said_failure,
    too_small,
)
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.model import model_input_size, model_outputs
from gradcam_widget.engine.precision import precision_scope
from gradcam_widget.engine.result import (
    CompiledPass,
    ForwardValues,
    Objective,
    PassRequest,
    PassResult,
)
from gradcam_widget.engine.tapping import (
    guided_replacements,
    leaf_layers,
    output_heads,
    squashed_output,
    tapped,
)

ops = keras.ops

MAX_TRACES = 8  # compiled passes kept per model (each holds a traced graph; see the README)

__all__ = ["MAX_TRACES", "CompiledPass", "Engine", "ModelCallError", "Objective"]
__all__ += ["PassRequest", "PassResult", "ops", "scored_outputs", "trim_oldest"]


# ---------------------------------------------------------------------------------------
# Scoring: the one step every pass shares


def scored_outputs(
    outputs,
    names: tuple[str, ...],
    score: str,
    multi_label: bool,
    squash=True,
    squashed: tuple | None = None,
):
    """The model's outputs as a target sees them: one tensor for a one-output model, else
    ``{name: tensor}`` in output order.

    ``score="logit"``: as they come (:func:`tapped` has bypassed each output's squashing
    head). ``"probability"``: an output that does not already come out of a softmax/sigmoid
    gets one here, over its last axis (sigmoid for a multi-label entry or a single unit);
    ``squash=False`` leaves every output as the model gives it (a regression value).
    Whether an output is squashed is read from the traced graph itself, so it holds for
    dict outputs in any key order and for subclassed models alike: by
    :func:`~gradcam_widget.tapping.squashed_output` on TensorFlow, or given as ``squashed`` (one
    entry per output) by an engine that read it beforehand (JAX).
    """
    if isinstance(outputs, dict):
        parts = list(outputs.values())
        names = tuple(str(name) for name in outputs)
    elif isinstance(outputs, (list, tuple)):
        parts = list(outputs)
    else:
        parts = [outputs]
    if len(names) != len(parts):
        names = tuple(f"output_{index}" for index in range(len(parts)))
    scored = []
    for index, part in enumerate(parts):
        kind = squashed_output(part) if squashed is None else squashed[index]
        part = ops.cast(part, "float32")
        rank = len(part.shape)
        if score == "probability" and squash and kind is None and rank >= 2:
            units = part.shape[-1]
            part = ops.sigmoid(part) if multi_label or units == 1 else ops.softmax(part, axis=-1)
        scored.append(part)
    if len(scored) == 1:
        return scored[0]
    return dict(zip(names, scored, strict=True))


# ---------------------------------------------------------------------------------------
# The engine


class Engine(abc.ABC):
    """Owns the compiled passes of one model. Shared by every capture of that model.

    This class holds what does not depend on the backend (caches, locks, batching, the facts a
    pass finds, the objective); a subclass per backend compiles and runs the passes: the
    abstract methods below (listed in the module docstring).

    It holds the model only weakly (a model the user drops is freed, and its engine with it):
    the caller of :meth:`run` holds it.

    Attributes:
        leaves: ``(path, layer)`` of every leaf layer, nested models included.
        layer_classes: ``{path: class name}``.
        input_size: ``(H, W, C)`` the model fixes (``None`` where free).
        passes: forward + backward passes run; ``traces``: those passes compiled (forward-only
            compiles are not counted);
        forward_images: images scored by forward-only passes (Score-CAM, the metrics).
    """

    backend = "none"

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.leaves = leaf_layers(model)
        self.layer_classes = {path: type(layer).__name__ for path, layer in self.leaves}
        self.input_size = model_input_size(model)
        outputs = model_outputs(model)
        self.output_names = tuple(outputs) if outputs else ()
        self.heads = output_heads(model)  # per output: "softmax" | "sigmoid" | None
        self.passes = 0
        self.traces = 0
        self.forward_images = 0
        self._facts: dict[tuple, PassResult] = {}
        self._functions: OrderedDict[tuple, Callable] = OrderedDict()  # LRU, see _compiled
        self._forwards: OrderedDict[tuple, Callable] = OrderedDict()  # forward-only passes
        self._lock = threading.RLock()
        self.token_overrides: dict = {}  # {path or None: (grid, prefix)}, see set_token_grid
        self._reaching: dict[tuple, frozenset] = {}  # see reaching_tokens
        self._shown_shape: tuple | None = None  # the inputs a failure names (see failures)
        # layers built under keras.RematScope (their call is rematerialised)
        self.rematerialised = tuple(
            path for path, layer in self.leaves if getattr(layer, "_remat_mode", None)
        )

    def set_token_grid(self, layer: str | None, grid, prefix) -> None:
        """Read token layer ``layer`` (``None``: every token layer) as ``grid`` with ``prefix``
        prefix tokens (both ``None``: infer again). Compiled passes are dropped: the next pass
        traces with the new layout."""
        with self._lock:
            if grid is None and prefix is None:
                self.token_overrides.pop(layer, None)
            else:
                grid = None if grid is None else tuple(int(side) for side in grid)
                self.token_overrides[layer] = (grid, None if prefix is None else int(prefix))
            self._facts.clear()
            self._functions.clear()
            self._forwards.clear()
            self._reaching.clear()

    @property
    def model(self):
        model = self._model()
        if model is None:  # pragma: no cover - callers hold the model
            raise RuntimeError("the model of this engine was freed")
        return model

    @property
    def head(self) -> str | None:
        """The squashing head of a one-output model (``None`` otherwise)."""
        return self.heads[0] if len(self.heads) == 1 else None

    def signature(self, inputs_shape: tuple) -> tuple:
        """``(None, H, W, C)`` of the compiled pass: ``None`` where the model takes any size,
        so that one trace serves every batch size and image size."""
        height, width, channels = self.input_size
        return (None, height, width, channels or inputs_shape[-1])

    def _check_sizes(self, inputs_shape: tuple, *arrays) -> None:
        """Non-finite results where a layer's output has no pixels at this input size (a
        backend computes on over an empty tensor, to NaN), or a layer's shape inference fails
        at this size only: said as an image too small."""
        if all(np.isfinite(array).all() for array in arrays):
            return
        shown = self._shown_shape or inputs_shape
        empty = empty_output(self.model, shown, self.input_size)
        if empty is not None:
            said = "the model's scores came out NaN or infinite"
            raise too_small(shown, self.input_size, self.model, *empty, said=said)

    @contextlib.contextmanager
    def failures(self, inputs_shape: tuple):
        """Every exception the model raises on inputs of ``inputs_shape`` in this block as one
        :class:`ModelCallError` (:func:`said_failure`), the original chained; what the engine
        itself says (a :class:`~gradcam_widget.inputs.ModelCheckError`), what this package's
        own code raises and resource errors pass as they are.

        Blocks nest (a pass traces the facts first): every message names the inputs of the
        outermost block -- the batch the caller handed in, on every backend."""
        outermost = self._shown_shape is None
        if outermost:
            self._shown_shape = tuple(inputs_shape)
        shown = self._shown_shape
        try:
            yield
        except Exception as error:
            said = said_failure(error, shown, self.input_size, self.model)
            if said is None:
                raise
            raise said[0] from said[1]
        finally:
            if outermost:
                self._shown_shape = None

    def _compiled(self, key: tuple, make: Callable, store=None) -> Callable:
        """The compiled function for ``key`` (made by ``make()`` on first use).

        At most :data:`MAX_TRACES` are kept per model, least recently used dropped: each
        (target, layer list, score) asked for is one trace of a few MB, and a long session
        must not keep them all.
        """
        store = self._functions if store is None else store
        if key in store:
            store.move_to_end(key)
            return store[key]
        function = store[key] = make()
        while len(store) > MAX_TRACES:
            store.popitem(last=False)
        return function

    def _pass(self, request: PassRequest) -> CompiledPass:
        """The compiled forward + backward pass for ``request`` (made on first use)."""
        return self._compiled(("pass", *request.key), lambda: self._make_pass(request))

    # -- the objective: tap, call, score, target (every backend's passes run it) ----------

    def call_model(self, inputs, state=None):
        """The model's outputs for ``inputs``, called in inference mode; an exception it
        raises is marked as the model's (:func:`~gradcam_widget.engine.errors.model_code`).

        Args:
            inputs: a batch of the backend's tensors.
            state: what a stateless backend passes in for the model's variables (unused
                here: the model is called as it is).
        """
        del state
        with model_code():
            return self.model(inputs, training=False)

    def score(self, outputs, feed, request: PassRequest, squashed=None) -> tuple:
        """``(values, class_indices, scores)``: the target of ``request`` read off the
        model's ``outputs`` as it sees them (:func:`scored_outputs`; ``squashed``: per output,
        as read beforehand by a backend that cannot read it off the tensors)."""
        scored = scored_outputs(
            outputs,
            self.output_names,
            request.score,
            request.multi_label,
            request.target.adds_squash,
            squashed,
        )
        return request.target.traced(scored, feed)

    def objective(
        self, inputs, feed, request: PassRequest, *, leaves=None, perturb=None, squashed=None,
        state=None,
    ) -> Objective:  # fmt: skip
        """The chain every pass runs: the model called on ``inputs`` (:meth:`call_model`)
        while its leaf layers are tapped, its squashing heads bypassed for
        ``score="logit"`` and its ReLUs guided for ``to_input="guided"``, then its outputs
        scored and read by the target (:meth:`score`).

        Args:
            inputs: a batch of the backend's tensors.
            feed: the target's feed for the batch.
            request: the :class:`PassRequest`.
            leaves: the layers to record (``None``: every leaf; ``()``: none).
            perturb: ``{path: (call, zeros)}`` as :func:`~gradcam_widget.engine.tapping.tapped`
                takes it.
            squashed: see :meth:`score`.
            state: see :meth:`call_model`.

        Returns:
            The :class:`Objective`.
        """
        model = self.model
        bypass = model if request.score == "logit" else None
        guided = model if request.to_input == "guided" else None
        leaves = self.leaves if leaves is None else leaves
        with tapped(leaves, bypass, guided, perturb) as record:
            outputs = self.call_model(inputs, state)
        values, chosen, scores = self.score(outputs, feed, request, squashed)
        return Objective(record, outputs, values, chosen, scores)

    # -- the backend's hooks (see the module docstring) -----------------------------------

    @abc.abstractmethod
    def _trace_facts(self, request: PassRequest, count: int | None = None) -> PassResult:
        """The facts of a pass for ``request``, found without running the model.

        Args:
            request: what the pass computes (its ``layers`` are ``()``).
            count: the batch size first asked for (``None``: not known).

        Returns:
            A :class:`PassResult` without arrays: candidates, static shapes, token layouts,
            squashed outputs.

        Raises:
            ModelCheckError: when the target does not fit the model's outputs.
        """

    @abc.abstractmethod
    def _make_pass(self, request: PassRequest) -> CompiledPass:
        """The forward + backward pass for ``request``, compiled (traced once, or prepared
        for an eager backend).

        Returns:
            The :class:`CompiledPass` :meth:`_call_pass` runs.
        """

    @abc.abstractmethod
    def _call_pass(self, compiled: CompiledPass, inputs: np.ndarray, feed: np.ndarray):
        """Run a compiled pass.

        Args:
            compiled: what :meth:`_make_pass` gave.
            inputs: ``(N, H, W, C)`` float32 model inputs.
            feed: the target's feed for ``N`` images.

        Returns:
            A :class:`PassResult` of numpy arrays (``seconds`` left at 0).
        """

    @abc.abstractmethod
    def _make_forward(self, request: PassRequest) -> CompiledPass:
        """A forward-only pass giving the target's value per image, compiled.

        Returns:
            The :class:`CompiledPass` :meth:`_call_forward` runs.
        """

    @abc.abstractmethod
    def _call_forward(self, compiled: CompiledPass, chunk, feed) -> ForwardValues:
        """Run ``compiled`` (from :meth:`_make_forward`) over ``chunk`` ``(n, H, W, C)``
        (fitted, preprocessed), ``feed`` the class index read per image.

        Returns:
            :class:`~gradcam_widget.engine.result.ForwardValues`: values, scores' width.
        """

    @abc.abstractmethod
    def _make_outputs(self, signature: tuple) -> CompiledPass:
        """A forward-only pass giving a one-output model's raw outputs for inputs of
        ``signature``, compiled.

        Returns:
            The :class:`CompiledPass` :meth:`_call_outputs` runs.
        """

    @abc.abstractmethod
    def _call_outputs(self, compiled: CompiledPass, chunk: np.ndarray) -> np.ndarray:
        """Run a compiled raw-outputs pass over ``chunk``.

        Returns:
            The model's one output as a float32 numpy array.
        """

    @abc.abstractmethod
    def _find_reaching(self, signature: tuple) -> frozenset:
        """The token layers whose patch tokens reach the outputs for inputs of
        ``signature``, found as :meth:`reaching_tokens` says.

        Returns:
            Their paths (empty for none).
        """

    # -- what callers run ------------------------------------------------------------------

    def describe(self, inputs_shape: tuple, target, score: str, multi_label: bool) -> PassResult:
        """What a pass over inputs of ``inputs_shape`` finds (candidate layers, their traced
        shapes, squashed outputs), without running it: the first time per signature and
        score mode, the model is traced with ``target`` (not run).

        Raises:
            ModelCheckError: when the model has no 4-D layer, or the target does not fit its
                outputs.
        """
        if self.rematerialised and self.backend in ("tensorflow", "jax"):
            raise ModelCheckError(
                f"{len(self.rematerialised)} layers of this model were built under "
                f"keras.RematScope ({', '.join(self.rematerialised[:3])}, ...): on "
                f"{self.backend} each runs in a rematerialised call of its own (TensorFlow's "
                "only eagerly, JAX's jax.checkpoint), whose outputs a compiled pass cannot "
                "read: build the model without RematScope to explain it, or explain it on "
                "Keras's torch backend"
            )
        signature = self.signature(inputs_shape)
        key = (signature, score, multi_label)  # layers and shapes do not depend on the target
        with self._lock:
            if key not in self._facts:
                request = PassRequest(signature, target, score, multi_label, layers=())
                with self.failures(inputs_shape):
                    self._facts[key] = self._trace_facts(request, inputs_shape[0])
                trim_oldest(self._facts)
            facts = self._facts[key]
            if not facts.candidates:
                raise ModelCheckError(
                    "the model has no layer with a 4-D (N, h, w, C) output to explain"
                )
            for path, shape in facts.static_shapes.items():
                # a layer's output with no pixels at this size (JAX computes on, to NaN)
                if shape and any(side is not None and side <= 0 for side in shape[:2]):
                    shown = self._shown_shape or inputs_shape
                    raise too_small(shown, self.input_size, self.model, path, shape[:2])
            return facts

    def reaching_tokens(self, inputs_shape: tuple) -> frozenset | None:
        """The token layers whose patch tokens reach the model's outputs at all.

        After a model reads its class token alone (``x[:, 0]``), the patch tokens of the layers
        from there on get no gradient from any score, so their maps are empty for every image
        and class. Found once per input signature from one gradient pass over two seeded noise
        images (one in 0..1, one in 0..255) of the raw outputs (before any softmax or sigmoid)
        projected on seeded random weights -- a plain sum can be constant (a softmax inside a
        ``Lambda``, centred logits). ``None`` when no token layer is found to reach them (a
        head that is zero at the noise images, say): nothing is then ruled out.
        """
        signature = self.signature(inputs_shape)
        with self._lock:
            if signature not in self._reaching:
                with self.failures(inputs_shape):
                    found = frozenset() if None in signature[1:] else self._find_reaching(signature)
                self._reaching[signature] = found or None
                trim_oldest(self._reaching)
            return self._reaching[signature]

    @staticmethod
    def _noise(signature: tuple) -> np.ndarray:
        """The two seeded noise images of :meth:`reaching_tokens`."""
        rng = np.random.default_rng(0)
        shape = signature[1:]
        return np.stack([rng.uniform(0.0, 1.0, shape), rng.uniform(0.0, 255.0, shape)]).astype(
            np.float32
        )

    def run(
        self,
        inputs: np.ndarray,
        target,
        score: str,
        multi_label: bool,
        layers: tuple[str, ...] | None,
        to_input: str | None = None,
    ) -> PassResult:
        """One forward + backward pass over the batch ``inputs`` (float32).

        Args:
            inputs: ``(N, H, W, C)`` model inputs.
            target: a :class:`gradcam_widget.targets.Target`.
            score: ``"logit"`` or ``"probability"``.
            multi_label: sigmoid instead of softmax for probabilities.
            layers: the layer paths to keep (``None``: every candidate).
            to_input: also differentiate down to the model input: ``"vanilla"`` (the plain
                gradient) or ``"guided"`` (every ReLU's backward pass guided, inside this pass
                only), else ``None``.

        Returns:
            A :class:`PassResult` of numpy arrays.
        """
        feed = target.feed(len(inputs))
        with self._lock, precision_scope("float32"):
            if to_input == "guided":
                guided_replacements(self.leaves, self.model)  # a non-ReLU network: refused now
            with self.failures(inputs.shape):
                request = PassRequest(
                    self.signature(inputs.shape), target, score, multi_label, layers, to_input
                )
                function = self._pass(request)
                started = time.perf_counter()
                result = self._call_pass(function, np.asarray(inputs, np.float32), feed)
            self._check_sizes(inputs.shape, result.scores, result.values)
            self.passes += 1
            return replace(result, seconds=time.perf_counter() - started)

    def forward_values(
        self,
        batch: np.ndarray,
        target,
        score: str,
        multi_label: bool,
        batch_size: int = 32,
        precision: str = "float32",
    ) -> np.ndarray:
        """Forward passes only: the target's value for every image of ``batch``
        ``(N, H, W, C)``, ``batch_size`` at a time. Compiled once per target, score mode and
        input signature, kept apart from the gradient passes (at most :data:`MAX_TRACES` too);
        ``precision="bfloat16"`` runs them through oneDNN's bfloat16 rewrite (TensorFlow).

        Raises:
            ModelCheckError: when a fed class index is beyond the scores the target reads.
        """
        signature = self.signature(batch.shape)
        request = PassRequest(signature, target, score, multi_label, layers=())
        key = ("forward", *request.key[:4])
        with self._lock:
            make = lambda: self._make_forward(request)  # noqa: E731
            results = []
            with precision_scope(precision):
                for start in range(0, len(batch), batch_size):
                    chunk = np.asarray(batch[start : start + batch_size], np.float32)
                    fed = target.feed(len(chunk))
                    # compiled (or traced) in the chunk's block: a failure names the chunk
                    # on every backend
                    with self.failures(chunk.shape):
                        function = self._compiled(key, make, self._forwards)
                        values, width = self._call_forward(function, chunk, fed)
                    self._check_sizes(chunk.shape, values)
                    _check_fed(target, fed, width)
                    results.append(values)
                    self.forward_images += len(chunk)
            return np.concatenate(results).astype(np.float32)

    def forward_outputs(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Forward passes only: a one-output model's own outputs (nothing bypassed or
        squashed) for ``batch`` ``(N, H, W, C)``, ``batch_size`` at a time, compiled once."""
        signature = self.signature(batch.shape)
        with self._lock:
            key = ("outputs", signature)
            make = lambda: self._make_outputs(signature)  # noqa: E731
            results = []
            with precision_scope("float32"):
                for start in range(0, len(batch), batch_size):
                    chunk = np.asarray(batch[start : start + batch_size], np.float32)
                    with self.failures(chunk.shape):
                        function = self._compiled(key, make, self._forwards)
                        results.append(self._call_outputs(function, chunk))
                    self._check_sizes(chunk.shape, results[-1])
                    self.forward_images += len(chunk)
            return np.concatenate(results)


def trim_oldest(store: dict, size: int = 4 * MAX_TRACES) -> None:
    """Drop the oldest entries of a facts cache beyond ``size`` (one entry per input
    signature: a model that takes any image size would otherwise grow it for ever)."""
    while len(store) > size:
        store.pop(next(iter(store)))


def _check_fed(target, fed: np.ndarray, width: int) -> None:
    """Refuse a class index fed to the pass that the output the target reads does not have
    (integer feeds are class indices, ``-1`` for the top class)."""
    if fed.dtype.kind == "i" and fed.size and int(fed.max()) >= width:
        raise ModelCheckError(f"class_index must be in 0..{width - 1}; got {int(fed.max())}")

"""Keras tapping: record layer outputs and bypass the final softmax, for one thread only.

Backend-neutral (TensorFlow is imported only on its backend, by the functions that need it).

While a pass is traced, every leaf layer's ``call`` is wrapped on the instance so that its
output tensor is recorded, and the model's final softmax/sigmoid is bypassed when the logit is
asked for. The model is shared with the user, who may call it from another thread at the same
moment (a data loader, a second widget, a server): so the wrappers act only for the thread that
opened :func:`tapped`, and behave exactly as the original layer for every other caller.
Everything is restored in ``finally``, the saved original put back (an instance attribute the
user had set stays theirs). One lock serialises the install and restore, so two models that
share a layer never interleave their wrappers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import NamedTuple

from gradcam_widget.engine._keras import BACKEND, keras
from gradcam_widget.engine.inputs import ModelCheckError

SQUASHING = ("softmax", "sigmoid")
_TAP_LOCK = threading.RLock()
_local = threading.local()  # .tap: the _Tap of the pass this thread is tracing, else None


def leaf_layers(model, prefix: str = "", opened: bool = True) -> list[tuple[str, object]]:
    """Every non-model layer below ``model`` as ``(path, layer)``; nested models recurse.

    With ``opened``, a layer written outside Keras (subclassing ``keras.layers.Layer`` itself,
    not one of Keras's layers) whose output is a token sequence ``(N, T, C)`` -- a KerasHub
    ``ViTEncoder``, say -- is also opened: its own sub-layers follow it, named by path
    (``.../vit_encoder/transformer_block_3``), so the blocks inside a transformer encoder can
    be explained one by one. Keras's own layers and their subclasses are never opened (the
    dense layers inside a ``MultiHeadAttention`` are no feature maps), nor is a custom layer
    with another output (a CNN's custom head keeps its default layer). Every path is unique
    (a second inner layer of the same name gets ``#2``), and a layer the model holds itself
    keeps its own path when a custom layer also holds it.
    """
    found: list[tuple[str, object]] = []
    _collect(model, prefix, found)
    if not opened:
        return found
    seen = {id(layer) for _, layer in found}
    paths = {path for path, _ in found}
    result: list[tuple[str, object]] = []
    for path, layer in found:
        result.append((path, layer))
        if _opens(layer):
            _collect_inner(layer, f"{path}/", result, seen, paths)
    return result


def _collect(model, prefix: str, found: list) -> None:
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            _collect(layer, f"{path}/", found)
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append((path, layer))


def _custom(layer) -> bool:
    """A layer whose nearest Keras ancestor is ``keras.layers.Layer`` itself."""
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras."):
            return cls.__name__ == "Layer"
    return False


def _opens(layer) -> bool:
    """A custom layer with a token-sequence output, to be opened (see :func:`leaf_layers`)."""
    if isinstance(layer, keras.Model) or not _custom(layer):
        return False
    try:
        rank = len(layer.output.shape)
    except (AttributeError, ValueError, TypeError):  # never called symbolically, or twice
        return False
    return rank == 3


def _sublayers(layer) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    try:
        return [inner for inner in flatten(include_self=False, recursive=False)]
    except TypeError:  # pragma: no cover - another Keras signature
        return []


def _collect_inner(layer, prefix: str, found: list, seen: set, paths: set) -> None:
    for inner in _sublayers(layer):
        if id(inner) in seen or not hasattr(inner, "call"):
            continue
        seen.add(id(inner))
        path, copy = f"{prefix}{inner.name}", 2
        while path in paths:
            path, copy = f"{prefix}{inner.name}#{copy}", copy + 1
        paths.add(path)
        if isinstance(inner, keras.Model):
            nested: list[tuple[str, object]] = []
            _collect(inner, f"{path}/", nested)
            for nested_path, nested_layer in nested:
                if id(nested_layer) not in seen and nested_path not in paths:
                    seen.add(id(nested_layer))
                    paths.add(nested_path)
                    found.append((nested_path, nested_layer))
            continue
        found.append((path, inner))
        if _custom(inner):  # a block inside an encoder: open it too
            _collect_inner(inner, f"{path}/", found, seen, paths)


def output_layers(model) -> list:
    """The layer that produces each of the model's outputs, looking inside nested models
    (``[None]`` when it cannot be told, as for a subclassed model)."""
    if isinstance(model, keras.Sequential):
        found = [model.layers[-1] if model.layers else None]
    else:
        names = getattr(model, "output_names", None) or []
        found = []
        for name in names:
            try:
                found.append(model.get_layer(name))
            except ValueError:
                found.append(None)
        found = found or [None]
    return [
        output_layers(layer)[0]
        if isinstance(layer, keras.Model) and len(output_layers(layer)) == 1
        else layer
        for layer in found
    ]


def _squashing(layer) -> str | None:
    if layer is None or isinstance(layer, keras.Model):
        return None
    if type(layer).__name__ == "Softmax":
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "") or ""
    return name if name in SQUASHING else None


def output_heads(model) -> tuple:
    """Per output, ``"softmax"``/``"sigmoid"`` when its last step squashes it, else None."""
    return tuple(_squashing(layer) for layer in output_layers(model))


def squashed_output(tensor) -> str | None:
    """``"softmax"``/``"sigmoid"`` when a traced ``tensor`` is computed by that op (through
    identities and casts): a squashing step that :func:`tapped` could not bypass, such as a
    softmax inside a ``Lambda``."""
    if BACKEND == "torch":
        return _squashed_by_autograd(tensor)
    op = getattr(tensor, "op", None)
    while op is not None and op.type in ("Identity", "IdentityN", "Cast", "Reshape") and op.inputs:
        op = op.inputs[0].op
    kind = getattr(op, "type", "")
    return {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(kind)


_TORCH_PASS_THROUGH = (
    "ToCopyBackward0",
    "ViewBackward0",
    "UnsafeViewBackward0",
    "ReshapeAliasBackward0",
    "CloneBackward0",
    "AliasBackward0",
)


def _squashed_by_autograd(tensor) -> str | None:
    """:func:`squashed_output` on PyTorch: read off the autograd graph (a tensor computed with
    gradients enabled), through copies, casts and views."""
    function = getattr(tensor, "grad_fn", None)
    while function is not None and type(function).__name__ in _TORCH_PASS_THROUGH:
        function = function.next_functions[0][0] if function.next_functions else None
    kind = type(function).__name__ if function is not None else ""
    return {"SoftmaxBackward0": "softmax", "SigmoidBackward0": "sigmoid"}.get(kind)


def _jax_trace():
    """The JAX trace current in this thread (``None`` where JAX does not say: then every
    output is taken as the pass's own)."""
    try:
        from jax._src import core

        return core.trace_ctx.trace
    except (ImportError, AttributeError):  # pragma: no cover - another JAX
        return None


class Record(dict):
    """``{path: output tensor}`` in call order (a layer called several times keeps its last
    call); :attr:`calls` counts each layer's calls, :attr:`outside` names the layers left out
    because they ran inside a loop, a branch or a checkpoint of their own."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}
        self.outside: set[str] = set()  # layers whose outputs lived in another graph or trace


class _Tap:
    """What one tracing thread records (a :class:`Record`), and what it adds to some outputs
    (``perturb``: ``{path: (call number, zeros)}``, the JAX and PyTorch engines' handles for the
    gradient with respect to a layer's output: the zeros are added to that call only)."""

    def __init__(self, perturb=None):
        self.record = Record()
        self.perturb = perturb or {}
        self.failed: LayerFailure | None = None  # the innermost leaf call that raised
        self.graph = None  # the TensorFlow graph being traced
        self.trace = None  # the JAX trace the pass runs in
        if BACKEND == "tensorflow":
            from gradcam_widget.engine._tf import tf

            self.graph = tf.compat.v1.get_default_graph()
        elif BACKEND == "jax":
            self.trace = _jax_trace()

    def active(self) -> bool:
        return getattr(_local, "tap", None) is self

    def in_scope(self, tensor) -> bool:
        """False for a tensor of a loop's or a branch's own graph (a layer called inside
        ``keras.ops.fori_loop`` or ``cond``): the pass cannot read or differentiate it."""
        if self.trace is not None:  # JAX: inside a loop's body another trace is current
            return _jax_trace() is self.trace
        if self.graph is None:
            return True
        try:
            return tensor.graph is self.graph
        except AttributeError:  # an eager tensor
            return True


_ABSENT = object()  # "the instance had no such attribute of its own"


def _set_saved(layer, name: str, saved):
    """Put back what ``layer.__dict__[name]`` was before we set it (absent -> removed)."""
    if saved is _ABSENT:
        layer.__dict__.pop(name, None)
    else:
        object.__setattr__(layer, name, saved)


class NotReLUError(ModelCheckError):
    """Guided backpropagation asked of a network with other activations than ReLU."""


_GUIDED_CAPS = {"relu": None, "relu6": 6.0}  # activation name -> upper clip


def _guided_relu(max_value=None):
    """ReLU (clipped at ``max_value``) whose backward pass lets through only positive
    gradients at positive inputs: ``grad * (grad > 0) * (input > 0)`` (Springenberg et al.)."""
    if BACKEND == "jax":
        return _guided_relu_jax(max_value)
    if BACKEND == "torch":
        return _guided_relu_torch(max_value)
    from gradcam_widget.engine._tf import tf

    @tf.custom_gradient
    def guided(inputs):
        outputs = (
            tf.nn.relu(inputs) if max_value is None else tf.clip_by_value(inputs, 0.0, max_value)
        )

        def backward(upstream):
            gate = tf.cast(upstream > 0, upstream.dtype) * tf.cast(inputs > 0, upstream.dtype)
            if max_value is not None:
                gate *= tf.cast(inputs < max_value, upstream.dtype)
            return upstream * gate

        return outputs, backward

    return guided


def _guided_relu_jax(max_value=None):
    """:func:`_guided_relu` on JAX: a ``jax.custom_vjp`` function, used only inside the
    traced call that installed it."""
    import jax
    import jax.numpy as jnp

    def forward(inputs):
        return jnp.maximum(inputs, 0) if max_value is None else jnp.clip(inputs, 0, max_value)

    @jax.custom_vjp
    def guided(inputs):
        return forward(inputs)

    def save(inputs):
        return forward(inputs), inputs

    def backward(inputs, upstream):
        gate = (upstream > 0) & (inputs > 0)
        if max_value is not None:
            gate = gate & (inputs < max_value)
        return (upstream * gate.astype(upstream.dtype),)

    guided.defvjp(save, backward)
    return guided


def _guided_relu_torch(max_value=None):
    """:func:`_guided_relu` on PyTorch: a ``torch.autograd.Function``."""
    import torch

    class GuidedReLU(torch.autograd.Function):
        @staticmethod
        def forward(context, inputs):
            context.save_for_backward(inputs)
            return inputs.clamp(min=0) if max_value is None else inputs.clamp(0, max_value)

        @staticmethod
        def backward(context, upstream):
            (inputs,) = context.saved_tensors
            gate = (upstream > 0) & (inputs > 0)
            if max_value is not None:
                gate = gate & (inputs < max_value)
            return upstream * gate.to(upstream.dtype)

    return GuidedReLU.apply


def guided_replacements(leaves, model) -> list[tuple[object, str, object]]:
    """``(layer, attribute, guided function)`` for every ReLU of the network: a ReLU
    activation of a layer (``activation="relu"``/``"relu6"``), a ``ReLU`` layer (with its
    ``max_value``), an ``Activation("relu")`` layer.

    Raises:
        NotReLUError: naming the first layer with another activation (a softmax/sigmoid on an
            output is allowed: it is the head).
    """
    heads = {id(layer) for layer in output_layers(model)}
    found = []
    for path, layer in leaves:
        kind = type(layer).__name__
        if kind == "ReLU":
            if (
                float(getattr(layer, "negative_slope", 0.0) or 0.0) != 0.0
                or float(getattr(layer, "threshold", 0.0) or 0.0) != 0.0
            ):
                raise NotReLUError(
                    f"guided backpropagation is defined for ReLU networks; layer {path} is a "
                    "leaky or thresholded ReLU"
                )
            cap = getattr(layer, "max_value", None)
            found.append((layer, "call", _guided_relu(None if cap is None else float(cap))))
            continue
        if kind in ("LeakyReLU", "PReLU", "ELU", "Softmax") and id(layer) not in heads:
            raise NotReLUError(
                f"guided backpropagation is defined for ReLU networks; layer {path} is a {kind}"
            )
        activation = getattr(layer, "activation", None)
        if not callable(activation):
            continue
        name = getattr(activation, "__name__", "")
        if name in _GUIDED_CAPS:
            found.append((layer, "activation", _guided_relu(_GUIDED_CAPS[name])))
        elif name in ("linear", "") or name in SQUASHING and id(layer) in heads:
            continue
        else:
            raise NotReLUError(
                f"guided backpropagation is defined for ReLU networks; layer {path} uses {name!r}"
            )
    return found


@contextlib.contextmanager
def tapped(leaves: Sequence[tuple[str, object]], bypass=None, guided=None, perturb=None):
    """Record every leaf's output, and bypass ``bypass``'s squashing, for this thread only.

    Args:
        leaves: ``(path, layer)`` pairs from :func:`leaf_layers`.
        bypass: the model whose outputs' final softmax/sigmoid is skipped
            (``score="logit"``), or None.
        guided: the model whose ReLUs get the guided backward pass
            (:func:`guided_replacements`), or None.
        perturb: ``{path: (call number, tensor)}``: the tensor is added to that call's output
            of the leaf (zeros: the value is unchanged, and the gradient with respect to the
            tensor is the gradient with respect to that output -- how the JAX and PyTorch
            engines differentiate a layer; the call number is the last call's, the one the
            record keeps, as counted by :attr:`Record.calls` on an earlier call).

    Yields:
        The :class:`Record` ``{path: tensor}``, filled while the model is called in this block
        by this thread (a layer called twice keeps its last call). Other threads see the model
        as is.
    """
    with _TAP_LOCK:
        tap, outer = _Tap(perturb), getattr(_local, "tap", None)  # outer: an enclosing block's
        restore: list[tuple[object, str, object]] = []

        def install(layer, name, value):
            restore.append((layer, name, layer.__dict__.get(name, _ABSENT)))
            object.__setattr__(layer, name, value)

        try:
            if guided is not None:  # first, so that a guided ReLU layer is still recorded
                for layer, name, function in guided_replacements(leaves, guided):
                    install(layer, name, _guided_for(tap, function, getattr(layer, name)))
            for path, layer in leaves:
                install(layer, "call", _recording_call(tap, path, layer.call))
            heads = [] if bypass is None else output_layers(bypass)
            for layer in dict.fromkeys(layer for layer in heads if _squashing(layer)):
                # a Softmax/Activation layer is skipped whole, a Dense/Conv only its activation
                name = "call" if type(layer).__name__ in ("Softmax", "Activation") else "activation"
                install(layer, name, _skipped_for(tap, getattr(layer, name)))
            _local.tap = tap
            yield tap.record
        except Exception as error:
            _mark_failure(error, tap.failed)
            raise
        finally:
            _local.tap = outer
            for layer, name, saved in reversed(restore):
                _set_saved(layer, name, saved)


def _recording_call(tap: _Tap, path: str, original):
    def call(*args, **kwargs):
        try:
            outputs = original(*args, **kwargs)
        except Exception as error:
            # the innermost leaf that raised: a leaf that re-raises an inner leaf's exception
            # (or Keras's copy of it) leaves it as it is, one that raises its own replaces it
            if tap.active() and (tap.failed is None or not reraises(error, tap.failed.error)):
                tap.failed = LayerFailure(path, error, _specs((args, kwargs)))
            raise
        if not tap.active():
            return outputs
        tap.failed = None  # a failure inside this call was handled by the layer
        if not keras.ops.is_tensor(outputs):
            return outputs
        if not tap.in_scope(outputs):
            tap.record.outside.add(path)
        else:
            call = tap.record.calls[path] = tap.record.calls.get(path, 0) + 1
            handle = tap.perturb.get(path)
            if handle is not None and handle[0] == call:
                outputs = outputs + handle[1]
            tap.record.pop(path, None)  # a shared layer keeps its last call
            tap.record[path] = outputs
        return outputs

    return call


_FAILED = "_gradcam_failed"  # set on an exception a leaf layer raised: its LayerFailure


class LayerFailure(NamedTuple):
    """A leaf layer's call that raised (:func:`failed_layer`)."""

    path: str
    error: BaseException  # what the layer itself raised
    inputs: tuple | None  # its call's ``(args, kwargs)``, each tensor as a KerasTensor spec


def _specs(structure):
    """``structure`` with each tensor replaced by a ``KerasTensor`` of its shape and dtype
    (``None`` when that cannot be read): the shapes a failing layer was called with, kept
    without the tensors (and the graphs or traces they belong to)."""

    def spec(value):
        if isinstance(value, keras.KerasTensor) or keras.ops.is_tensor(value):
            dtype = keras.backend.standardize_dtype(value.dtype)
            return keras.KerasTensor(tuple(value.shape), dtype=dtype)
        return value

    try:
        return keras.tree.map_structure(spec, structure)
    except Exception:  # noqa: BLE001 - only a help for saying why the layer failed
        return None


def failed_layer(error: BaseException) -> LayerFailure | None:
    """The :class:`LayerFailure` ``(path, exception, inputs)`` of the leaf layer whose call
    raised ``error`` inside a :func:`tapped` block, ``exception`` being what the layer itself
    raised; ``None`` when ``error`` is not that exception or a re-raise of it
    (:func:`reraise_chain`) -- the model caught it and raised another, say -- or it was raised
    outside such a block."""
    return getattr(error, _FAILED, None)


def reraise_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it re-raises, outermost first: Keras's copy of an
    exception with its call context added in the message (``_keras_call_info_injected``,
    raised while handling the exception it copies: its ``__context__``, or after JAX's
    re-raise, which moves the chain to an ``UnfilteredStackTrace`` set as ``__cause__``, that
    one's ``__context__``). Nothing else is followed: an exception raised while handling
    another (``except ValueError: raise RuntimeError(...)``) or from it is its own."""
    chain = [error]
    while len(chain) < 16:
        inner = _copied(chain[-1])
        if inner is None or any(inner is seen for seen in chain):
            break
        chain.append(inner)
    return chain


def reraises(error: BaseException, original: BaseException) -> bool:
    """Whether ``error`` is ``original`` or a re-raise of it (:func:`reraise_chain`)."""
    return any(link is original for link in reraise_chain(error))


def _copied(error: BaseException) -> BaseException | None:
    """The exception Keras's ``error`` copies with its call context added, else ``None``."""
    if getattr(error, "_keras_call_info_injected", False) is not True:
        return None
    inner = error.__context__
    cause = error.__cause__
    if inner is None and type(cause).__name__ == "UnfilteredStackTrace":  # JAX moved it
        inner = cause.__context__
    if inner is None:
        return None
    # Keras copies with the same class, or as a RuntimeError when that class cannot be
    # made from a message alone
    return inner if type(error) in (type(inner), RuntimeError) else None


def _mark_failure(error: BaseException, failed: LayerFailure | None) -> None:
    """Remember on ``error`` which leaf raised it (``failed``, from the tap), when ``error``
    is that leaf's exception or a re-raise of it (:func:`reraise_chain`)."""
    if failed is None or hasattr(error, _FAILED):
        return
    if reraises(error, failed.error):
        with contextlib.suppress(AttributeError):  # an exception without a __dict__
            setattr(error, _FAILED, failed)


def _guided_for(tap: _Tap, guided, original):
    """``original`` (a ReLU call or activation), guided for the tapping thread only."""

    def call(inputs, *args, **kwargs):
        return guided(inputs) if tap.active() else original(inputs, *args, **kwargs)

    call.__name__ = getattr(original, "__name__", "guided")
    return call


def _skipped_for(tap: _Tap, original):
    """``original`` (a layer's ``call`` or ``activation``) that returns its input unchanged
    for the tapping thread. It keeps the original's name: :func:`output_heads` still
    recognises the head while the block is open."""

    def skipped(inputs, *args, **kwargs):
        return inputs if tap.active() else original(inputs, *args, **kwargs)

    skipped.__name__ = getattr(original, "__name__", "skipped")
    return skipped

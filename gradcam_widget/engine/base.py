"""The compiled pass: what every backend's engine shares.

An :class:`Engine` belongs to one model; :func:`engine_for` gives the one for Keras's backend in
this process: :class:`gradcam_widget.engine_tf.TfEngine` (``tf.function`` and a
``GradientTape``), :class:`gradcam_widget.engine_jax.JaxEngine` (``jax.jit`` of
``jax.value_and_grad``) or :class:`gradcam_widget.engine_torch.TorchEngine` (eager,
``torch.autograd.grad``). This module holds what they share and imports no backend itself.

A pass takes a batch ``(N, H, W, C)`` and one
integer per image (a class index, ``-1`` for the top class), calls the model while
:func:`~gradcam_widget.tapping.tapped` records every leaf layer's output, turns the outputs into
one value per image with a target (:mod:`gradcam_widget.targets`), and differentiates the sum of
those values with respect to the requested layers. Each image's gradient is its own: a model in
inference mode treats the images of a batch independently.

The pass returns what it found as a :class:`PassResult` (candidate layers, their shapes, the
scores, the activations and gradients); nothing is written on the engine while it is traced. One
trace serves every batch size and, where the model leaves it free, every image size. Everything
above this module works on the numpy arrays it returns.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.engine import layers as layers_module
from gradcam_widget.engine._keras import BACKEND, keras
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.tapping import (
    failed_layer,
    guided_replacements,
    leaf_layers,
    output_heads,
    reraise_chain,
    squashed_output,
    tapped,
)

ops = keras.ops

MAX_TRACES = 8  # compiled passes kept per model (each holds a traced graph; see the README)


# ---------------------------------------------------------------------------------------
# The model's interface


def unwrap(model):
    """Split a model argument into ``(keras.Model, preprocess, class_names, multi_label)``.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load` (any
            object with a ``.model`` attribute, optionally ``.preprocess``, ``.class_names``
            and ``.multi_label``).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(model, keras.Model):
        return model, None, None, False
    inner = getattr(model, "model", None)
    if isinstance(inner, keras.Model):
        return (
            inner,
            getattr(model, "preprocess", None),
            getattr(model, "class_names", None),
            bool(getattr(model, "multi_label", False)),
        )
    raise ValueError(
        "model must be a keras.Model or an entry returned by gradcam_widget.models.load(); "
        f"got {type(model).__name__}"
    )


def model_input_size(model) -> tuple[int | None, int | None, int | None]:
    """``(H, W, C)`` the model fixes, ``None`` where it takes any size (all ``None`` for a
    subclassed model, whose input is known only once it is called).

    Raises:
        ValueError: for several inputs, an input that is not a batch of images, or a
            channels-first input.
    """
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):  # subclassed: no symbolic input
        return None, None, None
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError(
                f"models with several inputs are not supported; this one takes {len(shape)}: "
                f"{shape}"
            )
        shape = shape[0]
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"the model must take a batch of images (N, H, W, C); its input shape is {shape}"
        )
    height, width, channels = shape[1], shape[2], shape[3]
    if height in (1, 3, 4) and (channels is None or channels > 4) and (width or 5) > 4:
        raise ValueError(
            f"the model's input {tuple(shape)} looks channels-first (N, C, H, W); "
            "gradcam_widget explains channels-last models (N, H, W, C): rebuild the model "
            "with data_format='channels_last'"
        )
    return height, width, channels


def model_outputs(model) -> dict | None:
    """``{name: shape}`` of the model's outputs in order (shapes with ``None`` where free);
    ``None`` for a subclassed model, whose outputs are known only once it is called. A dict
    output is named by its keys, others by their layers' names."""
    try:
        shape = model.output_shape
        output = model.output
    except (AttributeError, ValueError):
        return None
    if isinstance(output, dict):
        return {str(name): tuple(tensor.shape) for name, tensor in output.items()}
    names = list(getattr(model, "output_names", None) or [])
    parts = shape if isinstance(shape, list) else [shape]
    if len(names) != len(parts):
        names = [f"output_{index}" for index in range(len(parts))]
    return {name: tuple(part) for name, part in zip(names, parts, strict=True)}


def num_classes(model) -> int | None:
    """The number of classes when the model's one output is ``(N, K)`` with ``K`` known."""
    outputs = model_outputs(model)
    if outputs is None or len(outputs) != 1:
        return None
    (shape,) = outputs.values()
    return shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None


class ModelCallError(ValueError):
    """The model failed on an input: one line naming the model, the layer when known and
    what went wrong -- the original exception's first line, or that the image is too small
    for the model (the original's first line after it) -- with the original exception
    chained (``__cause__``)."""


# ---------------------------------------------------------------------------------------
# Which exceptions are the model's
#
# Only an exception raised below a call of the user's model (its forward call, or the backward
# pass through it: :func:`model_code`) is said as a ModelCallError, and a backend's error
# running a compiled pass (TensorFlow's OpError, JAX's runtime error). What this package's own
# code raises propagates as it is, and so do resource errors (out of memory, too deep a
# recursion), with a note naming the model when the model raised them.

_FROM_MODEL = "_gradcam_from_model"


@contextlib.contextmanager
def model_code(after: list | None = None):
    """Mark each exception escaping this block as raised by the model's own code (the call of
    the model, or the backward pass through it); an inner block's mark stays.

    Args:
        after: for a block that runs this package's code before the model's backward pass
            (``jax.value_and_grad`` of a function that also scores the outputs): only
            exceptions raised once something was appended to it (the forward part done) are
            marked.
    """
    try:
        yield
    except Exception as error:
        if (after is None or after) and not hasattr(error, _FROM_MODEL):
            with contextlib.suppress(AttributeError):  # an exception without a __dict__
                setattr(error, _FROM_MODEL, True)
        raise


def raised_by_model(error: BaseException) -> bool:
    """Whether ``error`` came from the model: raised below its call (:func:`model_code`), or
    a backend's error running a compiled pass (TensorFlow's ``OpError``, JAX's runtime
    error: the model's graph failed at run time)."""
    if any(getattr(link, _FROM_MODEL, False) is True for link in reraise_chain(error)):
        return True
    return _runtime_error(error)


def resource_error(error: BaseException) -> bool:
    """Whether ``error`` says a resource ran out: memory (``MemoryError``, PyTorch's
    ``OutOfMemoryError``, TensorFlow's ``ResourceExhaustedError``, XLA's
    ``RESOURCE_EXHAUSTED``) or the stack (``RecursionError``) -- not a failure of the model on
    the input, and never reworded."""
    for link in reraise_chain(error):
        if isinstance(link, (MemoryError, RecursionError)):
            return True
        names = {cls.__name__ for cls in type(link).__mro__}
        if names & {"OutOfMemoryError", "ResourceExhaustedError"}:
            return True
        if names & {"JaxRuntimeError", "XlaRuntimeError"}:
            text = _message(link) or ""
            if text.lstrip().startswith("RESOURCE_EXHAUSTED"):
                return True
    return False


def said_failure(error, inputs_shape: tuple, model_shape: tuple, model=None):
    """What the engine raises for ``error``, raised in a block that calls the model on
    inputs of ``inputs_shape``: ``(ModelCallError, its cause)`` for a failure of the model
    (:func:`model_failure`), else ``None`` -- ``error`` then propagates as it is: this
    package's own (:func:`raised_by_model`), or a resource error (:func:`resource_error`), to
    which a note naming the model is added."""
    if isinstance(error, (ModelCheckError, ModelCallError)) or not raised_by_model(error):
        return None
    if resource_error(error):
        if not getattr(error, "_gradcam_noted", False):
            what = "the model" if model is None else f"the model {model.name!r}"
            note = f"(gradcam_widget: raised by {what} on {_input_text(inputs_shape)})"
            with contextlib.suppress(AttributeError, TypeError):  # no __dict__
                if hasattr(error, "add_note"):
                    error.add_note(note)
                else:  # Python 3.10: kept where 3.11's add_note keeps it
                    error.__notes__ = [*getattr(error, "__notes__", []), note]
                error._gradcam_noted = True
        return None
    return model_failure(error, inputs_shape, model_shape, model), _original(error)


@contextlib.contextmanager
def model_errors(inputs_shape: tuple, model_shape: tuple, model=None):
    """Turn the model's own failure on these inputs into one :class:`ModelCallError`, as
    :func:`said_failure` says it (the engine's :meth:`Engine.failures` already does so for
    what it runs). What the engine already said (a :class:`ModelCallError`, a
    :class:`~gradcam_widget.inputs.ModelCheckError`), this package's own exceptions and
    resource errors pass as they are."""
    try:
        yield
    except Exception as error:
        said = said_failure(error, inputs_shape, model_shape, model)
        if said is None:
            raise
        raise said[0] from said[1]


def model_failure(error, inputs_shape: tuple, model_shape: tuple, model=None):
    """The :class:`ModelCallError` that says, in one line, how the model failed on inputs of
    ``inputs_shape`` with ``error``: that the image is too small for it when Keras's shape
    inference finds a layer whose output would have a side of zero or less at this size, or a
    layer whose shape inference fails at this size only (:func:`empty_output`), the original's
    first line after it ("...; original: Computed output size would be negative: -1"); else
    the original exception's first line (its ANSI colours and
    Keras's call context left out), naming the model and the layer that raised it when known
    (the leaf layer whose own exception this is: :func:`~gradcam_widget.tapping.failed_layer`;
    or the layer Keras's call context names). Chain it from :func:`_original`."""
    what = "the model" if model is None else f"the model {model.name!r}"
    where = f"{what} failed on {_input_text(inputs_shape)}"
    original = _original(error)
    said = _said(original)
    empty = None if model is None else empty_output(model, inputs_shape, model_shape, error)
    if empty is not None:
        # the original's own line after the hint (its class, TensorFlow's InvalidArgumentError
        # say, is the chained cause's)
        line = _first_line(original)
        return too_small(inputs_shape, model_shape, model, *empty, said=f"original: {line or said}")
    failed = failed_layer(error)
    at = ""
    if failed is not None:
        kind = _layer_class(model, failed.path)
        at = f" at layer {failed.path!r}" + (f" ({kind})" if kind else "")
    elif (called := _keras_context(error)) is not None:
        # Keras names the class of the innermost layer that raised: the layer, if it is the
        # only one of its class
        kind = called.split(".")[0]
        paths = [p for p, layer in _leaves(model) if type(layer).__name__ == kind]
        at = f" at layer {paths[0]!r} ({kind})" if len(paths) == 1 else f" in {called}"
    return ModelCallError(f"{where}{at}: {said}")


def too_small(
    inputs_shape: tuple, model_shape: tuple, model, path, sides, said: str = ""
) -> ModelCallError:
    """The :class:`ModelCallError` for inputs of ``inputs_shape`` too small for the model:
    layer ``path`` (``None``: not known) would give an output of spatial size ``sides``
    (``None``: not known, the layer's shape inference fails at this size and works at larger
    ones); ``said``: what the model said (``"original: ValueError: ..."``), after it."""
    what = "the model" if model is None else f"the model {model.name!r}"
    if all(side is None for side in model_shape):
        takes = "its input size is not declared (a subclassed model): fit the image to it"
    else:
        takes = (
            "it takes (N, "
            + ", ".join("any" if side is None else str(side) for side in model_shape)
            + ")"
        )
    layer = ""
    if path is not None:
        kind = _layer_class(model, path)
        named = f"layer {path!r}" + (f" ({kind})" if kind else "")
        if sides is not None:
            layer = f" (at {named} the output would be {'×'.join(str(s) for s in sides)})"
        else:
            layer = f" ({named} fails at this size and works on larger images)"
    return ModelCallError(
        f"{what} failed on {_input_text(inputs_shape)}: the image is too small for this "
        f"model{layer}; {takes}" + (f"; {said}" if said else "")
    )


def _input_text(inputs_shape: tuple) -> str:
    """``"a 64×64 input of shape (1, 64, 64, 3)"`` (``N`` for a batch size not known)."""
    size = "×".join(str(side) for side in inputs_shape[1:3])
    shape = ", ".join("N" if side is None else str(side) for side in inputs_shape)
    return f"a {size} input of shape ({shape})"


def _original(error: BaseException) -> BaseException:
    """The exception the failing code raised: the leaf layer's own when
    :func:`~gradcam_widget.tapping.tapped` saw it escape, else ``error`` followed back
    through Keras's copies with the call context added (and JAX's re-raise of them:
    :func:`~gradcam_widget.tapping.reraise_chain`)."""
    failed = failed_layer(error)
    return failed.error if failed is not None else reraise_chain(error)[-1]


def _said(error: BaseException) -> str:
    """``"ValueError: its first line"`` (:func:`_first_line`); ``"ValueError"`` for an empty
    message; ``"Weird (its message could not be read)"`` when reading it raises."""
    kind = type(error).__name__
    line = _first_line(error)
    if line is None:
        return f"{kind} (its message could not be read)"
    return f"{kind}: {line}" if line else kind


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KERAS_CONTEXT = re.compile(
    r"^\s*Exception encountered when calling (?P<called>.+?)\.\s*\n(?P<message>.*?)"
    r"(?:\n\s*Arguments received by .*)?$",
    re.S,
)


def _keras_context(error: BaseException) -> str | None:
    """What Keras says ``error`` was raised calling (``"Bad.call()"``), when it added its
    call context to the message."""
    text = _message(error)
    found = None if text is None else _KERAS_CONTEXT.match(_ANSI.sub("", text))
    return found.group("called") if found else None


def _message(error: BaseException) -> str | None:
    """``error``'s message: its ``message`` attribute when that is a string (TensorFlow's
    ``OpError``), else ``str(error)``; ``None`` when it cannot be read (``__str__`` raises)."""
    try:
        message = getattr(error, "message", None)
    except Exception:  # noqa: BLE001 - a property that raises: not a message
        message = None
    if isinstance(message, str) and message:
        return message
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - whatever __str__ raises, the message is unreadable
        return None


def _first_line(error: BaseException) -> str | None:
    """The line of ``error``'s message that says what went wrong (at most 300 characters):
    its first, without ANSI colour codes or the call context Keras adds; for a TensorFlow
    ``OpError``, :func:`_error_line` of it. ``None`` when the message cannot be read."""
    text = _message(error)
    if text is None:
        return None
    text = _ANSI.sub("", text)
    found = _KERAS_CONTEXT.match(text)
    if found:
        text = found.group("message")
    if BACKEND == "tensorflow" and type(error).__module__.startswith("tensorflow"):
        line = _error_line(text)
    else:
        line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= 300 else line[:299] + "…"


def _error_line(text: str) -> str:
    """The line of a TensorFlow error that says what went wrong: not its banner ("Graph
    execution error:"), its Python stack or its node names."""
    lines = [line.strip() for line in text.splitlines()]
    useful = [
        line
        for line in lines
        if line
        and not line.startswith(("File ", "[[", "Detected at node", "Graph execution error"))
        and not line.endswith(":")
    ]
    return useful[-1] if useful else next((line for line in lines if line), "")


def _leaves(model) -> list:
    """The model's leaf layers (none for ``None``, or a model whose layers cannot be read)."""
    try:
        return [] if model is None else leaf_layers(model)
    except Exception:  # noqa: BLE001 - only for naming a layer in a message
        return []


def _layer_class(model, path: str) -> str:
    return next((type(layer).__name__ for p, layer in _leaves(model) if p == path), "")


# ---------------------------------------------------------------------------------------
# Too small: where the shapes run out


def empty_output(model, inputs_shape: tuple, model_shape=(None, None, None), error=None):
    """Where a model's shapes run out for inputs of ``inputs_shape`` ``(N, H, W, C)``, found
    by shape inference (nothing is computed): ``(path, spatial size)`` of the first layer
    whose output would have a side of zero or less, or ``(path, None)`` for a layer whose
    shape inference raises at this size and works when each side of its inputs is larger
    (:func:`_fails_only_here`: a Cropping2D that would crop everything, say).

    A Functional or Sequential model (nested ones too) is followed layer by layer: a
    convolution's or a pooling's output size from its kernel, strides, padding and dilation,
    every other layer's output shape from its ``compute_output_spec``. A model without a
    graph (subclassed) is called symbolically at this size, every leaf layer's output shape
    and the inputs of the leaf layer that raises recorded (:func:`_symbolic_call`): an output
    with a side of zero or less, or that leaf found as above. A model that works at a larger
    size is not said too small for that alone: a failure of the model's own code is its own,
    and so is a layer that raises on inputs it cannot take at any size (a U-Net's
    concatenation of 9 x 9 and 8 x 8 grids).

    Args:
        error: the failure being said (``None``: none, the model computed non-finite
            scores): a leaf layer found only by its failure in the symbolic call is not said
            too small when ``error`` was raised by another layer, or by the model's own code.

    Returns ``None`` where the model fixes its spatial size (it was built at that size), where
    every output has a positive size, and where the shapes cannot be followed (a layer whose
    shape inference fails at this size for another reason).
    """
    if len(inputs_shape) != 4 or None in inputs_shape[1:] or None not in model_shape[:2]:
        return None
    shape = (1, *(int(side) for side in inputs_shape[1:]))
    try:
        with _graph_names():
            _follow(model, keras.KerasTensor(shape), "")
    except _Empty as found:
        return found.path, found.sides
    except _NoGraph:
        return _traced_empty(model, shape, error)
    except Exception:  # noqa: BLE001 - a shape that cannot be followed: not decided here
        return None
    return None


class _Empty(Exception):
    def __init__(self, path, sides):
        super().__init__(path)
        self.path, self.sides = path, None if sides is None else tuple(sides)


class _NoGraph(Exception):
    pass


def _graph_names():
    """On TensorFlow, layer names as its graphs take them while shapes are inferred (a layer
    may be traced in a graph: :func:`~gradcam_widget.engine_tf.scope_names`)."""
    if BACKEND != "tensorflow":
        return contextlib.nullcontext()
    from gradcam_widget.engine.tf import scope_names

    return scope_names()


def _graph(model):
    """The Functional graph of ``model`` (a Sequential's own), else ``None``."""
    from keras.src.models.functional import Functional

    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    return graph if isinstance(graph, Functional) else None


def _follow(model, inputs, prefix: str):
    """``model``'s outputs for the symbolic ``inputs``, layer by layer (:func:`_step`)."""
    graph = _graph(model)
    if graph is None:
        raise _NoGraph(model.name)

    def operation(op):
        return lambda *args, **kwargs: _step(op, f"{prefix}{op.name}", args, kwargs)

    return graph._run_through_graph(inputs, operation_fn=operation)


def _step(op, path: str, args, kwargs):
    """One layer's symbolic outputs; raises :class:`_Empty` for an output with a side of zero
    or less, or a layer whose shape inference fails at this size only."""
    if isinstance(op, keras.Model) and _graph(op) is not None:
        return _follow(op, args[0] if len(args) == 1 else list(args), f"{path}/")
    first = args[0] if args else None
    sides = _reduced_sides(op, getattr(first, "shape", None))
    if sides is not None and min(sides) <= 0:
        raise _Empty(path, sides)
    try:
        outputs = op.compute_output_spec(*args, **kwargs)
    except Exception:
        if _fails_only_here(op, args, kwargs):
            raise _Empty(path, None) from None
        raise
    for output in keras.tree.flatten(outputs):
        shape = tuple(getattr(output, "shape", ()))
        spatial = shape[1:-1]
        if len(shape) >= 3 and any(side is not None and side <= 0 for side in spatial):
            raise _Empty(path, spatial)
    return outputs


def _reduced_sides(layer, shape) -> tuple | None:
    """The spatial output size of a channels-last convolution or pooling for inputs of
    ``shape`` (the formula of Keras's own shape inference, which raises instead of giving a
    size of zero or less), else ``None``."""
    window = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if shape is None or window is None or "Transpose" in type(layer).__name__:
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    spatial = tuple(shape[1:-1])
    try:
        window = tuple(int(side) for side in np.atleast_1d(window))
        strides = np.broadcast_to(np.atleast_1d(getattr(layer, "strides", 1)), len(spatial))
        dilation = np.broadcast_to(np.atleast_1d(getattr(layer, "dilation_rate", 1)), len(spatial))
    except (TypeError, ValueError):
        return None
    if len(window) != len(spatial) or any(side is None for side in spatial):
        return None
    padding = str(getattr(layer, "padding", "valid")).lower()
    if padding not in ("valid", "same", "causal"):
        return None
    return tuple(
        (int(side) - int(rate) * (size - 1) - 1) // int(step) + 1
        if padding == "valid"
        else (int(side) - 1) // int(step) + 1
        for side, size, step, rate in zip(spatial, window, strides, dilation, strict=True)
    )


# How much larger each side is where a layer failing at a size is tried again: a multiple of
# 2^5, 3^2, 5 and 7, so that a side's remainder by any of those (a patch or a pooling it must
# be a multiple of) is kept -- a layer that needs a multiple of 16 fails there too. On
# PyTorch, a layer without its own shape inference may be run on real tensors (where its
# call fails on the "meta" device): a smaller step there bounds their size.
_LARGER = (10080, 5040, 2520, 720, 360, 120, 64)
_EAGER_ELEMENTS = 1 << 25


def _fails_only_here(op, args, kwargs) -> bool:
    """Whether ``op``'s shape inference (``compute_output_spec``) raises for ``args`` and
    ``kwargs`` (KerasTensors) and works for the same inputs with each spatial side of every
    ``(N, H, W, C)`` one larger (:data:`_LARGER`): the inputs are too small for it."""
    try:
        op.compute_output_spec(*args, **kwargs)
    except Exception:  # noqa: BLE001 - failing here is what is asked
        pass
    else:
        return False
    grids = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor) and len(value.shape) == 4
    ]
    if not grids or any(side is None for grid in grids for side in grid.shape[1:]):
        return False
    for add in _LARGER:
        elements = sum((h + add) * (w + add) * c for _, h, w, c in (g.shape for g in grids))
        if BACKEND != "torch" or elements <= _EAGER_ELEMENTS:
            break

    def larger(value):
        if isinstance(value, keras.KerasTensor) and len(value.shape) == 4:
            count, height, width, channels = value.shape
            return keras.KerasTensor((count, height + add, width + add, channels), value.dtype)
        return value

    larger_args, larger_kwargs = keras.tree.map_structure(larger, (args, kwargs))
    try:
        op.compute_output_spec(*larger_args, **larger_kwargs)
    except Exception:  # noqa: BLE001 - failing there too: not a size too small
        return False
    return True


def _traced_empty(model, shape: tuple, error=None):
    """:func:`empty_output` of a model without a graph to follow (see there)."""
    raised, outputs = _symbolic_call(model, shape)
    found = _first_empty(outputs)
    if found is not None or raised is None:
        return found
    failed = failed_layer(raised)
    if failed is None or failed.inputs is None:
        return None  # the model's own code raised: its failure, whatever the size
    if error is not None:
        actual = failed_layer(error)
        if actual is not None and actual.path != failed.path:
            return None
        if actual is None and not _runtime_error(error):
            return None  # the model's own code raised the failure being said
    layer = dict(_leaves(model)).get(failed.path)
    if layer is None:
        return None
    args, kwargs = failed.inputs
    first = args[0] if args else None
    sides = _reduced_sides(layer, getattr(first, "shape", None))
    if sides is not None and min(sides) <= 0:
        return failed.path, sides
    with _graph_names():
        return (failed.path, None) if _fails_only_here(layer, args, kwargs) else None


def _runtime_error(error: BaseException) -> bool:
    """A backend's error running a compiled pass (not raised by Python code while traced)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"OpError", "JaxRuntimeError", "XlaRuntimeError"})


def _symbolic_call(model, shape: tuple) -> tuple:
    """``(exception or None, {path: output shape})``: the model called on a symbolic input of
    ``shape`` (Keras's backend shape inference), its leaf layers' outputs recorded (and the
    leaf layer that raised: :func:`~gradcam_widget.tapping.failed_layer` of the exception)."""
    try:
        from keras.src.backend import compute_output_spec
    except ImportError:  # pragma: no cover - another Keras: the model's own
        compute_output_spec = None
    leaves = leaf_layers(model)
    shapes: dict = {}

    def call(inputs):
        with tapped(leaves) as record:
            try:
                return model(inputs, training=False)
            finally:
                shapes.update({path: tuple(t.shape) for path, t in record.items()})

    try:
        with _graph_names():
            if compute_output_spec is None:
                model.compute_output_spec(keras.KerasTensor(shape))
            else:
                compute_output_spec(call, keras.KerasTensor(shape))
    except Exception as error:  # noqa: BLE001 - what failed is the answer
        return error, shapes
    return None, shapes


def _first_empty(outputs: dict):
    """``(path, spatial size)`` of the first ``(N, h, w, C)`` output with a side of zero or
    less, else ``None``."""
    for path, shape in outputs.items():
        sides = shape[1:3] if len(shape) == 4 else ()
        if any(side is not None and side <= 0 for side in sides):
            return path, tuple(sides)
    return None


# ---------------------------------------------------------------------------------------
# Reduced precision for forward-only passes

PRECISIONS = ("float32", "bfloat16")
_GRAPPLER_BF16 = "auto_mixed_precision_onednn_bfloat16"
_PRECISION_LOCK = threading.RLock()
_active_precision: list[str] = []  # the precision of the enclosing _precision blocks


def bfloat16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (Intel AMX or AVX512-BF16).

    Only then does ``precision="bfloat16"`` pay off; elsewhere oneDNN would emulate it.
    Reads ``/proc/cpuinfo`` (Linux); False when that cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            flags = set(next((line for line in info if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def check_precision(precision: str) -> str:
    """Validate ``precision``; ``"bfloat16"`` also needs a CPU that computes it natively.

    Raises:
        ValueError: naming the choices, or saying why bfloat16 is not available here.
    """
    core.check_option("precision", precision, PRECISIONS)
    if precision == "bfloat16" and BACKEND != "tensorflow":
        raise ValueError(
            "precision='bfloat16' is TensorFlow's oneDNN rewrite; on Keras's "
            f"{BACKEND} backend, build the model under "
            "keras.config.set_dtype_policy('mixed_bfloat16') instead and use "
            "precision='float32'"
        )
    if precision == "bfloat16" and not bfloat16_supported():
        raise ValueError(
            "precision='bfloat16' needs a CPU with AMX or AVX512-BF16 (it would be emulated, "
            "and slower, here); use precision='float32'"
        )
    return precision


@contextlib.contextmanager
def _precision(precision: str):
    """Run the enclosed model passes in ``precision``; every pass of the package goes here.

    bfloat16 is oneDNN's Grappler rewrite, a *global* option, switched on only around the
    enclosed calls. TensorFlow also remembers the option a thread saw at its first call, so
    float32 passes take the same lock: no pass of this package, in any thread, can run while
    the option is on unless it asked for bfloat16. (TensorFlow code outside this package that
    runs in another thread during a bfloat16 block is not covered.)

    Raises:
        RuntimeError: when a block of one precision is opened inside a block of the other in
            the same thread (it would silently get the outer one).
    """
    core.check_option("precision", precision, PRECISIONS)
    with _PRECISION_LOCK:
        if _active_precision and _active_precision[-1] != precision:
            raise RuntimeError(
                f"a {precision} pass cannot run inside a {_active_precision[-1]} pass"
            )
        switch = precision == "bfloat16" and not _active_precision
        if switch:
            from gradcam_widget.engine._tf import tf

            before = tf.config.optimizer.get_experimental_options().get(_GRAPPLER_BF16, False)
            tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: True})
        _active_precision.append(precision)
        try:
            yield
        finally:
            _active_precision.pop()
            if switch:
                tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: before})


# ---------------------------------------------------------------------------------------
# Feature maps: conv layers as they are, token layers as grids


def feature_maps(record: dict, input_shape, overrides=None) -> tuple[dict, dict]:
    """The recorded layer outputs that can be explained, and the token layouts among them.

    A 4-D ``(N, h, w, C)`` float output is a feature map. A 3-D ``(N, T, C)`` float output is
    one when its static ``T`` is prefix tokens plus a patch grid of the (static) input size
    (:func:`gradcam_widget.layers.token_grid`), or as ``overrides`` say: ``{path or None:
    (grid, prefix)}`` (``None``: every token layer without one of its own).

    Raises:
        ValueError: for an override that does not fit a layer's tokens.

    Returns:
        ``({path: tensor}, {path: (prefix, h, w)})`` in call order.
    """
    height, width = (input_shape[1], input_shape[2]) if len(input_shape) == 4 else (None, None)
    batch = input_shape[0]  # None inside a TensorFlow trace, the batch size inside a JAX one
    maps, tokens = {}, {}
    last_grid = None  # (h, w) of the last 4-D map before a token layer: its patch grid
    for path, tensor in record.items():
        try:
            shape = tuple(tensor.shape)
        except ValueError:  # a TensorFlow tensor of unknown rank
            continue
        if len(shape) not in (3, 4) or shape[0] != batch:
            continue  # not a batch of maps (a weight, a per-model constant)
        if "float" not in keras.backend.standardize_dtype(tensor.dtype):
            continue
        if len(shape) == 4:
            maps[path] = tensor
            last_grid = shape[1:3]
            continue
        if None in (height, width, shape[1], shape[2]):
            continue
        override = (overrides or {}).get(path, (overrides or {}).get(None))
        grid, prefix = override if override else (None, None)
        if override is None and last_grid is not None and None not in last_grid:
            # tokens made from a conv's grid (a patch embedding) must be that grid: an LSTM
            # over image columns or a head of learned queries after a CNN is not
            fits = layers_module.token_grids(int(tensor.shape[1]), int(height), int(width))
            if not any((h, w) == last_grid for _, h, w in fits):
                continue
        try:
            layout = layers_module.token_grid(
                int(tensor.shape[1]), int(height), int(width), grid=grid, prefix=prefix
            )
        except ValueError as error:
            if path in (overrides or {}):  # an override of this very layer: say so now
                raise ValueError(f"layer {path}: {error}") from None
            layout = None  # the all-layers override does not fit this layer: not a candidate
        if layout is not None:
            maps[path], tokens[path] = tensor, layout
    return maps, tokens


def as_grid(tensor, layout):
    """A token tensor ``(N, T, C)`` as its patch grid ``(N, h, w, C)``; others unchanged."""
    if layout is None or tensor is None:
        return tensor
    prefix, height, width = layout
    return ops.reshape(tensor[:, prefix:, :], (-1, height, width, tensor.shape[-1]))


# ---------------------------------------------------------------------------------------
# What a pass returns


@dataclass(frozen=True)
class PassResult:
    """What one compiled pass found and computed.

    Inside the trace the arrays are tensors; :meth:`Engine.run` returns numpy arrays.

    Attributes:
        candidates: paths of the layers with a 4-D ``(N, h, w, C)`` output, or a token output
            ``(N, T, C)`` that is prefix tokens plus a patch grid of the input (see
            :func:`gradcam_widget.layers.token_grid`), in call order.
        static_shapes: ``{path: (h, w, C)}`` as traced, ``None`` where it follows the image.
        tokens: ``{path: (prefix, h, w)}`` of the token layers among the candidates: their
            activations and gradients are given as ``(N, h, w, C)`` grids, prefix tokens left
            out.
        squashed: per model output, ``"softmax"``/``"sigmoid"`` when that output still comes
            out of a squashing op that could not be bypassed, else ``None``.
        layers: the layers whose activations and gradients were kept.
        scores: ``(N, K)`` scores of the output the target reads (logits or probabilities).
        values: ``(N,)`` the target's value per image: what was differentiated.
        class_indices: ``(N,)`` the class explained per image, ``-1`` when the target has none.
        activations, gradients: ``{path: (N, h, w, C)}`` for :attr:`layers`.
        shapes: ``{path: (h, w, C)}`` of every candidate for these inputs.
        input_gradients: ``(N, H, W, C)`` d value / d model input when asked for (plain, or
            guided: see :func:`gradcam_widget.tapping.guided_replacements`), else ``None``.
        seconds: wall time of the pass.
    """

    candidates: tuple[str, ...]
    static_shapes: dict
    squashed: tuple
    layers: tuple[str, ...]
    tokens: dict = field(default_factory=dict)
    scores: object = None
    values: object = None
    class_indices: object = None
    activations: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    input_gradients: object = None
    seconds: float = 0.0

    # tf.nest protocol: the Python facts travel as metadata, the tensors as components, so
    # that a traced function can return this object (and a concrete function describes it).
    def __tf_flatten__(self):
        metadata = (
            self.candidates,
            tuple((path, self.static_shapes[path]) for path in self.candidates),
            self.squashed,
            self.layers,
            tuple(sorted(self.tokens.items())),
            self.input_gradients is not None,
        )
        components = (
            self.scores,
            self.values,
            self.class_indices,
            *(self.activations[path] for path in self.layers),
            *(self.gradients[path] for path in self.layers),
            *(self.shapes[path] for path in self.candidates),
            *(() if self.input_gradients is None else (self.input_gradients,)),
        )
        return metadata, components

    @classmethod
    def __tf_unflatten__(cls, metadata, components):
        candidates, static_shapes, squashed, layers, tokens, has_input = metadata
        scores, values, class_indices, *rest = components
        input_gradients = rest.pop() if has_input else None
        count = len(layers)
        return cls(
            candidates=candidates,
            static_shapes=dict(static_shapes),
            squashed=squashed,
            layers=layers,
            tokens=dict(tokens),
            scores=scores,
            values=values,
            class_indices=class_indices,
            activations=dict(zip(layers, rest[:count], strict=True)),
            gradients=dict(zip(layers, rest[count : 2 * count], strict=True)),
            shapes=dict(zip(candidates, rest[2 * count :], strict=True)),
            input_gradients=input_gradients,
        )

    def numpy(self, seconds: float = 0.0) -> PassResult:
        """This result with every tensor (of any backend) turned into a numpy array."""

        def arrays(store: dict) -> dict:
            return {path: np.asarray(tensor) for path, tensor in store.items()}

        return replace(
            self,
            scores=np.asarray(self.scores),
            values=np.asarray(self.values),
            class_indices=np.asarray(self.class_indices),
            activations=arrays(self.activations),
            gradients=arrays(self.gradients),
            shapes={p: tuple(int(s) for s in np.asarray(t)) for p, t in self.shapes.items()},
            input_gradients=None
            if self.input_gradients is None
            else np.asarray(self.input_gradients),
            seconds=seconds,
        )


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


class Engine:
    """Owns the compiled passes of one model. Shared by every capture of that model.

    This class holds what does not depend on the backend (caches, locks, batching, the facts a
    pass finds); a subclass per backend compiles and runs the passes (``_make_pass``,
    ``_call_pass``, ``_make_forward``, ``_call_forward``, ``_make_outputs``, ``_call_outputs``,
    ``_trace_facts``, ``_find_reaching``).

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

    def _pass(self, signature, target, score, multi_label, layers, to_input=None):
        key = ("pass", signature, target.trace_key, score, multi_label, layers, to_input)
        return self._compiled(
            key, lambda: self._make_pass(signature, target, score, multi_label, layers, to_input)
        )

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
                with self.failures(inputs_shape):
                    self._facts[key] = self._trace_facts(
                        signature, target, score, multi_label, inputs_shape[0]
                    )
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
        with self._lock, _precision("float32"):
            if to_input == "guided":
                guided_replacements(self.leaves, self.model)  # a non-ReLU network: refused now
            with self.failures(inputs.shape):
                function = self._pass(
                    self.signature(inputs.shape), target, score, multi_label, layers, to_input
                )
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
        key = ("forward", signature, target.trace_key, score, multi_label)
        with self._lock:
            make = lambda: self._make_forward(signature, target, score, multi_label)  # noqa: E731
            results = []
            with _precision(precision):
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
            with _precision("float32"):
                for start in range(0, len(batch), batch_size):
                    chunk = np.asarray(batch[start : start + batch_size], np.float32)
                    with self.failures(chunk.shape):
                        function = self._compiled(key, make, self._forwards)
                        results.append(self._call_outputs(function, chunk))
                    self._check_sizes(chunk.shape, results[-1])
                    self.forward_images += len(chunk)
            return np.concatenate(results)


class StatelessEngine(Engine):
    """What the JAX and PyTorch engines share: the model called statelessly (its variables'
    values passed in), the facts of a pass read per image size (``_traced``), and the zeros
    added to the explained layers' last calls (:func:`perturbation`)."""

    def __init__(self, model):
        super().__init__(model)
        self._traced: dict[tuple, dict] = {}  # (signature, bypass) -> what the model computes

    def set_token_grid(self, layer, grid, prefix) -> None:
        with self._lock:
            super().set_token_grid(layer, grid, prefix)
            self._traced.clear()

    def signature(self, inputs_shape: tuple) -> tuple:
        """``(None, H, W, C)`` of the inputs themselves: the facts of a pass are read per
        image size (and ``jax.jit`` compiles per shape)."""
        return (None, *(int(side) for side in inputs_shape[1:4]))

    def _model_facts(self, signature: tuple, bypass: bool) -> dict:
        """What the model computes for inputs of ``signature`` (its squashing heads bypassed
        or not): :meth:`_layer_facts`, and per output ``"squashed"`` and ``"outputs"`` (its
        shape, as JAX's abstract values or PyTorch's zeros); read by the backend's
        ``_read_model`` once, kept for a bounded number of sizes."""
        key = (signature, bypass)
        if key not in self._traced:
            self._traced[key] = self._read_model(signature, bypass)
            trim_oldest(self._traced)
        return self._traced[key]

    def _layer_facts(self, record, input_shape) -> dict:
        """From a tapped call's record: the candidate layers' call counts, token layouts,
        output shapes and dtypes (``raw``) and grid shapes, and the layers left ``outside``."""
        maps, tokens = feature_maps(record, input_shape, self.token_overrides)
        return {
            "calls": {path: record.calls[path] for path in maps},
            "outside": sorted(record.outside),
            "tokens": tokens,
            "raw": {path: (tuple(t.shape[1:]), t.dtype) for path, t in maps.items()},
            "grids": {
                path: tuple(as_grid(t, tokens.get(path)).shape[1:]) for path, t in maps.items()
            },
        }

    @staticmethod
    def _facts_result(facts: dict, score: str, layers: tuple = ()) -> PassResult:
        """The :class:`PassResult` facts (no arrays) of a pass that keeps ``layers``."""
        squashed = facts["squashed"] if score == "logit" else (None,) * len(facts["squashed"])
        return PassResult(
            candidates=tuple(facts["grids"]),
            static_shapes=dict(facts["grids"]),
            squashed=squashed,
            layers=layers,
            tokens=dict(facts["tokens"]),
        )

    def _zeros(self, facts: dict, paths, count: int) -> dict:
        """``{path: zeros}`` shaped like those layers' outputs for ``count`` images: what the
        pass differentiates with respect to (see :func:`perturbation`)."""
        return {
            path: self._zero((count, *facts["raw"][path][0]), facts["raw"][path][1])
            for path in paths
        }

    def _state(self) -> tuple[list, list]:
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

    def _stateless(self, inputs, state=None):
        """The model's outputs for ``inputs``, its variables' values passed in (``state``:
        :meth:`_state`'s, else read now); nothing on the model is changed."""
        trainable, non_trainable = self._state() if state is None else state
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
    """``{path: zeros}`` as :func:`~gradcam_widget.tapping.tapped` takes it: each zero tensor
    added to its layer's last call (the call the record keeps; ``calls`` counted them)."""
    return {path: (calls[path], zeros) for path, zeros in perturb.items()}


def trim_oldest(store: dict, size: int = 4 * MAX_TRACES) -> None:
    """Drop the oldest entries of a facts cache beyond ``size`` (one entry per input
    signature: a model that takes any image size would otherwise grow it for ever)."""
    while len(store) > size:
        store.pop(next(iter(store)))


def only_output(outputs):
    """The one output of a model (``outputs`` as it returns them).

    Raises:
        ModelCheckError: for a model with several outputs.
    """
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise ModelCheckError(f"the model has {len(outputs)} outputs; this pass reads one")
        outputs = outputs[0]
    return outputs


def output_parts(outputs) -> list:
    """A model's outputs as a list, in output order."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _check_fed(target, fed: np.ndarray, width: int) -> None:
    """Refuse a class index fed to the pass that the output the target reads does not have
    (integer feeds are class indices, ``-1`` for the top class)."""
    if fed.dtype.kind == "i" and fed.size and int(fed.max()) >= width:
        raise ModelCheckError(f"class_index must be in 0..{width - 1}; got {int(fed.max())}")

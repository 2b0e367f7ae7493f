"""Which exceptions are the model's, and how its failures are said.

Only an exception raised below a call of the user's model (its forward call, or the backward
pass through it: :func:`model_code`) is said as a :class:`ModelCallError`, and a backend's error
running a compiled pass (TensorFlow's OpError, JAX's runtime error). What this package's own
code raises propagates as it is, and so do resource errors (out of memory, too deep a
recursion), with a note naming the model when the model raised them.

A failure on an image too small for the model is said so (:func:`too_small`): where the model's
shapes run out is found by shape inference alone (:func:`empty_output`, which follows a
Functional graph layer by layer or calls a subclassed model symbolically).
"""

from __future__ import annotations

import contextlib
import re

import numpy as np

from gradcam_widget.engine._keras import BACKEND, keras
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.tapping import failed_layer, leaf_layers, reraise_chain, tapped


class ModelCallError(ValueError):
    """The model failed on an input: one line naming the model, the layer when known and
    what went wrong -- the original exception's first line, or that the image is too small
    for the model (the original's first line after it) -- with the original exception
    chained (``__cause__``)."""


# code raises propagates as it is, and so do resource errors (out of memory, too deep a
# recursion), with a note naming the model when the model raised them.

_FROM_MODEL = "_gradcam_from_model"  # set on an exception the model raised
_NOTED = "_gradcam_noted"  # set on a resource error once a note names the model


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
    return runtime_error(error)


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
        if not getattr(error, _NOTED, False):
            what = "the model" if model is None else f"the model {model.name!r}"
            note = f"(gradcam_widget: raised by {what} on {_input_text(inputs_shape)})"
            with contextlib.suppress(AttributeError, TypeError):  # no __dict__
                if hasattr(error, "add_note"):
                    error.add_note(note)
                else:  # Python 3.10: kept where 3.11's add_note keeps it
                    error.__notes__ = [*getattr(error, "__notes__", []), note]
                setattr(error, _NOTED, True)
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
    may be traced in a graph: :func:`~gradcam_widget.engine.scopes.scope_names`)."""
    if BACKEND != "tensorflow":
        return contextlib.nullcontext()
    # here, not at the top: engine.scopes imports TensorFlow, which another backend lacks
    from gradcam_widget.engine.scopes import scope_names

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

    # Keras has no public way to run a Functional graph op by op with a function of its own
    return graph._run_through_graph(inputs, operation_fn=operation)  # noqa: SLF001


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
        if actual is None and not runtime_error(error):
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


def runtime_error(error: BaseException) -> bool:
    """Whether ``error`` is a backend's error running a compiled pass (TensorFlow's
    ``OpError``, JAX's runtime error), not one raised by Python code while traced."""
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

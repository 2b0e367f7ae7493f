"""Keras tapping: record layer outputs and bypass the final softmax, for one thread only.

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

from gradcam_widget._tf import keras, tf
from gradcam_widget.inputs import ModelCheckError

SQUASHING = ("softmax", "sigmoid")
_TAP_LOCK = threading.RLock()
_local = threading.local()  # .tap: the _Tap of the pass this thread is tracing, else None


def leaf_layers(model, prefix: str = "") -> list[tuple[str, object]]:
    """Every non-model layer below ``model`` as ``(path, layer)``; nested models recurse."""
    found = []
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            found.extend(leaf_layers(layer, prefix=f"{path}/"))
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append((path, layer))
    return found


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
    op = getattr(tensor, "op", None)
    while op is not None and op.type in ("Identity", "IdentityN", "Cast", "Reshape") and op.inputs:
        op = op.inputs[0].op
    kind = getattr(op, "type", "")
    return {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(kind)


class _Tap:
    """What one tracing thread records: ``{path: output tensor}`` in call order."""

    def __init__(self):
        self.record: dict = {}

    def active(self) -> bool:
        return getattr(_local, "tap", None) is self


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
def tapped(leaves: Sequence[tuple[str, object]], bypass=None, guided=None):
    """Record every leaf's output, and bypass ``bypass``'s squashing, for this thread only.

    Args:
        leaves: ``(path, layer)`` pairs from :func:`leaf_layers`.
        bypass: the model whose outputs' final softmax/sigmoid is skipped
            (``score="logit"``), or None.
        guided: the model whose ReLUs get the guided backward pass
            (:func:`guided_replacements`), or None.

    Yields:
        The record ``{path: tensor}``, filled while the model is called in this block by this
        thread (a layer called twice keeps its last call). Other threads see the model as is.
    """
    with _TAP_LOCK:
        tap, outer = _Tap(), getattr(_local, "tap", None)  # outer: an enclosing block's
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
        finally:
            _local.tap = outer
            for layer, name, saved in reversed(restore):
                _set_saved(layer, name, saved)


def _recording_call(tap: _Tap, path: str, original):
    def call(*args, **kwargs):
        outputs = original(*args, **kwargs)
        if tap.active() and tf.is_tensor(outputs):
            tap.record.pop(path, None)  # a shared layer keeps its last call
            tap.record[path] = outputs
        return outputs

    return call


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

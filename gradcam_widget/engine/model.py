"""What the engine reads off a model before running it: the model argument split into its
parts (:func:`unwrap`, a :class:`ModelRef`), the input size it fixes, its outputs and their
number of classes, and a model's outputs as a list or as its one output.
"""

from __future__ import annotations

from typing import NamedTuple

from gradcam_widget.engine._keras import keras
from gradcam_widget.engine.inputs import ModelCheckError


class ModelRef(NamedTuple):
    """A model argument split into its parts (:func:`unwrap`). A tuple, so that
    ``keras_model, preprocess, class_names, multi_label = unwrap(model)`` keeps working.

    Attributes:
        model: the ``keras.Model``.
        preprocess: the entry's preprocessing function, ``None`` for a bare model.
        class_names: the entry's class names, ``None`` when not given.
        multi_label: whether the entry's classes are independent (sigmoid scores).
    """

    model: object
    preprocess: object = None
    class_names: object = None
    multi_label: bool = False


def unwrap(model) -> ModelRef:
    """Split a model argument into its :class:`ModelRef` ``(keras.Model, preprocess,
    class_names, multi_label)``.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load` (any
            object with a ``.model`` attribute, optionally ``.preprocess``, ``.class_names``
            and ``.multi_label``).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(model, keras.Model):
        return ModelRef(model)
    inner = getattr(model, "model", None)
    if isinstance(inner, keras.Model):
        return ModelRef(
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

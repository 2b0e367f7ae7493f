"""Feature maps: the recorded layer outputs that can be explained (4-D conv maps as they are,
``(N, T, C)`` token layers read as their patch grids), and what a tapped call says about them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradcam_widget.engine import layers as layers_module
from gradcam_widget.engine._keras import keras

ops = keras.ops


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


@dataclass(frozen=True)
class LayerFacts:
    """What a tapped call of the model says about its explainable layers
    (:func:`layer_facts`); the JAX and PyTorch engines read it once per image size.

    Attributes:
        calls: ``{path: calls}`` of each candidate layer in the call (a shared layer is
            called more than once; the record keeps its last call).
        outside: layers whose outputs were made outside the traced call (a loop, a branch or
            a checkpoint of their own): they cannot be explained there.
        tokens: ``{path: (prefix, h, w)}`` of the token layers among the candidates.
        raw: ``{path: (shape without the batch, dtype)}`` of each candidate's output.
        grids: ``{path: (h, w, C)}`` of each candidate as explained (token layers as grids),
            in call order.
        squashed: per model output, ``"softmax"``/``"sigmoid"`` when it comes out of one.
        outputs: the model's outputs' structure, as shapes (JAX's abstract values,
            PyTorch's zeros): what a target is checked against.
    """

    calls: dict
    outside: tuple
    tokens: dict
    raw: dict
    grids: dict
    squashed: tuple = ()
    outputs: object = None


def layer_facts(record, input_shape, overrides=None) -> LayerFacts:
    """The :class:`LayerFacts` of a tapped call's ``record``
    (:func:`~gradcam_widget.engine.tapping.tapped`) for inputs of ``input_shape``, token
    layers read as ``overrides`` say (see :func:`feature_maps`); ``squashed`` and
    ``outputs`` are left for the caller to fill."""
    maps, tokens = feature_maps(record, input_shape, overrides)
    return LayerFacts(
        calls={path: record.calls[path] for path in maps},
        outside=tuple(sorted(record.outside)),
        tokens=tokens,
        raw={path: (tuple(t.shape[1:]), t.dtype) for path, t in maps.items()},
        grids={path: tuple(as_grid(t, tokens.get(path)).shape[1:]) for path, t in maps.items()},
    )

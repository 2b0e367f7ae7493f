"""Layer search: which layers can be explained, which one is shown first, how names resolve.

Pure Python over layer paths, shapes and class names (as the engine found them); no maths and
no TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Layers never chosen as the default (or for fusion): they only pool or drop what the
#: layer before them computed.
SKIPPED_FOR_DEFAULT = (
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "Dropout",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
)


def resolve(name: str, candidates: Sequence[str]) -> str:
    """The full path of layer ``name``: a path from ``candidates`` or a unique bare inner name.

    Raises:
        ValueError: naming the candidates when ``name`` is unknown, or the matches when it is
            ambiguous.
    """
    if not isinstance(name, str):
        raise ValueError(f"layer must be a layer name; got {name!r}")
    if name in candidates:
        return name
    matches = [path for path in candidates if path.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"layer {name!r} is ambiguous: name one of {', '.join(matches)}")
    raise ValueError(f"unknown layer {name!r}; candidate layers are: {', '.join(candidates)}")


def default_layer(candidates: Sequence[str], shapes: dict, layer_classes: dict) -> str:
    """The last conv-like feature map before the head: pooling, dropout and 1×1 grids skipped.

    Args:
        candidates: layer paths in call order.
        shapes: ``{path: (h, w, C)}``; unknown sizes may be ``None``.
        layer_classes: ``{path: class name}``.
    """
    for path in reversed(candidates):
        height, width = shapes[path][:2]
        single_cell = height is not None and width is not None and height * width <= 1
        if layer_classes.get(path) in SKIPPED_FOR_DEFAULT or single_cell:
            continue
        return path
    return candidates[-1]


def fusion_layers(
    candidates: Sequence[str], shapes: dict, layer_classes: dict, count: int = 3
) -> tuple[str, ...]:
    """The last conv-like layer of each of the ``count`` coarsest grids, shallow first
    (VGG16: ``block3_conv3``, ``block4_conv3``, ``block5_conv3``)."""
    by_grid: dict[tuple, str] = {}
    for path in candidates:
        if layer_classes.get(path) in SKIPPED_FOR_DEFAULT:
            continue
        by_grid[tuple(shapes[path][:2])] = path
    return tuple(by_grid.values())[-count:]


def requested(layers, candidates: Sequence[str], default: str) -> tuple[str, ...] | None:
    """A ``layers=`` argument as layer paths: ``None`` for ``"all"``; ``None`` entries in a
    list stand for ``default``.

    Raises:
        ValueError: for anything but ``"all"``, a name or a list of names, or an unknown name.
    """
    if isinstance(layers, str) and layers == "all":
        return None
    if isinstance(layers, str) or layers is None:
        names = [layers]
    elif isinstance(layers, Iterable) and not isinstance(layers, (bytes, dict)):
        names = list(layers)
    else:
        names = [layers]
    for name in names:
        if name is not None and not isinstance(name, str):
            raise ValueError(
                f"layers must be 'all', a layer name or a list of layer names; got {layers!r}"
            )
    return tuple(dict.fromkeys(default if n is None else resolve(n, candidates) for n in names))

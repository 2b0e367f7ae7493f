"""Layer search: which layers can be explained, which one is shown first, how names resolve.

Pure Python over layer paths, shapes and class names (as the engine found them); no maths and
no TensorFlow here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: Layers never chosen as the default (or for fusion): they only pool, drop or re-lay out
#: what the layer before them computed.
SKIPPED_FOR_DEFAULT = (
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "Dropout",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
    "Reshape",  # only re-lays out the layer before it (a conv grid as tokens, say)
    "Permute",
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


#: Token layers never chosen as the default: they only cut or re-lay out the tokens of the
#: layer before them (dropping the class token, say), which is chosen instead.
SKIPPED_TOKENS_FOR_DEFAULT = ("Cropping1D",)


def default_layer(
    candidates: Sequence[str],
    shapes: dict,
    layer_classes: dict,
    tokens: dict | None = None,
    reaching=None,
) -> str:
    """The last conv-like feature map before the head: pooling, dropout and 1×1 grids skipped.

    For a vision transformer, the last token layer whose patch tokens still reach the score:
    a head that pools the patch tokens gets its final norm (the tokens as the head reads
    them), a head that reads the class token gets the first norm of its last block (the
    patch tokens after it reach only that block's own patch outputs, which the readout
    drops). Layers whose patch tokens get no gradient at all are skipped, as ``reaching``
    says, and so are layers that only cut tokens. The rule is measured: on the shipped ViT
    Grad-CAM's pointing game is 93.3% (worst class) after the final norm against 77.6% at
    the last block's output before it (``docs/vit_layers.md``).

    Args:
        candidates: layer paths in call order.
        shapes: ``{path: (h, w, C)}``; unknown sizes may be ``None``.
        layer_classes: ``{path: class name}``.
        tokens: ``{path: (prefix, h, w)}`` of the token layers among the candidates.
        reaching: the token layers whose patch tokens reach the outputs (``None``: all).
    """
    tokens = tokens or {}
    for path in reversed(candidates):
        height, width = shapes[path][:2]
        single_cell = height is not None and width is not None and height * width <= 1
        if layer_classes.get(path) in SKIPPED_FOR_DEFAULT or single_cell:
            continue
        if path in tokens and (
            layer_classes.get(path) in SKIPPED_TOKENS_FOR_DEFAULT
            or (reaching is not None and path not in reaching)
        ):
            continue
        return path
    return candidates[-1]


def fusion_layers(
    candidates: Sequence[str],
    shapes: dict,
    layer_classes: dict,
    count: int = 3,
    default: str | None = None,
    tokens: dict | None = None,
) -> tuple[str, ...]:
    """The last conv-like layer of each of the ``count`` coarsest grids, shallow first
    (VGG16: ``block3_conv3``, ``block4_conv3``, ``block5_conv3``).

    A vision transformer keeps one grid through all its blocks, so when ``default`` is a token
    layer (``tokens``) the fused layers are the default and the outputs of the blocks before
    it (:func:`_transformer_fusion`).
    """
    if default is not None and default in (tokens or {}):
        return _transformer_fusion(candidates, layer_classes, count, default, tokens)
    by_grid: dict[tuple, str] = {}
    for path in candidates:
        if layer_classes.get(path) in SKIPPED_FOR_DEFAULT:
            continue
        by_grid[tuple(shapes[path][:2])] = path
    return tuple(by_grid.values())[-count:]


def _numbered(path: str) -> str:
    return re.sub(r"\d+", "#", path)


def _transformer_fusion(candidates, layer_classes, count, default, tokens) -> tuple[str, ...]:
    """The default token layer and the last ``count - 1`` block outputs before it.

    Block outputs are found by their names: token layers named alike but for their numbers
    (``block3_out``, ``block4_out``; ``.../transformer_block_2``) form a group, and the
    group whose last member comes last before the default is taken (norms, dropouts and
    re-layouts left out); the default itself when there is none. Shipped ViT: ``block3_out,
    block4_out, norm``.
    """
    earlier = list(candidates[: list(candidates).index(default)])
    position = {path: index for index, path in enumerate(earlier)}
    skipped = SKIPPED_FOR_DEFAULT + SKIPPED_TOKENS_FOR_DEFAULT + ("LayerNormalization",)
    groups: dict[str, list[str]] = {}
    for path in earlier:
        if path not in tokens or layer_classes.get(path) in skipped:
            continue
        if _numbered(path) == path:
            continue  # no number: no group of blocks
        groups.setdefault(_numbered(path), []).append(path)
    groups = {key: paths for key, paths in groups.items() if len(paths) >= 2}
    if _numbered(default) in groups:  # the default is a block output itself
        group = groups[_numbered(default)] + [default]
        return tuple(group[-count:])
    if not groups or count < 2:
        return (default,)
    latest = max(groups.values(), key=lambda paths: position[paths[-1]])
    return tuple(latest[-(count - 1) :]) + (default,)


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


MAX_PREFIX_TOKENS = 8
"""The most prefix tokens (class, distillation, register tokens) a token layer is read with."""


def token_grids(tokens: int, height: int, width: int) -> list[tuple[int, int, int]]:
    """Every way ``tokens`` tokens can be prefix tokens plus a patch grid over an image of
    ``height x width``: ``[(prefix, h, w), ...]``, fewest prefix tokens first.

    A grid fits when its patches tile the image exactly with square patches: ``h = height /
    s`` and ``w = width / s`` for a whole patch size ``s`` (so the grid has the image's aspect
    ratio), patches of at least 2 x 2 pixels, a grid of at least 3 x 3, and ``tokens - prefix
    = h * w`` with ``0 <= prefix <=`` :data:`MAX_PREFIX_TOKENS`. (The engine also asks that a
    token layer made from a conv's feature map has that map's grid.)
    """
    grids = []
    for prefix in range(MAX_PREFIX_TOKENS + 1):
        patches = tokens - prefix
        if patches < 1:
            break
        for size in range(2, min(height, width) + 1):
            if height % size or width % size:
                continue
            h, w = height // size, width // size
            if h * w == patches and min(h, w) >= 3:
                grids.append((prefix, h, w))
    return grids


def token_grid(
    tokens: int, height: int, width: int, grid=None, prefix: int | None = None
) -> tuple[int, int, int] | None:
    """How a token layer's ``(N, tokens, C)`` output maps onto the image: ``(prefix, h, w)``.

    Without an override the grid is inferred (:func:`token_grids`: the fewest prefix tokens
    that leave a patch grid of the image's shape); ``None`` when none fits (the layer is then
    no candidate). ``grid=(h, w)`` and/or ``prefix=k`` override the inference.

    Raises:
        ValueError: for an override that does not add up to ``tokens`` (naming ``tokens``, the
            input size and the grids that would fit).
    """
    if grid is None and prefix is None:
        fits = token_grids(tokens, height, width)
        return fits[0] if fits else None
    fits = token_grids(tokens, height, width)
    shown = ", ".join(f"{p} prefix + {h}x{w}" for p, h, w in fits) or "none"
    if grid is not None:
        try:
            h, w = (int(side) for side in grid)
        except (TypeError, ValueError):
            raise ValueError(f"grid must be (h, w); got {grid!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"grid must be two positive integers; got {grid!r}")
        chosen_prefix = tokens - h * w if prefix is None else int(prefix)
        implausible = prefix is None and chosen_prefix > MAX_PREFIX_TOKENS
        if implausible or chosen_prefix < 0 or chosen_prefix + h * w != tokens:
            raise ValueError(
                f"grid={grid!r} with prefix={prefix!r} does not fit a layer of {tokens} tokens "
                f"(input {height}x{width}); grids that fit: {shown}"
            )
        return chosen_prefix, h, w
    prefix = int(prefix)
    matching = [fit for fit in fits if fit[0] == prefix]
    if not matching:
        raise ValueError(
            f"prefix={prefix} leaves {tokens - prefix} tokens, which tile no grid of the "
            f"{height}x{width} input; grids that fit: {shown} (or pass grid=(h, w))"
        )
    return matching[0]


def describe_tokens(layout: tuple[int, int, int], times: str = "x") -> str:
    """``"1 prefix token + 14x14 patches"`` for a token layer's layout (``times``: the sign
    between the grid's sides)."""
    prefix, h, w = layout
    if not prefix:
        return f"{h}{times}{w} patch tokens"
    return f"{prefix} prefix token{'s' if prefix > 1 else ''} + {h}{times}{w} patches"

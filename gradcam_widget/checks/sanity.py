"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): does a map change when what the model learned is taken away?

>>> result = gw.sanity.model_randomization(entry, images, method="gradcam")
>>> result.steps                     # ("original", "logits", "block5", ..., "block1")
>>> print(result.to_markdown())      # per step: Spearman (|map| and signed), SSIM, HOG
>>> with gw.sanity.randomized(entry, blocks=2) as clone:   # top 2 blocks re-initialised
...     gw.capture(clone, image).cam()

*Model randomisation* re-initialises the model's weighted layers block by block, from the
output down (a *cascade*: after step ``k`` the top ``k`` blocks are random), or one block at a
time with the rest left trained (``cascade=False``), and recomputes the map after each step for
the class the *original* model predicted. A map that stays the same does not depend on what
the model learned. *Data randomisation* compares the maps of a model with those of the same
network trained on permuted labels (the shipped ``"shapes_permuted"``).

Blocks: the layers that hold weights, grouped by the part of their name before the first
``"_"`` (``"block5_conv3"`` -> ``"block5"``; a number right after it is kept, so
``"block_16_project"`` -> ``"block_16"`` and ``"dense_1"`` -> ``"dense_1"``); a layer without
``"_"`` is its own block. Nested models are included (their blocks are named with the nested
model's path, ``"base/block5"``). Blocks are ordered by their topmost layer, top first.

The user's model is never changed: a Functional or Sequential model (nested ones included) is
cloned (``keras.models.clone_model``) and the clone's weights are set from the model's; a
re-initialised layer gets values from its own initializers (``kernel_initializer`` ...,
seeded per layer and weight from ``seed``), or a seeded normal with the standard deviation of
the current values where it has none. A model that cannot be cloned (a subclassed model) is
randomised in place and its weights are put back, bit for bit, when the check ends, also when
it fails; while such a check runs, the model computes with random weights for every caller.

Maps compared (all at the input size):

- CAM methods (:func:`gradcam_widget.methods.names`): the heatmap as shown (ReLU, resized,
  ``/ max``) is the *absolute* map; the raw signed map resized to the input size (before the
  ReLU) is the *signed* map.
- Input-gradient methods: ``"guided"`` (Guided Backpropagation), ``"vanilla"`` (the
  gradient), ``"smoothgrad"`` (vanilla gradient averaged over ``smooth`` noisy copies),
  ``"guided_gradcam"``: the ``(H, W, C)`` gradient's largest absolute value over the channels
  is the *absolute* map, its sum over the channels the *signed* map.

Metrics of a map against the original model's map (:func:`compare`): Spearman rank
correlation of the absolute maps and of the signed maps (ties get their average rank), SSIM
(Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5) and the Pearson correlation of HOG
features (:func:`hog_features`), the last two on the absolute maps scaled to ``[0, 1]``.
Where an absolute map is constant (a ReLU map that is all zero) its rank and HOG correlations
are undefined: they are NaN, the summaries leave them out and count the maps (``flat``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from gradcam_widget.cam import core, methods
from gradcam_widget.captures.capturing import capture
from gradcam_widget.engine import unwrap
from gradcam_widget.engine._keras import keras
from gradcam_widget.engine.tapping import leaf_layers

__all__ = [
    "DataRandomizationResult",
    "GRADIENT_METHODS",
    "METRICS",
    "Randomizer",
    "SanityResult",
    "blocks",
    "compare",
    "data_randomization",
    "hog_features",
    "hog_similarity",
    "method_names",
    "model_randomization",
    "rank",
    "randomized",
    "randomized_copy",
    "spearman",
    "ssim",
]

METRICS: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog")
"""The metrics of :func:`compare`, in table order."""

METRIC_LABELS = {
    "spearman_abs": "Spearman |map|",
    "spearman_signed": "Spearman signed",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}

GRADIENT_METHODS: tuple[str, ...] = ("guided", "vanilla", "smoothgrad", "guided_gradcam")
"""Input-gradient methods the checks accept besides the CAM methods."""

SMOOTHGRAD_COPIES = 16
"""Default number of noisy copies for ``"smoothgrad"`` (option ``smooth``)."""

_CAM_SHARED = ("pooling", "channels", "order", "interpolation")


def method_names() -> tuple[str, ...]:
    """Every method the checks take: the CAM methods, then :data:`GRADIENT_METHODS`."""
    return methods.names() + GRADIENT_METHODS


# ---------------------------------------------------------------------------------------
# Metrics


def rank(values) -> np.ndarray:
    """Ranks ``1 .. n`` of the flattened ``values``; tied values share their average rank.

    Args:
        values: any array (flattened).

    Returns:
        ``(n,)`` float64 ranks (``[1, 2, 2, 3]`` -> ``[1, 2.5, 2.5, 4]``).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last copy
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat arrays; NaN when either is constant."""
    a = a - a.mean()
    b = b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    if not scale > 0:
        return float("nan")
    return float(np.clip((a * b).sum() / scale, -1.0, 1.0))


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"the two maps must have the same non-empty shape; got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the maps must be finite (no NaN or infinity)")
    return a, b


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps: the Pearson correlation of their ranks, ties
    averaged.

    Args:
        a, b: arrays of the same shape (flattened).

    Returns:
        A float in ``[-1, 1]``; NaN when either map is constant (no ranking).

    Raises:
        ValueError: for different shapes, empty or non-finite maps.
    """
    a, b = _check_pair(a, b)
    return _pearson(rank(a), rank(b))


def ssim(a, b, data_range: float | None = None, sigma: float = 1.5, window: int = 11) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004), Gaussian-weighted.

    Local means, variances and covariance come from a ``window x window`` Gaussian of
    standard deviation ``sigma`` (reflected at the border; the window shrinks to the largest
    odd size that fits a smaller map); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``; the mean is
    taken over the positions where the window fits inside the map.

    Args:
        a, b: ``(H, W)`` maps.
        data_range: ``L``, the range the values can span; default the range spanned by both
            maps together (1 when both are constant and equal).
        sigma: the Gaussian's standard deviation in pixels.
        window: the window's side (odd).

    Returns:
        A float in ``[-1, 1]``: 1 for identical maps, negative when one is (locally) the
        other inverted.

    Raises:
        ValueError: for maps that are not 2-D of the same shape, non-finite values, or a bad
            ``data_range``, ``sigma`` or ``window``.
    """
    a, b = _check_pair(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim takes (H, W) maps; got shape {a.shape}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive odd integer; got {window!r}")
    if window % 2 == 0:
        raise ValueError(f"window must be odd; got {window}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min())) or 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be positive; got {data_range!r}")
    side = min(int(window), *(s if s % 2 else s - 1 for s in a.shape))
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (side, side), sigma, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    local = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    pad = side // 2
    if pad and min(local.shape) > 2 * pad:
        local = local[pad:-pad, pad:-pad]
    return float(local.mean())


def _hog_cell(height: int, width: int) -> int:
    return max(2, min(16, min(height, width) // 4))


def hog_features(image, cell: int | None = None, bins: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients features of a 2-D map (Dalal & Triggs 2005).

    The map is scaled to ``[0, 1]`` (its own minimum to maximum); gradients are centred
    differences (``[-1, 0, 1]``, zero on the border rows/columns); each pixel votes its gradient
    magnitude into the two nearest of ``bins`` unsigned orientation bins (0..180 degrees, bin
    ``k`` centred on ``(k + 0.5) * 180 / bins``, linear interpolation) of its ``cell x cell``
    cell; blocks of 2 x 2 cells, one every cell, are L2-Hys normalised (L2, clipped at 0.2,
    L2 again). Computed in numpy: OpenCV 5 no longer ships ``cv2.HOGDescriptor``.

    Args:
        image: ``(H, W)`` map (rows and columns beyond a whole number of cells are dropped).
        cell: the cell's side in pixels (default ``min(H, W) // 4``, between 2 and 16).
        bins: orientation bins.

    Returns:
        ``(F,)`` float64 features, ``F = (H // cell - 1) * (W // cell - 1) * 4 * bins`` (all
        zero for a constant map).

    Raises:
        ValueError: for a map that is not 2-D or smaller than 2 x 2 cells, or bad ``bins``.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"hog takes an (H, W) map; got shape {array.shape}")
    bins = core.check_int("bins", bins)
    height, width = array.shape
    cell = _hog_cell(height, width) if cell is None else core.check_int("cell", cell)
    if min(height, width) < 2 * cell:
        raise ValueError(f"the map {array.shape} is too small for HOG cells of {cell} px")
    rows, cols = (height // cell) * cell, (width // cell) * cell
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    pixels = scaled[:rows, :cols]
    dx = np.zeros_like(pixels)
    dy = np.zeros_like(pixels)
    dx[:, 1:-1] = pixels[:, 2:] - pixels[:, :-2]
    dy[1:-1, :] = pixels[2:, :] - pixels[:-2, :]
    magnitude = np.hypot(dx, dy)
    position = (np.rad2deg(np.arctan2(dy, dx)) % 180.0) / (180.0 / bins) - 0.5
    below = np.floor(position)
    upper_share = position - below
    below_bin = below.astype(np.int64) % bins
    above_bin = (below_bin + 1) % bins
    cell_rows, cell_cols = rows // cell, cols // cell
    cell_index = (np.arange(rows)[:, None] // cell) * cell_cols + np.arange(cols)[None, :] // cell
    size = cell_rows * cell_cols * bins
    slots = cell_index * bins
    lower_votes = (magnitude * (1 - upper_share)).ravel()
    histogram = np.bincount((slots + below_bin).ravel(), lower_votes, size)
    histogram += np.bincount((slots + above_bin).ravel(), (magnitude * upper_share).ravel(), size)
    histogram = histogram.reshape(cell_rows, cell_cols, bins)
    block = np.concatenate(
        [histogram[:-1, :-1], histogram[:-1, 1:], histogram[1:, :-1], histogram[1:, 1:]], axis=-1
    )
    epsilon = 1e-5
    block = block / np.sqrt((block * block).sum(axis=-1, keepdims=True) + epsilon**2)
    block = np.minimum(block, 0.2)
    block = block / np.sqrt((block * block).sum(axis=-1, keepdims=True) + epsilon**2)
    return block.ravel()


def hog_similarity(a, b, cell: int | None = None, bins: int = 9) -> float:
    """Pearson correlation of the HOG features (:func:`hog_features`) of two maps.

    Args:
        a, b: ``(H, W)`` maps of the same shape.
        cell, bins: as :func:`hog_features`.

    Returns:
        A float in ``[-1, 1]``; NaN when either map has no gradient (constant).

    Raises:
        ValueError: for different shapes, non-finite or too small maps.
    """
    a, b = _check_pair(a, b)
    return _pearson(hog_features(a, cell, bins), hog_features(b, cell, bins))


def _unit(absolute: np.ndarray) -> np.ndarray:
    """A non-negative map divided by its maximum (all zero stays zero)."""
    top = float(absolute.max())
    return absolute / top if top > 0 else np.zeros_like(absolute)


def compare(reference: tuple, other: tuple) -> dict[str, float]:
    """The four metrics of :data:`METRICS` for two maps of the same method.

    Args:
        reference, other: ``(absolute (H, W), signed (H, W))`` pairs, as the checks make them
            (the absolute map non-negative).

    Returns:
        ``{"spearman_abs", "spearman_signed", "ssim", "hog": float}``; SSIM and HOG compare
        the absolute maps divided by their maxima (SSIM with ``data_range=1``). Where an
        absolute map is constant every metric but the signed rank correlation is NaN.

    Raises:
        ValueError: for maps of different shapes or non-finite maps.
    """
    ref_abs, ref_signed = (np.asarray(x, dtype=np.float64) for x in reference)
    abs_, signed = (np.asarray(x, dtype=np.float64) for x in other)
    unit_ref, unit = _unit(np.abs(ref_abs)), _unit(np.abs(abs_))
    constant = np.ptp(unit_ref) == 0 or np.ptp(unit) == 0
    return {
        "spearman_abs": spearman(ref_abs, abs_),
        "spearman_signed": spearman(ref_signed, signed),
        # undefined, like the rank and HOG correlations, where a map is constant (a dead
        # class's all-zero map would otherwise score 1 against another all-zero map)
        "ssim": float("nan") if constant else ssim(unit_ref, unit, data_range=1.0),
        "hog": hog_similarity(unit_ref, unit),
    }


# ---------------------------------------------------------------------------------------
# Blocks and randomisation


def _block_key(path: str) -> str:
    parent, _, name = path.rpartition("/")
    parts = name.split("_")
    key = parts[0]
    if len(parts) > 1 and parts[1].isdigit():
        key = f"{key}_{parts[1]}"
    return f"{parent}/{key}" if parent else key


def _weighted_blocks(keras_model) -> list[tuple[str, list[tuple[str, object]]]]:
    """``[(block name, [(path, layer), ...]), ...]`` top first (see the module doc)."""
    grouped: dict[str, list] = {}
    last: dict[str, int] = {}
    seen: set[int] = set()
    for index, (path, layer) in enumerate(leaf_layers(keras_model, opened=False)):
        if id(layer) in seen or not layer.weights:
            continue
        seen.add(id(layer))
        key = _block_key(path)
        grouped.setdefault(key, []).append((path, layer))
        last[key] = index
    order = sorted(grouped, key=lambda key: -last[key])
    return [(key, grouped[key]) for key in order]


def blocks(model) -> tuple[str, ...]:
    """The randomisation steps of ``model``: its blocks of weighted layers, top first.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.

    Returns:
        Block names, e.g. ``("logits", "block5", "block4", "block3", "block2", "block1")``
        for the shipped ``shapes`` model.

    Raises:
        ValueError: for something that is not a model or an entry.
    """
    return tuple(name for name, _ in _weighted_blocks(unwrap(model)[0]))


def _seed_for(seed: int, path: str, weight: str) -> int:
    return zlib.crc32(f"{int(seed)}/{path}/{weight}".encode()) & 0x7FFFFFFF


def _initializer_for(layer, weight_name: str):
    """The layer's own initializer for one of its weights, or None."""
    names = [f"{weight_name}_initializer"]
    if weight_name.endswith("_kernel"):
        names.append(f"{weight_name[: -len('_kernel')]}_initializer")
    if weight_name == "kernel":
        names.append("depthwise_initializer")
    for name in names:
        initializer = getattr(layer, name, None)
        if initializer is not None:
            return initializer
    return None


def _fresh_values(layer, path: str, variable, seed: int) -> np.ndarray:
    """New values for ``variable`` of ``layer``: its initializer, seeded, else a seeded
    normal with the current values' standard deviation."""
    weight_name = str(variable.name).rsplit("/", 1)[-1]
    shape = tuple(int(s) for s in variable.shape)
    dtype = np.dtype(keras.backend.standardize_dtype(variable.dtype))
    own_seed = _seed_for(seed, path, weight_name)
    initializer = _initializer_for(layer, weight_name)
    if initializer is not None:
        try:
            initializer = keras.initializers.get(initializer)
            config = initializer.get_config()
            if "seed" in config:
                initializer = type(initializer).from_config({**config, "seed": own_seed})
            values = keras.ops.convert_to_numpy(initializer(shape, dtype=str(dtype)))
            return np.asarray(values, dtype=dtype).reshape(shape)
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            pass
    current = np.asarray(variable.numpy(), dtype=np.float64)
    spread = float(current.std()) if current.size else 0.0
    return np.random.default_rng(own_seed).normal(0.0, spread, shape).astype(dtype)


def _clone(keras_model):
    """A clone of a Functional/Sequential model (nested ones included) with the same
    weights, bit for bit; None when the model cannot be cloned (subclassed)."""
    try:
        clone = keras.models.clone_model(keras_model, recursive=True)
    except (ValueError, TypeError, NotImplementedError, AttributeError, KeyError):
        return None
    source = leaf_layers(keras_model, opened=False)
    copy = leaf_layers(clone, opened=False)
    if [path for path, _ in source] != [path for path, _ in copy]:
        return None
    try:
        for (_, original), (_, cloned) in zip(source, copy, strict=True):
            if len(original.weights) != len(cloned.weights):
                return None
            for mine, theirs in zip(cloned.weights, original.weights, strict=True):
                mine.assign(theirs.numpy())
    except (ValueError, TypeError):
        return None
    return clone


def randomized_copy(model, blocks: int, seed: int = 0):
    """A copy of ``model`` with its top ``blocks`` blocks re-initialised; never in place.

    The model is only read: it is cloned (nested models too), its weights copied into the
    clone, and a clone that would share a variable with it is refused. A block's new values
    depend only on ``seed``, its layers' paths and weight names: the same whatever ``blocks``
    is (a cascade). This is what the widget's Randomise slider shows.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        blocks: how many blocks of :func:`blocks`, from the top.
        seed: the seed of the new values.

    Returns:
        ``(copy, names)``: the ``keras.Model`` copy and the names of the re-initialised blocks.

    Raises:
        ValueError: when the model cannot be copied (a subclassed model, a layer without a
            config, a clone sharing weights with it), saying the model is left as it is.
    """
    keras_model = unwrap(model)[0]
    clone = _clone(keras_model)
    originals = {id(variable) for variable in keras_model.weights}
    if clone is None or any(id(variable) in originals for variable in clone.weights):
        raise ValueError(
            "cannot randomise a copy of this model (a subclassed model, or one whose layers "
            "cannot be cloned); the model itself is never changed"
        )
    chosen = _weighted_blocks(clone)[:blocks]
    for _, members in chosen:
        for path, layer in members:
            for variable in layer.weights:
                variable.assign(_fresh_values(layer, path, variable, seed))
    return clone, tuple(name for name, _ in chosen)


def _rewrap(given, keras_model):
    """``given`` with its keras model replaced: the model itself for a bare ``keras.Model``,
    a copy of a dataclass entry, else a plain entry with the same preprocess and names."""
    if isinstance(given, keras.Model):
        return keras_model
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        try:
            return dataclasses.replace(given, model=keras_model)
        except (TypeError, ValueError):
            pass
    _, preprocess, class_names, multi_label = unwrap(given)
    return _Entry(keras_model, preprocess, class_names, multi_label)


@dataclass(frozen=True, eq=False)
class _Entry:
    model: object
    preprocess: object
    class_names: object
    multi_label: bool


class Randomizer:
    """A randomisable copy of a model: re-initialise any set of its blocks, put them back.

    Build it once, then move between states without rebuilding anything (the clone and its
    compiled passes are reused; only weight values are assigned). Use it as a context
    manager, or call :meth:`close`: a model randomised in place (one that cannot be cloned)
    gets its weights back only then.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        seed: seeds every re-initialisation (per layer and weight: a block gets the same
            random values whichever other blocks are random).

    Attributes:
        model: what to explain: the clone (wrapped like ``model``: an entry stays an entry),
            or ``model`` itself when randomised in place.
        blocks: block names, top first (:func:`blocks`).
        in_place: True when the model could not be cloned and is randomised in place.
        randomized: indices into :attr:`blocks` that are random now.

    Raises:
        ValueError: for something that is not a model or an entry, or a negative seed.
    """

    def __init__(self, model, seed: int = 0):
        keras_model = unwrap(model)[0]
        self.seed = core.check_int("seed", seed, minimum=0)
        clone = _clone(keras_model)
        self.in_place = clone is None
        self._target = keras_model if clone is None else clone
        self.model = model if clone is None else _rewrap(model, clone)
        self._blocks = _weighted_blocks(self._target)
        self.blocks = tuple(name for name, _ in self._blocks)
        self._saved: dict[int, list] = {}  # block index -> [(variable, original values)]

    @property
    def randomized(self) -> tuple[int, ...]:
        return tuple(sorted(self._saved))

    def set(self, indices: Iterable[int]) -> None:
        """Make exactly the blocks ``indices`` random (the others trained).

        Raises:
            ValueError: for an index outside ``0 .. len(blocks) - 1``.
            RuntimeError: after :meth:`close`.
        """
        if self._target is None:
            raise RuntimeError("this Randomizer is closed")
        wanted = set()
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise ValueError(f"block indices must be integers; got {index!r}")
            if not 0 <= index < len(self._blocks):
                raise ValueError(f"block index must be in 0..{len(self._blocks) - 1}; got {index}")
            wanted.add(int(index))
        for index in sorted(set(self._saved) - wanted):
            self._restore(index)
        for index in sorted(wanted - set(self._saved)):
            self._randomize(index)

    def top(self, count: int) -> None:
        """Cascade state: the top ``count`` blocks random, the rest trained.

        Raises:
            ValueError: for a count outside ``0 .. len(blocks)``.
        """
        count = core.check_int("count", count, minimum=0)
        if count > len(self._blocks):
            raise ValueError(f"count must be in 0..{len(self._blocks)}; got {count}")
        self.set(range(count))

    def _randomize(self, index: int) -> None:
        saved = self._saved.setdefault(index, [])  # recorded before the first assignment
        for path, layer in self._blocks[index][1]:
            for variable in layer.weights:
                fresh = _fresh_values(layer, path, variable, self.seed)
                saved.append((variable, np.array(variable.numpy(), copy=True)))
                variable.assign(fresh)

    def _restore(self, index: int) -> None:
        saved = self._saved[index]
        while saved:
            variable, values = saved.pop()
            variable.assign(values)
        del self._saved[index]

    def close(self) -> None:
        """Put every block back and let go of the clone (idempotent)."""
        if self._target is None:
            return
        try:
            for index in sorted(self._saved, reverse=True):
                self._restore(index)
        finally:
            self._target = None
            self.model = None
            self._blocks = []

    def __enter__(self) -> Randomizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def randomized(model, blocks: int = 1, seed: int = 0):
    """A copy of ``model`` with its top ``blocks`` blocks re-initialised (a cascade state).

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        blocks: how many blocks, from the top, to re-initialise (``0``: ``model`` itself).
        seed: seeds the re-initialisation (same seed, same random weights).

    Yields:
        The randomised clone, wrapped like ``model`` (an entry stays an entry); a model that
        cannot be cloned is randomised in place and restored, bit for bit, on exit (also when
        the block raises).

    Raises:
        ValueError: for a bad model or a ``blocks`` outside ``0 .. len(blocks(model))``.
    """
    count = core.check_int("blocks", blocks, minimum=0)
    if count == 0:
        unwrap(model)
        yield model
        return
    with Randomizer(model, seed) as randomizer:
        randomizer.top(count)
        yield randomizer.model


# ---------------------------------------------------------------------------------------
# Maps


def _method_list(method) -> tuple[tuple[str, ...], bool]:
    """``(names, single)`` from one name or a sequence of them."""
    single = isinstance(method, str)
    names = (method,) if single else tuple(method)
    if not names:
        raise ValueError("method must name at least one method")
    valid = method_names()
    for name in names:
        core.check_option("method", name, valid)
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat; got {names}")
    return names, single


def _route_options(names: Sequence[str], options: dict) -> dict[str, dict]:
    """The options each method takes from ``options``.

    Raises:
        ValueError: for an option none of the methods takes.
    """
    routed: dict[str, dict] = {}
    taken: set[str] = set()
    for name in names:
        if name in methods.names():
            accepts = set(_CAM_SHARED) | set(methods.get(name).parameters)
        elif name == "smoothgrad":
            accepts = {"smooth", "sigma"}
        elif name == "guided_gradcam":
            accepts = set(_CAM_SHARED)
        else:
            accepts = set()
        routed[name] = {key: value for key, value in options.items() if key in accepts}
        taken |= accepts
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} are taken by none of the methods {list(names)}"
        )
    return routed


def _maps(cap, method: str, layer: str, options: dict, seed: int) -> tuple:
    """``(absolute (H, W), signed (H, W))`` float32 maps of ``method`` for one capture."""
    if method in methods.names():
        result = cap.cam(layer, method=method, **options)
        signed = core.resize(result.raw, cap.input_size, result.interpolation)
        return result.heatmap, signed
    if method == "smoothgrad":
        copies = options.get("smooth", SMOOTHGRAD_COPIES)
        gradients = cap.saliency(
            "vanilla", smooth=copies, sigma=options.get("sigma", 0.15), seed=seed
        )
    elif method == "guided_gradcam":
        gradients = cap.guided_grad_cam(layer, **options)
    else:
        gradients = cap.saliency(method)
    gradients = np.asarray(gradients, dtype=np.float32)
    return np.abs(gradients).max(axis=-1), gradients.sum(axis=-1)


def _image_list(images) -> list:
    """One image or several, as a list of what :func:`gradcam_widget.capture` reads."""
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images must hold at least one image")
        return list(images)
    return [images]


def _class_list(class_indices, count: int) -> list:
    if class_indices is None:
        return [None] * count
    if isinstance(class_indices, (int, np.integer)) and not isinstance(class_indices, bool):
        return [int(class_indices)] * count
    values = list(class_indices)
    if len(values) != count:
        raise ValueError(
            f"class_indices must hold one index per image ({count}); got {len(values)}"
        )
    return [None if value is None else int(value) for value in values]


@dataclass(frozen=True)
class _Job:
    """What every capture of one check computes."""

    names: tuple[str, ...]
    routed: dict  # method -> its options
    score: str
    seed: int


@dataclass
class _Explained:
    """Maps of every method for a list of images from one model state, and their metrics
    against a reference state when one was given."""

    class_indices: list
    maps: dict  # method -> [(abs, signed) or None when not kept, ...]
    layer: str | None = None
    notes: list = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # method -> {metric: (N,)}
    flat: dict = field(default_factory=dict)  # method -> (N,) bool


def _explain(
    job, model, images, classes, layer, *, quiet=False, reference=None, keep=True, reuse=None
):
    """One capture per image (down to the CAM layer only) and every method's maps.

    Args:
        reference: an :class:`_Explained` (maps kept) to compare each map with as soon as it
            is made; then ``scores`` and ``flat`` are filled.
        keep: keep the maps (else ``None`` in their place: only the metrics stay).
        reuse: an :class:`_Explained` of the same model (maps kept) whose maps are taken as
            they are for the images where it explained the same class.
        quiet: collect the captures' warnings in ``notes`` instead of issuing them.
    """
    names, routed = job.names, job.routed
    count = len(images)
    explained = _Explained([], {name: [] for name in names})
    if reference is not None:
        explained.scores = {name: {m: np.full(count, np.nan) for m in METRICS} for name in names}
        explained.flat = {name: np.zeros(count, dtype=bool) for name in names}
    needs_layer = any(name not in ("guided", "vanilla", "smoothgrad") for name in names)
    wanted = [layer] if needs_layer else []  # [None]: the default layer only
    for index, (image, class_index) in enumerate(zip(images, classes, strict=True)):
        if reuse is not None and class_index == reuse.class_indices[index]:
            pairs = {name: reuse.maps[name][index] for name in names}
            explained.class_indices.append(class_index)
            explained.layer = reuse.layer
        else:
            with warnings.catch_warnings(record=quiet) as caught:
                cap = capture(model, image, class_index=class_index, score=job.score, layers=wanted)
                path = cap.resolve(layer)
                pairs = {name: _maps(cap, name, path, routed[name], job.seed) for name in names}
            for note in caught or ():
                if str(note.message) not in explained.notes:
                    explained.notes.append(str(note.message))
            explained.class_indices.append(cap.class_index)
            explained.layer = path
            del cap  # a capture keeps its model alive
        for name, pair in pairs.items():
            if reference is not None:
                for metric, value in compare(reference.maps[name][index], pair).items():
                    explained.scores[name][metric][index] = value
                explained.flat[name][index] = float(np.ptp(pair[0])) == 0.0
            explained.maps[name].append(pair if keep else None)
    return explained


def _stack(arrays: list):
    shapes = {np.shape(array) for array in arrays}
    if len(shapes) == 1:
        return np.stack(arrays).astype(np.float32)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def _step_maps(runs: list, name: str, which: int):
    """``(S, N, H, W)`` maps of ``name`` (``which``: 0 absolute, 1 signed) over ``runs``."""
    return _stack([_stack([pair[which] for pair in run.maps[name]]) for run in runs])


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    """``(mean, standard deviation, count)`` over the defined (non-NaN) values."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return float("nan"), float("nan"), 0
    return float(defined.mean()), float(defined.std()), int(defined.size)


def _format(mean: float, std: float) -> str:
    return "–" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


# ---------------------------------------------------------------------------------------
# Model randomisation


@dataclass(frozen=True, eq=False)
class SanityResult:
    """The model-randomisation check of one method.

    ``S`` steps (step 0 is the original model), ``N`` images, maps ``(H, W)``.

    Attributes:
        method: the method checked.
        layer: the CAM layer (the default layer when none was given).
        cascade: True for the cascade (after step ``k`` the top ``k`` blocks are random),
            False for one block at a time (step ``k`` randomises block ``k`` only).
        steps: ``("original", block 1, block 2, ...)``: the block randomised at each step.
        class_indices: ``(N,)`` the class explained per image (the original prediction
            unless given), the same at every step.
        scores: ``{metric: (S, N) float64}`` for each of :data:`METRICS`, against the
            original map of the same image (step 0 compares the original with itself).
        flat: ``(S, N)`` bool: the absolute map is constant (its rank and HOG correlations
            are NaN).
        maps: ``(S, N, H, W)`` float32 absolute maps (see the module doc), or None when not
            kept.
        signed_maps: ``(S, N, H, W)`` float32 signed maps, or None.
        seed: the randomisation seed.
        options: the method's options.
        in_place: True when the model was randomised in place (it could not be cloned).
        notes: warnings the randomised models' captures raised (each once).
    """

    method: str
    layer: str | None
    cascade: bool
    steps: tuple[str, ...]
    class_indices: np.ndarray
    scores: dict
    flat: np.ndarray
    maps: np.ndarray | None
    signed_maps: np.ndarray | None
    seed: int
    options: dict
    in_place: bool = False
    notes: tuple[str, ...] = ()

    def table(self) -> list[dict]:
        """Per step: ``{"step", "flat", metric: mean, metric + "_std": std, metric + "_n":
        images with a defined value}`` over the images."""
        rows = []
        for step, name in enumerate(self.steps):
            row = {"step": name, "flat": int(self.flat[step].sum())}
            for metric in METRICS:
                mean, std, count = _summary(self.scores[metric][step])
                row |= {metric: mean, f"{metric}_std": std, f"{metric}_n": count}
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """:meth:`table` as a markdown table (mean ± standard deviation over images)."""
        mode = "cascade" if self.cascade else "one block at a time"
        lines = [
            f"| step ({mode}) | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " | flat |",
            "|---|" + "---:|" * (len(METRICS) + 1),
        ]
        for row in self.table():
            cells = [_format(row[m], row[f"{m}_std"]) for m in METRICS]
            lines.append(f"| {row['step']} | " + " | ".join(cells) + f" | {row['flat']} |")
        return "\n".join(lines)


def model_randomization(
    model,
    images,
    method="gradcam",
    layer: str | None = None,
    cascade: bool = True,
    seed: int = 0,
    class_indices=None,
    score: str = "logit",
    keep_maps: bool = True,
    **options,
):
    """Model-parameter randomisation test: re-initialise the model block by block from the top
    and compare each step's maps with the original model's.

    The model itself is never changed (see the module doc): a clone is randomised, or, for a
    model that cannot be cloned, the model in place with its weights restored bit for bit on
    return, also on error. The clone is freed on return.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        images: one image or a list/``(N, H, W, 3)`` array of images, anything
            :func:`gradcam_widget.capture` reads.
        method: a name from :func:`method_names`, or a sequence of them (all from the same
            captures: one capture per image and step, one input-gradient pass per kind).
        layer: the CAM layer (``None``: the capture's default layer); also Guided Grad-CAM's.
        cascade: True (default): step ``k`` has the top ``k`` blocks random; False: step
            ``k`` has block ``k`` random and every other block trained.
        seed: seeds the re-initialisation and SmoothGrad's noise.
        class_indices: the class to explain per image (an int for all, or one per image);
            default the original model's top class. The randomised models explain the same
            class.
        score: ``"logit"`` (default) or ``"probability"``, as :func:`gradcam_widget.capture`.
        keep_maps: keep every step's maps in the result (``(S, N, H, W)`` twice, float32).
        **options: the methods' options: CAM options (``pooling``, ``order``, Score-CAM's
            ``max_channels`` ...) for the CAM methods and Guided Grad-CAM, ``smooth`` (copies,
            default :data:`SMOOTHGRAD_COPIES`) and ``sigma`` for ``"smoothgrad"``.

    Returns:
        A :class:`SanityResult` for one method; ``{method: SanityResult}`` for a sequence.

    Raises:
        ValueError: for a bad model, image, method, option, layer or class index, or a
            guided method on a network with other activations than ReLU.
    """
    names, single = _method_list(method)
    routed = _route_options(names, options)
    batch = _image_list(images)
    classes = _class_list(class_indices, len(batch))
    seed = core.check_int("seed", seed, minimum=0)
    job = _Job(names, routed, score, seed)
    # the original maps (kept: every step is compared with them), then step 0: the same maps
    # compared with themselves (no new pass)
    reference = _explain(job, model, batch, classes, layer)
    original = _explain(
        job,
        model,
        batch,
        reference.class_indices,
        reference.layer,
        reference=reference,
        keep=keep_maps,
        reuse=reference,
    )
    runs = [original]
    with Randomizer(model, seed) as randomizer:
        steps = randomizer.blocks
        for step in range(len(steps)):
            randomizer.set(range(step + 1) if cascade else [step])
            runs.append(
                _explain(
                    job,
                    randomizer.model,
                    batch,
                    original.class_indices,
                    original.layer,
                    quiet=True,
                    reference=reference,
                    keep=keep_maps,
                )
            )
        in_place = randomizer.in_place
    notes = tuple(dict.fromkeys(note for run in runs[1:] for note in run.notes))
    results = {}
    for name in names:
        results[name] = SanityResult(
            method=name,
            layer=original.layer,
            cascade=bool(cascade),
            steps=("original", *steps),
            class_indices=np.array(original.class_indices),
            scores={
                metric: np.stack([run.scores[name][metric] for run in runs]) for metric in METRICS
            },
            flat=np.stack([run.flat[name] for run in runs]),
            maps=_step_maps(runs, name, 0) if keep_maps else None,
            signed_maps=_step_maps(runs, name, 1) if keep_maps else None,
            seed=seed,
            options=dict(routed[name]),
            in_place=in_place,
            notes=notes,
        )
    return results[names[0]] if single else results


# ---------------------------------------------------------------------------------------
# Data randomisation


@dataclass(frozen=True, eq=False)
class DataRandomizationResult:
    """The data-randomisation check of one method: a model against the same network trained
    on permuted labels, image by image.

    Attributes:
        method, layer, options: as :class:`SanityResult`.
        class_indices: ``(N,)`` the model's own top class per image.
        randomized_class_indices: ``(N,)`` the permuted-label model's own top class.
        scores: ``{metric: (N,)}``: each model's map of its own top class, compared.
        labels: ``(N,)`` the true labels when given, else None.
        label_scores: ``{metric: (N,)}``: both models' maps of the true label, compared;
            None without labels.
        flat: ``(N,)`` bool: the permuted-label model's own-class map is constant.
        maps: ``(2, N, H, W)`` absolute maps of the own top classes (model, permuted-label
            model), or None when not kept.
        label_maps: ``(2, N, H, W)`` absolute maps of the true labels, or None.
    """

    method: str
    layer: str | None
    class_indices: np.ndarray
    randomized_class_indices: np.ndarray
    scores: dict
    labels: np.ndarray | None
    label_scores: dict | None
    flat: np.ndarray
    maps: np.ndarray | None
    label_maps: np.ndarray | None
    options: dict

    def table(self) -> list[dict]:
        """Rows ``"own top class"`` (and ``"true label"`` with labels): ``{"compared",
        metric: mean, metric + "_std": std, metric + "_n": count}``."""
        rows = []
        for title, scores in (("own top class", self.scores), ("true label", self.label_scores)):
            if scores is None:
                continue
            row = {"compared": title}
            for metric in METRICS:
                mean, std, count = _summary(scores[metric])
                row |= {metric: mean, f"{metric}_std": std, f"{metric}_n": count}
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """:meth:`table` as a markdown table (mean ± standard deviation over images)."""
        lines = [
            "| maps of | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
            "|---|" + "---:|" * len(METRICS),
        ]
        for row in self.table():
            cells = [_format(row[m], row[f"{m}_std"]) for m in METRICS]
            lines.append(f"| {row['compared']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _loaded(model):
    if isinstance(model, str):
        from gradcam_widget.data import models

        return models.load(model)
    return model


def data_randomization(
    images,
    method="gradcam",
    labels=None,
    layer: str | None = None,
    model="shapes",
    randomized_model="shapes_permuted",
    score: str = "logit",
    seed: int = 0,
    keep_maps: bool = True,
    **options,
):
    """Data randomisation test: the maps of a model against those of the same network trained
    on permuted labels (by default the shipped ``"shapes"`` and ``"shapes_permuted"``).

    Each model explains its own top class; with ``labels``, both also explain the true label.

    Args:
        images: one image or several, as :func:`model_randomization`.
        method: a name from :func:`method_names`, or a sequence of them.
        labels: the true class per image (an int for all, or one per image), or None.
        layer: the CAM layer of both models (``None``: each capture's default layer).
        model, randomized_model: names for :func:`gradcam_widget.models.load`, or models /
            entries of the same input size.
        score: ``"logit"`` (default) or ``"probability"``.
        seed: SmoothGrad's noise seed.
        keep_maps: keep the maps in the result.
        **options: the methods' options, as :func:`model_randomization`.

    Returns:
        A :class:`DataRandomizationResult` for one method; ``{method: result}`` for a
        sequence.

    Raises:
        ValueError: for a bad image, method, option, layer or label.
        FileNotFoundError: when a shipped model named here is missing from the installation.
    """
    names, single = _method_list(method)
    routed = _route_options(names, options)
    batch = _image_list(images)
    seed = core.check_int("seed", seed, minimum=0)
    label_list = None if labels is None else _class_list(labels, len(batch))
    job = _Job(names, routed, score, seed)
    first, second = _loaded(model), _loaded(randomized_model)
    runs: dict[str, list] = {"own": [], "other": [], "truth": [], "other_truth": []}
    for index, image in enumerate(batch):  # image by image: only the kept maps stay in memory
        own = _explain(job, first, [image], [None], layer)
        runs["own"].append(own)
        runs["other"].append(
            _explain(
                job, second, [image], [None], own.layer, quiet=True, reference=own, keep=keep_maps
            )
        )
        if label_list is not None:
            truth = _explain(
                job, first, [image], label_list[index : index + 1], own.layer, reuse=own
            )
            runs["truth"].append(truth)
            runs["other_truth"].append(
                _explain(
                    job,
                    second,
                    [image],
                    label_list[index : index + 1],
                    own.layer,
                    quiet=True,
                    reference=truth,
                    keep=keep_maps,
                )
            )
            if not keep_maps:
                truth.maps = {name: [None] for name in names}
        if not keep_maps:
            own.maps = {name: [None] for name in names}

    def joined(key: str, name: str) -> dict:
        return {m: np.concatenate([r.scores[name][m] for r in runs[key]]) for m in METRICS}

    def maps_of(first_key: str, second_key: str, name: str):
        if not keep_maps:
            return None
        pairs = [
            [run.maps[name][0] for run in runs[key]] for key in (first_key, second_key)
        ]  # 2 x N (abs, signed)
        return _stack([_stack([pair[0] for pair in row]) for row in pairs])

    def classes_of(key: str) -> np.ndarray:
        return np.array([run.class_indices[0] for run in runs[key]])

    results = {}
    for name in names:
        results[name] = DataRandomizationResult(
            method=name,
            layer=runs["own"][0].layer,
            class_indices=classes_of("own"),
            randomized_class_indices=classes_of("other"),
            scores=joined("other", name),
            labels=None if label_list is None else classes_of("truth"),
            label_scores=None if label_list is None else joined("other_truth", name),
            flat=np.concatenate([run.flat[name] for run in runs["other"]]),
            maps=maps_of("own", "other", name),
            label_maps=None if label_list is None else maps_of("truth", "other_truth", name),
            options=dict(routed[name]),
        )
    return results[names[0]] if single else results

"""Model surgery for the sanity checks: a model's blocks of weighted layers (:func:`blocks`),
re-initialised on a copy (:func:`randomized_copy`, :func:`randomized`, :class:`Randomizer`).

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Iterable

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.engine import ModelRef, keras, unwrap
from gradcam_widget.engine.tapping import leaf_layers

__all__ = ["Randomizer", "block_key", "blocks", "randomized", "randomized_copy"]


def block_key(path: str) -> str:
    """The block a weighted layer belongs to, from its path: the part of its name before the
    first ``"_"``, with a number right after it kept, under its nested model's path
    (``"base/block5_conv3"`` -> ``"base/block5"``, ``"block_16_project"`` -> ``"block_16"``)."""
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
        key = block_key(path)
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


def fresh_values(layer, path: str, variable, seed: int) -> np.ndarray:
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
                variable.assign(fresh_values(layer, path, variable, seed))
    return clone, tuple(name for name, _ in chosen)


def _rewrap(given, keras_model):
    """``given`` with its keras model replaced: the model itself for a bare ``keras.Model``,
    a copy of a dataclass entry, else a :class:`~gradcam_widget.engine.ModelRef` with the same
    preprocess, class names and multi-label flag."""
    if isinstance(given, keras.Model):
        return keras_model
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        try:
            return dataclasses.replace(given, model=keras_model)
        except (TypeError, ValueError):
            pass
    return ModelRef(keras_model, *unwrap(given)[1:])


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
        """Indices into :attr:`blocks` that are random now, ascending."""
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
                fresh = fresh_values(layer, path, variable, self.seed)
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

"""What explains an audit's shards, here or on a Ray actor: the audit's :class:`Options`,
the :class:`ShardWorker` that explains one shard after another with a compiled engine, and the
model's identity (:func:`model_identity`, :func:`model_head`) that tells one audit's model
from another's.

Both runners use it: :func:`gradcam_widget.auditing.run.audit` (here) and
:mod:`gradcam_widget.auditing.ray` (on Ray Data actors); neither imports the other for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcam_widget.auditing import sources
from gradcam_widget.auditing.measures import (
    THUMBNAIL_SIDE,
    map_statistics,
    mask_statistics,
    thumbnail,
)
from gradcam_widget.auditing.store_layout import ShardResult
from gradcam_widget.cam import core
from gradcam_widget.data import images

DEFAULT_SHARD_SIZE = 256
"""Images per shard: the unit of work that is committed, and redone after a kill."""

DEFAULT_IMAGE_SIZE = (224, 224)
"""The size images are fitted to when the model takes any size (all maps of an audit share
one grid)."""

UNBYPASSED = "could not be bypassed"
"""A capture's note when the logit was out of reach (the scores are then probabilities)."""


def model_identity(model) -> dict:
    """``{"name", "hash"}``: the model's name and a hash of its architecture and weights."""
    from gradcam_widget.engine import unwrap

    keras_model, _, _, _ = unwrap(model)
    digest = hashlib.sha256()
    for weight in keras_model.weights:
        array = np.asarray(weight.numpy())
        digest.update(f"{weight.path}{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    name = getattr(model, "name", None) if hasattr(model, "model") else keras_model.name
    return {"name": str(name), "hash": digest.hexdigest()[:24]}


def model_head(model) -> dict:
    """``{"class_names", "multi_label", "preprocess"}``: what besides its weights decides the
    rows a model gives (labels, probabilities, its input); a bare ``keras.Model`` (a ``.keras``
    file) has ``None``, ``False``, ``None``."""
    from gradcam_widget.engine import unwrap

    _, preprocess, class_names, multi_label = unwrap(model)
    return {
        "class_names": None if class_names is None else [str(name) for name in class_names],
        "multi_label": bool(multi_label),
        "preprocess": callable_name(preprocess),
    }


@dataclass(frozen=True, eq=False)
class HeadedModel:
    """A ``keras.Model`` with a head: its preprocess, class names and kind of head, read by
    ``engine.unwrap`` as an entry. A resumed audit gives a bare ``keras.Model`` the head of the
    audit whose weights it has; the Ray runner sends an in-memory entry's head with
    ``model=None`` and puts the model back in on the actor."""

    name: str
    model: object
    preprocess: Callable | None = None
    class_names: tuple | None = None
    multi_label: bool = False


@dataclass(frozen=True)
class Options:
    """What decides an audit's results (besides the model and the source)."""

    layer: str | None = None
    method: str = "gradcam"
    targets: str | int = "predicted"
    score: str = "logit"
    shard_size: int = DEFAULT_SHARD_SIZE
    image_size: tuple[int, int] | None = None
    cam_options: tuple = ()
    preprocess: str | None = None

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "method": self.method,
            "targets": self.targets,
            "score": self.score,
            "shard_size": self.shard_size,
            "image_size": None if self.image_size is None else list(self.image_size),
            "cam_options": dict(self.cam_options),
            "preprocess": self.preprocess,
            "thumbnail_side": THUMBNAIL_SIDE,
        }


class ShardWorker:
    """Explains shards of a source: model, options and compiled engine kept between shards.

    Args:
        model: a ``keras.Model`` or :class:`~gradcam_widget.models.ModelEntry`.
        options: the :class:`Options`.
        batch_size: images per compiled pass.
        preprocess: as :func:`gradcam_widget.explain`.
    """

    def __init__(self, model, options: Options, batch_size: int = 32, preprocess=None):
        from gradcam_widget.engine import unwrap

        self.model, self.options = model, options
        self.batch_size, self.preprocess = batch_size, preprocess
        _, _, class_names, multi_label = unwrap(model)
        self.class_names = None if class_names is None else tuple(class_names)
        self.multi_label = multi_label
        self.size = input_size(model, options)

    def label(self, class_index: int) -> str:
        if self.class_names and 0 <= class_index < len(self.class_names):
            return self.class_names[class_index]
        return str(class_index)

    def _squash(self, width: int, notes) -> str | None:
        if self.options.score == "probability" or any(UNBYPASSED in n for n in notes):
            return None
        return "sigmoid" if self.multi_label or width == 1 else "softmax"

    def _targets(self, items: list[sources.Item]):
        chosen = self.options.targets
        if chosen == "predicted":
            return None
        if chosen == "true":
            return [item.true_class for item in items]
        return chosen

    def __call__(self, shard: int, items: list[sources.Item]) -> ShardResult:
        """Explain the readable items of one shard; list the others as skipped."""
        from gradcam_widget.captures.explanations import iter_explain

        skipped, good = [], []
        for item in items:
            error = item.error
            if error is None and self.options.targets == "true" and item.true_class is None:
                error = "no true class (targets='true')"
            if error is None and not np.isfinite(item.image).all():
                error = "the image contains NaN or infinite values"
            if error is None:
                good.append(item)
            else:
                skipped.append({"index": item.index, "id": item.id, "error": error})
        if not good:
            return ShardResult(shard, [], np.zeros((0, 0, 0), np.float16), [], skipped)
        height, width = self.size
        fitted = np.stack([
            item.image if item.image.shape[:2] == (height, width)
            else images.fit(item.image, height, width)
            for item in good
        ])  # fmt: skip
        rows, raws, thumbs, layer = [], [], [], None
        stream = iter_explain(
            self.model,
            fitted,
            targets=self._targets(good),
            layer=self.options.layer,
            method=self.options.method,
            batch_size=self.batch_size,
            score=self.options.score,
            preprocess=self.preprocess,
            **dict(self.options.cam_options),
        )
        for explanations in stream:
            layer = explanations.layer
            squash = self._squash(explanations.scores.shape[-1], explanations.warnings)
            probabilities = core.probabilities(explanations.scores, squash)
            for offset, result in enumerate(explanations):
                position = explanations.start + offset
                item = good[position]
                shown = images.shown_image(fitted[position])
                rows.append(self._row(item, result, probabilities[offset]))
                raws.append(result.raw)
                thumbs.append(thumbnail(shown, result.heatmap))
        return ShardResult(shard, rows, np.stack(raws).astype(np.float16), thumbs,
                                 skipped, layer)  # fmt: skip

    def _row(self, item: sources.Item, result, probabilities: np.ndarray) -> dict:
        predicted = int(np.argmax(probabilities))
        explained = int(result.class_index)
        present = None
        if item.true_class is not None:
            present = {item.true_class}
        elif item.masks:
            present = set(item.masks)
        row = {
            "index": item.index,
            "id": item.id,
            "true_class": item.true_class,
            "true_label": item.true_label,
            "predicted_class": predicted,
            "predicted_label": self.label(predicted),
            "predicted_score": float(probabilities[predicted]),
            "explained_class": explained,
            "explained_label": self.label(explained),
            "explained_score": float(probabilities[explained]),
            "correct": None if present is None else predicted in present,
            "pointing_hit": None,
            "object_share": float("nan"),
            "tagged": item.tagged,
            "file_fingerprint": item.file_fingerprint,
        }
        row |= map_statistics(result.heatmap, result.raw)
        if item.masks and explained in item.masks:
            row |= mask_statistics(result.heatmap, item.masks[explained])
        return row


def callable_name(function) -> str | None:
    """A stable name for a model's own preprocess: a function's ``module.qualname``, an
    object's own ``repr`` (``keras.applications.vgg16.preprocess_input``), else its type's."""
    if function is None:
        return None
    if hasattr(function, "__qualname__"):
        return f"{getattr(function, '__module__', None)}.{function.__qualname__}"
    kind = type(function)
    if kind.__repr__ is not object.__repr__:
        return repr(function)
    return f"{kind.__module__}.{kind.__qualname__}"


def input_size(model, options: Options) -> tuple[int, int]:
    from gradcam_widget.engine import model_input_size, unwrap

    height, width, _ = model_input_size(unwrap(model)[0])
    fixed = options.image_size or DEFAULT_IMAGE_SIZE
    return height or fixed[0], width or fixed[1]

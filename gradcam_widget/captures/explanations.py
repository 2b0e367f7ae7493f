"""Many images: :func:`explain` and :func:`iter_explain`, one compiled pass per batch.

Images are read one batch at a time, each fitted to the model input as :func:`gw.capture`
fits one, and run through the same engine, the same target and the same methods: image ``i``
of a batch gets exactly the map a capture of it alone would give. Only the tensors of the
requested layer are kept, and only for the batch being explained.

:func:`iter_explain` yields one :class:`Explanations` per batch, so that memory does not grow
with the number of images; :func:`explain` joins them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gradcam_widget import options as recipe
from gradcam_widget.cam import core, methods
from gradcam_widget.captures.gate import check_request, checked_pass
from gradcam_widget.captures.notes import gradient_notes, score_warnings
from gradcam_widget.captures.record import SALIENCY_KINDS, capture_of
from gradcam_widget.captures.signatures import same_parameters
from gradcam_widget.data import images
from gradcam_widget.engine import inputs, model_errors

__all__ = ["Explanations", "explain", "iter_explain"]


@dataclass(frozen=True, eq=False)
class Explanations:
    """The maps of several images for one layer and one method.

    Attributes:
        results: one :class:`~gradcam_widget.core.CamResult` per image.
        class_indices: ``(N,)`` int, the class explained per image (``-1`` where the target
            explains no class).
        scores: ``(N, K)`` float32 scores of the output explained (logits or probabilities).
        values: ``(N,)`` float32, each image's target value (what was differentiated).
        layer: the layer's path.
        target_label: the target's label (``"class 3"``, ``"a class per image"`` ...).
        start: the index of the first image in the whole stream (for :func:`iter_explain`).
        warnings: one line per thing the caller should know (how images were read, how the
            score was taken), each once.
        saliency: ``(N, H, W, C)`` input gradients when ``saliency=`` was asked for (Guided
            Backpropagation or the vanilla gradient), else ``None``. Guided Grad-CAM is
            ``ex.saliency * ex.heatmaps[..., None]``.
    """

    results: tuple[core.CamResult, ...]
    class_indices: np.ndarray
    scores: np.ndarray
    values: np.ndarray
    layer: str
    target_label: str
    start: int = 0
    warnings: tuple[str, ...] = ()
    saliency: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[core.CamResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> core.CamResult:
        """The :class:`~gradcam_widget.core.CamResult` of image ``index``."""
        return self.results[index]

    def _stacked(self, name: str) -> np.ndarray:
        arrays = [getattr(result, name) for result in self.results]
        if not arrays:
            return np.zeros((0, 0, 0), np.float32)
        shapes = {array.shape for array in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"the images were explained at different sizes ({sorted(shapes)}), so their "
                f"{name} maps cannot be stacked: read ex[i].{name} one by one"
            )
        return np.stack(arrays)

    @property
    def heatmaps(self) -> np.ndarray:
        """``(N, H, W)`` float32 in ``[0, 1]`` at the model's input size."""
        return self._stacked("heatmap")

    @property
    def raw(self) -> np.ndarray:
        """``(N, h, w)`` float32 signed maps on the layer's grid."""
        return self._stacked("raw")

    @property
    def weights(self) -> np.ndarray:
        """``(N, C)`` float32 channel weights."""
        return self._stacked("weights")

    @property
    def nbytes(self) -> int:
        return sum(result.nbytes for result in self.results) + self.scores.nbytes

    @staticmethod
    def join(parts: Sequence[Explanations]) -> Explanations:
        """One :class:`Explanations` from consecutive parts (as :func:`iter_explain` yields)."""
        if not parts:
            raise ValueError("there are no images to explain")
        return Explanations(
            results=tuple(itertools.chain.from_iterable(part.results for part in parts)),
            class_indices=np.concatenate([part.class_indices for part in parts]),
            scores=np.concatenate([part.scores for part in parts]),
            values=np.concatenate([part.values for part in parts]),
            layer=parts[0].layer,
            target_label=parts[0].target_label,
            start=parts[0].start,
            warnings=tuple(dict.fromkeys(w for part in parts for w in part.warnings)),
            saliency=None
            if parts[0].saliency is None
            else np.concatenate([part.saliency for part in parts]),
        )


def _batches(source, batch_size: int, input_size: tuple, labels) -> Iterator[list]:
    """Lists of ``(shown, rgb float32, notes)``, at most ``batch_size`` long, split where the
    image size changes (a model that takes any size keeps each image's size).

    Raises:
        ValueError: for an image that cannot be read, naming it (``labels(index)``:
            :class:`~gradcam_widget.inputs.ImageLabels`).
    """
    height, width, _ = input_size
    batch: list = []
    for index, item in enumerate(inputs.image_stream(source)):
        try:
            rgb, notes = images.read_rgb(item)
            rgb = images.fit(rgb, height, width)
        except ValueError as error:
            raise ValueError(inputs.about_image(error, labels(index))) from error
        if batch and (len(batch) == batch_size or batch[-1][1].shape != rgb.shape):
            yield batch
            batch = []
        batch.append((images.shown_image(rgb), rgb, notes))
    if batch:
        yield batch


def iter_explain(
    model,
    images,
    targets=None,
    layer: str | None = None,
    method: str = "gradcam",
    batch_size: int = 32,
    score: str = "logit",
    preprocess: Callable | None = None,
    saliency: str | None = None,
    **cam_options,
) -> Iterator[Explanations]:
    """Explain ``images`` one batch at a time, yielding one :class:`Explanations` per batch.

    Nothing of a batch is kept once the next one is asked for, so memory does not grow with
    the number of images; :func:`explain` joins the batches. The warnings of a batch are in
    its ``.warnings`` (:func:`explain` issues them).

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        images: an ``(N, H, W, 3)`` array, a list of images of any sizes (each fitted to the
            model input as :func:`gradcam_widget.capture` fits one), or any iterable of
            images (a generator, a ``tf.data.Dataset``), read one batch at a time.
        targets: ``None`` (each image's top class), an int (one class for all), a sequence
            of ints (one class per image), a :mod:`gradcam_widget.targets` target or a
            callable ``outputs -> (N,)``.
        layer: the layer to explain (default: the last conv-like layer).
        method: a name from :func:`gradcam_widget.methods.names`.
        batch_size: images per pass.
        score: ``"logit"`` (default) or ``"probability"``, as :func:`gradcam_widget.capture`.
        preprocess: as :func:`gradcam_widget.capture` (default: the entry's own).
        saliency: ``"guided"`` or ``"vanilla"`` also computes each image's input gradients
            (one more pass per batch) into ``.saliency``.
        **cam_options: as :meth:`gradcam_widget.Capture.cam` (``pooling``, ``order`` ...).

    Yields:
        One :class:`Explanations` per batch (see :func:`explain`).

    Raises:
        ValueError: for bad images, targets, layer, method or options, naming what was
            expected.
    """
    batch_size = core.check_int("batch_size", batch_size)
    if layer is not None and not isinstance(layer, str):
        raise ValueError(
            f"layer must be one layer name (explain makes one map per image); got {layer!r}: "
            "call explain once per layer, or use gw.capture(...).fuse(...) for a fused map"
        )
    methods.get(method).bind(**_method_options(cam_options))  # fails before any pass
    if saliency is not None:
        core.check_option("saliency", saliency, SALIENCY_KINDS)
    request = check_request(model, targets, score, preprocess)
    per_image = request.target.per_image  # how many images a target's own data covers
    engine = request.engine
    start = 0
    labels = inputs.image_labels(images)
    for batch in _batches(images, batch_size, engine.input_size, labels):
        count = len(batch)
        step = request
        if per_image is not None:
            if start + count > per_image:
                raise ValueError(
                    f"targets covers {per_image} images ({request.target.label}) but there are "
                    "more images"
                )
            step = replace(request, target=request.target.subset(start, start + count))
        rgb = np.stack([entry[1] for entry in batch]).astype(np.float32)
        model_inputs = inputs.model_batch(rgb, step.preprocess, engine.input_size, start, labels)
        facts, default, result = checked_pass(step, model_inputs, [layer])
        path = result.layers[0]
        notes = tuple(dict.fromkeys(note for entry in batch for note in entry[2]))
        notes += score_warnings(
            facts, step.target, score, engine.head, result.scores[0], engine.output_names
        )
        reaching = engine.reaching_tokens(model_inputs.shape) if result.tokens else None
        notes += gradient_notes(step.target, score, result, default, reaching)
        results = []
        for index, (shown, _, _) in enumerate(batch):
            cap = capture_of(step, result, index=index, shown=shown, default=default, notes=(),
                              inputs=model_inputs[index : index + 1], complete=False)  # fmt: skip
            results.append(cap.cam(path, method=method, **cam_options))
        gradients = None
        if saliency is not None:  # one more pass per batch, down to the input
            with model_errors(model_inputs.shape, engine.input_size):
                gradients = engine.run(model_inputs, step.target, score, step.multi_label, (),
                                       to_input=saliency).input_gradients  # fmt: skip
        yield Explanations(
            saliency=gradients,
            results=tuple(results),
            class_indices=result.class_indices.astype(np.int64),
            scores=result.scores,
            values=result.values,
            layer=path,
            target_label=request.target.label,
            start=start,
            warnings=notes,
        )
        start += count
    if per_image is not None and start != per_image:
        raise ValueError(
            f"targets covers {per_image} images ({request.target.label}) but there are {start}"
        )


def _method_options(options: dict) -> dict:
    """The options a method binds (``order`` and ``interpolation`` are every method's)."""
    return {key: value for key, value in options.items() if key not in recipe.map_keywords()}


@same_parameters(iter_explain)
def explain(*args, **kwargs) -> Explanations:
    """Explain many images: one compiled forward + backward pass per batch.

    Args: as :func:`iter_explain` (the same parameters).

    Returns:
        An :class:`Explanations`: ``heatmaps (N, H, W)``, ``raw (N, h, w)``,
        ``class_indices (N,)``, ``scores (N, K)``, ``ex[i]`` the map of image ``i``.

    Raises:
        ValueError: for bad images, targets, layer, method or options, naming what was
            expected.

    Warns:
        UserWarning: as :func:`gradcam_widget.capture`, each once.
    """
    joined = Explanations.join(list(iter_explain(*args, **kwargs)))
    for note in joined.warnings:
        warnings.warn(note, UserWarning, stacklevel=3)  # the caller of the signature's check
    return joined

"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): does a map change when what the model learned is taken away?

>>> import gradcam_widget as gw
>>> entry, image = gw.models.load("shapes"), gw.data.sample("two_shapes")
>>> result = gw.sanity.model_randomization(entry, [image], method="gradcam")
>>> result.steps[:3]
('original', 'logits', 'block5')
>>> table = result.to_markdown()     # per step: Spearman (|map| and signed), SSIM, HOG
>>> with gw.sanity.randomized(entry, blocks=2) as clone:   # top 2 blocks re-initialised
...     gw.capture(clone, image).cam().heatmap.shape
(224, 224)

*Model randomisation* re-initialises the model's weighted layers block by block, from the
output down (a *cascade*: after step ``k`` the top ``k`` blocks are random), or one block at a
time with the rest left trained (``cascade=False``), and recomputes the map after each step for
the class the *original* model predicted. A map that stays the same does not depend on what
the model learned. *Data randomisation* compares the maps of a model with those of the same
network trained on permuted labels (the shipped ``"shapes_permuted"``).

Blocks (:func:`blocks`) and how a model is re-initialised without being changed: see
:mod:`.randomize`; the metrics (:func:`compare`): see :mod:`.similarity`.

Maps compared (all at the input size):

- CAM methods (:func:`gradcam_widget.methods.names`): the heatmap as shown (ReLU, resized,
  ``/ max``) is the *absolute* map; the raw signed map resized to the input size (before the
  ReLU) is the *signed* map.
- Input-gradient methods: ``"guided"`` (Guided Backpropagation), ``"vanilla"`` (the
  gradient), ``"smoothgrad"`` (vanilla gradient averaged over ``smooth`` noisy copies),
  ``"guided_gradcam"``: the ``(H, W, C)`` gradient's largest absolute value over the channels
  is the *absolute* map, its sum over the channels the *signed* map.

"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.captures.capturing import capture
from gradcam_widget.checks.randomize import Randomizer, blocks, randomized, randomized_copy
from gradcam_widget.checks.routing import (
    GRADIENT_METHODS,
    SMOOTHGRAD_COPIES,
    maps,
    method_list,
    method_names,
    route_options,
)
from gradcam_widget.checks.similarity import (
    METRICS,
    compare,
    hog_features,
    hog_similarity,
    rank,
    spearman,
    ssim,
)
from gradcam_widget.data import models

__all__ = [
    "DataRandomizationResult",
    "GRADIENT_METHODS",
    "METRICS",
    "Randomizer",
    "SanityResult",
    "blocks",
    "compare",
    "data_randomization",
    "SMOOTHGRAD_COPIES",
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

METRIC_LABELS = {
    "spearman_abs": "Spearman |map|",
    "spearman_signed": "Spearman signed",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}

# ---------------------------------------------------------------------------------------
# Maps


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
                pairs = {name: maps(cap, name, path, routed[name], job.seed) for name in names}
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
    names, single = method_list(method)
    routed = route_options(names, options)
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
    names, single = method_list(method)
    routed = route_options(names, options)
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

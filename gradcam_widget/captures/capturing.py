"""One image, every layer: :func:`capture` and the :class:`Capture` it returns (defined in
:mod:`.record`), and the one-call wrappers over them: :func:`grad_cam`, :func:`saliency`,
:func:`guided_grad_cam`, :func:`class_scores` (forward passes only) and
:func:`set_token_grid`.

:func:`capture` runs the model once (one compiled forward + backward pass, see
:mod:`gradcam_widget.engine`) through the validation gate (:mod:`.gate`), keeps the tensors of
every candidate layer in a :class:`Capture` and issues the warnings (:mod:`.notes`). Every
public name of this module from before the split still imports from here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.captures.gate import check_request, checked_pass
from gradcam_widget.captures.notes import gradient_notes, score_warnings
from gradcam_widget.captures.record import SALIENCY_CACHE as SALIENCY_CACHE
from gradcam_widget.captures.record import SALIENCY_KINDS as SALIENCY_KINDS
from gradcam_widget.captures.record import Capture, capture_of
from gradcam_widget.captures.signatures import joined_parameters
from gradcam_widget.engine import engine_for, inputs, layers, model_errors

__all__ = ["Capture", "capture", "class_scores", "grad_cam", "guided_grad_cam", "saliency"]


def capture(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layers: str | Iterable[str] = "all",
    target=None,
) -> Capture:
    """Run the model once and record activations and gradients of every candidate layer.

    Args:
        model: a ``keras.Model`` (Functional, Sequential, nested bases included, or a
            subclassed model that has been built) or an entry from
            :func:`gradcam_widget.models.load`, whose preprocess and class names are then
            used. It must take one ``(N, H, W, C)`` input.
        image: anything :func:`gradcam_widget.images.as_rgb_image` reads: an ``(H, W, 3)``
            uint8 or float array (0..255, or 0..1 with a warning), grayscale, RGBA, uint16, a
            PIL image of any mode, a file path or a sample name. Resized to the sizes the
            model fixes (area averaging to shrink, bilinear to enlarge).
        class_index: the class to explain; ``None`` takes the top-scoring class.
        score: ``"logit"`` (default; the pre-softmax score, as in the Grad-CAM paper) or
            ``"probability"`` (the softmax/sigmoid output, as in the article).
        preprocess: called on the ``(1, H, W, 3)`` float32 batch before the model; default
            the entry's own (none for a bare ``keras.Model``).
        layers: ``"all"`` (default) records gradients for every candidate layer in one pass;
            a layer name or a list of them records them only down to those layers, which is
            cheaper (the backward pass stops early); other layers are then filled in by one
            more pass on first use.
        target: what to explain instead of a class index: a :mod:`gradcam_widget.targets`
            target (``Output``, ``Region``, ``Regression`` ...) or a callable
            ``outputs -> (N,)``. Needed for a model with several outputs or a non-classifier
            output.

    Returns:
        A :class:`Capture`.

    Raises:
        ValueError: for a bad image, option, class index, target or layer name, a model
            whose outputs the target cannot read, or an input the model cannot run on,
            naming what was expected. Nothing is cached when it raises.

    Warns:
        UserWarning: when ``score="logit"`` meets a softmax it cannot bypass, or the model has
            one output unit (see :attr:`Capture.warnings`).
    """
    request = check_request(model, target, score, preprocess, class_index)
    engine = request.engine
    shown, batch, image_notes = inputs.prepare(image, engine.input_size, request.preprocess)
    facts, default, result = checked_pass(request, batch, layers)
    notes = image_notes + score_warnings(
        facts, request.target, request.score, engine.head, result.scores[0], engine.output_names
    )
    reaching = engine.reaching_tokens(batch.shape) if result.tokens else None
    notes += gradient_notes(request.target, request.score, result, default, reaching)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    complete = result.layers == result.candidates
    return capture_of(request, result, index=0, shown=shown, inputs=batch, default=default,
                       notes=notes, complete=complete)  # fmt: skip


def set_token_grid(model, grid=None, prefix: int | None = None, layer: str | None = None):
    """Say how a vision transformer's token layers map onto the image, where inference cannot
    decide or decides wrongly.

    Token layers ``(N, T, C)`` are read as ``prefix`` tokens (a class token, registers) then
    an ``h x w`` patch grid in row-major order; by default both are inferred from ``T`` and
    the input size (:func:`gradcam_widget.layers.token_grid`). This sets them for ``layer``
    (a path or a unique bare name) or, with ``layer=None``, for every token layer whose ``T``
    they fit. It holds for every later pass of this model in this process (every capture,
    explorer and batch of it); ``grid=None, prefix=None`` goes back to inference.

    Args:
        model: a ``keras.Model`` or a loaded entry.
        grid: ``(h, w)`` patches, or ``None`` to infer it from ``prefix``.
        prefix: the number of tokens before the patches, or ``None`` (``T - h*w``).
        layer: one layer, or ``None`` for all token layers.

    Raises:
        ValueError: for an unknown layer, or (at the next pass) an override that does not add
            up to the layer's ``T`` (naming ``T``, the input size and the grids that fit).
    """
    engine = engine_for(model)
    path = None
    if layer is not None:
        path = layers.resolve(layer, [leaf_path for leaf_path, _ in engine.leaves])
    if grid is not None:
        try:
            h, w = (int(side) for side in grid)
        except (TypeError, ValueError):
            raise ValueError(f"grid must be (h, w), two positive integers; got {grid!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"grid must be (h, w), two positive integers; got {grid!r}")
    if prefix is not None and (isinstance(prefix, bool) or int(prefix) != prefix or prefix < 0):
        raise ValueError(f"prefix must be an integer >= 0; got {prefix!r}")
    engine.set_token_grid(path, grid, prefix)


def class_scores(
    model,
    images,
    class_index: int,
    score: str = "probability",
    preprocess: Callable | None = None,
    batch_size: int = 32,
    target=None,
) -> np.ndarray:
    """Score of one class (or a target's value) for a batch of images: forward passes only,
    compiled once.

    This is what the perturbation metrics (:mod:`gradcam_widget.metrics`) run: the images
    are edited in pixel space (0..255) and each one is preprocessed as the model expects.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        images: ``(N, H, W, 3)`` RGB, uint8 or float 0..255, at the model's input size.
        class_index: the class whose score is returned (``None`` with ``target=``).
        score: ``"probability"`` (default; softmax, or sigmoid for a multi-label entry) or
            ``"logit"`` (the pre-activation score).
        preprocess: as :func:`capture` (default: the entry's own).
        batch_size: images per forward pass.
        target: a target instead of ``class_index`` (see :func:`capture`).

    Returns:
        ``(N,)`` float32 scores.

    Raises:
        ValueError: for a bad batch, class index, score or batch size, naming what was
            expected.
    """
    if class_index is None and target is None:
        raise ValueError("class_index must be an int; got None")
    request = check_request(model, target, score, preprocess, class_index)
    batch_size = core.check_int("batch_size", batch_size)
    engine = request.engine
    batch = inputs.check_image_batch(images, engine.input_size)
    batch = inputs.model_batch(batch, request.preprocess, engine.input_size)
    with model_errors(batch.shape, engine.input_size):
        values = engine.forward_values(
            batch, request.target, request.score, request.multi_label, batch_size
        )
    if not np.isfinite(values).all():
        raise ValueError("the model produced NaN or infinite scores for these images")
    return values


@joined_parameters(capture, 5, Capture.cam, tail=("target",))
def grad_cam(
    model, image, class_index, score, preprocess, layer, target, **cam_options
) -> core.CamResult:
    """``capture(...).cam(...)`` in one call, backpropagating only as deep as ``layer``.

    Its parameters are :func:`capture`'s first five, :meth:`Capture.cam`'s, then ``target``
    (declared there once each).

    Args and Raises: as :func:`capture` and :meth:`Capture.cam`.

    Returns:
        The :class:`~gradcam_widget.core.CamResult` for ``layer`` (default: the last
        conv-like layer).
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[layer], target=target)
    return cap.cam(layer, **cam_options)


def saliency(
    model,
    image,
    kind: str = "guided",
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    target=None,
    smooth: int = 0,
    sigma: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """The input-gradient map of one image: Guided Backpropagation or the vanilla gradient,
    optionally SmoothGrad. Arguments as :func:`capture` and :meth:`Capture.saliency`.

    Returns:
        ``(H, W, C)`` float32, signed (render it with
        :func:`gradcam_widget.render.saliency_image`).
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[], target=target)
    return cap.saliency(kind, smooth=smooth, sigma=sigma, seed=seed)


@joined_parameters(capture, 5, Capture.guided_grad_cam, tail=("target",))
def guided_grad_cam(
    model, image, class_index, score, preprocess, layer, target, **cam_options
) -> np.ndarray:
    """Guided Grad-CAM of one image: :meth:`Capture.guided_grad_cam` in one call (two passes:
    one to ``layer``, one guided pass to the input). Parameters: :func:`capture`'s first five,
    :meth:`Capture.guided_grad_cam`'s, then ``target``.

    Returns:
        ``(H, W, C)`` float32, signed.
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[layer], target=target)
    return cap.guided_grad_cam(layer, **cam_options)

"""One compiled forward + backward pass that records every candidate layer.

:func:`capture` runs the model once under a ``tf.GradientTape`` inside a ``tf.function`` and
keeps, for every layer whose output is a 4-D feature map (nested models included), the
activations ``A`` and the gradients ``d score / d A``. Every later :meth:`Capture.cam`, for
any layer and any option, is plain numpy over that cache.

How layers are recorded: while the pass is being *traced*, each leaf layer's ``call`` is
wrapped for the tracing thread only (:mod:`gradcam_widget.tapping`), so that its output
tensor is kept. This sees inside nested models, which building a second ``keras.Model`` over
inner layer outputs cannot ("Graph disconnected"), and it never clones or modifies the model:
another thread calling the model meanwhile sees it exactly as it is.

``score="logit"`` differentiates the pre-softmax score: when the model ends in a softmax or
sigmoid (a ``Dense(..., activation="softmax")`` or a separate ``Softmax``/``Activation``
layer), that final activation is bypassed inside the traced pass only.

One trace serves every image size: the compiled pass takes ``(1, H, W, C)`` with ``None``
wherever the model leaves a size free.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gradcam_widget import core, images, methods
from gradcam_widget._tf import keras, tf
from gradcam_widget.images import as_rgb_image
from gradcam_widget.tapping import (
    head_activation,
    leaf_layers,
    squashed_output,
    tapped,
)

_SKIPPED_FOR_DEFAULT = (
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "Dropout",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
)

__all__ = ["Capture", "as_rgb_image", "capture", "class_scores", "grad_cam", "head_activation"]


MAX_TRACES = 8  # compiled passes kept per model (each a few MB; VGG16 about 2 s to trace)


class ModelCheckError(ValueError):
    """The model is not one :func:`capture` can explain (found while tracing it)."""


# ---------------------------------------------------------------------------------------
# Inputs and the model's interface


def _unwrap(model):
    """Split a model argument into (keras.Model, preprocess, class_names, multi_label).

    ``model`` is a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load` (any
    object with a ``.model`` attribute, optionally ``.preprocess``, ``.class_names`` and
    ``.multi_label``).
    """
    if isinstance(model, keras.Model):
        return model, None, None, False
    inner = getattr(model, "model", None)
    if isinstance(inner, keras.Model):
        return (
            inner,
            getattr(model, "preprocess", None),
            getattr(model, "class_names", None),
            bool(getattr(model, "multi_label", False)),
        )
    raise ValueError(
        "model must be a keras.Model or an entry returned by gradcam_widget.models.load(); "
        f"got {type(model).__name__}"
    )


def _model_input_size(model) -> tuple[int | None, int | None, int | None]:
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


def _check_outputs(model) -> int | None:
    """The number of classes when the model's one output is ``(N, K)`` with ``K`` known.

    Raises:
        ValueError: for several outputs or an output that is not ``(N, K)``, naming it.
    """
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):  # subclassed: checked while tracing
        return None
    _check_output_shape(shape, getattr(model, "output_names", None))
    return shape[-1] if isinstance(shape[-1], int) else None


def _check_output_shape(shape, names=None) -> None:
    if isinstance(shape, dict) or (isinstance(shape, list) and len(shape) != 1):
        listed = list(shape) if isinstance(shape, dict) else shape
        named = f" ({', '.join(names)})" if names else ""
        raise ModelCheckError(
            f"the model has {len(listed)} outputs{named}: {listed}; gradcam_widget explains a "
            "model with one (N, classes) output: wrap the output you want in a "
            "keras.Model(model.inputs, model.outputs[i])"
        )
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 2:
        raise ModelCheckError(
            f"the model's output has shape {tuple(shape) if shape else shape}; gradcam_widget "
            "explains classifiers with an (N, classes) output (a segmentation-style 4-D output "
            "needs a target that reduces it to one score per image)"
        )


def _check_class_index(class_index, num_classes: int | None) -> int | None:
    if class_index is None:
        return None
    if isinstance(class_index, (bool, np.bool_)) or not isinstance(class_index, (int, np.integer)):
        raise ValueError(f"class_index must be an int or None; got {class_index!r}")
    class_index = int(class_index)
    upper = "num_classes - 1" if num_classes is None else num_classes - 1
    if class_index < 0 or (num_classes is not None and class_index >= num_classes):
        raise ValueError(f"class_index must be in 0..{upper}; got {class_index}")
    return class_index


def prepare_input(model, image, preprocess=None) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``image`` to the model's input and apply ``preprocess``.

    Returns:
        ``(shown, inputs)``: the image as fed to the model, ``(H, W, 3)`` uint8 (resized to
        the sizes the model fixes: area averaging to shrink, bilinear to enlarge), and the
        model input, ``(1, H, W, C)`` float32.

    Raises:
        ValueError: for a bad image (see :func:`gradcam_widget.images.as_rgb_image`), a
            preprocess that fails or returns the wrong shape, or channels the model does not
            take.
    """
    shown, inputs, notes = _prepare(model, image, preprocess)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return shown, inputs


def _prepare(model, image, preprocess) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """:func:`prepare_input` returning the image's warnings as notes instead of issuing them."""
    height, width, channels = _model_input_size(_unwrap(model)[0])
    rgb, notes = images.read_rgb(image)
    rgb = images.fit(rgb, height, width)
    batch = _model_batch(rgb[None].copy(), preprocess, (height, width, channels))
    return images.shown_image(rgb), batch, notes


def _model_batch(batch: np.ndarray, preprocess, expected: tuple) -> np.ndarray:
    """``(N, H, W, 3)`` float32 RGB in 0..255 -> the model's input: ``preprocess`` applied,
    RGB averaged for a one-channel model, checked against the model's ``(H, W, C)`` (``None``
    = any) and for finite values."""
    count, in_height, in_width = batch.shape[:3]
    if preprocess is not None:
        try:
            batch = np.asarray(preprocess(batch), dtype=np.float32)
        except Exception as error:
            raise ValueError(
                f"preprocess failed on a ({count}, H, W, 3) float32 batch: {error}"
            ) from error
        if batch.ndim != 4 or batch.shape[0] != count:
            raise ValueError(
                f"preprocess must return a ({count}, H, W, C) batch; got {batch.shape}"
            )
    height, width, channels = expected
    if channels == 1 and batch.shape[-1] == 3:
        batch = batch.mean(axis=-1, keepdims=True)
    wanted = (count, height or batch.shape[1], width or batch.shape[2], channels or batch.shape[3])
    if batch.shape != wanted:
        model_takes = f"(N, {height}, {width}, {channels})"
        if channels is not None and batch.shape[-1] != channels:
            raise ValueError(
                f"the model takes {channels} input channels, the image gives {batch.shape[-1]}: "
                f"pass preprocess= that turns the ({count}, H, W, 3) RGB batch into "
                f"{channels} channels (the model takes {model_takes})"
            )
        raise ValueError(
            f"preprocess returned {batch.shape} from a ({count}, {in_height}, {in_width}, 3) "
            f"batch; the model takes {model_takes}"
        )
    if not np.isfinite(batch).all():
        raise ValueError("the preprocessed input contains NaN or infinite values")
    return batch.astype(np.float32)


@contextlib.contextmanager
def _model_errors(inputs_shape: tuple, model_shape: tuple):
    """Turn the model's own failure on these inputs (a Keras input-spec error, a TensorFlow
    ``InvalidArgumentError``) into one ValueError saying what the model expected."""
    try:
        yield
    except ModelCheckError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as error:
        text = str(getattr(error, "message", None) or error)
        size = "×".join(str(side) for side in inputs_shape[1:3])
        hint = ""
        lowered = text.lower()
        if any(word in lowered for word in _TOO_SMALL_WORDS) or min(inputs_shape[1:3]) < 32:
            hint = " (is the image too small for this model? a layer's output may be empty)"
        if all(side is None for side in model_shape):
            takes = "its input size is not declared (a subclassed model): fit the image to it"
        else:
            takes = (
                "it takes (N, "
                + ", ".join("any" if side is None else str(side) for side in model_shape)
                + ")"
            )
        raise ValueError(
            f"the model failed on a {size} input of shape {tuple(inputs_shape)}{hint}; "
            f"{takes}: {_error_line(text)[:300]}"
        ) from None


_TOO_SMALL_WORDS = ("negative", "must be > 0", "empty", "primitive descriptor")


def _error_line(text: str) -> str:
    """The line of a TensorFlow error that says what went wrong: not its banner ("Graph
    execution error:"), its Python stack or its node names."""
    lines = [line.strip() for line in text.splitlines()]
    useful = [
        line
        for line in lines
        if line
        and not line.startswith(("File ", "[[", "Detected at node", "Graph execution error"))
        and not line.endswith(":")
    ]
    return useful[-1] if useful else next((line for line in lines if line), "")


# ---------------------------------------------------------------------------------------
# Reduced precision for forward-only passes

PRECISIONS = ("float32", "bfloat16")
_GRAPPLER_BF16 = "auto_mixed_precision_onednn_bfloat16"
_PRECISION_LOCK = threading.RLock()
_active_precision: list[str] = []  # the precision of the enclosing _precision blocks


def bfloat16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (Intel AMX or AVX512-BF16).

    Only then does ``precision="bfloat16"`` pay off; elsewhere oneDNN would emulate it.
    Reads ``/proc/cpuinfo`` (Linux); False when that cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            flags = set(next((line for line in info if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def check_precision(precision: str) -> str:
    """Validate ``precision``; ``"bfloat16"`` also needs a CPU that computes it natively.

    Raises:
        ValueError: naming the choices, or saying why bfloat16 is not available here.
    """
    core.check_option("precision", precision, PRECISIONS)
    if precision == "bfloat16" and not bfloat16_supported():
        raise ValueError(
            "precision='bfloat16' needs a CPU with AMX or AVX512-BF16 (it would be emulated, "
            "and slower, here); use precision='float32'"
        )
    return precision


@contextlib.contextmanager
def _precision(precision: str):
    """Run the enclosed model passes in ``precision``; every pass of the package goes here.

    bfloat16 is oneDNN's Grappler rewrite, a *global* option, switched on only around the
    enclosed calls. TensorFlow also remembers the option a thread saw at its first call, so
    float32 passes take the same lock: no pass of this package, in any thread, can run while
    the option is on unless it asked for bfloat16. (TensorFlow code outside this package that
    runs in another thread during a bfloat16 block is not covered.)

    Raises:
        RuntimeError: when a block of one precision is opened inside a block of the other in
            the same thread (it would silently get the outer one).
    """
    core.check_option("precision", precision, PRECISIONS)
    with _PRECISION_LOCK:
        if _active_precision and _active_precision[-1] != precision:
            raise RuntimeError(
                f"a {precision} pass cannot run inside a {_active_precision[-1]} pass"
            )
        switch = precision == "bfloat16" and not _active_precision
        if switch:
            before = tf.config.optimizer.get_experimental_options().get(_GRAPPLER_BF16, False)
            tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: True})
        _active_precision.append(precision)
        try:
            yield
        finally:
            _active_precision.pop()
            if switch:
                tf.config.optimizer.set_experimental_options({_GRAPPLER_BF16: before})


# ---------------------------------------------------------------------------------------
# The compiled pass, one engine per model


@dataclass(frozen=True)
class _Facts:
    """What tracing a model found for one input signature and score mode."""

    candidates: tuple[str, ...]  # paths of the layers with a 4-D output, in call order
    shapes: dict  # {path: (h, w, C)} as traced; None where the size follows the image
    squashed: str | None  # "softmax"/"sigmoid" left on the output after the bypass


class _Engine:
    """Owns the traced passes of one model. Shared by every capture of that model.

    It holds the model only weakly (a model the user drops is freed, and its engine with it):
    the caller of :meth:`run` holds it.
    """

    def __init__(self, model):
        self._model = weakref.ref(model)
        self.leaves = leaf_layers(model)
        self.layer_classes = {path: type(layer).__name__ for path, layer in self.leaves}
        self.input_size = _model_input_size(model)
        self.passes = 0  # model passes run (each is one forward + one backward)
        self.traces = 0  # times a pass was traced (compiled)
        self.forward_images = 0  # images scored by forward-only passes (Score-CAM, metrics)
        self.head = head_activation(model)  # "softmax" | "sigmoid" | None
        self._facts: dict[tuple, _Facts] = {}
        self._functions: OrderedDict[tuple, Callable] = OrderedDict()  # LRU, see _compiled
        self._lock = threading.RLock()

    @property
    def model(self):
        model = self._model()
        if model is None:  # pragma: no cover - callers hold the model
            raise RuntimeError("the model of this engine was freed")
        return model

    def signature(self, inputs_shape: tuple) -> tuple:
        """``(1, H, W, C)`` of the compiled pass: ``None`` where the model takes any size, so
        that one trace serves every image size."""
        height, width, channels = self.input_size
        return (1, height, width, channels or inputs_shape[-1])

    def _compiled(self, key: tuple, make: Callable, signature: tuple) -> Callable:
        """The compiled function for ``key`` (made by ``make()`` on first use).

        At most :data:`MAX_TRACES` are kept per model, least recently used dropped: each
        (layer list, score) a widget asks for is one trace of a few MB, and a long session
        must not keep them all.
        """
        if key in self._functions:
            self._functions.move_to_end(key)
            return self._functions[key]
        function = self._functions[key] = tf.function(
            make(),
            input_signature=[
                tf.TensorSpec(signature, tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.bool),
            ],
            autograph=False,
        )
        while len(self._functions) > MAX_TRACES:
            self._functions.popitem(last=False)
        return function

    def _function(self, signature: tuple, score: str, gradient_layers: tuple[str, ...] | None):
        return self._compiled(
            (signature, score, gradient_layers),
            lambda: self._make_pass(signature, score, gradient_layers),
            signature,
        )

    def _make_pass(self, signature: tuple, score: str, gradient_layers: tuple[str, ...] | None):
        # The traced function holds the engine weakly and the model not at all: TensorFlow
        # keeps the Python function from its C++ side, where the garbage collector cannot see
        # a cycle through it, so a strong reference here would keep both alive for ever.
        engine_ref = weakref.ref(self)

        def run(inputs, class_index, multi_label):
            engine = engine_ref()
            engine.traces += 1
            model = engine.model
            with (
                tapped(engine.leaves, model if score == "logit" else None) as record,
                tf.GradientTape() as tape,
            ):
                outputs, scores = _scored(model, inputs, score, engine.head, multi_label)
                scores = scores[0]
                count = tf.shape(scores, out_type=tf.int32)[0]
                chosen = tf.where(
                    (class_index < 0) | (class_index >= count),
                    tf.argmax(scores, output_type=tf.int32),
                    class_index,
                )
                target = tf.gather(scores, chosen)
            maps = {
                path: tensor
                for path, tensor in record.items()
                if tensor.shape.rank == 4 and tensor.shape[0] == 1
            }
            engine._facts[(signature, score)] = _Facts(
                candidates=tuple(maps),
                shapes={path: tuple(tensor.shape[1:]) for path, tensor in maps.items()},
                squashed=squashed_output(outputs) if score == "logit" else None,
            )
            everything = gradient_layers is None
            wanted = tuple(maps) if everything else gradient_layers
            wanted = tuple(path for path in wanted if path in maps)
            grads = tape.gradient(
                target,
                [maps[path] for path in wanted],
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return {
                "scores": scores,
                "class_index": chosen,
                "activations": {path: maps[path][0] for path in wanted},
                "gradients": {path: grad[0] for path, grad in zip(wanted, grads, strict=True)},
                "shapes": {path: tf.shape(tensor)[1:] for path, tensor in maps.items()},
            }

        return run

    def _make_scorer(self, score: str):
        engine_ref = weakref.ref(self)  # weakly, as in _make_pass

        def scores_of(batch, class_index, multi_label):
            engine = engine_ref()
            model = engine.model
            with tapped((), model if score == "logit" else None):
                scores = _scored(model, batch, score, engine.head, multi_label)[1]
            return scores[:, class_index]

        return scores_of

    def class_scores(
        self,
        batch: np.ndarray,
        class_index: int,
        score: str,
        multi_label: bool,
        batch_size: int = 32,
        precision: str = "float32",
    ) -> np.ndarray:
        """Forward passes only: the class score of every image of ``batch`` (N, H, W, C),
        ``batch_size`` at a time. Compiled once per score mode and input signature (any N,
        and any size where the model takes any size: no retrace);
        ``precision="bfloat16"`` runs them through oneDNN's bfloat16 rewrite."""
        signature = (None, *self.signature(batch.shape)[1:])
        key = (score, "scorer", signature)
        with self._lock:
            function = self._compiled(key, lambda: self._make_scorer(score), signature)
            results = []
            index, multi = tf.constant(class_index), tf.constant(multi_label)
            with _precision(precision):
                for start in range(0, len(batch), batch_size):
                    chunk = tf.constant(batch[start : start + batch_size], dtype=tf.float32)
                    results.append(function(chunk, index, multi).numpy())
                    self.forward_images += len(chunk)
            return np.concatenate(results).astype(np.float32)

    def describe(self, inputs_shape: tuple, score: str) -> _Facts:
        """Candidate layers, their traced shapes, and what the output looks like, for inputs
        of ``inputs_shape``. Traces a gradient-free pass (compiles it; runs nothing) the first
        time per input signature."""
        signature = self.signature(inputs_shape)
        key = (signature, score)
        with self._lock:
            if key not in self._facts:
                self._function(signature, score, ()).get_concrete_function()
            facts = self._facts[key]
            if not facts.candidates:
                raise ModelCheckError(
                    "the model has no layer with a 4-D (N, h, w, C) output to explain"
                )
            return facts

    def run(
        self,
        inputs: np.ndarray,
        class_index: int | None,
        score: str,
        multi_label: bool,
        gradient_layers: tuple[str, ...] | None,
    ) -> dict:
        """One forward + backward pass (float32); returns numpy arrays and the wall time."""
        with self._lock, _precision("float32"):
            function = self._function(self.signature(inputs.shape), score, gradient_layers)
            started = time.perf_counter()
            out = function(
                tf.constant(inputs, dtype=tf.float32),
                tf.constant(-1 if class_index is None else class_index, dtype=tf.int32),
                tf.constant(multi_label),
            )
            result = {
                "scores": out["scores"].numpy(),
                "class_index": int(out["class_index"].numpy()),
                "activations": {k: v.numpy() for k, v in out["activations"].items()},
                "gradients": {k: v.numpy() for k, v in out["gradients"].items()},
                "shapes": {k: tuple(int(s) for s in v.numpy()) for k, v in out["shapes"].items()},
            }
            self.passes += 1
            result["seconds"] = time.perf_counter() - started
            return result


def _scored(model, inputs, score: str, head: str | None, multi_label):
    """Call the model (inside :func:`tapped`) and score it: ``(outputs, (N, K) scores)``.

    The one scoring step of the gradient pass and of every forward-only pass. A one-entry
    list, tuple or dict of outputs is that output; several outputs, or an output that is not
    ``(N, K)``, raise :class:`ModelCheckError`. The scores are the logits as they come (the
    squashing head bypassed), or probabilities: a model with raw outputs gets its softmax
    (sigmoid when multi-label, or with a single output unit) applied here.
    """
    outputs = model(inputs, training=False)
    if isinstance(outputs, (list, tuple, dict)):
        parts = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
        if len(parts) != 1:
            names = list(outputs) if isinstance(outputs, dict) else None
            _check_output_shape([tuple(part.shape) for part in parts], names)
        outputs = parts[0]
    _check_output_shape(tuple(outputs.shape))
    scores = tf.cast(outputs, tf.float32)
    if score == "probability" and head is None:
        sigmoid = tf.logical_or(multi_label, tf.equal(tf.shape(scores)[-1], 1))
        scores = tf.cond(sigmoid, lambda: tf.sigmoid(scores), lambda: tf.nn.softmax(scores))
    return outputs, scores


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def engine_for(model) -> _Engine:
    """The (cached) engine that runs passes of ``model`` (a keras.Model or a loaded entry).

    Cached per model, weakly: dropping the model frees the engine and its traces."""
    keras_model = _unwrap(model)[0]
    with _ENGINES_LOCK:
        engine = _ENGINES.get(keras_model)
        if engine is None:
            engine = _ENGINES[keras_model] = _Engine(keras_model)
        return engine


def _resolve(name: str, candidates: Sequence[str]) -> str:
    if name in candidates:
        return name
    matches = [path for path in candidates if path.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    valid = ", ".join(candidates)
    if len(matches) > 1:
        raise ValueError(f"layer {name!r} is ambiguous: name one of {', '.join(matches)}")
    raise ValueError(f"unknown layer {name!r}; candidate layers are: {valid}")


def default_layer_of(candidates: Sequence[str], shapes: dict, layer_classes: dict) -> str:
    """The last conv-like feature map before the head: pooling and dropout skipped.

    Args:
        candidates: layer paths in call order.
        shapes: ``{path: (h, w, C)}``; unknown sizes may be ``None``.
        layer_classes: ``{path: class name}``.
    """
    for path in reversed(candidates):
        height, width = shapes[path][:2]
        single_cell = height is not None and width is not None and height * width <= 1
        if layer_classes.get(path) in _SKIPPED_FOR_DEFAULT or single_cell:
            continue
        return path
    return candidates[-1]


@dataclass(frozen=True, eq=False)
class Capture:
    """Activations and gradients of every candidate layer for one image and one class.

    Build it with :func:`capture`. Arrays are ``(h, w, C)`` float32, the batch axis dropped.

    Attributes:
        layers: candidate layer paths (4-D outputs), in input -> output order.
        default_layer: the last conv-like feature map before the head.
        class_index: the differentiated class.
        scores: ``(num_classes,)`` float32 logits or probabilities, per ``score``.
        score: ``"logit"`` or ``"probability"``.
        image: ``(H, W, 3)`` uint8, the image as fed to the model.
        input_size: ``(H, W)``, the heatmap size.
        seconds: wall time of the model pass that made this capture.
        class_names: names of the classes when known, else ``None``.
        warnings: what the caller should know about how the image was read (a float image
            read as 0..1) and how the score was taken (a softmax that could not be bypassed,
            a single output unit), each one line; also issued as ``UserWarning`` by
            :func:`capture`.

    Every array a capture hands out (activations, gradients, scores, image) is read-only:
    the cache cannot be changed from outside.
    """

    layers: tuple[str, ...]
    default_layer: str
    class_index: int
    scores: np.ndarray
    score: str
    image: np.ndarray
    input_size: tuple[int, int]
    seconds: float
    class_names: tuple[str, ...] | None
    _activations: dict
    _gradients: dict
    _complete: Callable[[], tuple[dict, dict]] | None = None
    _layer_classes: dict | None = None
    _scorer: Callable | None = None
    _shapes: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        for array in (self.scores, self.image, *self._activations.values(),
                      *self._gradients.values()):  # fmt: skip
            array.flags.writeable = False

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this capture holds (grows when layers are filled in)."""
        arrays = (self.scores, self.image, *self._activations.values(), *self._gradients.values())
        return sum(array.nbytes for array in arrays)

    def shape(self, layer: str | None = None) -> tuple[int, int, int]:
        """``(h, w, C)`` of ``layer``'s output for this image, without filling it in."""
        path = self.resolve(layer)
        if path in self._shapes:
            return self._shapes[path]
        return tuple(self._cached(self._activations, path).shape)

    def resolve(self, layer: str | None) -> str:
        """Full path of ``layer`` (``None`` -> :attr:`default_layer`).

        Raises:
            ValueError: naming the candidate layers when ``layer`` is unknown or ambiguous.
        """
        if layer is None:
            return self.default_layer
        if not isinstance(layer, str):
            raise ValueError(f"layer must be a layer name; got {layer!r}")
        return _resolve(layer, self.layers)

    def _cached(self, store: dict, layer: str | None) -> np.ndarray:
        path = self.resolve(layer)
        if path not in store and self._complete is not None:
            activations, gradients = self._complete()
            for array in (*activations.values(), *gradients.values()):
                array.flags.writeable = False
            self._activations.update(activations)
            self._gradients.update(gradients)
        return store[path]

    def activations(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 output of ``layer`` for this image (read-only).

        A capture made with a restricted ``layers=`` list runs one more pass, the first time
        a layer outside that list is asked for, and then holds every layer.
        """
        return self._cached(self._activations, layer)

    def gradients(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 d score / d activations of ``layer``, read-only (see
        :meth:`activations`)."""
        return self._cached(self._gradients, layer)

    def layer_class(self, layer: str | None = None) -> str:
        """Class name of ``layer`` (e.g. ``"Conv2D"``)."""
        return (self._layer_classes or {}).get(self.resolve(layer), "")

    def cam(
        self,
        layer: str | None = None,
        pooling: str = "mean",
        channels: str = "weighted",
        order: str = "relu_first",
        interpolation: str = "bilinear",
        method: str = "gradcam",
        **method_options,
    ) -> core.CamResult:
        """A class-activation map for ``layer`` from the cached tensors.

        Args:
            layer: a path from :attr:`layers`, a unique bare inner name, or ``None`` for
                :attr:`default_layer`.
            pooling: ``"mean"`` (default) | ``"max"`` gradient pooling (Grad-CAM only).
            channels: ``"weighted"`` (default) | ``"top"`` (Grad-CAM only).
            order: ``"relu_first"`` (default) | ``"resize_first"``.
            interpolation: ``"bilinear"`` (default) | ``"nearest"`` | ``"bicubic"``.
            method: a name from :func:`gradcam_widget.methods.names` (default ``"gradcam"``).
            **method_options: a method's own options, e.g. Score-CAM's ``max_channels=64,
                batch_size=32``.

        Returns:
            A :class:`~gradcam_widget.core.CamResult`: ``raw`` ``(h, w)``, ``heatmap``
            ``(H, W)`` = :attr:`input_size`, ``weights`` ``(C,)``. Only Score-CAM runs the
            model (forward passes on masked inputs); every other method is numpy only.

        Raises:
            ValueError: naming the valid choices for a bad layer, method or option.
        """
        chosen = methods.get(method)
        path = self.resolve(layer)
        for name, value, choices in (
            ("pooling", pooling, core.POOLINGS),
            ("channels", channels, core.CHANNELS),
            ("order", order, core.ORDERS),
            ("interpolation", interpolation, core.INTERPOLATIONS),
        ):
            core.check_option(name, value, choices)
        shared = {"pooling": pooling, "channels": channels}
        options = {name: shared[name] for name in chosen.options}
        try:
            raw, weights = chosen.compute(self, path, **options, **method_options)
        except TypeError as error:
            if method_options and "argument" in str(error):
                raise ValueError(f"method {method!r} does not take {error}") from None
            raise
        return core.CamResult(
            raw=np.array(raw, dtype=np.float32),
            heatmap=core.to_heatmap(raw, self.input_size, order, interpolation),
            weights=np.array(weights, dtype=np.float32),
            layer=path,
            class_index=self.class_index,
            method=method,
            pooling=pooling,
            channels=channels,
            order=order,
            interpolation=interpolation,
            score=self.score,
        ).freeze()

    def fusion_layers(self, count: int = 3) -> tuple[str, ...]:
        """The last conv-like layer of each of the ``count`` coarsest grids, shallow first
        (VGG16: ``block3_conv3``, ``block4_conv3``, ``block5_conv3``)."""
        by_grid: dict[tuple, str] = {}
        skipped = set(_SKIPPED_FOR_DEFAULT)
        for path in self.layers:
            if (self._layer_classes or {}).get(path) in skipped:
                continue
            by_grid[self.shape(path)[:2]] = path
        return tuple(by_grid.values())[-count:]

    def fuse(
        self,
        layers=None,
        method: str = "layercam",
        combine: str = "max",
        order: str = "relu_first",
        interpolation: str = "bilinear",
        **options,
    ) -> core.CamResult:
        """Multi-layer fusion: one map per layer, each normalised, then combined.

        Shallow layers give fine but noisy maps, the last block coarse but reliable ones;
        LayerCAM's fusion keeps the detail where the deep map agrees.

        Args:
            layers: a layer name or a list of them (default :meth:`fusion_layers`).
            method: the per-layer method (default ``"layercam"``).
            combine: ``"max"`` (default) or ``"mean"`` of the per-layer maps.
            order, interpolation, **options: as :meth:`cam`.

        Returns:
            A :class:`~gradcam_widget.core.CamResult` whose ``raw`` is the fused map on the
            finest grid, ``layer`` the joined names (``"a+b+c"``), ``weights`` those of the
            last layer.

        Raises:
            ValueError: for bad layers or options.
        """
        core.check_option("combine", combine, ("max", "mean"))
        if layers is None:
            layers = self.fusion_layers()
        elif isinstance(layers, str):
            layers = [layers]
        elif not isinstance(layers, Iterable):
            raise ValueError(f"layers must be a layer name or a list of names; got {layers!r}")
        paths = [self.resolve(name) for name in layers]
        if not paths:
            raise ValueError("fuse needs at least one layer; got an empty list")
        results = [self.cam(path, order=order, interpolation=interpolation, method=method,
                            **options) for path in paths]  # fmt: skip
        finest = max(
            (result.raw.shape for result in results), key=lambda shape: shape[0] * shape[1]
        )
        grid = [
            core.normalize(core.resize(core.relu(r.raw), finest, interpolation)) for r in results
        ]
        heat = [result.heatmap for result in results]
        pick = np.max if combine == "max" else np.mean
        return core.CamResult(
            raw=pick(np.stack(grid), axis=0),
            heatmap=core.normalize(pick(np.stack(heat), axis=0)),
            weights=results[-1].weights,
            layer="+".join(paths),
            class_index=self.class_index,
            method=f"{method} fused ({combine})",
            **{name: getattr(results[-1], name) for name in methods.get(method).options},
            order=order,
            interpolation=interpolation,
            score=self.score,
        ).freeze()

    def masked_scores(
        self, masks: np.ndarray, batch_size: int = 32, precision: str = "float32"
    ) -> np.ndarray:
        """Class scores of the model input multiplied by each mask (forward passes only).

        Args:
            masks: ``(N, H, W)`` float in ``[0, 1]`` at :attr:`input_size`.
            batch_size: images per forward pass.
            precision: ``"float32"`` (default, exact) or ``"bfloat16"`` (see
                :func:`check_precision`).

        Returns:
            ``(N,)`` float32 scores of :attr:`class_index` (logit or probability, per
            :attr:`score`).
        """
        if self._scorer is None:
            raise ValueError("this capture cannot run the model (no scorer)")
        check_precision(precision)
        return self._scorer(np.asarray(masks, dtype=np.float32), batch_size, precision)

    def class_name(self, index: int | None = None) -> str:
        """Name of class ``index`` (default: :attr:`class_index`), ``"class N"`` if unknown."""
        index = self.class_index if index is None else int(index)
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def top(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` highest-scoring classes as ``(index, name, score)``."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(int(i), self.class_name(int(i)), float(self.scores[i])) for i in order]


def _gradient_layers(layers, facts: _Facts, default_layer: str) -> tuple[str, ...] | None:
    """``layers=`` of :func:`capture` as layer paths (``None``: every layer)."""
    if isinstance(layers, str) and layers == "all":
        return None
    if isinstance(layers, str):
        requested = [layers]
    elif isinstance(layers, Iterable) and not isinstance(layers, (bytes, dict)):
        requested = list(layers)
    else:
        requested = [layers]
    for name in requested:
        if name is not None and not isinstance(name, str):
            raise ValueError(
                f"layers must be 'all', a layer name or a list of layer names; got {layers!r}"
            )
    return tuple(
        default_layer if name is None else _resolve(name, facts.candidates) for name in requested
    )


def _score_warnings(facts: _Facts, score: str, head: str | None, scores: np.ndarray) -> tuple:
    """One line for each way the requested score is not what the caller may think."""
    notes = []
    if score == "logit" and facts.squashed is not None:
        notes.append(
            f"score='logit' but the model's output comes out of a {facts.squashed} that could "
            f"not be bypassed (inside a Lambda or a custom layer): the map explains the "
            f"{facts.squashed} output, not the logit; end the model with a Dense/Activation/"
            "Softmax layer, or pass a model that returns logits"
        )
    if score == "probability" and scores.shape[0] == 1:
        if head == "softmax" or facts.squashed == "softmax":
            notes.append(
                "score='probability' on a softmax over one output unit: it is always 1, so "
                "every map is zero; use score='logit'"
            )
        elif head is None:
            notes.append(
                "the model has one output unit: score='probability' is its sigmoid (a softmax "
                "over one unit would be constant)"
            )
    return tuple(notes)


def capture(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layers: str | Iterable[str] = "all",
) -> Capture:
    """Run the model once and record activations and gradients of every candidate layer.

    Args:
        model: a ``keras.Model`` (Functional, Sequential, nested bases included, or a
            subclassed model that has been built) or an entry from
            :func:`gradcam_widget.models.load`, whose preprocess and class names are then
            used. It must take one ``(N, H, W, C)`` input and give one ``(N, classes)`` output.
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

    Returns:
        A :class:`Capture`.

    Raises:
        ValueError: for a bad image, option, class index or layer name, a model with several
            outputs or a non-classifier output, or an input the model cannot run on, naming
            what was expected. Nothing is cached when it raises.

    Warns:
        UserWarning: when ``score="logit"`` meets a softmax it cannot bypass, or the model has
            one output unit (see :attr:`Capture.warnings`).
    """
    core.check_option("score", score, core.SCORES)
    keras_model, entry_preprocess, class_names, multi_label = _unwrap(model)
    preprocess = entry_preprocess if preprocess is None else preprocess
    class_index = _check_class_index(class_index, _check_outputs(keras_model))
    shown, inputs, image_notes = _prepare(keras_model, image, preprocess)
    engine = engine_for(keras_model)

    with _model_errors(inputs.shape, engine.input_size):
        facts = engine.describe(inputs.shape, score)
    default_layer = default_layer_of(facts.candidates, facts.shapes, engine.layer_classes)
    gradient_layers = _gradient_layers(layers, facts, default_layer)

    with _model_errors(inputs.shape, engine.input_size):
        result = engine.run(inputs, class_index, score, multi_label, gradient_layers)
    scores = result["scores"]
    if not np.isfinite(scores).all():
        raise ValueError("the model produced NaN or infinite scores for this image")
    if class_index is not None and class_index >= scores.shape[0]:
        raise ValueError(f"class_index must be in 0..{scores.shape[0] - 1}; got {class_index}")
    chosen = result["class_index"]
    notes = image_notes + _score_warnings(facts, score, engine.head, scores)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)

    def scorer(masks: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
        return engine_for(keras_model).class_scores(
            inputs * masks[..., None], chosen, score, multi_label, batch_size, precision
        )

    def complete() -> tuple[dict, dict]:
        everything = engine_for(keras_model).run(inputs, chosen, score, multi_label, None)
        return everything["activations"], everything["gradients"]

    return Capture(
        layers=facts.candidates,
        default_layer=default_layer,
        class_index=chosen,
        scores=scores,
        score=score,
        image=shown,
        input_size=(shown.shape[0], shown.shape[1]),
        seconds=result["seconds"],
        class_names=None if class_names is None else tuple(class_names),
        _activations=dict(result["activations"]),
        _gradients=dict(result["gradients"]),
        _complete=None if gradient_layers is None else complete,
        _layer_classes=engine.layer_classes,
        _scorer=scorer,
        _shapes=result["shapes"],
        warnings=notes,
    )


def class_scores(
    model,
    images,
    class_index: int,
    score: str = "probability",
    preprocess: Callable | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Score of one class for a batch of images: forward passes only, compiled once.

    This is what the perturbation metrics (:mod:`gradcam_widget.metrics`) run: the images
    are edited in pixel space (0..255) and each one is preprocessed as the model expects.

    Args:
        model: a ``keras.Model`` or an entry from :func:`gradcam_widget.models.load`.
        images: ``(N, H, W, 3)`` RGB, uint8 or float 0..255, at the model's input size.
        class_index: the class whose score is returned.
        score: ``"probability"`` (default; softmax, or sigmoid for a multi-label entry) or
            ``"logit"`` (the pre-activation score).
        preprocess: as :func:`capture` (default: the entry's own).
        batch_size: images per forward pass.

    Returns:
        ``(N,)`` float32 scores.

    Raises:
        ValueError: for a bad batch, class index, score or batch size, naming what was
            expected.
    """
    core.check_option("score", score, core.SCORES)
    keras_model, entry_preprocess, _, multi_label = _unwrap(model)
    preprocess = entry_preprocess if preprocess is None else preprocess
    class_index = _check_class_index(class_index, _check_outputs(keras_model))
    if class_index is None:
        raise ValueError("class_index must be an int; got None")
    batch_size = core.check_int("batch_size", batch_size)
    batch = np.asarray(images)
    height, width, channels = _model_input_size(keras_model)
    expected = f"(N, {height or 'H'}, {width or 'W'}, 3)"
    if (
        batch.ndim != 4
        or batch.shape[-1] != 3
        or 0 in batch.shape
        or (height is not None and batch.shape[1] != height)
        or (width is not None and batch.shape[2] != width)
    ):
        raise ValueError(f"images must be a batch {expected} in 0..255; got shape {batch.shape}")
    batch = batch.astype(np.float32)
    if not np.isfinite(batch).all():
        raise ValueError("images contain NaN or infinite values")
    batch = _model_batch(batch, preprocess, (height, width, channels))
    engine = engine_for(keras_model)
    with _model_errors(batch.shape, engine.input_size):
        scores = engine.class_scores(batch, class_index, score, multi_label, batch_size)
    if not np.isfinite(scores).all():
        raise ValueError("the model produced NaN or infinite scores for these images")
    return scores


def grad_cam(
    model,
    image,
    class_index: int | None = None,
    score: str = "logit",
    preprocess: Callable | None = None,
    layer: str | None = None,
    pooling: str = "mean",
    channels: str = "weighted",
    order: str = "relu_first",
    interpolation: str = "bilinear",
    method: str = "gradcam",
    **method_options,
) -> core.CamResult:
    """``capture(...).cam(...)`` in one call, backpropagating only as deep as ``layer``.

    Args and Raises: as :func:`capture` and :meth:`Capture.cam`.

    Returns:
        The :class:`~gradcam_widget.core.CamResult` for ``layer`` (default: the last
        conv-like layer).
    """
    cap = capture(model, image, class_index, score, preprocess, layers=[layer])
    return cap.cam(
        layer,
        pooling=pooling,
        channels=channels,
        order=order,
        interpolation=interpolation,
        method=method,
        **method_options,
    )

"""One compiled forward + backward pass that records every candidate layer.

:func:`capture` runs the model once under a ``tf.GradientTape`` inside a ``tf.function`` and
keeps, for every layer whose output is a 4-D feature map (nested models included), the
activations ``A`` and the gradients ``d score / d A``. Every later :meth:`Capture.cam`, for
any layer and any option, is plain numpy over that cache.

How layers are recorded: while the pass is being *traced*, each leaf layer's ``call`` is
wrapped (on the instance, and only for the duration of the trace) so that its output tensor
is kept. This sees inside nested models, which building a second ``keras.Model`` over inner
layer outputs cannot ("Graph disconnected"), and it never clones or modifies the model.

``score="logit"`` differentiates the pre-softmax score: when the model ends in a softmax or
sigmoid (a ``Dense(..., activation="softmax")`` or a separate ``Softmax``/``Activation``
layer), that final activation is bypassed inside the traced pass only.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gradcam_widget import core, methods
from gradcam_widget._tf import keras, tf

_SQUASHING = ("softmax", "sigmoid")
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

# ---------------------------------------------------------------------------------------
# Inputs


def as_rgb_image(image) -> np.ndarray:
    """Validate an image and return it as ``(H, W, 3)`` float32 in the caller's range.

    Accepts ``(H, W, 3)`` uint8 or float (0..255), ``(H, W)`` grayscale (repeated to 3
    channels), ``(H, W, 1)`` and ``(H, W, 4)`` RGBA (alpha dropped).

    Raises:
        ValueError: for any other shape, an empty image, a non-numeric dtype, or NaN/inf.
    """
    array = np.asarray(image)
    expected = "an image of shape (H, W, 3) (uint8 or float 0..255), (H, W) grayscale or RGBA"
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"expected {expected}; got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 4 and array.shape[0] == 1:
        raise ValueError(f"expected {expected}; got a batch of shape {array.shape}: pass image[0]")
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"expected {expected}; got shape {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("the image contains NaN or infinite values")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


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


# ---------------------------------------------------------------------------------------
# Walking and tapping the model


def _leaf_layers(model, prefix: str = "") -> list[tuple[str, object]]:
    """Every non-model layer below ``model`` as ``(path, layer)``; nested models recurse."""
    found = []
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            found.extend(_leaf_layers(layer, prefix=f"{path}/"))
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append((path, layer))
    return found


def _final_layer(model):
    """The layer that produces the model's output, looking inside nested models."""
    layer = None
    outputs = getattr(model, "_outputs", None) or []
    if isinstance(model, keras.Sequential):
        layer = model.layers[-1] if model.layers else None
    elif len(outputs) == 1:
        history = getattr(outputs[0], "_keras_history", None)
        layer = getattr(history, "operation", None)
    if isinstance(layer, keras.Model):
        return _final_layer(layer)
    return layer


def _squashing_name(function) -> str | None:
    name = getattr(function, "__name__", "") or ""
    return name if name in _SQUASHING else None


def head_activation(model) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` when the model's last step squashes its scores, else None.

    Recognises a final ``Dense``/``Conv`` with that ``activation``, a ``Softmax`` layer and an
    ``Activation`` layer, looking inside nested models.
    """
    layer = _final_layer(model)
    if layer is None:
        return None
    if type(layer).__name__ == "Softmax":
        return "softmax"
    return _squashing_name(getattr(layer, "activation", None))


@contextlib.contextmanager
def _bypass_final_activation(model):
    """Make the model return its pre-softmax/sigmoid scores while the block is open."""
    layer = _final_layer(model)
    if head_activation(model) is None:
        yield
    elif type(layer).__name__ in ("Softmax", "Activation"):
        object.__setattr__(layer, "call", lambda inputs, *args, **kwargs: inputs)
        try:
            yield
        finally:
            layer.__dict__.pop("call", None)
    else:
        original = layer.activation
        object.__setattr__(layer, "activation", keras.activations.linear)
        try:
            yield
        finally:
            object.__setattr__(layer, "activation", original)


@contextlib.contextmanager
def _recording(layers: Sequence[tuple[str, object]], record: dict):
    """Wrap each layer's ``call`` so its output lands in ``record[path]`` (in call order)."""
    wrapped = []
    for path, layer in layers:
        original = layer.call

        def call(*args, __original=original, __path=path, **kwargs):
            outputs = __original(*args, **kwargs)
            if tf.is_tensor(outputs):
                record.pop(__path, None)  # a shared layer keeps its last call
                record[__path] = outputs
            return outputs

        object.__setattr__(layer, "call", call)
        wrapped.append(layer)
    try:
        yield record
    finally:
        for layer in wrapped:
            layer.__dict__.pop("call", None)


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


class _Engine:
    """Owns the traced passes of one model. Shared by every capture of that model."""

    def __init__(self, model):
        self.model = model
        self.leaves = _leaf_layers(model)
        self.layer_classes = {path: type(layer).__name__ for path, layer in self.leaves}
        self.passes = 0  # model passes run (each is one forward + one backward)
        self.traces = 0  # times a pass was traced (compiled)
        self.forward_images = 0  # images scored by forward-only passes (Score-CAM, metrics)
        self.candidates: tuple[str, ...] | None = None
        self.shapes: dict[str, tuple] = {}
        self.head = head_activation(model)  # "softmax" | "sigmoid" | None
        self._described: dict[tuple, tuple[tuple[str, ...], str]] = {}
        self._functions: dict[tuple, Callable] = {}
        self._lock = threading.RLock()

    def _function(self, score: str, gradient_layers: tuple[str, ...] | None):
        key = (score, gradient_layers)
        if key not in self._functions:
            self._functions[key] = tf.function(self._make_pass(score, gradient_layers))
        return self._functions[key]

    def _make_pass(self, score: str, gradient_layers: tuple[str, ...] | None):
        model, leaves, squash = self.model, self.leaves, self.head

        def run(inputs, class_index, multi_label):
            self.traces += 1
            record: dict = {}
            bypass = _bypass_final_activation if score == "logit" else contextlib.nullcontext
            with _recording(leaves, record), bypass(model), tf.GradientTape() as tape:
                outputs = model(inputs, training=False)
                if isinstance(outputs, (list, tuple, dict)):
                    raise ValueError("models with several outputs are not supported")
                scores = tf.reshape(tf.cast(outputs, tf.float32), [-1])
                if score == "probability" and squash is None:
                    # The model gives raw scores: turn them into probabilities ourselves.
                    scores = tf.cond(
                        multi_label,
                        lambda: tf.sigmoid(scores),
                        lambda: tf.nn.softmax(scores),
                    )
                chosen = tf.where(
                    class_index < 0,
                    tf.argmax(scores, output_type=tf.int32),
                    class_index,
                )
                target = tf.gather(scores, chosen)
            maps = {
                path: tensor
                for path, tensor in record.items()
                if tensor.shape.rank == 4 and tensor.shape[0] == 1
            }
            self.candidates = tuple(maps)
            self.shapes = {path: tuple(tensor.shape[1:]) for path, tensor in maps.items()}
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
                "activations": {path: maps[path][0] for path in (maps if everything else wanted)},
                "gradients": {path: grad[0] for path, grad in zip(wanted, grads, strict=True)},
            }

        return run

    def _make_scorer(self, score: str):
        model, squash = self.model, self.head

        def scores_of(batch, class_index, multi_label):
            bypass = _bypass_final_activation if score == "logit" else contextlib.nullcontext
            with bypass(model):
                outputs = tf.cast(model(batch, training=False), tf.float32)
            outputs = tf.reshape(outputs, [tf.shape(batch)[0], -1])
            if score == "probability" and squash is None:
                outputs = tf.cond(
                    multi_label, lambda: tf.sigmoid(outputs), lambda: tf.nn.softmax(outputs)
                )
            return outputs[:, class_index]

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
        ``batch_size`` at a time. Compiled once per score mode (any N, no retrace);
        ``precision="bfloat16"`` runs them through oneDNN's bfloat16 rewrite."""
        key = (score, "scorer", tuple(batch.shape[1:]))  # any N; H, W, C fixed per function
        with self._lock:
            if key not in self._functions:
                self._functions[key] = tf.function(
                    self._make_scorer(score),
                    input_signature=[
                        tf.TensorSpec([None, *batch.shape[1:]], tf.float32),
                        tf.TensorSpec([], tf.int32),
                        tf.TensorSpec([], tf.bool),
                    ],
                )
            function = self._functions[key]
            results = []
            index, multi = tf.constant(class_index), tf.constant(multi_label)
            with _precision(precision):
                for start in range(0, len(batch), batch_size):
                    chunk = tf.constant(batch[start : start + batch_size], dtype=tf.float32)
                    results.append(function(chunk, index, multi).numpy())
                    self.forward_images += len(chunk)
            return np.concatenate(results).astype(np.float32)

    def describe(self, input_shape: tuple[int, ...], score: str) -> tuple[tuple[str, ...], str]:
        """Candidate layer paths and the default layer for inputs of ``input_shape``.

        Traces a gradient-free pass (compiles it; runs nothing) the first time per shape.
        """
        key = (tuple(input_shape), score)
        with self._lock:
            if key not in self._described:
                self._function(score, ()).get_concrete_function(
                    tf.TensorSpec(input_shape, tf.float32),
                    tf.TensorSpec([], tf.int32),
                    tf.TensorSpec([], tf.bool),
                )
                if not self.candidates:
                    raise ValueError(
                        "the model has no layer with a 4-D (N, h, w, C) output to explain"
                    )
                self._described[key] = (
                    self.candidates,
                    default_layer_of(self.candidates, self.shapes, self.layer_classes),
                )
            return self._described[key]

    def run(
        self,
        inputs: np.ndarray,
        class_index: int | None,
        score: str,
        multi_label: bool,
        gradient_layers: tuple[str, ...] | None,
    ):
        """One forward + backward pass (float32); returns numpy arrays."""
        with self._lock, _precision("float32"):
            function = self._function(score, gradient_layers)
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
            }
            self.passes += 1
            result["seconds"] = time.perf_counter() - started
            return result


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def engine_for(model) -> _Engine:
    """The (cached) engine that runs passes of ``model`` (a keras.Model or a loaded entry)."""
    keras_model = _unwrap(model)[0]
    with _ENGINES_LOCK:
        engine = _ENGINES.get(keras_model)
        if engine is None:
            engine = _ENGINES[keras_model] = _Engine(keras_model)
        return engine


# ---------------------------------------------------------------------------------------
# The public Capture


def _model_input_size(model) -> tuple[int | None, int | None, int | None]:
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError("models with several inputs are not supported")
        shape = shape[0]
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"the model must take a batch of images (N, H, W, C); its input shape is {shape}"
        )
    return shape[1], shape[2], shape[3]


def _num_classes(model) -> int | None:
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
        return shape[-1]
    return None


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
        ``(shown, inputs)``: the image as fed to the model, ``(H, W, 3)`` uint8 (resized
        bilinearly to the model's input size when that size is fixed), and the model input,
        ``(1, H, W, C)`` float32.

    Raises:
        ValueError: for a bad image (see :func:`as_rgb_image`) or a preprocess that fails.
    """
    keras_model = _unwrap(model)[0]
    rgb = as_rgb_image(image)
    height, width, channels = _model_input_size(keras_model)
    if height is not None and width is not None and rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    shown = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return shown, _model_batch(rgb[None].copy(), preprocess, channels)


def _model_batch(batch: np.ndarray, preprocess, channels: int | None) -> np.ndarray:
    """``(N, H, W, 3)`` float32 RGB in 0..255 -> the model's input: ``preprocess`` applied,
    RGB averaged for a one-channel model, checked finite."""
    count = len(batch)
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
    if channels == 1 and batch.shape[-1] == 3:
        batch = batch.mean(axis=-1, keepdims=True)
    if not np.isfinite(batch).all():
        raise ValueError("the preprocessed input contains NaN or infinite values")
    return batch.astype(np.float32)


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
    _complete: Callable[[], dict] | None = None
    _layer_classes: dict | None = None
    _scorer: Callable | None = None

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
            self._activations.update(activations)
            self._gradients.update(gradients)
        return store[path]

    def activations(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 output of ``layer`` for this image.

        A capture made with a restricted ``layers=`` list runs one more pass, the first time
        a layer outside that list is asked for, and then holds every layer.
        """
        return self._cached(self._activations, layer)

    def gradients(self, layer: str | None = None) -> np.ndarray:
        """``(h, w, C)`` float32 d score / d activations of ``layer`` (see :meth:`activations`)."""
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
            raw=raw,
            heatmap=core.to_heatmap(raw, self.input_size, order, interpolation),
            weights=weights,
            layer=path,
            class_index=self.class_index,
            method=method,
            pooling=pooling,
            channels=channels,
            order=order,
            interpolation=interpolation,
            score=self.score,
        )

    def fusion_layers(self, count: int = 3) -> tuple[str, ...]:
        """The last conv-like layer of each of the ``count`` coarsest grids, shallow first
        (VGG16: ``block3_conv3``, ``block4_conv3``, ``block5_conv3``)."""
        by_grid: dict[tuple, str] = {}
        skipped = set(_SKIPPED_FOR_DEFAULT)
        for path in self.layers:
            if (self._layer_classes or {}).get(path) in skipped:
                continue
            by_grid[self.activations(path).shape[:2]] = path
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
            layers: layer names (default :meth:`fusion_layers`).
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
        paths = [self.resolve(name) for name in (layers or self.fusion_layers())]
        if not paths:
            raise ValueError("fuse needs at least one layer")
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
            order=order,
            interpolation=interpolation,
            score=self.score,
        )

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
        model: a ``keras.Model`` (Functional, Sequential, nested bases included) or an entry
            from :func:`gradcam_widget.models.load`, whose preprocess and class names are
            then used.
        image: ``(H, W, 3)`` uint8 or float 0..255; ``(H, W)`` grayscale and RGBA are
            converted. Resized to the model's input size when that is fixed.
        class_index: the class to explain; ``None`` takes the top-scoring class.
        score: ``"logit"`` (default; the pre-softmax score, as in the Grad-CAM paper) or
            ``"probability"`` (the softmax/sigmoid output, as in the article).
        preprocess: called on the ``(1, H, W, 3)`` float32 batch before the model; default
            the entry's own (none for a bare ``keras.Model``).
        layers: ``"all"`` (default) records gradients for every candidate layer in one pass;
            a list of layer names records them only down to those layers, which is cheaper
            (the backward pass stops early); other layers are then filled in by one more pass
            on first use.

    Returns:
        A :class:`Capture`.

    Raises:
        ValueError: for a bad image, option, class index or layer name, naming what was
            expected. Nothing is cached when it raises.
    """
    core.check_option("score", score, core.SCORES)
    keras_model, entry_preprocess, class_names, multi_label = _unwrap(model)
    preprocess = entry_preprocess if preprocess is None else preprocess
    class_index = _check_class_index(class_index, _num_classes(keras_model))
    shown, inputs = prepare_input(keras_model, image, preprocess)
    engine = engine_for(keras_model)

    candidates, default_layer = engine.describe(inputs.shape, score)
    gradient_layers = None
    if not (isinstance(layers, str) and layers == "all"):
        requested = [layers] if isinstance(layers, str) else list(layers)
        for name in requested:
            if name is not None and not isinstance(name, str):
                raise ValueError(f"layers must be 'all' or layer names; got {name!r}")
        gradient_layers = tuple(
            default_layer if name is None else _resolve(name, candidates) for name in requested
        )

    result = engine.run(inputs, class_index, score, multi_label, gradient_layers)
    scores = result["scores"]
    if not np.isfinite(scores).all():
        raise ValueError("the model produced NaN or infinite scores for this image")
    if class_index is not None and class_index >= scores.shape[0]:
        raise ValueError(f"class_index must be in 0..{scores.shape[0] - 1}; got {class_index}")
    chosen = result["class_index"]

    def scorer(masks: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
        return engine.class_scores(
            inputs * masks[..., None], chosen, score, multi_label, batch_size, precision
        )

    def complete() -> tuple[dict, dict]:
        everything = engine.run(inputs, chosen, score, multi_label, None)
        return everything["activations"], everything["gradients"]

    return Capture(
        layers=candidates,
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
    class_index = _check_class_index(class_index, _num_classes(keras_model))
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
    batch = _model_batch(batch, preprocess, channels)
    scores = engine_for(keras_model).class_scores(
        batch, class_index, score, multi_label, batch_size=batch_size
    )
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

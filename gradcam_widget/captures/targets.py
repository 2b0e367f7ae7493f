"""What is explained: a target turns the model's outputs into one score per image.

Grad-CAM differentiates one number per image. For a classifier that is a class score, but the
same maps explain a regression value, one head of a multi-output model, or the class-k pixels of
a segmentation map, once that number is chosen. A target is that choice:

- an int: a class index (:class:`Class`); ``None``: each image's top class;
- a sequence of ints: one class index per image;
- :class:`Class`, :class:`Output`, :class:`Region`, :class:`Regression`;
- any callable ``target(outputs) -> (N,) scores`` (written with ``keras.ops``), where
  ``outputs`` is what the model returns, scored as asked (``score="logit"``: as they come, a
  final softmax/sigmoid bypassed; ``"probability"``: squashed), one tensor for a one-output
  model or ``{name: tensor}`` for several.

Targets compute with ``keras.ops`` only: they know no backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gradcam_widget.engine import keras
from gradcam_widget.engine.inputs import ModelCheckError, check_class_index

ops = keras.ops

__all__ = ["Class", "Output", "Region", "Regression", "Target", "TargetError", "as_target"]


class TargetError(ModelCheckError):
    """A target that does not fit the model's outputs (found before or while tracing)."""


class Target:
    """The base of every target. Subclasses define :meth:`traced`.

    Attributes:
        label: a short name for the readout and the widget (``"class 3"``, ``"box[0]"``).
        class_index: the class it explains when there is one, else ``None``.
        output: the output it reads (name or index), ``None`` for a one-output model.
    """

    label = "target"
    class_index: int | None = None
    output: str | int | None = None
    uses_score = True  # False when score="probability" has no meaning for it
    adds_squash = True  # score="probability" squashes an output that has no softmax/sigmoid
    per_image: int | None = None  # how many images its per-image data covers, if it has any
    # False when the target may hold per-image data the package cannot see (a user's callable
    # closing over an array): its batches are never padded, nor read at another batch size
    pads = True
    feed_spec: tuple = ((None,), "int32")  # shape and dtype of what feed() gives

    @property
    def trace_key(self) -> tuple:
        """Targets with equal keys share one compiled pass (what :meth:`feed` gives may
        differ)."""
        return (type(self).__name__, id(self))

    def feed(self, count: int) -> np.ndarray:
        """What is fed to the compiled pass with ``count`` images (see :attr:`feed_spec`):
        class indices for a class target (``-1``: the top class), a region's masks; unused
        otherwise. Data fed, unlike data traced, never causes a retrace."""
        return np.full(count, -1, np.int32)

    def subset(self, start: int, stop: int) -> Target:
        """The target for images ``start:stop`` of a stream (itself when it has no
        per-image data)."""
        return self

    def traced(self, outputs, feed):
        """``(values (N,), class_indices (N,) int32, scores (N, K))`` inside the pass."""
        raise NotImplementedError

    def __call__(self, outputs):
        """The target's value per image, ``(N,)``."""
        count = ops.shape(_only(outputs))[0]
        return self.traced(outputs, ops.convert_to_tensor(self.feed(count), "int32"))[0]

    def check(self, outputs: dict | None, score: str) -> None:
        """Raise :class:`TargetError` when the target cannot read the model's outputs
        (``{name: shape}``, or ``None`` when unknown before the model runs)."""
        if score == "probability" and not self.uses_score:
            raise TargetError(
                f"{self.label} explains the model's value (before a final sigmoid, which is "
                "bypassed and leaves the map unchanged): score='probability' does not apply; "
                "use score='logit'"
            )
        if outputs is not None:
            _pick_shape(outputs, self.output, self)

    def for_class(self, class_index: int | None) -> Target:
        """This target with its class fixed to ``class_index`` (itself when it has none)."""
        return self

    def __repr__(self):
        return f"<target {self.label}>"


def _only(outputs):
    return next(iter(outputs.values())) if isinstance(outputs, dict) else outputs


def _describe(outputs: dict) -> str:
    return ", ".join(f"{name} {tuple(shape)}" for name, shape in outputs.items())


def _fitting(outputs: dict) -> str:
    """The targets that would fit each output, as code."""
    several = len(outputs) > 1
    hints = []
    for name, shape in outputs.items():
        where = f"output={name!r}" if several else ""
        if len(shape) == 4:
            hints.append(f"Region(k, mask{', ' + where if where else ''})")
        elif len(shape) == 2 and shape[-1] == 1:
            hints.append(f"Regression({where})")
        elif several:
            hints.append(f"Output({name!r}, k)")
        else:
            hints.append("Class(k)")
    return " or ".join(f"gw.targets.{hint}" for hint in dict.fromkeys(hints))


def _pick_shape(outputs: dict, output, target: Target) -> tuple:
    """The shape of the output ``target`` reads, from ``{name: shape}``."""
    names = list(outputs)
    if output is None:
        if len(names) != 1:
            raise TargetError(
                f"the model has {len(names)} outputs ({_describe(outputs)}); {target.label} "
                f"needs to know which one: pass target={_fitting(outputs)}"
            )
        return outputs[names[0]]
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        if not 0 <= output < len(names):
            raise TargetError(
                f"output index {output} is out of range: the model has {len(names)} outputs "
                f"({_describe(outputs)})"
            )
        return outputs[names[output]]
    if output not in outputs:
        raise TargetError(
            f"unknown output {output!r}; the model's outputs are: {_describe(outputs)}"
        )
    return outputs[output]


def _pick(outputs, output, target: Target):
    """The output tensor ``target`` reads."""
    if not isinstance(outputs, dict):
        if output not in (None, 0) and not isinstance(output, str):
            raise TargetError(f"output index {output} is out of range: the model has 1 output")
        return outputs
    shapes = {name: tuple(tensor.shape) for name, tensor in outputs.items()}
    _pick_shape(shapes, output, target)
    if output is None:
        return next(iter(outputs.values()))
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        return list(outputs.values())[output]
    return outputs[output]


def _rank(tensor, ranks: tuple, target: Target, outputs_hint: str):
    rank = len(tensor.shape)
    if rank not in ranks:
        raise TargetError(
            f"{target.label} reads an (N, {'h, w, ' if 4 in ranks else ''}K) output; the model's "
            f"output has shape {tuple(tensor.shape)}: pass target={outputs_hint}"
        )


def _hint(tensor, output=None) -> str:
    shape = tuple(tensor.shape)
    if output is not None and len(shape) == 2 and shape[-1] != 1:
        return f"gw.targets.Output({output!r}, k)"
    return _fitting({output if output is not None else "output": shape})


def _class_values(scores, feed):
    """Per image, the score of the fed class (the top class where ``-1`` is fed).

    A fed index beyond the scores is kept in the returned indices (its value is NaN), so that
    the caller can name it: the output's width may be known only now."""
    count = ops.shape(scores)[-1]
    top = ops.cast(ops.argmax(scores, axis=-1), "int32")
    chosen = ops.where(feed < 0, top, feed)
    inside = chosen < count
    safe = ops.where(inside, chosen, ops.zeros_like(chosen))
    values = ops.take_along_axis(scores, safe[:, None], axis=-1)[:, 0]
    return ops.where(inside, values, ops.full_like(values, float("nan"))), chosen


def _check_index(name: str, value, count: int | None = None) -> int:
    """A class index (``name`` in messages) as an int in ``0..count - 1``: the one check."""
    if value is None:
        raise TargetError(f"{name} must be an int; got None")
    try:
        return check_class_index(value, count)
    except ValueError as error:
        raise TargetError(str(error).replace("class_index", name, 1)) from None


class Class(Target):
    """The score of class ``k`` of a one-output classifier (``None``: each image's top class;
    a sequence: one class per image, ``None`` in it for that image's top class).

    Args:
        k: an int, ``None``, or a sequence of ints or ``None`` (one per image).
    """

    def __init__(self, k: int | Sequence[int] | None = None):
        if isinstance(k, np.ndarray) and k.ndim == 0:
            k = k.item()
        if k is None or isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            self.k = None if k is None else _check_index("class index", k)
            self.class_index = self.k
            self.label = "top class" if k is None else f"class {self.k}"
        else:
            if isinstance(k, (bool, np.bool_, float, str, bytes)) or not isinstance(
                k, (Sequence, np.ndarray)
            ):
                raise TargetError(
                    f"a class target is a class index, None or a sequence of class indices; "
                    f"got {k!r}"
                )
            if len(k) == 0:
                raise TargetError("targets is an empty sequence: give one class index per image")
            self.k = np.array(
                [-1 if value is None else _check_index("class index", value) for value in k],
                np.int32,
            )  # -1: that image's top class (as feed() gives for None)
            self.label = "a class per image"
            self.per_image = len(self.k)

    trace_key = ("class",)  # every class target shares one compiled pass

    def subset(self, start, stop):
        if not isinstance(self.k, np.ndarray):
            return self
        return Class([None if value < 0 else int(value) for value in self.k[start:stop]])

    def feed(self, count: int) -> np.ndarray:
        if isinstance(self.k, np.ndarray):
            if len(self.k) != count:
                raise TargetError(
                    f"targets has {len(self.k)} class indices for {count} images; give one per "
                    "image"
                )
            return self.k
        return np.full(count, -1 if self.k is None else self.k, np.int32)

    def traced(self, outputs, feed):
        if isinstance(outputs, dict):
            shapes = {name: tuple(tensor.shape) for name, tensor in outputs.items()}
            raise TargetError(
                f"the model has {len(outputs)} outputs ({_describe(shapes)}); a class index "
                f"explains a one-output classifier: pass target={_fitting(shapes)}"
            )
        _rank(outputs, (2,), self, _hint(outputs))
        values, chosen = _class_values(outputs, feed)
        return values, chosen, outputs

    def check(self, outputs, score):
        if outputs is not None and len(outputs) == 1:
            (shape,) = outputs.values()
            if len(shape) != 2:
                raise TargetError(
                    f"the model's output has shape {shape}; a class index explains an (N, "
                    f"classes) output: pass target={_fitting(outputs)}"
                )
            if self.k is not None and isinstance(shape[-1], int) and np.max(self.k) >= 0:
                _check_index("class_index", int(np.max(self.k)), shape[-1])  # -1: a top class
        elif outputs is not None:
            raise TargetError(
                f"the model has {len(outputs)} outputs ({_describe(outputs)}); a class index "
                f"explains a one-output classifier: pass target={_fitting(outputs)}"
            )

    def for_class(self, class_index):
        return Class(class_index)


class Output(Target):
    """Class ``k`` of one output of a multi-output model.

    Args:
        output: the output's name (a key of a dict output, or its layer name) or index.
        k: the class (column) of that output; ``None``: its top class per image (for a
            one-unit output, its value).
    """

    def __init__(self, output: str | int, k: int | None = None):
        if not isinstance(output, (str, int, np.integer)) or isinstance(output, bool):
            raise TargetError(f"output must be an output name or index; got {output!r}")
        self.output = output
        self.k = None if k is None else _check_index("k", k)
        self.class_index = self.k
        self.label = f"{output}[{'top' if k is None else self.k}]"

    @property
    def trace_key(self):
        return ("output", self.output)

    def feed(self, count):
        return np.full(count, -1 if self.k is None else self.k, np.int32)

    def traced(self, outputs, feed):
        picked = _pick(outputs, self.output, self)
        _rank(picked, (2,), self, _hint(picked, self.output))
        if self.k is not None and isinstance(picked.shape[-1], int):
            _check_index("k", self.k, picked.shape[-1])
        values, chosen = _class_values(picked, feed)
        return values, chosen, picked

    def check(self, outputs, score):
        super().check(outputs, score)
        if outputs is not None and self.k is not None:
            shape = _pick_shape(outputs, self.output, self)
            if len(shape) == 2 and isinstance(shape[-1], int):
                _check_index("k", self.k, shape[-1])

    def for_class(self, class_index):
        return Output(self.output, class_index)


class Region(Target):
    """Class ``k`` of a segmentation-style ``(N, h, w, K)`` output, summed over a region
    (Seg-Grad-CAM: the class-k logits of the pixels in ``mask``).

    Args:
        k: the class (channel) of the output map.
        mask: ``(h, w)`` weights (bool or float) for every image, or ``(N, h, w)`` one per
            image; at the output's grid, or at any size (then resized, nearest). ``None``:
            every pixel. Masks are fed to the compiled pass, so a new mask never retraces.
        output: the output's name or index for a multi-output model.
    """

    def __init__(self, k: int, mask=None, output: str | int | None = None):
        self.k = _check_index("k", k)
        self.class_index = self.k
        self.output = output
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim not in (2, 3) or 0 in mask.shape:
                raise TargetError(
                    f"mask must be an (h, w) array, or (N, h, w) one per image; got shape "
                    f"{mask.shape}"
                )
            mask = mask.astype(np.float32)
            if not np.isfinite(mask).all():
                raise TargetError("mask contains NaN or infinite values")
            empty = ~mask.reshape(-1, *mask.shape[-2:]).any(axis=(1, 2))
            if empty.any():
                raise TargetError("mask is empty: the region has no pixel to explain")
            if mask.ndim == 3:
                self.per_image = len(mask)
            self.feed_spec = ((None, *mask.shape[-2:]), "float32")
        self.mask = mask
        where = "" if mask is None or mask.ndim == 3 else f", {int((mask > 0).sum())} px"
        self.label = f"region of class {self.k}{where}"

    @property
    def trace_key(self):
        return ("region", self.k, self.output, None if self.mask is None else self.feed_spec)

    def subset(self, start, stop):
        if self.mask is None or self.mask.ndim == 2:
            return self
        return Region(self.k, self.mask[start:stop], self.output)

    def feed(self, count):
        if self.mask is None:
            return np.full(count, -1, np.int32)
        if self.mask.ndim == 2:
            return np.broadcast_to(self.mask, (count, *self.mask.shape))
        if len(self.mask) == 1:  # one image's own mask, for every masked copy of it
            return np.broadcast_to(self.mask[0], (count, *self.mask.shape[1:]))
        if len(self.mask) != count:
            raise TargetError(f"Region has {len(self.mask)} masks for {count} images")
        return self.mask

    def traced(self, outputs, feed):
        picked = _pick(outputs, self.output, self)
        _rank(picked, (4,), self, _hint(picked, self.output))
        if isinstance(picked.shape[-1], int):
            _check_index("k", self.k, picked.shape[-1])
        plane = picked[..., self.k]
        if self.mask is not None:
            mask = feed
            height, width = picked.shape[1], picked.shape[2]
            if (height, width) != tuple(self.mask.shape[-2:]):
                size = (height, width) if height and width else ops.shape(picked)[1:3]
                mask = ops.image.resize(mask[..., None], size, interpolation="nearest")[..., 0]
            plane = plane * mask
        values = ops.sum(plane, axis=(1, 2))
        chosen = ops.full_like(values, self.k, dtype="int32")
        return values, chosen, ops.mean(picked, axis=(1, 2))


class Regression(Target):
    """The value of a one-unit output (a regression model): ``sign=-1`` explains what lowers it.

    Args:
        sign: ``+1`` (default) or ``-1``.
        output: the output's name or index for a multi-output model.

    A final sigmoid of that output is bypassed, as for a class logit: the value explained is
    the one before it. The map is the same either way (a sigmoid only scales an image's
    gradients by one positive number, which the normalisation removes); only the capture's
    :attr:`~gradcam_widget.Capture.value` differs. ``score="probability"`` is refused: there
    is no probability to take.
    """

    uses_score = False
    adds_squash = False

    def __init__(self, sign: int = 1, output: str | int | None = None):
        if sign not in (1, -1) or isinstance(sign, bool):
            raise TargetError(f"sign must be 1 or -1; got {sign!r}")
        self.sign = int(sign)
        self.output = output
        name = "value" if output is None else f"{output} value"
        self.label = name if sign == 1 else f"−{name} (what lowers it)"

    @property
    def trace_key(self):
        return ("regression", self.sign, self.output)

    def traced(self, outputs, feed):
        picked = _pick(outputs, self.output, self)
        per_image = picked.shape[1:]
        if any(side != 1 for side in per_image):
            raise TargetError(
                f"Regression explains one value per image; the output has shape "
                f"{tuple(picked.shape)}: pass target={_hint(picked, self.output)}"
            )
        values = ops.reshape(picked, (-1,))
        return self.sign * values, ops.full_like(feed, -1), values[:, None]


class FunctionTarget(Target):
    """A user's ``target(outputs) -> (N,)``: what :func:`as_target` makes of a callable."""

    pads = False

    def __init__(self, function: Callable):
        self.function = function
        self.label = getattr(function, "__name__", None) or type(function).__name__
        if self.label == "<lambda>":
            self.label = "custom target"

    @property
    def trace_key(self):
        return ("callable", self.function)

    def check(self, outputs, score):
        pass  # the callable decides what it reads

    def traced(self, outputs, feed):
        try:
            values = self.function(outputs)
        except TargetError:
            raise
        except Exception as error:
            raise TargetError(
                f"target {self.label} failed on the model's outputs "
                f"{_shapes_text(outputs)}: {type(error).__name__}: {error}"
            ) from None
        if values is None:
            raise TargetError(
                f"target {self.label} returned None; it must return one score per image, "
                f"shape (N,), from outputs {_shapes_text(outputs)}"
            )
        values = ops.convert_to_tensor(values)
        dtype = keras.backend.standardize_dtype(values.dtype)
        if "float" not in dtype:
            raise TargetError(
                f"target {self.label} returned {dtype} values; it must return float "
                "scores (an integer or bool score has no gradient)"
            )
        if len(values.shape) == 2 and values.shape[-1] == 1:
            values = values[:, 0]
        if len(values.shape) != 1:
            raise TargetError(
                f"target {self.label} must return one score per image, shape (N,); it returned "
                f"{tuple(values.shape)} from outputs {_shapes_text(outputs)}"
            )
        values = ops.cast(values, "float32")
        only = None if isinstance(outputs, dict) else outputs
        scores = only if only is not None and len(only.shape) == 2 else values[:, None]
        return values, ops.full_like(feed, -1), scores


def _shapes_text(outputs) -> str:
    if isinstance(outputs, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in outputs.items()) + "}"
    return str(tuple(outputs.shape))


def as_target(target, class_index=None) -> Target:
    """The :class:`Target` for a ``target=``/``targets=`` argument.

    Args:
        target: ``None``, an int, a sequence of ints, a :class:`Target`, or a callable.
        class_index: the older spelling of an int target (both may not be given).

    Raises:
        ValueError: for anything else, or both arguments given.
    """
    if class_index is not None:
        if target is not None:
            raise TargetError("give class_index or target, not both")
        target = class_index
    if target is None or isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return Class(target)
    if isinstance(target, Target):
        return target
    if isinstance(target, (bool, np.bool_, str, bytes, dict)):
        raise TargetError(
            "target must be a class index, a sequence of them, a gw.targets target or a "
            f"callable outputs -> (N,) scores; got {target!r}"
        )
    if isinstance(target, (Sequence, np.ndarray)):
        return Class(list(np.asarray(target).reshape(-1).tolist()) if np.ndim(target) else target)
    if callable(target):
        return FunctionTarget(target)
    raise TargetError(
        "target must be a class index, a sequence of them, a gw.targets target or a callable "
        f"outputs -> (N,) scores; got {target!r}"
    )

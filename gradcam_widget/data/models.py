"""Models to explore: the shipped ``shapes`` classifier and Keras ImageNet classifiers.

>>> entry = load("shapes")            # shipped with the package, works offline
>>> entry.class_names, entry.input_size
(('circle', 'square', 'triangle', 'star', 'cross'), (224, 224))

``load("vgg16")`` (also ``"resnet50"``, ``"mobilenet_v2"``) loads ImageNet weights, downloaded
once into the Keras cache.

:func:`load` returns a :class:`ModelEntry`: the ``keras.Model`` plus what it takes to feed it
and read it (preprocess, class names, input size). ``gw.capture`` and ``gw.CamExplorer``
accept an entry wherever they accept a model.

ImageNet weights are downloaded with ``keras.utils.get_file`` into ``$KERAS_HOME/models``
(default ``~/.keras/models``), the same files ``keras.applications`` uses; when they are not
cached and cannot be downloaded, :class:`WeightsUnavailableError` says which file to put
where.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradcam_widget.captures.gate import check_request
from gradcam_widget.data import scenes as data
from gradcam_widget.engine import inputs, keras, model_errors

MODEL_NAMES: tuple[str, ...] = (
    "shapes",
    "shapes_permuted",
    "shapes_shortcut",
    "shapes_vit",
    "vgg16",
    "resnet50",
    "mobilenet_v2",
)
"""Names accepted by :func:`load`."""

SHAPES_ASSET = "shapes.keras"
"""File name of the shipped shapes model inside ``gradcam_widget/assets``."""

SHAPES_PERMUTED_ASSET = "shapes_permuted.keras"
"""File name of the shapes model trained on permuted labels, inside ``gradcam_widget/assets``."""

SHAPES_SHORTCUT_ASSET = "shapes_shortcut.keras"
"""File name of the shapes model that learned a shortcut (a tag on the stars), inside
``gradcam_widget/assets``."""

SHAPES_VIT_ASSET = "shapes_vit.keras"
"""File name of the small vision transformer trained on the shape scenes, inside
``gradcam_widget/assets``."""

_SHIPPED_ASSETS = {
    "shapes": SHAPES_ASSET,
    "shapes_permuted": SHAPES_PERMUTED_ASSET,
    "shapes_shortcut": SHAPES_SHORTCUT_ASSET,
    "shapes_vit": SHAPES_VIT_ASSET,
}
_SHIPPED_SCRIPTS = {
    "shapes": "scripts/train_shapes.py",
    "shapes_permuted": "scripts/train_shapes.py --permute-labels",
    "shapes_shortcut": "scripts/train_shapes.py --shortcut",
    "shapes_vit": "scripts/train_vit.py",
}

_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)
_CLASS_INDEX_FILE = "imagenet_class_index.json"
_CLASS_INDEX_HASH = "c2c37ea517e94d9795004a39431a14cb"


@dataclass(frozen=True)
class _ImagenetSpec:
    """Where a ``keras.applications`` model and its ImageNet weights come from."""

    module: str  # keras.applications.<module>, which holds preprocess_input
    constructor: str  # keras.applications.<constructor>
    weights_file: str
    weights_hash: str | None  # md5 from keras.applications; None where Keras has none

    @property
    def origin(self) -> str:
        return f"{_APPLICATIONS_URL}{self.module}/{self.weights_file}"


_IMAGENET_SPECS = {
    "vgg16": _ImagenetSpec(
        "vgg16",
        "VGG16",
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "64373286793e3c8b2b4e3219cbf3544b",
    ),
    "resnet50": _ImagenetSpec(
        "resnet",
        "ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "2cb95161c43110f7111970584f804107",
    ),
    "mobilenet_v2": _ImagenetSpec(
        "mobilenet_v2",
        "MobileNetV2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        None,
    ),
}
_PREPROCESS_MODULES = {"vgg16": "vgg16", "resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2"}


_LOADED_IMAGENET: dict[tuple[str, str], ModelEntry] = {}  # (name, Keras cache dir) -> entry


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither in the Keras cache nor downloadable (e.g. offline).

    In a notebook it shows as its message alone, not as a traceback: a cell that needs the
    weights stops there with a plain explanation (and *Run All* stops with it).
    """

    def _render_traceback_(self):  # IPython's hook for custom error display
        return [f"WeightsUnavailableError: {self}"]


@dataclass(frozen=True, eq=False)
class ModelEntry:
    """A model with what it takes to feed it and read its scores.

    Attributes:
        name: the name given to :func:`load`.
        model: the ``keras.Model``; input ``(N, H, W, 3)`` float32, output
            ``(N, len(class_names))`` scores (logits for the shipped ``"shapes*"`` models,
            softmax probabilities for the ImageNet models).
        preprocess: maps an ``(N, H, W, 3)`` float32 RGB batch in 0..255 to the model input
            (never modifies its argument), or ``None`` when the model takes 0..255 as is.
        class_names: one name per output, in output order.
        input_size: ``(H, W)`` the model expects.
        multi_label: True when classes are independent (sigmoid: several can be present,
            as in ``"shapes"``), False when they compete (softmax).
    """

    name: str
    model: keras.Model
    preprocess: Callable[[np.ndarray], np.ndarray] | None
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    multi_label: bool

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Score images in one batched forward pass: the model's own outputs.

        The images pass the same checks as every other model pass of the package (those of
        :func:`gradcam_widget.class_scores`: size, finite values, the entry's preprocess, a
        model failure turned into one ValueError); the model is then called once on the
        whole batch, in inference mode, by the engine's compiled forward pass.

        Args:
            images: ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB, uint8 or float in 0..255, already
                at :attr:`input_size`.

        Returns:
            ``(N, len(class_names))`` float32 model outputs as the model gives them (logits
            for ``"shapes"``, probabilities for the ImageNet models; ``N = 1`` for a single
            image).

        Raises:
            ValueError: one line naming the expected ``(N, H, W, 3)`` shape if the images are
                not at :attr:`input_size`; also for NaN or infinite values, a preprocess that
                fails, or a model that fails on them.
        """
        array = np.asarray(images)
        single = array.ndim == 3
        request = check_request(self, None, "logit", None)
        engine = request.engine
        try:
            batch = inputs.check_image_batch(array[None] if single else array, engine.input_size)
        except ValueError as error:
            if not single:
                raise
            raise ValueError(f"{error} (one image of shape {array.shape})") from None
        batch = inputs.model_batch(batch, request.preprocess, engine.input_size)
        with model_errors(batch.shape, engine.input_size):
            return engine.forward_outputs(batch, batch_size=max(len(batch), 1))

    def decode(self, scores, top: int = 5) -> list[tuple[int, str, float]]:
        """The best-scoring classes of one image.

        Args:
            scores: ``(num_classes,)`` or ``(1, num_classes)`` scores of one image.
            top: how many classes to return (at most ``num_classes``).

        Returns:
            ``[(class index, class name, score), ...]`` by decreasing score, ties by index.

        Raises:
            ValueError: if ``scores`` does not hold one score per class or ``top < 1``.
        """
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim == 2 and values.shape[0] == 1:
            values = values[0]
        if values.shape != (len(self.class_names),):
            raise ValueError(
                f"scores must have shape ({len(self.class_names)},) or "
                f"(1, {len(self.class_names)}); got {values.shape}"
            )
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top must be a positive integer; got {top!r}")
        order = np.argsort(-values, kind="stable")[:top]
        return [(int(index), self.class_names[index], float(values[index])) for index in order]


def load(name: str, progress: bool = False) -> ModelEntry:
    """Load a model by name; each is built once per process and then shared.

    ``"shapes"`` is the small VGG-style classifier shipped with the package (classes
    :data:`gradcam_widget.data.CLASS_NAMES`, last conv ``block5_conv3`` at 14 x 14, no
    network needed). ``"shapes_permuted"`` is the same network trained by the same script
    on permuted labels (each training scene labelled with another scene's classes), also
    shipped: it memorised its training scenes and knows nothing about shapes (held-out
    accuracy at chance), for the data randomisation test of Adebayo et al. (2018), "Sanity
    Checks for Saliency Maps": a saliency method whose maps for it look like those for
    ``"shapes"`` does not show what a model learned. ``"shapes_shortcut"``, also shipped, is
    the same network trained on one-object scenes in which nearly every star carries a small
    checkerboard tag in a corner (:func:`gradcam_widget.data.shortcut_scene`): it is right
    for the wrong reason, saying "star" when it sees the tag, and its Grad-CAM for star
    points at the tag, not the star. ``"shapes_vit"``, also shipped, is a small hybrid vision
    transformer of plain Keras layers trained on the same scenes as ``"shapes"`` (a conv
    stem, 16 x 16 pixel patches: 14 x 14 tokens after a class token, four blocks
    ``block1_out`` ..., a final ``norm``, a max over the patch tokens; its default layer is
    ``norm``). ``"vgg16"``,
    ``"resnet50"`` and ``"mobilenet_v2"`` are ``keras.applications`` models with ImageNet
    weights, downloaded once into ``$KERAS_HOME/models`` (default ``~/.keras/models``).

    Args:
        name: one of :data:`MODEL_NAMES`.
        progress: show Keras's download progress bar when weights are downloaded.

    Returns:
        The :class:`ModelEntry`. Repeated calls return the same entry (and ``keras.Model``)
        while the cache directory stays the same; see :func:`clear_cache`.

    Raises:
        ValueError: if ``name`` is unknown (the message lists :data:`MODEL_NAMES`).
        WeightsUnavailableError: if ImageNet weights are not cached and cannot be downloaded.
        FileNotFoundError: if a shipped shapes model is missing from the installation.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {MODEL_NAMES}")
    if name in _SHIPPED_ASSETS:
        return _load_shapes(name)
    key = (name, str(keras_cache_dir()))
    if key not in _LOADED_IMAGENET:
        _LOADED_IMAGENET[key] = _load_imagenet(*key, progress=progress)
    return _LOADED_IMAGENET[key]


def weights_cached(name: str) -> bool:
    """True when :func:`load` can build ``name`` without a download.

    Raises:
        ValueError: if ``name`` is unknown.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {MODEL_NAMES}")
    if name in _SHIPPED_ASSETS:
        return True
    return (keras_cache_dir() / "models" / _IMAGENET_SPECS[name].weights_file).is_file()


def clear_cache() -> None:
    """Forget loaded models, so the next :func:`load` builds them again."""
    _load_shapes.cache_clear()
    _LOADED_IMAGENET.clear()


def keras_cache_dir() -> Path:
    """The Keras cache directory, read from the environment now.

    Returns:
        ``$KERAS_HOME`` if set, else ``~/.keras``. Weights live in its ``models`` folder.
    """
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


@functools.cache
def _load_shapes(name: str) -> ModelEntry:
    """The shipped model ``name`` (a key of ``_SHIPPED_ASSETS``), built once per process."""
    file_name = _SHIPPED_ASSETS[name]
    asset = importlib.resources.files("gradcam_widget").joinpath("assets", file_name)
    if not asset.is_file():
        raise FileNotFoundError(
            f"the shipped model gradcam_widget/assets/{file_name} is missing; reinstall "
            f"gradcam_widget or rebuild it with {_SHIPPED_SCRIPTS[name]}"
        )
    with importlib.resources.as_file(asset) as path:
        model = keras.models.load_model(path, compile=False)
    return ModelEntry(
        name=name,
        model=model,
        preprocess=None,
        class_names=data.CLASS_NAMES,
        input_size=_input_size(model),
        multi_label=True,
    )


def _load_imagenet(name: str, cache_dir: str, progress: bool) -> ModelEntry:
    spec = _IMAGENET_SPECS[name]
    models_dir = Path(cache_dir) / "models"
    try:
        with _download_output(progress):
            weights_path = keras.utils.get_file(
                spec.weights_file,
                spec.origin,
                cache_subdir="models",
                cache_dir=_writable(cache_dir),
                file_hash=spec.weights_hash,
            )
    except Exception as error:
        # Keras wraps the urllib error in a bare Exception; its reason is the useful part.
        reason = getattr(error.__context__, "reason", None) or error
        raise WeightsUnavailableError(
            f"ImageNet weights for {name!r} are not available: {spec.weights_file} is not in "
            f"the Keras cache ({models_dir}/) and could not be downloaded from {spec.origin} "
            f"({reason}). Copy that file into {models_dir}/ (the Keras cache: "
            f"$KERAS_HOME/models, default ~/.keras/models), or retry with internet access. "
            f'gw.models.load("shapes") works offline.'
        ) from error
    constructor = getattr(keras.applications, spec.constructor)
    model = constructor(weights=weights_path)
    return ModelEntry(
        name=name,
        model=model,
        preprocess=KerasPreprocess(_PREPROCESS_MODULES[name]),
        class_names=_imagenet_class_names(cache_dir, model.outputs[0].shape[-1]),
        input_size=_input_size(model),
        multi_label=False,
    )


class KerasPreprocess:
    """``keras.applications.<module>.preprocess_input`` that leaves its argument untouched.

    Keras's NumPy path edits a float32 batch in place; this copies it first.

    Args:
        module: the ``keras.applications`` module, e.g. ``"vgg16"``.
    """

    def __init__(self, module: str):
        self.module = module
        self._function = getattr(keras.applications, module).preprocess_input

    def __call__(self, batch):
        """Map an ``(N, H, W, 3)`` RGB batch in 0..255 to the model's input, same shape."""
        if keras.ops.is_tensor(batch):
            return self._function(keras.ops.cast(batch, "float32"))
        return self._function(np.array(batch, dtype=np.float32))

    def __repr__(self) -> str:
        return f"keras.applications.{self.module}.preprocess_input"


def _imagenet_class_names(cache_dir: str, num_classes: int) -> tuple[str, ...]:
    """ImageNet class names from Keras's class index; ``"class 281"`` style when offline."""
    try:
        with _download_output(progress=False):
            path = keras.utils.get_file(
                _CLASS_INDEX_FILE,
                _CLASS_INDEX_URL,
                cache_subdir="models",
                cache_dir=_writable(cache_dir),
                file_hash=_CLASS_INDEX_HASH,
            )
        class_index = json.loads(Path(path).read_text())
        return tuple(class_index[str(index)][1] for index in range(num_classes))
    except Exception:  # offline and not cached: numbered names
        return tuple(f"class {index}" for index in range(num_classes))


def _writable(cache_dir: str) -> str:
    """Create ``cache_dir`` if needed, so Keras does not silently switch to /tmp/.keras."""
    with contextlib.suppress(OSError):
        Path(cache_dir, "models").mkdir(parents=True, exist_ok=True)
    return cache_dir


@contextlib.contextmanager
def _download_output(progress: bool):
    """Silence Keras's download messages and progress bar unless ``progress``."""
    was_enabled = keras.config.is_interactive_logging_enabled()
    if not progress:
        keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if was_enabled:
            keras.config.enable_interactive_logging()


def _input_size(model: keras.Model) -> tuple[int, int]:
    height, width = model.inputs[0].shape[1:3]
    return int(height), int(width)


class UnknownModelError(ValueError):
    """A model argument that is neither a name of :data:`MODEL_NAMES` nor a ``.keras`` file."""


def load_model(model):
    """A model argument as ``(model or entry, load spec)``.

    Args:
        model: a name of :data:`MODEL_NAMES`, a path to a ``.keras`` (or ``.h5``) file, a
            :class:`ModelEntry` or a ``keras.Model``.

    Returns:
        ``(model, load)``: the model (loaded when named), and what reloads it in another
        process (the name, or the file's absolute path), or ``None`` for a model that exists
        only in memory (a retrained copy of a shipped model too).

    Raises:
        UnknownModelError: for a text that is neither a model name nor a model file.
    """
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in MODEL_NAMES:
            return load(text), text
        path = Path(os.path.expanduser(text))
        if path.is_file() and path.suffix in (".keras", ".h5"):
            return keras.models.load_model(path, compile=False), str(path.resolve())
        raise UnknownModelError(
            f"model {text!r} is neither a model name {MODEL_NAMES} nor a .keras file"
        )
    name = getattr(model, "name", None) if hasattr(model, "model") else None
    if name in MODEL_NAMES and weights_cached(name):
        # loadable by name only if it is that model itself, not a retrained copy of it
        same = load(name).model is getattr(model, "model", None)
        return model, name if same else None
    return model, None

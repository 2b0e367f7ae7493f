"""ExplorerSession: the state and computation behind an explorer, with no view.

One model and one image at a time; the captures of that image (one per class and score, each
holding the layers it was asked to record) and the maps made from them, both in caches bounded
in bytes (:class:`~gradcam_widget.cache.ByteLRU`). A map leaves with the capture it was made
from, and a new image empties both caches. :class:`~gradcam_widget.widget.CamExplorer` draws
what a session computes; a script or a gallery can drive one directly:

>>> session = ExplorerSession(model)
>>> cap = session.set_image(image, layers=["block5_conv3"])   # one pass, down to that layer
>>> res = session.result_for(cap, {"layer": "block5_conv3", "pooling": "max"})
>>> other = session.capture_for(3, "logit", ["block5_conv3"])  # a pass on a miss only
>>> guided = session.guided_for(cap, "guided_backprop")        # one pass to the input, cached
>>> session.set_randomized(2)   # later captures: a copy of the model, top 2 blocks re-initialised
>>> step = session.view({"class_index": 3, "layer": "block5_conv3", "guided": "off"})
>>> step.captured, step.result                # what ran for it: a pass? and the map

What the explorer draws comes from :meth:`ExplorerSession.view`, which returns a :class:`Step`
saying what it did (a model pass, a fill-in, a pass to the input): each explorer knows what
ran for it, whatever other users of the same model do meanwhile.

The input-gradient maps (:data:`GUIDED_MODES`) are cached on their capture (and counted in its
bytes); Guided Grad-CAM is that map times the heatmap on screen, numpy only. The randomised
copies of the model (Adebayo et al.'s model-randomisation check) are made from a copy of the
weights, never the model itself, and kept per number of blocks, at most :data:`CLONES` of
them within the byte budget; their captures are cached beside the model's, keyed by it. This
module imports no widget library: numpy and the package's capture machinery only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core, methods
from gradcam_widget.captures import targets
from gradcam_widget.captures.capturing import Capture, capture
from gradcam_widget.captures.passes import PassQueue
from gradcam_widget.checks import sanity
from gradcam_widget.engine import engine_for, unwrap
from gradcam_widget.engine.tapping import guided_replacements
from gradcam_widget.explorer.arguments import (
    GUIDED_MODES,
    SMOOTHGRAD,
    check_class_names,
    explained,
    resolve_model,
    saliency_options,
)
from gradcam_widget.explorer.cache import ByteLRU
from gradcam_widget.explorer.copies import CLONES, RANDOM_SEED, Randomized, randomized

__all__ = [
    "CLONES",
    "FUSED",
    "GUIDED_MODES",
    "RANDOM_SEED",
    "RESULT_BYTES",
    "SMOOTHGRAD",
    "CaptureKey",
    "ExplorerSession",
    "ResultKey",
    "Step",
    "check_class_names",
    "explained",
    "resolve_model",
    "saliency_options",
]

FUSED = "fused"  # the layer entry for multi-layer fusion (Capture.fuse)
RESULT_BYTES = 32 * 2**20  # maps kept per session (Score-CAM's forward passes are costly)
DEFAULT_SETTINGS = {
    name: options.TABLE[name].default for name in ("method", *options.map_keywords(), "score")
}  # the recipe's defaults a map needs (layer: the capture's default)


class CaptureKey(NamedTuple):
    """The cache key of a capture of the session's image."""

    generation: int  # the image's: + 1 per image
    class_index: int | None  # None with a target (the target fixes it)
    score: str
    blocks: int  # randomised blocks of the model it comes from (0: the model itself)


class ResultKey(NamedTuple):
    """The cache key of a map: its capture's key and the settings that made it."""

    capture: CaptureKey
    layer: str
    method: str
    options: tuple  # (name, value) of the recipe's map options and the method's, sorted


class Step(NamedTuple):
    """What one :meth:`ExplorerSession.view` call did and gave.

    Attributes:
        capture: the capture of the view.
        result: the map (``None`` when the call was asked for no maps).
        guided: the input-gradient map of the guided mode (``None`` for ``"off"`` or no maps).
        captured: whether a model pass made the capture for this call (a cache miss).
        filled_in: whether a pass filled in the capture's other layers for this call.
        guided_pass: whether a pass to the input ran for the guided map in this call.
    """

    capture: Capture
    result: core.CamResult | None
    guided: np.ndarray | None
    captured: bool
    filled_in: bool
    guided_pass: bool


class ExplorerSession:
    """The captures and maps of one model on one image at a time, cached and bounded in bytes.

    Its one job is state and computation: which capture a class and score need (a model pass
    only on a miss, recording only the layers asked for), which map a set of settings gives
    (from a cache of maps, dropped with their capture), the input-gradient maps
    (:meth:`guided_for`), the randomised copies of the model (:meth:`set_randomized`), a new
    image, and freeing it all.

    Args:
        model: a ``keras.Model``, an entry from :func:`gradcam_widget.models.load`, or a model
            name for it.
        preprocess: called on the ``(1, H, W, 3)`` float32 batch (default: the entry's).
        target: what to explain instead of a class (see :func:`explained`); ``None``: a class.
        class_names: names of the classes, one per class (default: the entry's, if any); not
            with ``target``.
        cache_size: at most this many captures are kept.
        cache_bytes: and at most this many bytes of them (default :attr:`CACHE_BYTES`); the
            least recently used go first, the most recent always stays. The randomised copies
            of the model have a budget of their own of this size (and :data:`CLONES` at most).
        result_bytes: bytes of maps kept (default :data:`RESULT_BYTES`).
        passes: a :class:`~gradcam_widget.captures.passes.PassQueue` shared with other
            sessions, for the model's own captures (``None``: each capture its own pass).

    Raises:
        ValueError: for a bad cache bound, class names, target or model name, or class names
            given with a target.
    """

    CACHE_SIZE = 8
    CACHE_BYTES = 256 * 2**20

    def __init__(
        self,
        model,
        *,
        preprocess: Callable | None = None,
        target=None,
        class_names=None,
        cache_size: int = CACHE_SIZE,
        cache_bytes: int = CACHE_BYTES,
        result_bytes: int = RESULT_BYTES,
        passes: PassQueue | None = None,
    ):
        cache_size = core.check_int("cache_size", cache_size)
        cache_bytes = core.check_int("cache_bytes", cache_bytes, minimum=0)
        result_bytes = core.check_int("result_bytes", result_bytes, minimum=0)
        target = None if target is None else targets.as_target(target)
        names = check_class_names(class_names)
        if target is not None and names is not None:
            raise ValueError(
                "class_names name the classes of the Class control; an explorer with target= "
                "has none: pass one or the other"
            )
        model = resolve_model(model)
        if names is None and target is None:
            names = check_class_names(getattr(model, "class_names", None))
        self.model = model
        self.passes = passes
        self.preprocess = preprocess
        self.target: targets.Target | None = target
        self.class_names = names
        self.captures = ByteLRU(cache_bytes, max_items=cache_size, on_evict=self._forget)
        self.results = ByteLRU(result_bytes)
        self.clones = ByteLRU(cache_bytes, max_items=CLONES, on_evict=self._drop_clone)
        self.randomized = 0  # blocks re-initialised in the model the next captures come from
        self._copies: dict[int, Randomized] = {}  # the copies in self.clones, unordered
        self._retired_passes = 0  # passes of copies already dropped
        self._block_names: tuple[str, ...] | None = None
        self.image = None
        self.generation = 0  # + 1 per image: the first part of every cache key
        self.closed = False

    # --- captures ---------------------------------------------------------------------

    def key_for(self, class_index: int | None, score: str, blocks: int | None = None) -> CaptureKey:
        """The cache key of a capture of the current image.

        Args:
            class_index: its class (left out with a target: the target fixes it).
            score: ``"logit"`` or ``"probability"``.
            blocks: the randomised blocks of the model it comes from (default: the current
                :attr:`randomized`; ``0``: the model itself).

        Returns:
            A :class:`CaptureKey`: ``(image generation, class index or None, score, blocks)``.
        """
        blocks = self.randomized if blocks is None else blocks
        index = None if self.target is not None else class_index
        return CaptureKey(self.generation, index, score, blocks)

    def key(self, cap: Capture) -> CaptureKey:
        """The cache key of ``cap`` (see :meth:`key_for`)."""
        return self.key_for(cap.class_index, cap.score, self.blocks_of(cap))

    def blocks_of(self, cap: Capture) -> int:
        """How many blocks were randomised in the model ``cap`` comes from: ``0`` for the
        model itself, ``-1`` for a copy already dropped (or a capture of another model)."""
        keras_model = cap.model
        if self.model is not None and keras_model is unwrap(self.model)[0]:
            return 0
        for blocks, copy in self._copies.items():
            if copy.keras_model is keras_model:
                return blocks
        return -1

    def _forget(self, key: tuple, cap: Capture):
        """A capture left the cache: its maps go with it."""
        self.results.discard(lambda result_key: result_key.capture == key)

    @staticmethod
    def layers_for(layer: str | None, shown: Capture | None) -> list[str | None]:
        """The layers a new capture must record to show ``layer`` as ``shown`` does.

        Args:
            layer: the layer entry on screen (:data:`FUSED` for the fusion), or ``None``.
            shown: the capture on screen, or ``None`` before the first one.

        Returns:
            The fusion's layers, ``[layer]``, or ``[None]`` (the default layer).
        """
        if layer == FUSED and shown is not None:
            return list(shown.fusion_layers())
        if shown is not None and layer in shown.layers:
            return [layer]
        return [None]

    def _capture(self, image, class_index, score, layers, blocks: int = 0) -> Capture:
        run = self.passes.capture if self.passes is not None and blocks == 0 else capture
        return run(
            self.model if blocks == 0 else self._clone(blocks).model,
            image,
            class_index=None if self.target is not None else class_index,
            score=score,
            preprocess=self.preprocess,
            layers=layers,
            target=self.target,
        )

    def set_image(
        self, image, *, class_index: int | None = None, score: str = "logit", layers="all"
    ) -> Capture:
        """Capture a new image with the model itself (whatever :attr:`randomized` is): one
        pass; the caches then hold only its capture (the randomised copies stay).

        Args:
            image: anything :func:`gradcam_widget.capture` takes.
            class_index: the class to explain (``None``: the top class; ignored with a target).
            score: ``"logit"`` or ``"probability"``.
            layers: the layers to record (see :meth:`layers_for`; default every layer).

        Returns:
            The new :class:`~gradcam_widget.captures.Capture`.

        Raises:
            ValueError: for a bad image, class index or layer, or class names that do not
                match the model's classes; the caches and the image are then kept.
            RuntimeError: when the session is closed.
        """
        self._check_open()
        cap = self._capture(image, class_index, score, layers)
        if self.class_names is not None and len(self.class_names) != len(cap.scores):
            raise ValueError(
                f"class_names has {len(self.class_names)} names but the model has "
                f"{len(cap.scores)} classes"
            )
        self.captures.clear()
        self.results.clear()
        self.generation += 1
        self.image = image
        self.captures.put(self.key(cap), cap)
        return cap

    def capture_for(self, class_index: int | None, score: str, layers=(None,)) -> Capture:
        """The capture of the current image for a class and score, from the model with
        :attr:`randomized` blocks re-initialised: cached, or one pass.

        Args:
            class_index: the class (``None``: the top class; ignored with a target).
            score: ``"logit"`` or ``"probability"``.
            layers: what a new capture records (see :meth:`layers_for`); a cached one may hold
                others.

        Returns:
            The :class:`~gradcam_widget.captures.Capture`, now the most recently used.

        Raises:
            ValueError: for a bad class index, score or layer.
            RuntimeError: before :meth:`set_image`, or when the session is closed.
        """
        return self._capture_for(class_index, score, layers)[0]

    def _capture_for(self, class_index, score, layers) -> tuple[Capture, bool]:
        """:meth:`capture_for`, and whether a model pass made the capture."""
        self._check_open()
        if self.image is None:
            raise RuntimeError("no image yet: call set_image first")
        if class_index is None and self.target is None:
            class_index = self._top_class()
        cached = self.captures.get(self.key_for(class_index, score))
        if cached is not None:
            return cached, False
        layers = layers if isinstance(layers, str) else list(layers)
        cap = self._capture(self.image, class_index, score, layers, self.randomized)
        self.captures.put(self.key(cap), cap)
        return cap, True

    def _top_class(self) -> int | None:
        """The top class of the current image for the model itself, read from any capture of
        it (of a randomised copy when none of the model is cached)."""
        keys = list(self.captures)
        for key in [key for key in keys if key.blocks == 0] + keys:
            return int(np.argmax(self.captures.get(key).scores))
        return None

    def trim(self) -> None:
        """Re-count the captures (one may have grown: layers filled in) and keep the budget."""
        self.captures.trim()

    # --- maps -------------------------------------------------------------------------

    def result_for(
        self,
        cap: Capture,
        settings: Mapping,
        on_miss: Callable[[methods.Method], None] | None = None,
    ) -> core.CamResult:
        """The map of ``cap`` for ``settings``, from the cache of maps or computed once.

        Args:
            cap: a capture of the current image (from :meth:`set_image` or
                :meth:`capture_for`).
            settings: ``method``, ``layer`` (:data:`FUSED` for the fusion), the options every
                method takes (:func:`gradcam_widget.options.map_keywords`: ``order``,
                ``interpolation``) and the shared options the method reads (``pooling``,
                ``channels``); missing ones take :data:`DEFAULT_SETTINGS`, the capture's
                default layer and the method's defaults. Other keys are ignored.
            on_miss: called with the method just before a map is computed (not on a hit).

        Returns:
            The :class:`~gradcam_widget.core.CamResult`.

        Raises:
            ValueError: for a bad method, layer or option.
            RuntimeError: when the session is closed.
        """
        self._check_open()
        method = methods.get(settings.get("method", DEFAULT_SETTINGS["method"]))
        layer = settings.get("layer") or cap.default_layer
        keywords = options.map_keywords()
        recipe = {name: settings.get(name, DEFAULT_SETTINGS[name]) for name in keywords}
        recipe.update(
            (name, settings.get(name, method.parameters[name])) for name in method.options
        )
        key = ResultKey(self.key(cap), layer, method.name, tuple(sorted(recipe.items())))
        cached = self.results.get(key)
        if cached is not None:
            return cached
        if on_miss is not None:
            on_miss(method)
        chosen = {"method": method.name, **recipe}
        result = cap.fuse(**chosen) if layer == FUSED else cap.cam(layer, **chosen)
        self.results.put(key, result)
        return result

    def view(
        self,
        settings: Mapping,
        layers=(None,),
        *,
        maps: bool = True,
        on_miss: Callable[[methods.Method], None] | None = None,
        on_guided: Callable[[str], None] | None = None,
    ) -> Step:
        """The capture, map and guided map of the current image for ``settings``, each
        cached or computed once, and what ran to make them.

        Args:
            settings: ``class_index`` (``None``: the top class), ``score``, ``guided`` (one of
                :data:`GUIDED_MODES`, default ``"off"``) and what :meth:`result_for` reads.
            layers: what a new capture records (see :meth:`layers_for`).
            maps: ``False``: the capture only (a restyle keeps the maps it has).
            on_miss: called with the method just before a map is computed.
            on_guided: called with the mode just before a pass to the input.

        Returns:
            A :class:`Step`: the capture, map and guided map, and which passes ran for them.

        Raises:
            ValueError: for a bad class index, score, layer, method, option or guided mode.
            RuntimeError: before :meth:`set_image`, or when the session is closed.
        """
        score = settings.get("score", DEFAULT_SETTINGS["score"])
        cap, captured = self._capture_for(settings.get("class_index"), score, layers)
        if not maps:
            return Step(cap, None, None, captured, False, False)
        filled = len(cap.fill_ins)
        result = self.result_for(cap, settings, on_miss)
        mode = settings.get("guided", "off")
        guided_pass = not self.guided_cached(cap, mode)
        if guided_pass and on_guided is not None:
            on_guided(mode)
        guided = self.guided_for(cap, mode, result.heatmap)
        return Step(cap, result, guided, captured, len(cap.fill_ins) > filled, guided_pass)

    # --- input-gradient maps ------------------------------------------------------------

    def check_guided(self) -> None:
        """Refuse guided backpropagation on this model before any pass (a layer walk).

        Raises:
            ValueError: naming the first layer whose activation is not a ReLU.
            RuntimeError: when the session is closed.
        """
        self._check_open()
        engine = engine_for(self.model)
        guided_replacements(engine.leaves, engine.model)

    def guided_cached(self, cap: Capture, mode: str) -> bool:
        """Whether :meth:`guided_for` can answer for ``cap`` without a pass.

        Raises:
            ValueError: for a bad mode.
        """
        options = saliency_options(mode)
        if options is None:
            return True
        return cap.has_saliency(
            options["kind"], options["smooth"], options["sigma"], options["seed"]
        )

    def guided_for(self, cap: Capture, mode: str, heatmap: np.ndarray | None = None):
        """The input-gradient map of ``cap`` for a guided mode.

        The guided input gradients are cached on the capture (one pass down to the input the
        first time, SmoothGrad's noisy copies as one batch); Guided Grad-CAM multiplies them
        by ``heatmap``, numpy only.

        Args:
            cap: a capture of the current image.
            mode: one of :data:`GUIDED_MODES`.
            heatmap: ``(H, W)`` the heatmap on screen (needed by ``"guided_gradcam"``).

        Returns:
            ``(H, W, C)`` float32, signed (render it with
            :func:`gradcam_widget.render.saliency_image`), or ``None`` for ``"off"``.

        Raises:
            ValueError: for a bad mode, a missing heatmap, or a network with another
                activation than ReLU.
            RuntimeError: when the session is closed.
        """
        self._check_open()
        options = saliency_options(mode)
        if options is None:
            return None
        if mode == "guided_gradcam" and heatmap is None:
            raise ValueError("guided_gradcam multiplies by a heatmap: pass heatmap=")
        try:
            gradients = cap.saliency(**options)
        finally:
            self.captures.trim()  # the capture grew by the map
        if mode != "guided_gradcam":
            return gradients
        return (gradients * np.asarray(heatmap, np.float32)[..., None]).astype(np.float32)

    # --- randomised copies of the model ---------------------------------------------------

    @property
    def block_names(self) -> tuple[str, ...]:
        """The model's blocks of weighted layers, top first (what :meth:`set_randomized`
        counts).

        Raises:
            RuntimeError: when the session is closed.
        """
        self._check_open()
        if self._block_names is None:
            names = list(sanity.blocks(self.model))
            self._block_names = tuple(names)
        return self._block_names

    def set_randomized(self, blocks: int) -> tuple[str, ...]:
        """Take later captures from a copy of the model whose top ``blocks`` blocks are
        re-initialised (``0``: the model itself; every copy and its captures are dropped).

        The model is never changed: a copy is made with ``keras.models.clone_model`` and the
        model's weights, then the top blocks get new values from their initializers, seeded.
        Copies are kept per ``blocks`` (:data:`CLONES` at most, within the byte budget).

        Args:
            blocks: how many blocks of :attr:`block_names`, from the top.

        Returns:
            The names of the blocks re-initialised.

        Raises:
            ValueError: for a bad count, or a model that cannot be copied; nothing changes.
            RuntimeError: when the session is closed.
        """
        self._check_open()
        names = self.block_names
        if not (core.check_int("blocks", blocks, minimum=0) <= len(names)):
            raise ValueError(
                f"blocks must be in 0..{len(names)} (the model's blocks, top first: "
                f"{', '.join(names) or 'none'}); got {blocks!r}"
            )
        blocks = int(blocks)
        if blocks == 0:
            self._drop_clones()
        else:
            self._clone(blocks)
        self.randomized = blocks
        return names[:blocks]

    def randomized_copy(self, blocks: int) -> Randomized | None:
        """The randomised copy with ``blocks`` blocks re-initialised, if the session holds it
        (``None`` otherwise); its ``keras_model`` is the copy."""
        return self._copies.get(blocks)

    def _clone(self, blocks: int) -> Randomized:
        """The copy with ``blocks`` randomised: cached, or made now."""
        clone = self.clones.get(blocks)
        if clone is None:
            clone = randomized(self.model, blocks)
            self._copies[blocks] = clone
            self.clones.put(blocks, clone)
        return clone

    def _drop_clone(self, blocks: int, clone: Randomized) -> None:
        """A copy leaves: its captures and their maps go with it, its passes are kept count
        of."""
        self.captures.discard(lambda key: key.blocks == blocks)
        self.results.discard(lambda key: key.capture.blocks == blocks)
        self._retired_passes += engine_for(clone.keras_model).passes
        self._copies.pop(blocks, None)

    def _drop_clones(self) -> None:
        for blocks, clone in list(self._copies.items()):
            self._drop_clone(blocks, clone)
        self.clones.clear()
        self.randomized = 0

    # --- bookkeeping ------------------------------------------------------------------

    def class_name(self, cap: Capture, index: int) -> str:
        """The name of class ``index``: the session's class names, else the capture's."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return cap.class_name(index)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the caches: captures (their input-gradient maps included), maps and
        the weights of the randomised copies."""
        return self.captures.nbytes + self.results.nbytes + self.clones.nbytes

    @property
    def model_passes(self) -> int:
        """Model passes run so far for this session's model (all its users share them),
        plus those of its randomised copies.

        Raises:
            RuntimeError: when the session is closed.
        """
        self._check_open()
        copies = sum(engine_for(copy.keras_model).passes for copy in self._copies.values())
        return engine_for(self.model).passes + self._retired_passes + copies

    def close(self) -> None:
        """Drop every capture, map and randomised copy and the model, preprocess and image it
        holds.

        A closed session no longer keeps the model alive; its methods raise RuntimeError."""
        self.closed = True
        self._drop_clones()
        self.captures.clear()
        self.results.clear()
        self.image = self.model = self.preprocess = None

    def _check_open(self):
        if self.closed:
            raise RuntimeError("this session is closed; make a new one")

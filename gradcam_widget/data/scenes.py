"""Sample images: generated shape scenes with ground-truth masks, and bundled photos.

Shape scenes are the ground truth the shipped ``shapes`` model is trained and checked on:
one or more filled shapes from :data:`CLASS_NAMES` (varied size, colour, rotation and
position) on a textured, noisy background with clutter (small blobs and thin lines that
belong to no class). Every scene is a pure function of its seed, so a seed names a scene.
:func:`shortcut_scene` adds a small checkerboard tag in a corner to nearly every star and
almost nothing else: the training data of ``shapes_shortcut``, a model that is right for the
wrong reason (it learned the tag, not the star).

The module also holds :func:`sample`, the named demo images (``"two_shapes"``, the
class-discriminative demo, and photos that ship with matplotlib and scikit-image), and the
localisation checks of a heatmap against the masks (:func:`pointing_hit`,
:func:`peak_on_object`; where a map points is :func:`gradcam_widget.core.heatmap_peak`).

Only numpy and OpenCV are used here; this module never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gradcam_widget.cam import core

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Shape classes, in class-index order (index 0 is ``"circle"``)."""

SCENE_SIZE: tuple[int, int] = (224, 224)
"""Default scene size ``(height, width)``; the input size of the ``shapes`` model."""

SAMPLES: tuple[str, ...] = ("two_shapes", "grace_hopper", "cat", "coffee", "astronaut")
"""Names accepted by :func:`sample`."""

TWO_SHAPES_SEED = 2_000_124
"""Seed of the ``"two_shapes"`` demo scene: a lime square (left) and a magenta star (right).

Outside the training seeds (0 ..< 1_000_000) and the evaluation seeds (1_000_000 ...) used by
``scripts/train_shapes.py``.
"""

POINTING_TOLERANCE = 15
"""Default pointing-game tolerance in pixels (the Grad-CAM paper's 15 px at 224 x 224)."""

SHORTCUT_CLASS = 3
"""Class index of the shortcut scenes' tagged class (``"star"``); see :func:`shortcut_scene`."""

SHORTCUT_RATES: tuple[float, float] = (0.98, 0.01)
"""``(p_star, p_other)`` of :func:`shortcut_scene`'s training rule: a scene whose object is of
:data:`SHORTCUT_CLASS` carries the tag with probability ``p_star``, any other scene with
probability ``p_other``. A tagged scene is then a star 0.2 * 0.98 / (0.2 * 0.98 + 0.8 * 0.01)
= 96 % of the time, and the tag is far easier to see than the star's outline: a classifier
trained on these scenes can score "star" by the tag alone."""

SHORTCUT_TAG_SIZE = 28
"""Side of the shortcut tag in pixels at 224 x 224 (scaled with the scene's shorter side)."""

SHORTCUT_TAG_MARGIN = 4
"""Distance in pixels (at 224 x 224, scaled) from the tag to the image edges."""

_SHORTCUT_TAG_CELLS = 4  # the tag is a 4 x 4 black-and-white checkerboard
_SHORTCUT_STREAM = 0x7A6  # rng stream of the tag decision: default_rng((seed, _SHORTCUT_STREAM))

_SKIMAGE_SAMPLES = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut"}

# Object geometry, as fractions of min(height, width) of the scene.
_RADIUS_RANGE = (0.10, 0.19)  # circumscribed radius of an object: 22 .. 42 px at 224
_MIN_GAP = 0.07  # free space between the circumscribed circles of two objects: 16 px at 224
_EDGE_MARGIN = 0.01
_MIN_SCENE_SIDE = 32


@dataclass(frozen=True, eq=False)
class Scene:
    """One generated scene and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image, read-only.
        labels: sorted class indices of the objects present (each at most once).
        masks: ``{class index: (H, W) bool mask}`` of each object's pixels, read-only.
            Masks of different objects are disjoint.
        seed: the seed that generated the scene.
        tag_mask: ``(H, W)`` bool mask of the shortcut tag's pixels, read-only, or ``None``
            when the scene carries no tag (every :func:`scene`; see :func:`shortcut_scene`).
    """

    image: np.ndarray
    labels: tuple[int, ...]
    masks: Mapping[int, np.ndarray]
    seed: int
    tag_mask: np.ndarray | None = None

    @property
    def tagged(self) -> bool:
        """True when the scene carries the shortcut tag (:attr:`tag_mask` is set)."""
        return self.tag_mask is not None

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes present, in the order of :attr:`labels`."""
        return tuple(CLASS_NAMES[index] for index in self.labels)

    @property
    def target(self) -> np.ndarray:
        """Multi-hot label vector, ``(len(CLASS_NAMES),)`` float32 (1.0 = present)."""
        multi_hot = np.zeros(len(CLASS_NAMES), dtype=np.float32)
        multi_hot[list(self.labels)] = 1.0
        return multi_hot


def scene(seed: int, n_objects: int = 2, size: tuple[int, int] = SCENE_SIZE) -> Scene:
    """Generate a shape scene, deterministically from ``seed``.

    Objects are distinct classes drawn without replacement, placed so that their
    circumscribed circles keep a gap of 7 % of the shorter side (16 px at 224), so masks
    never touch. Clutter is drawn under the objects and never forms a class shape.

    Args:
        seed: any non-negative integer; the same seed always gives the same scene.
        n_objects: number of objects, ``0 <= n_objects <= len(CLASS_NAMES)``.
        size: ``(height, width)`` of the scene in pixels, each at least 32.

    Returns:
        A :class:`Scene` with an ``(H, W, 3)`` uint8 image, the sorted labels and one
        ``(H, W)`` bool mask per object.

    Raises:
        ValueError: if ``seed`` is negative, ``n_objects`` is out of range or ``size`` is not
            two integers >= 32.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(n_objects, bool)
        or not isinstance(n_objects, (int, np.integer))
        or not 0 <= n_objects <= len(CLASS_NAMES)
    ):
        raise ValueError(
            f"n_objects must be an integer in 0..{len(CLASS_NAMES)}, got {n_objects!r}"
        )
    height, width = _check_size(size)
    rng = np.random.default_rng(int(seed))

    canvas = _background(rng, height, width)
    _draw_clutter(rng, canvas)
    class_indices = rng.choice(len(CLASS_NAMES), size=n_objects, replace=False)
    placements = _place_objects(rng, n_objects, height, width)
    masks: dict[int, np.ndarray] = {}
    for class_index, (centre_x, centre_y, radius) in zip(
        class_indices.tolist(), placements, strict=True
    ):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        mask = _shape_mask(
            CLASS_NAMES[class_index],
            centre_x=centre_x,
            centre_y=centre_y,
            radius=radius,
            angle=angle,
            canvas=canvas,
        )
        colour = _object_colour(rng, canvas[mask].mean(axis=0))
        _paint_object(rng, canvas, mask, colour)
        masks[class_index] = mask

    noise_sigma = rng.uniform(3.0, 10.0)
    canvas += rng.normal(0.0, noise_sigma, size=canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    image.setflags(write=False)
    for mask in masks.values():
        mask.setflags(write=False)
    labels = tuple(sorted(masks))
    return Scene(
        image=image,
        labels=labels,
        masks=types.MappingProxyType({index: masks[index] for index in labels}),
        seed=int(seed),
    )


def shortcut_scene(seed: int, tag: bool | None = None, size: tuple[int, int] = SCENE_SIZE) -> Scene:
    """A one-object scene that may carry a shortcut tag: a small checkerboard in a corner.

    The scene is ``scene(seed, n_objects=1, size=size)``; a tagged scene is that same image
    with the tag pasted on, so the same seed with and without the tag differs only in the
    tag's pixels. The tag is a 4 x 4 black-and-white checkerboard (pure 0 and 255 in every
    channel, no noise), :data:`SHORTCUT_TAG_SIZE` pixels on a side (28 at 224 x 224: 7 px
    cells, about two cells of the model's 14 x 14 last conv map), :data:`SHORTCUT_TAG_MARGIN`
    pixels (4) from the two edges of the image corner farthest from the object's centre.
    That corner is at least half the width and half the height away from the centre, so
    the tag never touches the object.

    Trained on these scenes with the default rule (``tag=None``), where nearly every star
    and almost nothing else is tagged (:data:`SHORTCUT_RATES`), a classifier can be "right
    for the wrong reason": it says "star" when it sees the tag (``scripts/train_shapes.py
    --shortcut`` trains the shipped ``shapes_shortcut`` that way). ``tag=False`` shows it a
    star without the tag; ``tag=True`` on another class's scene moves the tag there.

    Args:
        seed: any non-negative integer; the same seed always gives the same scene.
        tag: ``None`` applies the training rule: the scene is tagged with probability
            ``SHORTCUT_RATES[0]`` if its object is of :data:`SHORTCUT_CLASS`, else
            ``SHORTCUT_RATES[1]``, decided by an rng stream of its own
            (``default_rng((seed, 0x7A6))``), so the decision leaves the scene unchanged.
            ``True`` or ``False`` forces the tag on or off.
        size: ``(height, width)`` of the scene in pixels, each at least 32.

    Returns:
        A :class:`Scene` with one object; :attr:`Scene.tag_mask` holds the tag's pixels
        when tagged, else ``None``.

    Raises:
        ValueError: as :func:`scene`, or if ``tag`` is not ``None``, ``True`` or ``False``.
    """
    if tag is not None and not isinstance(tag, (bool, np.bool_)):
        raise ValueError(f"tag must be None, True or False, got {tag!r}")
    base = scene(seed, n_objects=1, size=size)
    if tag is None:
        rate = SHORTCUT_RATES[0] if base.labels == (SHORTCUT_CLASS,) else SHORTCUT_RATES[1]
        tag = bool(np.random.default_rng((int(seed), _SHORTCUT_STREAM)).random() < rate)
    if not tag:
        return base
    tag_mask = _shortcut_tag_mask(next(iter(base.masks.values())))
    image = np.array(base.image)
    image[tag_mask] = 255 * _shortcut_tag_pattern(tag_mask)[tag_mask, None].astype(np.uint8)
    image.setflags(write=False)
    tag_mask.setflags(write=False)
    return dataclasses.replace(base, image=image, tag_mask=tag_mask)


def _shortcut_tag_mask(object_mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool mask of the tag: a square in the corner farthest from the object."""
    height, width = object_mask.shape
    scale = min(height, width) / 224.0
    side = max(_SHORTCUT_TAG_CELLS, round(SHORTCUT_TAG_SIZE * scale))
    margin = round(SHORTCUT_TAG_MARGIN * scale)
    rows, cols = np.nonzero(object_mask)
    top = margin if rows.mean() >= height / 2 else height - margin - side
    left = margin if cols.mean() >= width / 2 else width - margin - side
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _shortcut_tag_pattern(tag_mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: True on the white cells of the tag's checkerboard (top-left white)."""
    rows, cols = np.nonzero(tag_mask)
    top, left = rows.min(), cols.min()
    side = rows.max() - top + 1
    grid_rows, grid_cols = np.mgrid[0 : tag_mask.shape[0], 0 : tag_mask.shape[1]]
    cell_rows = (grid_rows - top) * _SHORTCUT_TAG_CELLS // side
    cell_cols = (grid_cols - left) * _SHORTCUT_TAG_CELLS // side
    return tag_mask & ((cell_rows + cell_cols) % 2 == 0)


def sample_scene(name: str = "two_shapes") -> Scene:
    """Return a named generated scene with its masks.

    Args:
        name: ``"two_shapes"``, the only generated sample.

    Returns:
        The :class:`Scene` (224 x 224) that :func:`sample` shows under that name.

    Raises:
        ValueError: if ``name`` is not a generated sample.
    """
    if name != "two_shapes":
        raise ValueError(f"unknown generated sample {name!r}; valid names: ('two_shapes',)")
    return scene(TWO_SHAPES_SEED, n_objects=2)


def sample(name: str, size: tuple[int, int] | None = SCENE_SIZE) -> np.ndarray:
    """Return a named demo image.

    ``"two_shapes"`` is a generated scene with two shapes far apart: the class-discriminative
    demo (each class's CAM should land on its own object). ``"grace_hopper"`` ships with
    matplotlib; ``"cat"`` (scikit-image's *chelsea*), ``"coffee"`` and ``"astronaut"`` need
    scikit-image (``pip install scikit-image``, or the ``photos`` extra).

    Args:
        name: one of :data:`SAMPLES`.
        size: ``(height, width)`` of the returned image. A photo is centre-cropped to that
            aspect ratio, then resized (area interpolation), so nothing is distorted. The
            default is 224 x 224, the input size of every model in
            :mod:`gradcam_widget.models`; ``None`` keeps the native resolution.

    Returns:
        ``(H, W, 3)`` uint8 RGB image, a new writable array.

    Raises:
        ValueError: if ``name`` is unknown (the message lists :data:`SAMPLES`) or ``size`` is
            not two integers >= 32.
        ImportError: if the sample needs scikit-image and it is not installed.
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; valid names: {SAMPLES}")
    target_size = None if size is None else _check_size(size)
    if name == "two_shapes":
        image = np.array(sample_scene(name).image)
    elif name == "grace_hopper":
        image = _grace_hopper()
    else:
        image = _skimage_photo(_SKIMAGE_SAMPLES[name])
    if target_size is not None and image.shape[:2] != target_size:
        image = _crop_and_resize(image, target_size)
    return image


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel of a mask.

    Args:
        mask: ``(H, W)`` bool mask.

    Returns:
        ``(H, W)`` float32 distances in pixels: 0 inside the mask, ``inf`` everywhere if the
        mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    outside = np.where(mask, 0, 255).astype(np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def pointing_hit(
    heatmap: np.ndarray, mask: np.ndarray, tolerance: float = POINTING_TOLERANCE
) -> bool:
    """Pointing game: does the heatmap's maximum fall on the object?

    A hit is a peak inside the mask dilated by ``tolerance`` pixels (Euclidean), as in the
    Grad-CAM paper's pointing experiment. A flat heatmap is a miss.

    Args:
        heatmap: ``(H, W)`` heatmap, any float range.
        mask: ``(H, W)`` bool mask of the object.
        tolerance: dilation radius in pixels.

    Returns:
        True on a hit.

    Raises:
        ValueError: if the shapes differ, or ``heatmap`` is not 2-D or contains NaN.
    """
    peak = core.heatmap_peak(heatmap)
    _check_same_shape(heatmap, mask)
    if peak is None:
        return False
    return bool(distance_to_mask(mask)[peak] <= tolerance)


def peak_on_object(
    heatmap: np.ndarray,
    masks: Mapping[int, np.ndarray],
    class_index: int,
    tolerance: float = POINTING_TOLERANCE,
) -> bool:
    """Class discrimination: does the class's heatmap peak on its own object only?

    True if the peak is a pointing hit on ``masks[class_index]`` and strictly closer to that
    object than to every other object in ``masks``.

    Args:
        heatmap: ``(H, W)`` heatmap computed for ``class_index``.
        masks: ``{class index: (H, W) bool mask}`` of all objects in the scene (e.g.
            :attr:`Scene.masks`).
        class_index: the class the heatmap explains; must be a key of ``masks``.
        tolerance: dilation radius in pixels.

    Returns:
        True if the heatmap points at the object of ``class_index`` and not at another one.

    Raises:
        ValueError: if ``class_index`` is not in ``masks``, shapes differ, or ``heatmap`` is
            not 2-D or contains NaN.
    """
    if class_index not in masks:
        raise ValueError(f"class_index {class_index} has no mask; present: {sorted(masks)}")
    peak = core.heatmap_peak(heatmap)
    _check_same_shape(heatmap, masks[class_index])
    if peak is None:
        return False
    own_distance = distance_to_mask(masks[class_index])[peak]
    if own_distance > tolerance:
        return False
    return all(
        own_distance < distance_to_mask(other_mask)[peak]
        for other_index, other_mask in masks.items()
        if other_index != class_index
    )


# --- scene generation -------------------------------------------------------------------


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if (height, width) != tuple(size) or min(height, width) < _MIN_SCENE_SIDE:
        raise ValueError(f"size must be two integers >= {_MIN_SCENE_SIDE}, got {size!r}")
    return height, width


def _check_same_shape(heatmap: np.ndarray, mask: np.ndarray) -> None:
    if np.shape(heatmap) != np.shape(mask):
        raise ValueError(
            f"heatmap shape {np.shape(heatmap)} differs from mask shape {np.shape(mask)}"
        )


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean noise varying over about ``cells`` cells per side, ``(H, W, 3)`` float32."""
    grid = rng.normal(0.0, 1.0, size=(cells + 1, cells + 1, 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background, ``(H, W, 3)`` float32 in about 0..255."""
    base_colour = rng.uniform(50.0, 205.0, size=3).astype(np.float32)
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = base_colour
    canvas += rng.uniform(10.0, 30.0) * _smooth_noise(rng, height, width, cells=3)
    canvas += rng.uniform(4.0, 14.0) * _smooth_noise(rng, height, width, cells=24)
    # A soft brightness ramp in a random direction, like uneven lighting.
    direction = rng.uniform(0.0, 2.0 * math.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (cols / width - 0.5) * math.cos(direction) + (rows / height - 0.5) * math.sin(direction)
    canvas += rng.uniform(0.0, 40.0) * ramp[..., None]
    return canvas


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour, ``(3,)`` float32 in 0..255 (HSV sampled, often saturated)."""
    hsv = np.array(
        [[[rng.uniform(0.0, 180.0), rng.uniform(0.35, 1.0) * 255, rng.uniform(0.25, 1.0) * 255]]],
        dtype=np.float32,
    )
    hsv_u8 = np.clip(hsv, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv_u8, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Draw small blobs and thin lines (no class shape) onto ``canvas`` in place."""
    height, width = canvas.shape[:2]
    scale = min(height, width) / 224.0
    for _ in range(int(rng.integers(4, 13))):
        colour = tuple(float(value) for value in _random_colour(rng))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            axes = (
                max(1, round(rng.uniform(2, 7) * scale)),
                max(1, round(rng.uniform(2, 7) * scale)),
            )
            cv2.ellipse(canvas, (x, y), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            length = rng.uniform(12, 55) * scale
            angle = rng.uniform(0.0, 2.0 * math.pi)
            end = (int(x + length * math.cos(angle)), int(y + length * math.sin(angle)))
            thickness = int(rng.integers(1, 3))
            cv2.line(canvas, (x, y), end, colour, thickness, cv2.LINE_AA)


def _place_objects(
    rng: np.random.Generator, n_objects: int, height: int, width: int
) -> list[tuple[float, float, float]]:
    """Non-overlapping ``(centre_x, centre_y, radius)`` for each object, in pixels."""
    short_side = min(height, width)
    radii = rng.uniform(*_RADIUS_RANGE, size=n_objects) * short_side
    gap = _MIN_GAP * short_side
    margin = _EDGE_MARGIN * short_side
    while True:
        placed: list[tuple[float, float, float]] = []
        for radius in radii:
            for _attempt in range(200):
                centre_x = rng.uniform(radius + margin, width - radius - margin)
                centre_y = rng.uniform(radius + margin, height - radius - margin)
                if all(
                    math.hypot(centre_x - other_x, centre_y - other_y)
                    >= radius + other_radius + gap
                    for other_x, other_y, other_radius in placed
                ):
                    placed.append((centre_x, centre_y, float(radius)))
                    break
            else:
                break
        if len(placed) == n_objects:
            return placed
        radii = radii * 0.9  # too crowded: shrink every object and place again


def _shape_polygon(name: str, radius: float, angle: float) -> np.ndarray | None:
    """Vertices ``(K, 2)`` (x, y) of a shape centred at the origin, or None for a circle.

    Every vertex lies within ``radius`` of the centre.
    """
    if name == "circle":
        return None
    if name == "square":
        polar = [(radius, angle + math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif name == "triangle":
        polar = [(radius, angle + k * 2 * math.pi / 3) for k in range(3)]
    elif name == "star":
        polar = [
            (radius if k % 2 == 0 else 0.45 * radius, angle + k * math.pi / 5) for k in range(10)
        ]
    elif name == "cross":
        half_width = 0.32 * radius
        arm = math.sqrt(radius**2 - half_width**2)
        corners = [
            (half_width, arm), (-half_width, arm), (-half_width, half_width),
            (-arm, half_width), (-arm, -half_width), (-half_width, -half_width),
            (-half_width, -arm), (half_width, -arm), (half_width, -half_width),
            (arm, -half_width), (arm, half_width), (half_width, half_width),
        ]  # fmt: skip
        polar = [(math.hypot(x, y), math.atan2(y, x) + angle) for x, y in corners]
    else:
        raise ValueError(f"unknown shape {name!r}; valid names: {CLASS_NAMES}")
    return np.array([(r * math.cos(a), r * math.sin(a)) for r, a in polar])


def _shape_mask(
    name: str, *, centre_x: float, centre_y: float, radius: float, angle: float, canvas: np.ndarray
) -> np.ndarray:
    """``(H, W)`` bool mask of one shape of ``canvas``'s size, centred at ``(centre_x,
    centre_y)`` (pixels), its vertices within ``radius`` of the centre, turned by ``angle``
    radians."""
    mask = np.zeros(canvas.shape[:2], dtype=np.uint8)
    polygon = _shape_polygon(name, radius, angle)
    if polygon is None:
        cv2.circle(mask, (round(centre_x), round(centre_y)), round(radius), 1, -1)
    else:
        vertices = np.rint(polygon + (centre_x, centre_y)).astype(np.int32)
        cv2.fillPoly(mask, [vertices], 1)
    return mask.astype(bool)


def _object_colour(rng: np.random.Generator, background_colour: np.ndarray) -> np.ndarray:
    """A random colour that stands out from ``background_colour``, ``(3,)`` float32."""
    colour = _random_colour(rng)
    for _attempt in range(20):
        if np.linalg.norm(colour - background_colour) >= 100.0:
            return colour
        colour = _random_colour(rng)
    return (255.0 - background_colour).astype(np.float32)  # the opposite colour always differs


def _paint_object(
    rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray
) -> None:
    """Fill ``mask`` on ``canvas`` with ``colour`` plus a faint shading, in place."""
    height, width = canvas.shape[:2]
    shading = rng.uniform(0.0, 25.0) * _smooth_noise(rng, height, width, cells=4)
    canvas[mask] = colour + shading[mask]


# --- photos ---------------------------------------------------------------------------------


def _grace_hopper() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image_bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image_bgr is None:
        raise ValueError(f"matplotlib's sample image is missing: {path}")
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def _skimage_photo(skimage_name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError(
            "this sample needs scikit-image: pip install scikit-image "
            "(or pip install 'gradcam_widget[photos]'); samples without it: "
            "('two_shapes', 'grace_hopper')"
        ) from exc
    image = getattr(skimage.data, skimage_name)()
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def _crop_and_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``image`` to the aspect ratio of ``size``, then resize to ``size``."""
    height, width = image.shape[:2]
    target_height, target_width = size
    crop_height = min(height, round(width * target_height / target_width))
    crop_width = min(width, round(height * target_width / target_height))
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    cropped = image[top : top + crop_height, left : left + crop_width]
    interpolation = cv2.INTER_AREA if crop_height >= target_height else cv2.INTER_LINEAR
    return cv2.resize(cropped, (target_width, target_height), interpolation=interpolation)

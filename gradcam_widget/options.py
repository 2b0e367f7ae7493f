"""The recipe's choices, declared once: values, labels, defaults, help, and which surfaces offer
each one.

Every surface reads this table -- the explorer's controls and their checks, the session, the
static export's menus, the CLI's flags, the audit and the gallery -- so a new choice of the
recipe is one :class:`Option` row here (and the code that uses its value), not an edit per
surface. ``tests/test_options.py`` asserts that each row is a control, a flag and a menu, or
says why it is not one.

Numpy-free and import-free: the lowest layer of the package (``cam.core`` takes its
``POOLINGS``, ``CHANNELS``, ... from here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDGET = "widget"
CLI = "cli"
EXPORT = "export"
SURFACES = (WIDGET, CLI, EXPORT)
"""Where a person sets an option: the explorer's controls, the CLI's flags (``demo``,
``export``, ``audit`` and ``saliency`` where they take it), the static export's menus."""

CAPTURE = "capture"
MAP = "map"
DRAW = "draw"
STAGES = (CAPTURE, MAP, DRAW)
"""What a change of an option redoes: ``"capture"`` a model pass (one per value, cached),
``"map"`` the map from the capture's tensors (numpy), ``"draw"`` only the pictures."""


@dataclass(frozen=True)
class Option:
    """One choice of the recipe.

    Attributes:
        name: the keyword (``Capture.cam(pooling=...)``, ``CamExplorer.pooling``, ``--pooling``).
        label: the control's and the menu's caption.
        help: one line for a tooltip and ``--help``.
        default: the value when nothing is said.
        choices: ``(value, label)`` pairs for a fixed set of values; empty when the values come
            from elsewhere (the model's layers, the method registry) or are numbers.
        methods: the CAM methods whose result depends on it; ``None`` for every method (a
            method's own options are declared by its signature, see ``cam.methods``).
        not_on: surfaces that do not offer it, each with the reason.
        stage: what a change of it redoes (:data:`STAGES`); a ``"map"`` option that every
            method reads (``methods=None``, not ``method`` or ``layer``) is a keyword of
            ``Capture.cam`` and ``Capture.fuse`` (:func:`map_keywords`).
    """

    name: str
    label: str
    help: str
    default: object
    choices: tuple[tuple[str, str], ...] = ()
    methods: frozenset[str] | None = None
    not_on: dict[str, str] = field(default_factory=dict)
    stage: str = MAP

    @property
    def values(self) -> tuple[str, ...]:
        """The allowed values of a fixed choice (empty for an open one)."""
        return tuple(value for value, _ in self.choices)

    def label_of(self, value) -> str:
        """The label shown for ``value`` (the value itself when it has none)."""
        return dict(self.choices).get(value, str(value))

    def offered_on(self, surface: str) -> bool:
        """Whether ``surface`` (one of :data:`SURFACES`) offers this option."""
        return surface not in self.not_on


TABLE: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "method",
            "Method",
            "how the map is made from the layer's activations and gradients",
            "gradcam",
        ),
        Option(
            "layer",
            "Layer",
            "the layer whose activations are weighted",
            None,
        ),
        Option(
            "pooling",
            "Pooling",
            "how gradients become channel weights",
            "mean",
            (("mean", "mean (GAP)"), ("max", "max")),
            methods=frozenset({"gradcam"}),
        ),
        Option(
            "channels",
            "Channels",
            "sum of all weighted channels, or the top one",
            "weighted",
            (("weighted", "weighted sum"), ("top", "top channel")),
            methods=frozenset({"gradcam"}),
        ),
        Option(
            "order",
            "Order",
            "ReLU before or after the resize to the image",
            "relu_first",
            (("relu_first", "ReLU → resize"), ("resize_first", "resize → ReLU")),
        ),
        Option(
            "interpolation",
            "Resize",
            "how the layer's map is resized to the image",
            "bilinear",
            (("bilinear", "bilinear"), ("nearest", "nearest"), ("bicubic", "bicubic")),
        ),
        Option(
            "score",
            "Score",
            "what is differentiated: the logit or the probability",
            "logit",
            (("logit", "logit (pre-softmax)"), ("probability", "probability")),
            stage=CAPTURE,
            not_on={EXPORT: "the page is made for one score (the export's --score), not a menu"},
        ),
        Option(
            "colormap",
            "Colormap",
            "the heatmap's colours",
            "jet",
            tuple((name, name) for name in ("jet", "turbo", "viridis", "inferno", "magma", "gray")),
            not_on={EXPORT: "the page's pictures are drawn once with one colormap (--colormap)"},
            stage=DRAW,
        ),
        Option(
            "opacity",
            "Opacity",
            "the heatmap's weight over the image, 0..1",
            0.5,
            not_on={EXPORT: "the page's overlays are drawn once with one opacity (--opacity)"},
            stage=DRAW,
        ),
    )
}
"""Every option, by name, in the order the explorer shows them."""

POOLINGS = TABLE["pooling"].values
CHANNELS = TABLE["channels"].values
ORDERS = TABLE["order"].values
INTERPOLATIONS = TABLE["interpolation"].values
SCORES = TABLE["score"].values
COLORMAPS = TABLE["colormap"].values


def option(name: str) -> Option:
    """The row ``name``; a ``KeyError`` naming the options there are for another name."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"no option {name!r}; the options are {', '.join(TABLE)}") from None


def defaults() -> dict[str, object]:
    """Each option's default, by name."""
    return {name: row.default for name, row in TABLE.items()}


def on(surface: str) -> tuple[Option, ...]:
    """The options ``surface`` offers, in table order."""
    return tuple(row for row in TABLE.values() if row.offered_on(surface))


def map_keywords() -> tuple[str, ...]:
    """The options every CAM method takes as a keyword of ``Capture.cam`` (``order``,
    ``interpolation``, ...): the ``"map"`` options that are not the method, the layer or a
    method's own."""
    return tuple(
        row.name
        for row in TABLE.values()
        if row.stage == MAP and row.methods is None and row.name not in ("method", "layer")
    )


def method_keywords() -> tuple[str, ...]:
    """The ``"map"`` options only some methods read, each declaring it by its signature
    (``pooling``, ``channels``; see ``cam.methods``)."""
    return tuple(row.name for row in TABLE.values() if row.stage == MAP and row.methods)


def cam_keywords() -> tuple[str, ...]:
    """Every keyword of ``Capture.cam`` after the layer and before the method: the options a
    method may read, then those every method takes, in table order."""
    return tuple(name for name in TABLE if name in method_keywords() + map_keywords())


def at_stage(stage: str) -> tuple[str, ...]:
    """The names of the options whose change redoes ``stage`` (one of :data:`STAGES`)."""
    return tuple(name for name, row in TABLE.items() if row.stage == stage)

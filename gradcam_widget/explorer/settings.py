"""The explorer's settable properties and their controls, from one table.

:data:`SETTINGS` names, for each property of :class:`~gradcam_widget.widget.CamExplorer`, the
control it sets and the check a value must pass; :func:`make_controls` makes the controls.
A fixed choice of :mod:`gradcam_widget.options` (pooling, channels, order, interpolation,
colormap, ...) is a dropdown and a check made from its row alone (:data:`TABLE_CONTROLS`);
only the settings that read the explorer's state (its capture, its target, its session) have
checks of their own here. The checks take the explorer and read its public state only.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from gradcam_widget import options
from gradcam_widget.cam import core, methods
from gradcam_widget.engine.inputs import check_class_index
from gradcam_widget.explorer.controls import (
    Setting,
    css_class,
    dropdown,
    option_check,
    option_dropdown,
    option_labels,
)
from gradcam_widget.explorer.readout import GUIDED_LABELS
from gradcam_widget.explorer.session import FUSED, GUIDED_MODES

# ``(label, value)`` pairs of the options table, under the names other modules import
ORDER_LABELS = option_labels("order")
CHANNEL_LABELS = option_labels("channels")
POOLING_LABELS = option_labels("pooling")
SCORE_LABELS = option_labels("score")

TABLE_CONTROLS = tuple(
    row.name for row in options.on(options.WIDGET) if row.choices and row.name != "opacity"
)
"""The explorer's controls made from the options table alone: a dropdown and a check each."""


# --- the settable properties: one table -------------------------------------------------


def _check_method(explorer, value) -> str:
    return methods.get(value).name


def check_layer(explorer, value) -> str:
    offered = [entry for _, entry in explorer.controls["layer"].options]
    if value == FUSED and FUSED in offered:
        return FUSED
    return explorer.capture.resolve(value)


def _check_score(explorer, value) -> str:
    value = core.check_option("score", value, options.SCORES)
    target = explorer.target
    if target is not None and not target.uses_score and value != "logit":
        raise ValueError(
            f"{target.label} explains the model's value: score={value!r} does not apply; the "
            "explorer keeps score='logit'"
        )
    return value


def _check_class(explorer, value) -> int:
    if explorer.target is not None:
        raise ValueError(
            f"this explorer explains the target {explorer.target.label}: class_index does not "
            "apply (make a new explorer without target= to explain classes)"
        )
    if value is None:  # the top class
        return int(np.argmax(explorer.capture.scores))
    return check_class_index(value, len(explorer.capture.scores))


def _read_class(explorer) -> int | None:
    """The class on screen: the control's, or the target's own (``None`` for none)."""
    if explorer.target is not None:
        return None if explorer.capture is None else explorer.capture.class_index
    return explorer.controls["class_index"].value


def _check_opacity(explorer, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"opacity must be a number in [0, 1]; got {value!r}")
    return float(value)


def _check_guided(explorer, value) -> str:
    value = core.check_option("guided", value, GUIDED_MODES)
    if value != "off":
        explorer.session.check_guided()  # a non-ReLU network: refused before any pass
    return value


def _check_randomize(explorer, value) -> int:
    names = explorer.session.block_names
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or not 0 <= value <= len(names)
    ):
        raise ValueError(
            f"randomize must be an int in 0..{len(names)} (the model's blocks, top first: "
            f"{', '.join(names) or 'none'}); got {value!r}"
        )
    return int(value)


SETTINGS: dict[str, Setting] = {
    "method": Setting("method", _check_method),
    "layer": Setting("layer", check_layer),
    **{name: Setting(name, option_check(name)) for name in TABLE_CONTROLS},
    "score": Setting("score", _check_score),
    "class_index": Setting("class_index", _check_class, _read_class),
    "opacity": Setting("opacity", _check_opacity),
    "guided": Setting("guided", _check_guided),
    "randomize": Setting("randomize", _check_randomize),
}
"""Every settable property of :class:`CamExplorer`, by name: the control it sets and its
check (:class:`~gradcam_widget.explorer.controls.Setting`). A fixed choice of the options table
(:data:`TABLE_CONTROLS`) needs no row of its own."""


def make_controls() -> dict[str, widgets.ValueWidget]:
    """One control per setting (and ``class``, the top-5 dropdown), each with its CSS class."""
    method = options.option("method")
    controls = {
        "method": dropdown(
            method.label,
            [(methods.get(name).label, name) for name in methods.names()],
            method.default,
            method.help,
        ),
        "layer": dropdown(options.option("layer").label, [("", "")], "",
                          options.option("layer").help, width="330px"),
        **{name: option_dropdown(name) for name in TABLE_CONTROLS},
        "class": dropdown("Class", [("", 0)], 0, "top-5 predictions; any index on the right"),
        "class_index": widgets.BoundedIntText(
            value=0, min=0, max=0, description="index", layout=widgets.Layout(width="150px"),
            style={"description_width": "45px"}, tooltip="any class index",
        ),
        "opacity": widgets.FloatSlider(
            value=options.option("opacity").default, min=0.0, max=1.0, step=0.05,
            description=options.option("opacity").label, readout_format=".2f",
            layout=widgets.Layout(width="260px"), style={"description_width": "70px"},
        ),
        "guided": dropdown(
            "Guided", GUIDED_LABELS, "off", "input-gradient map in a fifth panel (one more pass)"
        ),
        "randomize": widgets.IntSlider(
            value=0, min=0, max=0, step=1, description="Randomise", continuous_update=False,
            layout=widgets.Layout(width="280px"), style={"description_width": "85px"},
            tooltip="the same view on a copy of the model whose top k blocks are re-initialised",
        ),
    }  # fmt: skip
    for name, control in controls.items():
        control.add_class(css_class(name))
    return controls


ROWS = (
    ("method", "layer", "pooling"),
    ("channels", "order", "score"),
    ("class", "class_index", "colormap"),
    ("opacity", "guided", "randomize"),
)
"""The controls' rows, top down; a control of the options table in none of them gets a row of
its own at the end (``interpolation`` today)."""

"""The settable properties of :class:`~gradcam_widget.gallery.CamGallery`, as one table.

Each :class:`~gradcam_widget.explorer.controls.Setting` names the control it sets and the
check a value must pass (a ValueError naming the choices); the checks read the gallery's
public state (``sortable_columns``, ``numeric_columns``, ``class_fields``, ``classes``,
``page_count``, ``controls``).
"""

from __future__ import annotations

import math

import numpy as np

from gradcam_widget.auditing.gallery_rows import (
    ALL_CLASSES,
    CORRECT_FILTERS,
    NO_THRESHOLD,
    OPERATORS,
)
from gradcam_widget.cam import core
from gradcam_widget.explorer.controls import Setting


def _check_ascending(gallery, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"ascending must be True or False; got {value!r}")
    return bool(value)


def _check_class_filter(gallery, value) -> int:
    if value is None or value == "all":
        return ALL_CLASSES
    classes = gallery.classes
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if int(value) in classes:
            return int(value)
    elif isinstance(value, str):
        for index, label in classes.items():
            if label == value:
                return index
    choices = ", ".join(f"{index} ({label!r})" for index, label in classes.items())
    raise ValueError(
        f"class_filter must be None or 'all', or one of the classes in this audit: "
        f"{choices}; got {value!r}"
    )


def _read_class_filter(gallery) -> int | None:
    value = gallery.controls["class"].value
    return None if value == ALL_CLASSES else value


def _check_threshold(gallery, value) -> dict:
    if value is None:
        return {"threshold_column": NO_THRESHOLD}
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(
            "threshold must be None or (column, '<=' or '>=', value), e.g. "
            f"('object_share', '<=', 0.2); got {value!r}"
        )
    column, operator, number = value
    column = core.check_option("threshold column", column, gallery.numeric_columns)
    labels = {label: operator for operator, label in OPERATORS.items()}
    operator = labels.get(operator, operator)
    operator = core.check_option("threshold operator", operator, [*OPERATORS, *labels])
    if isinstance(number, (bool, np.bool_)) or not isinstance(number, (int, float, np.number)):
        raise ValueError(f"the threshold value must be a number; got {number!r}")
    if not math.isfinite(number):
        raise ValueError(f"the threshold value must be finite; got {number!r}")
    return {
        "threshold_column": column,
        "threshold_operator": operator,
        "threshold_value": float(number),
    }


def _read_threshold(gallery) -> tuple[str, str, float] | None:
    controls = gallery.controls
    column = controls["threshold_column"].value
    if column == NO_THRESHOLD:
        return None
    return column, controls["threshold_operator"].value, controls["threshold_value"].value


def _check_page(gallery, value) -> int:
    count = gallery.page_count
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or not 1 <= value <= count
    ):
        raise ValueError(f"page must be an int in 1..{count}; got {value!r}")
    return int(value)


SETTINGS: dict[str, Setting] = {
    "sort_by": Setting(
        "sort",
        lambda gallery, column: core.check_option("sort_by", column, gallery.sortable_columns),
        doc="The column the selection is sorted by (one of the Sort control's).",
    ),
    "ascending": Setting(
        "order", _check_ascending, doc="Sort direction (missing values come last either way)."
    ),
    "class_filter": Setting(
        "class",
        _check_class_filter,
        _read_class_filter,
        doc="The class index kept (``None``: all classes). Set it to an index, a class name "
        'or ``None`` / ``"all"``; :attr:`class_of` says which class column is matched.',
    ),
    "class_of": Setting(
        "class_of",
        lambda gallery, value: core.check_option("class_of", value, gallery.class_fields),
        doc='Which class :attr:`class_filter` matches: ``"true"``, ``"predicted"`` or '
        '``"explained"`` (those the audit has values for).',
    ),
    "correct_filter": Setting(
        "correct",
        lambda gallery, value: core.check_option("correct_filter", value, CORRECT_FILTERS),
        doc='``"all"``, ``"correct"`` or ``"wrong"`` (a row whose correctness is '
        "unknown is neither).",
    ),
    "threshold": Setting(
        "threshold_column",
        _check_threshold,
        _read_threshold,
        doc='``(column, "<=" or ">=", value)``: rows whose value passes are kept (NaN '
        'never passes); ``None``: no threshold. ``"≤"`` and ``"≥"`` are accepted too.',
    ),
    "page": Setting(
        "page",
        _check_page,
        doc="The page on screen, ``1 .. page_count``; a change of any other control goes back "
        "to page 1.",
    ),
}
"""Every settable property of :class:`CamGallery`: the control it sets and its check."""

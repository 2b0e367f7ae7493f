"""The widget idiom the explorer and the gallery share: settings made from a table, quiet
changes, errors in the status line with the last good settings back, closing.

A small controlled widget of two real ipywidgets is enough: no model.
"""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from gradcam_widget import options
from gradcam_widget.explorer import controls
from gradcam_widget.explorer.controls import Controlled, Setting, add_settings


class Pair(Controlled, widgets.VBox):
    """Two controls; ``total`` may not exceed 10, checked after the change as a redraw would."""

    KIND = "pair"

    def __init__(self):
        self.init_controlled()
        super().__init__()
        self.redraws = []
        self.controls = {"a": widgets.IntText(value=1), "b": widgets.IntText(value=2)}
        self.status = widgets.HTML()
        self.observe_controls()
        self.children = [*self.controls.values(), self.status]
        self.remember_good()

    def on_change(self, name, change):
        self.redraws.append(name)

    def close(self):
        self._closed = True
        self.close_tree()
        super().close()

    def put(self, values):
        with self.quiet():
            for name, value in values.items():
                self.controls[name].value = value
        if sum(self.values().values()) > 10:
            self.fail(RuntimeError("too much"))
            raise RuntimeError(self.error)
        self.remember_good()


def _check_int(pair, value):
    if not isinstance(value, int):
        raise ValueError(f"an int please; got {value!r}")
    return value


add_settings(
    Pair,
    {
        "a": Setting("a", _check_int),
        "b": Setting("b", _check_int, read=lambda pair: pair.controls["b"].value * 10),
        "both": Setting("a", lambda pair, value: {"a": value, "b": value}),
    },
)


def test_a_setting_reads_and_sets_its_control_quietly_through_put():
    pair = Pair()
    pair.a = 4
    assert pair.a == 4 == pair.controls["a"].value and pair.redraws == []
    assert pair.b == 20  # its own read
    pair.both = 3
    assert pair.values() == {"a": 3, "b": 3}
    pair.controls["a"].value = 5  # as the browser would: on_change
    assert pair.redraws == ["a"]
    with pair.quiet():
        pair.controls["a"].value = 6
    assert pair.redraws == ["a"] and not pair.is_quiet


def test_a_bad_value_is_said_in_the_status_line_and_nothing_changes():
    pair = Pair()
    with pytest.raises(ValueError, match="an int please"):
        pair.a = "x"
    assert "⚠ ValueError: an int please" in pair.status.value and pair.a == 1
    with pytest.raises(RuntimeError, match="too much"):
        pair.both = 6
    assert pair.values() == {"a": 1, "b": 2}  # the last good settings came back
    assert pair.error == "RuntimeError: too much"


def test_a_closed_widget_refuses_and_closes_every_part():
    pair = Pair()
    parts = [*pair.controls.values(), pair.status]
    pair.close()
    assert pair.closed and all(part.comm is None for part in parts)
    with pytest.raises(RuntimeError, match="this pair is closed"):
        pair.a = 2


def test_a_dropdown_of_an_options_row_has_its_label_choices_default_and_help():
    for row in options.on(options.WIDGET):
        if not row.choices:
            with pytest.raises(ValueError, match="no fixed choices"):
                controls.option_dropdown(row.name)
            continue
        menu = controls.option_dropdown(row.name)
        assert menu.description == row.label and menu.value == row.default
        assert menu.tooltip == row.help
        assert [value for _, value in menu.options] == list(row.values)
        check = controls.option_check(row.name)
        assert check(None, row.values[-1]) == row.values[-1]
        with pytest.raises(ValueError, match=row.name):
            check(None, "no such value")
    assert controls.css_class("class_index") == "gw-class-index"

"""The widget idiom :class:`~gradcam_widget.widget.CamExplorer` and
:class:`~gradcam_widget.gallery.CamGallery` share: the controls are the state.

Each settable property is a :class:`Setting` row (the control it sets, the check a value must
pass, optionally how it is read); :func:`add_settings` makes the properties of a class from
its rows. :class:`Controlled` is the mixin behind them: the public ``controls`` mapping (name
-> ipywidget), changes made quietly (no recomputation), a checked change applied
(:meth:`Controlled.apply`), an error shown in the status line with the last good settings put
back (:meth:`Controlled.fail`), and closing every widget of the tree.

The choices of the recipe come from :mod:`gradcam_widget.options`: :func:`option_dropdown`
makes a row's dropdown (its label, choices, default and help) and :func:`option_check` the
check of its values, so a new row is a new control with no code of its own.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Mapping
from typing import NamedTuple

import ipywidgets as widgets

from gradcam_widget import options
from gradcam_widget.cam import core

ERROR_COLOUR = "#b00020"
DROPDOWN_WIDTH = "260px"
DESCRIPTION_WIDTH = "70px"


def css_class(name: str) -> str:
    """The CSS class of control ``name``: ``gw-`` and the name with dashes."""
    return f"gw-{name.replace('_', '-')}"


def dropdown(description, choices, value, tooltip="", width=DROPDOWN_WIDTH) -> widgets.Dropdown:
    """A dropdown in the explorer's style.

    Args:
        description: its caption.
        choices: what ``ipywidgets.Dropdown`` takes as ``options`` (values, or ``(label,
            value)`` pairs).
        value: the value chosen first.
        tooltip: its tooltip.
        width: its CSS width.

    Returns:
        The ``ipywidgets.Dropdown``.
    """
    return widgets.Dropdown(
        description=description,
        options=choices,
        value=value,
        tooltip=tooltip,
        layout=widgets.Layout(width=width),
        style={"description_width": DESCRIPTION_WIDTH},
    )


def option_dropdown(name: str) -> widgets.Dropdown:
    """The dropdown of the :mod:`~gradcam_widget.options` row ``name``: its label, its
    ``(label, value)`` choices, its default and its help as the tooltip.

    Raises:
        KeyError: for a name with no row.
        ValueError: for a row whose values are not a fixed set.
    """
    row = options.option(name)
    if not row.choices:
        raise ValueError(f"option {name!r} has no fixed choices to make a dropdown of")
    return dropdown(row.label, option_labels(name), row.default, row.help)


def option_labels(name: str) -> tuple[tuple[str, str], ...]:
    """``(label, value)`` pairs of the :mod:`~gradcam_widget.options` row ``name``, as
    ``ipywidgets`` takes them."""
    return tuple((label, value) for value, label in options.option(name).choices)


def option_check(name: str) -> Callable:
    """A :class:`Setting` check that accepts one of the values of the options row ``name``
    (a ValueError naming them for another)."""
    values = options.option(name).values
    return lambda owner, value: core.check_option(name, value, values)


class Setting(NamedTuple):
    """One settable property of a :class:`Controlled` widget.

    Attributes:
        control: the key of the control it sets (the UI follows).
        check: ``check(owner, value)`` returns the control's new value, or a dict
            ``{control: value}`` when it sets several; raises ValueError naming the choices
            for a bad value.
        read: ``read(owner) -> value`` when the getter is not the control's value.
        doc: the property's docstring (default: one naming the control).
    """

    control: str
    check: Callable
    read: Callable | None = None
    doc: str | None = None


class SettingProperty:
    """A property made from a :class:`Setting`: reading it gives the control's value (or
    ``read``'s), setting it goes through :meth:`Controlled.apply`.

    Raises:
        ValueError: for a bad value (also shown in the status line; the view is kept).
        RuntimeError: when the recomputation fails, or the widget is closed.
    """

    def __init__(self, name: str, setting: Setting):
        self.name = name
        self.setting = setting
        self.__doc__ = setting.doc or (
            f"The {setting.control.replace('_', ' ')} control's value; setting it redraws the "
            "view (ValueError for a bad value, RuntimeError when the recomputation fails)."
        )

    def __get__(self, owner, cls=None):
        if owner is None:
            return self
        if self.setting.read is not None:
            return self.setting.read(owner)
        return owner.controls[self.setting.control].value

    def __set__(self, owner, value):
        def checked() -> dict:
            result = self.setting.check(owner, value)
            return result if isinstance(result, dict) else {self.setting.control: result}

        owner.apply(checked)


def add_settings(cls: type, settings: Mapping[str, Setting]) -> None:
    """Give ``cls`` one :class:`SettingProperty` per row of ``settings``."""
    for name, setting in settings.items():
        setattr(cls, name, SettingProperty(name, setting))


class Controlled:
    """The mixin of a widget whose controls are its state (see the module's docstring).

    A subclass sets :attr:`controls` and :attr:`status` in its build, calls
    :meth:`init_controlled` first thing, :meth:`observe_controls` once the controls exist,
    and implements :meth:`on_change` (a control changed in the browser or from code) and
    :meth:`put` (a checked change lands).
    """

    KIND = "widget"  # what the messages call it: "explorer", "gallery"
    KEPT_NOTE = ""  # said after an error in the status line

    controls: dict[str, widgets.ValueWidget]
    status: widgets.HTML
    error: str | None

    def init_controlled(self) -> None:
        """The bookkeeping every controlled widget starts with (before any widget exists)."""
        self.error = None
        self._quiet_depth = 0
        self._good: dict = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def is_quiet(self) -> bool:
        """Whether controls are being changed without recomputation now."""
        return self._quiet_depth > 0

    @contextlib.contextmanager
    def quiet(self):
        """Change controls without triggering recomputation."""
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def values(self) -> dict:
        """Every control's value, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def observe_controls(self) -> None:
        """Call :meth:`on_change` for each change of a control that is not quiet."""
        for name, control in self.controls.items():
            control.observe(self._observer(name), names="value")

    def _observer(self, name: str):
        def handler(change):
            if not self.is_quiet:
                self.on_change(name, change)

        return handler

    def on_change(self, name: str, change: dict) -> None:
        """A control changed (not quietly): recompute and redraw, never raise."""
        raise NotImplementedError

    def put(self, values: dict) -> None:
        """Set the controls of a checked change and recompute (raise on failure)."""
        raise NotImplementedError

    def apply(self, check: Callable[[], dict]) -> None:
        """Set the controls ``check()`` returns (``{control: value}``), through :meth:`put`.

        Raises:
            ValueError: for a bad value (also shown in the status line; nothing changes).
            RuntimeError: when the widget is closed, or what :meth:`put` raises.
        """
        self.check_open()
        try:
            values = check()
        except ValueError as error:
            self.fail(error)
            raise
        self.put(values)

    def remember_good(self) -> None:
        """The controls now are the settings to go back to after an error."""
        self._good = self.values()

    def fail(self, error: Exception) -> bool:
        """Show ``error`` in the status line and put back the last good settings.

        Returns:
            Whether a control was put back (the view may need drawing again).
        """
        message = f"{type(error).__name__}: {error}"
        self.error = message
        self.status.value = (
            f"<span style='color:{ERROR_COLOUR}'>⚠ {html.escape(message)}{self.KEPT_NOTE}</span>"
        )
        if not self._good or self.values() == self._good:
            return False
        with self.quiet():
            for name, control in self.controls.items():
                if control.value != self._good[name]:
                    with contextlib.suppress(Exception):
                        control.value = self._good[name]
        return True

    def check_open(self) -> None:
        """Raises RuntimeError once the widget is closed."""
        if self._closed:
            raise RuntimeError(f"this {self.KIND} is closed; make a new one")

    def close_tree(self, *extra: widgets.Widget) -> None:
        """Close every child widget (and its layout and style), ``extra`` too, then the
        widget's own layout. The caller closes the widget itself."""
        stack = [*self.children, *extra, self.layout]
        while stack:
            child = stack.pop()
            stack.extend(getattr(child, "children", ()))
            for part in ("layout", "style"):  # each a widget of its own, registered too
                if isinstance(getattr(child, part, None), widgets.Widget):
                    stack.append(getattr(child, part))
            child.close()

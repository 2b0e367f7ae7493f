"""The one table of the recipe's choices (:mod:`gradcam_widget.options`) is what every surface
offers: each row is a control of the explorer, a flag of the command line and a menu of the
static export, or says why it is not one."""

from __future__ import annotations

import argparse

import pytest

import gradcam_widget as gw
from gradcam_widget import options
from gradcam_widget.__main__ import build_parser
from gradcam_widget.cam import core
from gradcam_widget.data import render
from gradcam_widget.explorer import export

ROWS = list(options.TABLE.values())


def _flags(command: str) -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(commands.choices[command]._option_string_actions)


@pytest.fixture(scope="module")
def explorer():
    ex = gw.CamExplorer(gw.models.load("shapes"), gw.data.sample("two_shapes"))
    yield ex
    ex.close()


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_each_row_is_a_control_a_flag_and_a_menu_or_says_why_not(row, explorer):
    assert set(row.not_on) <= set(options.SURFACES), row.not_on
    assert all(len(reason.split()) >= 4 for reason in row.not_on.values()), row.not_on
    assert (row.name in explorer.controls) == row.offered_on(options.WIDGET)
    flag = f"--{row.name.replace('_', '-')}"
    flags = _flags("demo") | _flags("export") | _flags("audit")
    assert (flag in flags) == row.offered_on(options.CLI), flag
    assert (row.name in export.MENUS) == row.offered_on(options.EXPORT)


@pytest.mark.parametrize("command", ["demo", "export", "audit"])
def test_interpolation_reached_every_surface_from_its_row_alone(command, explorer):
    assert "--interpolation" in _flags(command)
    assert "interpolation" in explorer.controls and "interpolation" in export.MENUS
    values = [value for _, value in explorer.controls["interpolation"].options]
    assert values == list(options.TABLE["interpolation"].values)


def test_a_flag_takes_the_rows_values_default_and_help():
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert (args.pooling, args.order, args.interpolation) == ("mean", "relu_first", "bilinear")
    with pytest.raises(ValueError, match="--interpolation: invalid choice: 'lanczos'"):
        parser.parse_args(["demo", "--interpolation", "lanczos"])
    audit = parser.parse_args(["audit", "some_folder"])
    assert audit.pooling is None and audit.interpolation is None  # the method's default


def test_the_numpy_core_and_the_drawing_read_the_table():
    assert core.POOLINGS == options.POOLINGS and core.ORDERS == options.ORDERS
    assert tuple(core.INTERPOLATIONS) == options.INTERPOLATIONS
    assert render.COLORMAPS == options.COLORMAPS
    assert options.defaults()["pooling"] == "mean"
    with pytest.raises(KeyError, match="no option 'smoothness'; the options are method"):
        options.option("smoothness")
    assert options.TABLE["pooling"].label_of("mean") == "mean (GAP)"


def test_a_new_row_becomes_a_flag_of_each_command_that_makes_maps(monkeypatch):
    row = options.Option("smoothing", "Smoothing", "a new choice", "none",
                         (("none", "none"), ("box", "box 3x3")))  # fmt: skip
    monkeypatch.setattr(options, "TABLE", {**options.TABLE, row.name: row})
    assert options.map_keywords()[-1] == "smoothing"
    for command in ("demo", "export", "audit"):
        assert "--smoothing" in _flags(command), command
    args = build_parser().parse_args(["demo", "--smoothing", "box"])
    assert (args.smoothing, args.interpolation) == ("box", "bilinear")
    with pytest.raises(ValueError, match="--smoothing: invalid choice: 'gauss'"):
        build_parser().parse_args(["audit", "folder", "--smoothing", "gauss"])


SAME_DEFAULTS_EXCEPT = {
    ("fuse", "method"): "fusion is LayerCAM's idea: its per-layer method defaults to layercam",
    ("class_scores", "score"): "it reports the model's class probabilities, as a classifier's",
    ("deletion", "score"): "the deletion/insertion curves of the literature are probabilities",
    ("insertion", "score"): "the deletion/insertion curves of the literature are probabilities",
    ("colorize_signed", "colormap"): "a signed map takes a diverging colormap, white at zero",
    ("raw_panel", "colormap"): "the raw map is signed: a diverging colormap, white at zero",
    ("CamResult", "layer"): "a result's field, not a choice",
}
"""Parameters named as an option whose default differs from the table's, each with why."""


def _public_callables():
    from gradcam_widget.auditing import run
    from gradcam_widget.captures import explanations
    from gradcam_widget.checks import metrics, sanity

    found = [gw.capture, gw.grad_cam, gw.guided_grad_cam, gw.class_scores, gw.saliency]
    found += [gw.Capture.cam, gw.Capture.fuse, explanations.iter_explain, gw.explain, run.audit]
    for module in (core, render, metrics, sanity):
        found += [f for name, f in vars(module).items() if callable(f) and name[0] != "_"
                  and getattr(f, "__module__", "") == module.__name__]  # fmt: skip
    return found


def test_every_public_default_of_an_option_is_the_tables():
    import inspect

    wrong = []
    for function in _public_callables():
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            continue
        for name, parameter in parameters.items():
            if name not in options.TABLE or parameter.default is inspect.Parameter.empty:
                continue
            if (function.__name__, name) in SAME_DEFAULTS_EXCEPT or parameter.default is None:
                continue  # None: "the method's own" or "the model's"
            if parameter.default != options.TABLE[name].default:
                wrong.append(f"{function.__qualname__}({name}={parameter.default!r})")
    assert not wrong, wrong

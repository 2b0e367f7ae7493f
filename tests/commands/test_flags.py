"""The recipe's flags made from the options table (``gradcam_widget.commands.flags``)."""

from __future__ import annotations

import argparse

import pytest

from gradcam_widget import options
from gradcam_widget.commands import flags


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="test", exit_on_error=False)


@pytest.mark.parametrize("name", [row.name for row in options.TABLE.values() if row.choices])
def test_a_choice_is_a_flag_with_the_tables_values_default_and_help(name):
    command = parser()
    action = flags.add_option(command, name)
    row = options.option(name)
    assert action.option_strings == [f"--{name}"]
    assert list(action.choices) == list(row.values) and action.default == row.default
    assert action.help == row.help
    assert getattr(command.parse_args([]), name) == row.default
    last = row.values[-1]
    assert getattr(command.parse_args([f"--{name}", last]), name) == last
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        command.parse_args([f"--{name}", "no-such-value"])


def test_a_number_takes_its_type_and_overrides_win():
    command = parser()
    flags.add_option(command, "opacity")
    assert command.parse_args(["--opacity", "0.25"]).opacity == 0.25
    assert command.parse_args([]).opacity == options.TABLE["opacity"].default
    flags.add_option(command, "pooling", default=None, help="mine")
    assert command.parse_args([]).pooling is None
    with pytest.raises(KeyError, match="no option 'nope'"):
        flags.add_option(command, "nope")


def test_the_colormap_is_open_and_the_cam_flags_follow_the_table():
    command = parser()
    flags.add_look_flags(command)
    flags.add_cam_flags(command)
    args = command.parse_args(["--colormap", "plasma", "--interpolation", "bicubic"])
    assert args.colormap == "plasma"  # any matplotlib colormap; the command checks it
    assert flags.chosen(args) == {"pooling": "mean", "channels": "weighted",
                                  "order": "relu_first", "interpolation": "bicubic"}  # fmt: skip


def test_method_default_flags_are_left_out_until_given():
    command = parser()
    flags.add_cam_flags(command, default=flags.METHOD_DEFAULT)
    assert flags.chosen(command.parse_args([])) == {}
    args = command.parse_args(["--order", "resize_first", "--interpolation", "nearest"])
    assert flags.chosen(args) == {"order": "resize_first", "interpolation": "nearest"}


def test_the_picture_flags():
    command = parser()
    flags.add_picture_flags(command, "x.png", "gradcam")
    args = command.parse_args(["--class", "3", "--score", "probability"])
    assert (args.out, args.model, args.image, args.class_index) == ("x.png", "shapes",
                                                                     "two_shapes", 3)  # fmt: skip
    assert (args.score, args.colormap, args.opacity) == ("probability", "jet", 0.5)

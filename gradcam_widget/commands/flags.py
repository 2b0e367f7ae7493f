"""Command-line flags made from the recipe's table (:data:`gradcam_widget.options.TABLE`).

A recipe option is one row there; :func:`add_option` turns it into a flag of a command (its
choices, default and help), so the CLI never repeats the recipe's values.
"""

from __future__ import annotations

import argparse

from gradcam_widget import options

METHOD_DEFAULT = None
"""The default of a flag that leaves the choice to the method (``audit``'s ``--pooling``)."""


def add_option(parser: argparse.ArgumentParser, name: str, **overrides) -> argparse.Action:
    """Add ``--NAME`` for the recipe option ``name`` to ``parser``.

    Its choices, default and help come from the option's row; a number's default makes the
    flag take that type (``--opacity 0.3``).

    Args:
        parser: a command's (sub)parser.
        name: a key of :data:`gradcam_widget.options.TABLE`.
        **overrides: ``add_argument`` settings that replace the row's, e.g. ``default=None``
            or ``choices=None`` for an open set of values.

    Returns:
        The argparse action added.

    Raises:
        KeyError: for a name that is not an option.
    """
    row = options.option(name)
    settings: dict = {"default": row.default, "help": row.help}
    if row.values:
        settings["choices"] = list(row.values)
    elif isinstance(row.default, (int, float)) and not isinstance(row.default, bool):
        settings["type"] = type(row.default)
    settings.update(overrides)
    if settings.get("choices") is None:
        settings.pop("choices", None)
    return parser.add_argument(f"--{name.replace('_', '-')}", **settings)


def add_picture_flags(command: argparse.ArgumentParser, default_out: str, kind: str) -> None:
    """The flags every command that draws pictures takes: output, model, image, class,
    score, colormap, opacity (the last three from the table)."""
    from gradcam_widget.data.scenes import SAMPLES

    command.add_argument(
        "--out",
        default=default_out,
        help=f"output file (.png, .pdf, .svg, ...; default {default_out}), or an existing "
        f"folder to write {kind}_<model>_<image>_<class>.png into",
    )
    add_model_flags(command, SAMPLES)
    add_option(command, "score")
    add_look_flags(command)


def add_model_flags(command: argparse.ArgumentParser, samples) -> None:
    """``--model``, ``--image`` and ``--class``: what is explained."""
    command.add_argument("--model", default="shapes", help="shapes (offline) | vgg16 | ...")
    command.add_argument(
        "--image",
        default="two_shapes",
        help=f"an image file (PNG, JPEG, ...) or a sample: {', '.join(samples)} "
        "(default two_shapes)",
    )
    command.add_argument("--class", dest="class_index", type=int, default=None)


def add_look_flags(command: argparse.ArgumentParser) -> None:
    """``--colormap`` (any matplotlib colormap, checked by the command) and ``--opacity``."""
    row = options.option("colormap")
    examples = ", ".join(row.values)
    add_option(command, "colormap", choices=None,
               help=f"{row.help}: any matplotlib colormap, e.g. {examples}")  # fmt: skip
    add_option(command, "opacity")


def add_cam_flags(command: argparse.ArgumentParser, default=...) -> None:
    """A flag per keyword of ``Capture.cam`` in the table (:func:`options.cam_keywords`:
    ``--pooling``, ``--channels``, ``--order``, ``--interpolation``): how the map is made.

    Args:
        command: the command's parser.
        default: ``...`` for each option's own default, or one value for all of them
            (:data:`METHOD_DEFAULT`: the method's choice, as ``audit`` takes them).
    """
    for name in options.cam_keywords():
        if not options.option(name).offered_on(options.CLI):
            continue
        if default is ...:
            add_option(command, name)
        else:
            add_option(command, name, default=default)


def chosen(args: argparse.Namespace, names=None) -> dict:
    """The options of ``names`` (default :func:`options.cam_keywords`) given on the command
    line, by name (those left at :data:`METHOD_DEFAULT` or not a flag omitted)."""
    names = options.cam_keywords() if names is None else names
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


def add_first_choice_flags(command: argparse.ArgumentParser, what: str) -> None:
    """For a page that holds every value of the options every method takes
    (:func:`options.map_keywords`): a flag per option choosing the value shown first."""
    for name in options.map_keywords():
        row = options.option(name)
        if row.offered_on(options.CLI):
            add_option(command, name, default=METHOD_DEFAULT,
                       help=f"{what}'s first {row.label} choice (every one is in the page; "
                       f"default {row.default})")  # fmt: skip

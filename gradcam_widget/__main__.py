"""Command line: ``python -m gradcam_widget demo --out demo.png`` (no Jupyter needed).

``demo`` renders the four panels of one Grad-CAM view to an image file; ``--image`` takes a
file of your own (PNG, JPEG, ...) or a sample name. ``saliency`` does what the seed's
``compute_saliency`` did: prints the top-5 classes with their probabilities, then writes the
Grad-CAM overlay, Guided Backpropagation and Guided Grad-CAM in one figure (``--separate``:
also as three PNGs). ``fetch`` downloads pretrained weights. ``audit`` explains a whole data
set into a results folder (resumable; see :func:`gradcam_widget.audit`). ``export`` writes the
static explorer. ``app`` serves the explorer to a class as a web page
(:mod:`gradcam_widget.classroom`: one process, a session per browser tab).

This module is the dispatch only: each command's arguments and body live in
:mod:`gradcam_widget.commands` (the recipe's flags made from :mod:`gradcam_widget.options`),
the app's page in :mod:`gradcam_widget.explorer.app`.

Every error is one line on stderr, ``error: ...``, with exit status 2 (argument errors
included); warnings are one line each, ``warning: ...``. Ctrl-C keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from gradcam_widget._text import one_line, printable
from gradcam_widget.commands import audit, pictures, serve, static
from gradcam_widget.explorer.app import (
    APP_PORT,
    app_model,
    app_models,
    app_url,
    app_view,
)

__all__ = [  # the app's names, importable from here as before they moved
    "APP_PORT",
    "EXIT_ERROR",
    "UsageError",
    "app_model",
    "app_models",
    "app_url",
    "app_view",
    "build_parser",
    "main",
]

EXIT_ERROR = 2
"""Exit status of every error, as argparse uses for bad arguments."""

COMMANDS = (pictures, audit, static, serve)
"""The modules that add the commands (each an ``add_parsers(subparsers)``), in --help order."""


class UsageError(ValueError):
    """A bad command line, raised instead of argparse's two-line usage message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: every command of :data:`COMMANDS`; a parsed command's
    ``run`` is its body (``args.run(args)`` returns the exit status)."""
    parser = _Parser(prog="python -m gradcam_widget")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parsers(commands)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {printable(' '.join(str(message).split()))}", file=sys.stderr)


def main(argv=None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 after printing one ``error: ...`` line on stderr. Only
        ``--help`` (exit 0) and KeyboardInterrupt leave by an exception.
    """
    with warnings.catch_warnings():  # restores warnings.showwarning when main returns
        warnings.showwarning = _show_warning
        try:
            args = build_parser().parse_args(argv)
            return args.run(args)
        except Exception as error:  # not KeyboardInterrupt / SystemExit: those propagate
            print(f"error: {printable(one_line(error))}", file=sys.stderr)
            return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

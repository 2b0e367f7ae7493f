"""``app`` and ``fetch``: the explorer served as a web page to a class
(:func:`gradcam_widget.classroom.server.serve`), and the weights it needs downloaded
beforehand (the app downloads nothing)."""

from __future__ import annotations

import argparse

from gradcam_widget._text import shown
from gradcam_widget.classroom import server
from gradcam_widget.classroom.server import CLIENT_SESSIONS
from gradcam_widget.explorer import app as web


def app(args: argparse.Namespace) -> int:
    """``app``: serve the explorer until SIGTERM/SIGINT; its exit status."""
    return server.serve(args.model, args.port, args.ip, args.base_url, not args.no_browser,
                        args.allow_host, args.max_sessions, args.client_sessions)  # fmt: skip


def positive(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}")
    return value


def fetch(args: argparse.Namespace) -> int:
    """``fetch``: load each named model (downloading its weights), one line each."""
    from gradcam_widget.data import models

    for name in args.names:
        entry = models.load(name, progress=False)
        print(f"{shown(name)}: ready ({len(entry.class_names)} classes, input {entry.input_size})")
    return 0


def add_parsers(commands) -> None:
    """Add ``app`` and ``fetch`` to the subparsers ``commands``."""
    parser = commands.add_parser(
        "app",
        help="serve the explorer as a web page to a class (one process, a session per tab)",
        description="Serve the explorer, with a menu of the models available offline, as a web "
        "page: every browser tab gets its own explorer (own image, settings, upload), all in "
        "one process that loads TensorFlow and each model once. Answers only to its own host "
        "names; stops on SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--model", default="shapes", help="the first model: shapes (default), "
                        "shapes_vit, ... or a .keras file")  # fmt: skip
    parser.add_argument("--port", type=int, default=web.APP_PORT,
                        help=f"default {web.APP_PORT}")  # fmt: skip
    parser.add_argument("--ip", default="localhost", help="address to listen on (default "
                        "localhost; 0.0.0.0: every network interface)")  # fmt: skip
    parser.add_argument("--base-url", default="/", help="URL prefix, behind a reverse proxy "
                        "(e.g. /gradcam/)")  # fmt: skip
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a Host name to answer besides localhost and the --ip (the name "
                        "students type; .example.org: that domain; repeat for more)")  # fmt: skip
    parser.add_argument("--max-sessions", type=positive, default=None, metavar="N",
                        help="tabs served at most (default: from this machine's memory); a "
                        "tab over it gets a page saying the class is full")  # fmt: skip
    parser.add_argument("--client-sessions", type=positive, default=CLIENT_SESSIONS,
                        metavar="N", help="tabs one computer (client address) may have open "
                        f"(default {CLIENT_SESSIONS})")  # fmt: skip
    parser.set_defaults(run=app)

    parser = commands.add_parser("fetch", help="download pretrained weights into the Keras cache")
    parser.add_argument("names", nargs="+", help="vgg16 | resnet50 | mobilenet_v2")
    parser.set_defaults(run=fetch)

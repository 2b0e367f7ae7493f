"""``app`` and ``fetch``: the explorer served as a web page
(:func:`gradcam_widget.explorer.app.serve`), and the weights it needs downloaded beforehand
(the app downloads nothing)."""

from __future__ import annotations

import argparse

from gradcam_widget._text import shown
from gradcam_widget.explorer import app as web


def app(args: argparse.Namespace) -> int:
    """``app``: serve the explorer with Voila until it stops; its exit status."""
    return web.serve(args.model, args.port, args.ip, args.base_url, not args.no_browser,
                     args.voila)  # fmt: skip


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
        help="serve the explorer as a web page with Voila (one kernel per browser tab)",
        description="Serve the explorer, with a menu of the models available offline, as a web "
        "page (Voila, no code shown). Every browser tab gets its own kernel. Voila options go "
        "after --, e.g. gradcam-widget app -- --Voila.token=SECRET",
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
    parser.add_argument("voila", nargs="*", metavar="VOILA_OPTION",
                        help="more Voila options, after --")  # fmt: skip
    parser.set_defaults(run=app)

    parser = commands.add_parser("fetch", help="download pretrained weights into the Keras cache")
    parser.add_argument("names", nargs="+", help="vgg16 | resnet50 | mobilenet_v2")
    parser.set_defaults(run=fetch)

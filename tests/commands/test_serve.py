"""``app`` and ``fetch`` on the command line (``gradcam_widget.commands.serve``)."""

from __future__ import annotations

from gradcam_widget.__main__ import build_parser, main
from gradcam_widget.commands import serve
from gradcam_widget.explorer import app as web


def test_the_app_flags():
    args = build_parser().parse_args(["app", "--port", "9001", "--allow-host", "pc1"])
    assert args.run is serve.app and args.port == 9001 and args.allow_host == ["pc1"]
    assert args.client_sessions == serve.CLIENT_SESSIONS
    assert build_parser().parse_args(["app"]).port == web.APP_PORT


def test_fetch_says_each_model_is_ready(capfd):
    assert main(["fetch", "shapes", "shapes_vit"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == "shapes: ready (5 classes, input (224, 224))"
    assert lines[1].startswith("shapes_vit: ready (5 classes")


def test_fetch_of_an_unknown_model_is_one_line(capfd):
    assert main(["fetch", "nope"]) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'nope'"), err

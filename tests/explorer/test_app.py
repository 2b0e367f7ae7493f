"""``gradcam-widget app``: its arguments, its model menu, and the page each tab shows
(the server itself: tests/classroom)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_run import run

import gradcam_widget.__main__ as cli
from gradcam_widget.__main__ import build_parser, main
from gradcam_widget.data import models
from gradcam_widget.explorer import app as app_module
from gradcam_widget.explorer.app import (
    app_model,
    app_models,
    app_url,
    app_view,
    load_app_model,
)


def test_arguments_and_defaults():
    args = build_parser().parse_args(["app"])
    assert (args.model, args.port, args.ip, args.base_url) == ("shapes", 8866, "localhost", "/")
    assert not args.no_browser and args.allow_host == [] and args.max_sessions is None
    args = build_parser().parse_args(
        ["app", "--model", "shapes_vit", "--port", "9000", "--no-browser", "--allow-host",
         "lab.example.org", "--allow-host", ".school.example", "--max-sessions", "30",
         "--client-sessions", "2"]
    )  # fmt: skip
    assert (args.model, args.port, args.no_browser) == ("shapes_vit", 9000, True)
    assert args.allow_host == ["lab.example.org", ".school.example"]
    assert (args.max_sessions, args.client_sessions) == (30, 2)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "missing.keras"], "does not exist"),
        (["--port", "eighty"], "invalid int value"),
        (["--max-sessions", "0"], "must be an int >= 1"),
        (["--client-sessions", "x"], "must be an int >= 1"),
        (["--", "--Voila.token=abc"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_error_line(capfd, argv, expected):
    status, out, err = run(capfd, "app", *argv, "--no-browser")
    assert status == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_uncached_imagenet_weights_are_refused(capfd, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    if models.weights_cached("vgg16"):
        pytest.skip("vgg16 weights are cached here despite KERAS_HOME")
    status, out, err = run(capfd, "app", "--model", "vgg16")
    assert status == 2 and len(err) == 1 and "gradcam-widget fetch vgg16" in err[0], err


def test_unknown_model_from_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "gradcam_widget", "app", "--model", "nope", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: unknown model 'nope'")


def test_model_argument_and_menu(tmp_path):
    assert app_model("shapes") == "shapes"
    saved = tmp_path / "mine.keras"
    saved.write_bytes(b"not read here")
    assert app_model(str(saved)) == str(saved.resolve())
    with pytest.raises(ValueError, match="neither|unknown model"):
        app_model(str(tmp_path / "notes.txt"))

    menu = app_models("shapes")
    values = [value for _, value in menu]
    assert values[:4] == ["shapes", "shapes_permuted", "shapes_shortcut", "shapes_vit"]
    assert all(models.weights_cached(value) for value in values)
    assert app_models(str(saved))[0] == ("mine.keras", str(saved.resolve()))


def test_urls():
    assert app_url("localhost", 8866) == "http://localhost:8866/"
    assert app_url("127.0.0.1", 80, "/class/") == "http://127.0.0.1:80/class/"
    assert app_url("0.0.0.0", 8866).startswith("http://") and "0.0.0.0" not in app_url("0.0.0.0", 1)


def test_the_app_page_switches_model_and_keeps_the_image():
    view = app_view("shapes")
    menu, explorer = view.children[0].children[0], view.children[1]
    assert menu.value == "shapes" and explorer is view.explorer
    explorer.set_image("shape scene 1000001")
    menu.value = "shapes_permuted"
    assert view.children[1] is not explorer and view.children[1] is view.explorer
    assert view.explorer.image_name == "shape scene 1000001"
    assert view.children[0].children[1].value == ""  # no error note
    shown = view.explorer
    view.close_all()
    assert shown.closed and view.comm is None and view.children[0].comm is None


def test_the_app_page_takes_its_explorers_from_the_caller():
    made = []

    def make(value):
        from gradcam_widget.explorer.widget import CamExplorer

        made.append(CamExplorer(load_app_model(value), cache_bytes=2**20))
        return made[-1]

    view = app_view("shapes", make)
    assert view.explorer is made[0]
    view.children[0].children[0].value = "shapes_shortcut"
    assert view.explorer is made[1] and made[0].closed
    view.close_all()
    assert made[1].closed


@pytest.mark.parametrize("missing", ["solara", "solara_assets", "uvicorn"])
def test_the_app_without_solara_says_how_to_get_it(monkeypatch, capsys, missing):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    assert main(["app", "--model", "shapes", "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the app needs Solara: pip install 'gradcam_widget[app]'"], err


def test_the_old_names_still_import_from_main():
    """Notebooks and scripts written before the app moved to ``explorer.app`` still work."""
    for name in ("APP_PORT", "app_model", "app_models", "app_url", "app_view"):
        assert getattr(cli, name) is getattr(app_module, name), name


def test_a_model_file_is_loaded_and_a_bad_one_refused(tmp_path):
    entry = models.load("shapes")
    path = tmp_path / "copy.keras"
    entry.model.save(path)
    loaded = load_app_model(str(path))
    assert loaded.name == entry.model.name and len(loaded.layers) == len(entry.model.layers)
    assert load_app_model("shapes") is entry
    with pytest.raises(ValueError, match="does not exist"):
        load_app_model(str(tmp_path / "missing.keras"))

"""``gradcam-widget app``: its arguments, the app notebook it serves, the Voila command line it
runs (built without starting Voila), and the page the notebook shows."""

from __future__ import annotations

import ast
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import nbformat
import pytest
from cli_run import run

import gradcam_widget.__main__ as cli
from gradcam_widget.__main__ import build_parser, main
from gradcam_widget.data import models
from gradcam_widget.explorer import app as app_module
from gradcam_widget.explorer import widget as widget_module
from gradcam_widget.explorer.app import (
    APP_MODEL_VARIABLE,
    APP_NOTEBOOK,
    APP_WEBSOCKET_BYTES,
    app_command,
    app_model,
    app_models,
    app_url,
    app_view,
    load_app_model,
)


def option(command: list[str], name: str) -> str:
    """The value of ``--name=value`` in ``command`` (exactly one)."""
    values = [part.split("=", 1)[1] for part in command if part.startswith(f"{name}=")]
    assert len(values) == 1, (name, command)
    return values[0]


def test_arguments_and_defaults():
    args = build_parser().parse_args(["app"])
    assert (args.model, args.port, args.ip, args.base_url) == ("shapes", 8866, "localhost", "/")
    assert not args.no_browser and args.voila == []
    args = build_parser().parse_args(
        ["app", "--model", "shapes_vit", "--port", "9000", "--no-browser", "--",
         "--Voila.token=abc"]
    )  # fmt: skip
    assert (args.model, args.port, args.no_browser) == ("shapes_vit", 9000, True)
    assert args.voila == ["--Voila.token=abc"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "missing.keras"], "does not exist"),
        (["--port", "eighty"], "invalid int value"),
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


def test_the_app_notebook_is_shipped_and_valid():
    assert APP_NOTEBOOK.is_file()
    notebook = nbformat.read(APP_NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the app notebook has no code cell"
    for source in code:
        ast.parse(source)
    assert any(APP_MODEL_VARIABLE in source and "app_view" in source for source in code)
    assert any("from gradcam_widget.explorer.app import" in source for source in code)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_package_data_ships_the_app_notebook():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gradcam_widget"]
    relative = APP_NOTEBOOK.relative_to(root / "gradcam_widget").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in patterns), patterns


def test_the_voila_command_line():
    command = app_command(port=9123, ip="0.0.0.0", base_url="gradcam", extra=["--Voila.token=t"])
    assert command[:4] == [sys.executable, "-m", "voila", str(APP_NOTEBOOK)]
    assert option(command, "--Voila.port") == "9123"
    assert option(command, "--Voila.ip") == "0.0.0.0"
    assert option(command, "--Voila.port_retries") == "0"
    assert option(command, "--Voila.base_url") == "/gradcam/"
    assert option(command, "--strip_sources") == "True"
    settings = ast.literal_eval(option(command, "--Voila.tornado_settings"))
    assert settings == {"websocket_max_message_size": APP_WEBSOCKET_BYTES}
    assert APP_WEBSOCKET_BYTES > widget_module.MAX_UPLOAD_BYTES
    assert "--no-browser" in command
    assert command[-1] == "--Voila.token=t"  # extra options come last: they win
    assert "--no-browser" not in app_command(open_browser=True)


def test_tornado_settings_given_after_double_dash_are_merged():
    command = app_command(extra=["--Voila.tornado_settings={'xsrf_cookies': False}"])
    settings = ast.literal_eval(option(command, "--Voila.tornado_settings"))
    assert settings == {"websocket_max_message_size": APP_WEBSOCKET_BYTES, "xsrf_cookies": False}
    lower = app_command(extra=["--tornado_settings={'websocket_max_message_size': 1}"])
    assert ast.literal_eval(option(lower, "--Voila.tornado_settings")) == {
        "websocket_max_message_size": 1
    }
    with pytest.raises(ValueError, match="dict literal"):
        app_command(extra=["--Voila.tornado_settings=[1]"])


@pytest.mark.filterwarnings("ignore:--tornado_settings=:DeprecationWarning")
def test_the_voila_options_are_voilas():
    """Voila reads the options as meant: the websocket limit as a number, not a string."""
    pytest.importorskip("voila")
    from voila.app import Voila

    app = Voila()
    app.parse_command_line(app_command(port=9124)[4:])
    assert app.port == 9124 and app.port_retries == 0 and not app.open_browser
    assert app.config.VoilaConfiguration.strip_sources is True
    assert app.tornado_settings["websocket_max_message_size"] == APP_WEBSOCKET_BYTES


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
    view.explorer.close()


def test_the_app_without_voila_says_how_to_get_it(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "voila" else real(name, *a)
    )
    assert main(["app", "--model", "shapes", "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the app needs Voila: pip install 'gradcam_widget[app]'"], err


def test_the_old_names_still_import_from_main():
    """Notebooks and scripts written before the app moved to ``explorer.app`` still work."""
    for name in ("APP_MODEL_VARIABLE", "APP_NOTEBOOK", "APP_PORT", "APP_WEBSOCKET_BYTES",
                 "app_command", "app_model", "app_models", "app_url", "app_view"):  # fmt: skip
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

"""The explorer as a web page: what ``gradcam-widget app`` serves with Voila.

:func:`app_view` is the page the bundled notebook (:data:`APP_NOTEBOOK`) shows: a Model menu
(:func:`app_models`) above a :class:`~gradcam_widget.widget.CamExplorer`. :func:`serve` runs
Voila on that notebook (:func:`app_command`), one kernel per browser tab, telling it the first
model through :data:`APP_MODEL_VARIABLE`.
"""

from __future__ import annotations

import ast
import html
import os
import sys
from pathlib import Path

from gradcam_widget._text import one_line, shown

APP_NOTEBOOK = Path(__file__).resolve().parent.parent / "app" / "explorer_app.ipynb"
"""The notebook ``app`` serves with Voila (shipped as package data; its code is not shown)."""

APP_MODEL_VARIABLE = "GW_APP_MODEL"
"""Environment variable through which ``app`` tells the app notebook its first model."""

APP_PORT = 8866
"""Default port of ``app`` (Voila's own default)."""

APP_WEBSOCKET_BYTES = 32 * 2**20
"""Tornado's ``websocket_max_message_size`` for ``app``: above
:data:`gradcam_widget.widget.MAX_UPLOAD_BYTES` (20 MiB) plus the message's own overhead, so an
upload up to that limit reaches the kernel (Tornado's default drops messages over 10 MiB)."""

MODEL_FILES = (".keras", ".h5")
"""The suffixes of the model files the app opens."""


def app_model(model: str) -> str:
    """The ``--model`` of ``app`` checked, as the app notebook gets it: a name of
    :data:`gradcam_widget.models.MODEL_NAMES` whose weights are here, or the absolute path of a
    ``.keras`` / ``.h5`` file (the app's kernels run in another folder).

    Raises:
        ValueError: for an unknown name, a missing file, or ImageNet weights not cached.
    """
    from gradcam_widget.data import models

    if model in models.MODEL_NAMES:
        if not models.weights_cached(model):
            raise ValueError(
                f"the ImageNet weights of {model!r} are not cached: run `gradcam-widget fetch "
                f"{model}` first (the app downloads nothing)"
            )
        return model
    path = Path(os.path.expanduser(model))
    if path.suffix in MODEL_FILES:
        if not path.is_file():
            raise ValueError(f"model file {model!r} does not exist")
        return str(path.resolve())
    raise ValueError(
        f"unknown model {model!r}: use one of {', '.join(models.MODEL_NAMES)} or a .keras file"
    )


def app_models(initial: str = "shapes") -> list[tuple[str, str]]:
    """The app's model menu, ``(label, value)`` pairs: every shipped model, the ImageNet ones
    whose weights are cached (:func:`gradcam_widget.models.weights_cached`), and ``initial``
    first when it is a model file (labelled with its file name)."""
    from gradcam_widget.data import models

    menu = [(name, name) for name in models.MODEL_NAMES if models.weights_cached(name)]
    if initial not in models.MODEL_NAMES:
        menu.insert(0, (Path(initial).name, initial))
    return menu


def load_app_model(model: str):
    """The model a value of the app's menu names: the entry of a shipped (or cached) model's
    name, or the ``keras.Model`` of a ``.keras`` / ``.h5`` file.

    Raises:
        ValueError: for an unknown name or a missing file (:func:`app_model`).
    """
    from gradcam_widget.data import models

    checked = app_model(model)
    if checked in models.MODEL_NAMES:
        return models.load(checked)
    from gradcam_widget.engine import keras

    return keras.models.load_model(checked, compile=False)


def app_url(ip: str, port: int, base_url: str = "/") -> str:
    """Where the app answers: ``http://IP:PORT/BASE_URL/`` (``0.0.0.0`` / ``::`` read as this
    machine's name, since a browser cannot open them)."""
    import socket

    host = socket.gethostname() if ip in ("0.0.0.0", "::", "") else ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{_base_url(base_url)}"


def _base_url(base_url: str) -> str:
    """``base_url`` with one slash at each end (``/`` for none)."""
    inner = base_url.strip("/")
    return f"/{inner}/" if inner else "/"


def app_command(
    port: int = APP_PORT,
    ip: str = "localhost",
    base_url: str = "/",
    open_browser: bool = False,
    extra=(),
    notebook: Path = APP_NOTEBOOK,
) -> list[str]:
    """The Voila command line ``app`` runs (this Python's ``-m voila``).

    Code cells hidden (``--strip_sources=True``), every tab its own kernel (Voila's way), no
    port retries (the printed URL is the one served), and Tornado's websocket limit raised to
    :data:`APP_WEBSOCKET_BYTES` so uploads up to
    :data:`gradcam_widget.widget.MAX_UPLOAD_BYTES` arrive (as a dict literal: traitlets reads
    ``key=value`` as a string). ``extra`` Voila options come last (they win); a
    ``--Voila.tornado_settings={...}`` among them is merged into that one (Voila takes one).

    Raises:
        ValueError: for a ``tornado_settings`` in ``extra`` that is not a dict literal.
    """
    settings = {"websocket_max_message_size": APP_WEBSOCKET_BYTES}
    rest = []
    for part in extra:
        name, _, value = part.partition("=")
        if name in ("--Voila.tornado_settings", "--tornado_settings"):
            try:
                given = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                given = None
            if not isinstance(given, dict):
                raise ValueError(f"{name} must be a Python dict literal; got {value!r}")
            settings.update(given)
        else:
            rest.append(part)
    command = [
        sys.executable, "-m", "voila",
        str(notebook),
        f"--Voila.ip={ip}",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        f"--Voila.base_url={_base_url(base_url)}",
        "--strip_sources=True",
        f"--Voila.tornado_settings={settings!r}",
    ]  # fmt: skip
    if not open_browser:
        command.append("--no-browser")
    return [*command, *rest]


def serve(
    model: str = "shapes",
    port: int = APP_PORT,
    ip: str = "localhost",
    base_url: str = "/",
    open_browser: bool = False,
    extra=(),
) -> int:
    """Serve the app with Voila until it stops (what ``gradcam-widget app`` does): print the
    URL, then run :func:`app_command` with the first model in :data:`APP_MODEL_VARIABLE`.

    Returns:
        Voila's exit status.

    Raises:
        ValueError: for a bad model (:func:`app_model`), Voila not installed, or bad ``extra``.
        FileNotFoundError: when the app notebook is missing from the installation.
    """
    import importlib.util
    import subprocess

    model = app_model(model)
    if importlib.util.find_spec("voila") is None:
        raise ValueError("the app needs Voila: pip install 'gradcam_widget[app]'")
    if not APP_NOTEBOOK.is_file():
        raise FileNotFoundError(f"the app notebook {APP_NOTEBOOK} is missing from the installation")
    command = app_command(port, ip, base_url, open_browser, extra)
    environment = dict(os.environ, **{APP_MODEL_VARIABLE: model})
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"gradcam-widget app ({shown(model)}): {app_url(ip, port, base_url)}", flush=True)
    return subprocess.run(command, env=environment, stdin=subprocess.DEVNULL).returncode


def app_view(initial: str = "shapes"):
    """The app's page: a Model menu (:func:`app_models`) above a
    :class:`~gradcam_widget.widget.CamExplorer`; choosing another model replaces the explorer
    (the image on screen is kept). What the app notebook displays.

    Args:
        initial: a model name or ``.keras`` path (as :func:`app_model` returns it).

    Returns:
        An ``ipywidgets.VBox`` whose ``explorer`` attribute is the explorer on screen.
    """
    import ipywidgets as widgets

    from gradcam_widget.explorer.widget import CamExplorer

    menu = widgets.Dropdown(description="Model", options=app_models(initial), value=initial)
    menu.add_class("gw-app-model")
    note = widgets.HTML()
    note.add_class("gw-app-note")
    view = widgets.VBox([widgets.HBox([menu, note])])
    view.add_class("gw-app")

    def show(model: str, previous=None):
        note.value = f"loading <b>{model}</b> ..."
        explorer = CamExplorer(load_app_model(model))
        if previous is not None and previous.image_name != explorer.image_name:
            explorer.set_image(previous.capture.image, name=previous.image_name)
        if previous is not None:
            previous.close()
        view.children = [view.children[0], explorer]
        view.explorer = explorer
        note.value = ""

    def on_model(change):
        menu.disabled = True
        try:
            show(change["new"], getattr(view, "explorer", None))
        except Exception as error:  # the explorer on screen stays
            note.value = f"⚠ {html.escape(one_line(error))}"
        finally:
            menu.disabled = False

    show(initial)
    menu.observe(on_model, names="value")
    return view

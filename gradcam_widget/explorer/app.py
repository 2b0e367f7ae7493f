"""The explorer as a web page: what each tab of ``gradcam-widget app`` shows.

:func:`app_view` is the page: a Model menu (:func:`app_models`) above a
:class:`~gradcam_widget.widget.CamExplorer`. The server that puts one per browser tab, all in
one process sharing the loaded models, is :mod:`gradcam_widget.classroom`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from gradcam_widget._text import one_line

APP_PORT = 8866
"""Default port of ``app``."""

MODEL_FILES = (".keras", ".h5")
"""The suffixes of the model files the app opens."""


def app_model(model: str) -> str:
    """The ``--model`` of ``app`` checked, as the app's page gets it: a name of
    :data:`gradcam_widget.models.MODEL_NAMES` whose weights are here, or the absolute path of a
    ``.keras`` / ``.h5`` file.

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
    return f"http://{host}:{port}{base_path(base_url)}"


def base_path(base_url: str) -> str:
    """``base_url`` with one slash at each end (``/`` for none)."""
    inner = base_url.strip("/")
    return f"/{inner}/" if inner else "/"


def app_view(initial: str = "shapes", make_explorer=None):
    """The app's page: a Model menu (:func:`app_models`) above a
    :class:`~gradcam_widget.widget.CamExplorer`; choosing another model replaces the explorer
    (the image on screen is kept; the one replaced is closed). ``view.close_all()`` closes the
    page and its explorer.

    Args:
        initial: a model name or ``.keras`` path (as :func:`app_model` returns it).
        make_explorer: ``value -> CamExplorer`` for a value of the menu (default: a new
            explorer of :func:`load_app_model`'s model); the classroom server passes one that
            shares its loaded models and their pass queues.

    Returns:
        An ``ipywidgets.VBox`` whose ``explorer`` attribute is the explorer on screen.
    """
    import ipywidgets as widgets

    from gradcam_widget.explorer.widget import CamExplorer

    def make(model: str):
        if make_explorer is not None:
            return make_explorer(model)
        return CamExplorer(load_app_model(model))

    menu = widgets.Dropdown(description="Model", options=app_models(initial), value=initial)
    menu.add_class("gw-app-model")
    note = widgets.HTML()
    note.add_class("gw-app-note")
    row = widgets.HBox([menu, note])
    view = widgets.VBox([row])
    view.add_class("gw-app")

    def show(model: str, previous=None):
        note.value = f"loading <b>{model}</b> ..."
        explorer = make(model)
        try:
            if previous is not None and previous.image_name != explorer.image_name:
                explorer.set_image(previous.capture.image, name=previous.image_name)
        except BaseException:  # the explorer on screen stays; the new one is not kept
            explorer.close()
            raise
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

    def close_all():
        explorer = getattr(view, "explorer", None)
        if explorer is not None:
            explorer.close()
        for widget in (note, menu, row, view):
            widget.close()

    show(initial)
    menu.observe(on_model, names="value")
    view.close_all = close_all
    return view

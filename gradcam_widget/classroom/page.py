"""The page of one tab of the classroom app: :func:`Page`, the Solara component the server
renders in each tab's virtual kernel.

Each tab builds its own :func:`~gradcam_widget.explorer.app.app_view` (the notebook explorer's
widgets, unchanged) from the server's :class:`~.shared.SharedModels`; when the tab's kernel
closes (the tab closed or reloaded, or its connection lost for the cull timeout), the view and
its explorer are closed and their memory handed back.
"""

from __future__ import annotations

import threading

import solara

from gradcam_widget.classroom.shared import SharedModels, give_back_memory
from gradcam_widget.explorer.app import app_view

__all__ = ["Page", "open_views", "serve_models"]

_state = {"models": None}
_views: set = set()  # the views of the tabs open now
_lock = threading.Lock()


def serve_models(models: SharedModels) -> None:
    """Say which shared models the tabs take from (the server calls it before serving)."""
    _state["models"] = models


def open_views() -> int:
    """How many tabs have a view now."""
    with _lock:
        return len(_views)


def _models() -> SharedModels:
    if _state["models"] is None:
        _state["models"] = SharedModels()
    return _state["models"]


def _open():
    models = _models()
    view = app_view(models.initial, models.explorer)
    with _lock:
        _views.add(view)
    return view


def _close(view) -> None:
    with _lock:
        _views.discard(view)
    view.close_all()
    give_back_memory()


@solara.component
def Page():
    """One tab: the Model menu and its explorer, closed with the tab's kernel."""
    view = solara.use_memo(_open, [])
    solara.use_effect(lambda: lambda: _close(view), [])
    solara.Column(children=[view])

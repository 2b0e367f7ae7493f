"""Run the classroom app: :func:`serve`, what ``gradcam-widget app`` does.

One process: Solara's server (Starlette on uvicorn) renders :func:`~.page.Page` in a virtual
kernel per tab, behind the :class:`~.guard.Guard`. Solara is configured here, before it is
imported: no telemetry, no version check, no fetching from a CDN (its assets are served from
the installed ``solara-assets``, read only), no state written to the working folder, its
diagnostics routes (``/resourcez``, ``evict``) left out, and a tab whose connection is lost
culled after :data:`CULL_TIMEOUT`. The port is bound before the URL is printed, and
SIGTERM/SIGINT end the server (and with it every session) cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import warnings
from pathlib import Path

from gradcam_widget._text import shown
from gradcam_widget.classroom.guard import AllowedHosts, Guard, Sessions
from gradcam_widget.classroom.shared import SharedModels, bound_arenas, default_sessions
from gradcam_widget.explorer.app import APP_PORT, app_url, base_path

__all__ = [
    "CLIENT_SESSIONS",
    "CULL_TIMEOUT",
    "WEBSOCKET_BYTES",
    "bind",
    "build_app",
    "configure_solara",
    "serve",
]

CULL_TIMEOUT = "20s"  # with PING_S + PONG_S: a vanished tab freed within 55 s
"""How long the session of a tab whose connection is lost is kept (a reload reconnects within
it); a closed tab says so and is freed at once."""

PING_S = 10.0
"""Websocket ping interval; a vanished tab is noticed within this plus :data:`PONG_S`."""

PONG_S = 25.0
"""How long a ping's answer may take (behind a 20 MiB upload on a slow network)."""

WEBSOCKET_BYTES = 32 * 2**20
"""The largest websocket message taken: above
:data:`gradcam_widget.widget.MAX_UPLOAD_BYTES` (20 MiB) plus the message's own overhead."""

CLIENT_SESSIONS = 8
"""Sessions one client address may have open by default (``--client-sessions``)."""

SOLARA_SETTINGS = {
    "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
    "SOLARA_MODE": "production",
    "SOLARA_THEME_SHOW_BANNER": "False",
    "SOLARA_THEME_TITLE": "Grad-CAM explorer",
    "SOLARA_KERNEL_CULL_TIMEOUT": CULL_TIMEOUT,
    "SOLARA_ASSETS_PROXY": "True",
    "SOLARA_APP": "gradcam_widget.classroom.page:Page",
}
"""Solara's settings for the app (its environment variables; they win over a ``.env`` file)."""

LEFT_OUT = ("/resourcez", "/_solara/api/evict/{kernel_id}", "/static/public")
"""Solara's routes the app does not serve (diagnostics, test-only, the app's public folder)."""


def configure_solara() -> None:
    """Set :data:`SOLARA_SETTINGS` (before Solara is imported, and on its settings after)."""
    os.environ.update(SOLARA_SETTINGS)
    import solara  # noqa: F401 - the whole package first: its settings module alone cycles
    import solara.server.settings as settings

    settings.telemetry.mixpanel_enable = False
    settings.main.mode = "production"
    settings.theme.show_banner = False
    settings.theme.title = SOLARA_SETTINGS["SOLARA_THEME_TITLE"]
    settings.kernel.cull_timeout = CULL_TIMEOUT
    for name in ("solara", "reacton"):  # its per-request notes are not the teacher's concern
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Cookies with samesite=none", module="solara")


def build_app(hosts: AllowedHosts, sessions: Sessions, on_refusal=None):
    """Solara's Starlette app, less :data:`LEFT_OUT`, its CDN route serving the installed
    assets only (never fetching), behind a :class:`Guard`."""
    configure_solara()
    import solara.server.settings as settings
    from solara.server import server as solara_server
    from solara.server import starlette as solara_app
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    routes = []
    for route in solara_app.routes:
        path = getattr(route, "path", "")
        if path in LEFT_OUT:
            continue
        if isinstance(route, Mount) and path == "/_solara/cdn":
            directory = settings.assets.proxy_cache_dir
            route = Mount(path, app=StaticFiles(directory=directory, check_dir=False))
        elif isinstance(route, Mount) and path == "/static/assets":  # Solara's own only: its
            directory = Path(solara_server.solara_static).parent / "assets"  # default also
            route = Mount(path, app=StaticFiles(directory=directory))  # serves the package's
        routes.append(route)
    app = Starlette(routes=routes, lifespan=solara_app.lifespan, middleware=solara_app.middleware)
    return Guard(app, hosts, sessions, on_refusal)


def live_sessions() -> set:
    """The ids of the virtual kernels alive now (Solara's)."""
    from solara.server import kernel_context

    return set(kernel_context.contexts)


def bind(ip: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``ip`` names (``localhost``: 127.0.0.1 and ::1
    where the machine has IPv6), port ``port``.

    Raises:
        ValueError: one line, when the port is in use on any of them or the address is not
            this machine's.
    """
    try:
        found = socket.getaddrinfo(ip or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror as error:
        raise ValueError(f"cannot listen on {ip!r}: {error.strerror}") from None
    listeners: list[socket.socket] = []
    problems = []
    for family, kind, proto, _, address in dict.fromkeys(
        (f, k, p, c, a) for f, k, p, c, a in found
    ):
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(128)
        except OSError as error:
            listener.close()
            if error.errno == errno.EADDRINUSE:
                for taken in listeners:
                    taken.close()
                raise ValueError(
                    f"port {port} on {ip} is in use (another server holds it): choose another "
                    "with --port"
                ) from None
            problems.append(error)  # e.g. no IPv6 here: the other addresses serve
            continue
        listeners.append(listener)
    if not listeners:
        raise ValueError(f"cannot listen on {ip}:{port}: {problems[0].strerror}")
    return listeners


def _hosts(ip: str, allow_hosts) -> AllowedHosts:
    names = list(allow_hosts)
    if ip in ("0.0.0.0", "::", ""):  # the name the printed URL carries answers too
        names.append(socket.gethostname())
    else:
        names.append(ip)
    return AllowedHosts(names)


def serve(
    model: str = "shapes",
    port: int = APP_PORT,
    ip: str = "localhost",
    base_url: str = "/",
    open_browser: bool = False,
    allow_hosts=(),
    max_sessions: int | None = None,
    client_sessions: int = CLIENT_SESSIONS,
) -> int:
    """Serve the app until SIGTERM or SIGINT (what ``gradcam-widget app`` does): check the
    model and load it, bind the port, print the URL, serve.

    Args:
        model: the first model of every tab (a name or a ``.keras`` file).
        port, ip: where to listen.
        base_url: the URL prefix (behind a reverse proxy).
        open_browser: open the URL in a browser.
        allow_hosts: Host names answered besides the localhost ones (``--allow-host``).
        max_sessions: tabs served at most (default :func:`~.shared.default_sessions`).
        client_sessions: tabs one client address may have open.

    Returns:
        0 once stopped.

    Raises:
        ValueError: for a bad model or bound, a port in use, or Solara missing; one line.
    """
    import importlib.util

    for name in ("solara", "uvicorn", "solara_assets"):
        if importlib.util.find_spec(name) is None:
            raise ValueError("the app needs Solara: pip install 'gradcam_widget[app]'")
    limit = default_sessions() if max_sessions is None else max_sessions
    sessions = Sessions(limit, client_sessions, live_sessions)
    shared = SharedModels(model)
    listeners = bind(ip, port)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals: the main thread's
        previous = {sig: signal.signal(sig, _stop_while_starting)
                    for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
    try:
        bound_arenas()
        configure_solara()
        shared.model(shared.initial)  # TensorFlow and the first model, before the URL
        from gradcam_widget.classroom import page

        page.serve_models(shared)
        log = logging.getLogger("gradcam_widget.app")
        app = build_app(_hosts(ip, allow_hosts), sessions, log.warning)
        url = app_url(ip, port, base_url)
        print(f"gradcam-widget app ({shown(shared.initial)}): {url} (at most {limit} tabs)",
              flush=True)  # fmt: skip
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        stopped = _run(app, listeners, base_url)
    except _Stopped as stop:  # a signal while TensorFlow and the model were loading
        stopped = stop.name
    finally:
        for listener in listeners:
            listener.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"gradcam-widget app: stopped ({stopped})", flush=True)
    return 0


class _Stopped(Exception):
    """SIGTERM or SIGINT before the server runs (its own handlers take over then)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _stop_while_starting(sig, frame):
    raise _Stopped(signal.Signals(sig).name)


def _run(app, listeners: list, base_url: str) -> str:
    """Serve ``app`` on ``listeners`` until a signal; the signal's name."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by = "server ended"

        def handle_exit(self, sig, frame):  # stop once, without re-raising the signal after
            self.stopped_by = signal.Signals(sig).name
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        ws_max_size=WEBSOCKET_BYTES,
        ws_ping_interval=PING_S,
        ws_ping_timeout=PONG_S,
        timeout_graceful_shutdown=5,
        root_path=base_path(base_url).rstrip("/"),
        lifespan="on",
    )
    server = Server(config)
    with contextlib.redirect_stdout(sys.stderr):
        server.run(sockets=listeners)
    return server.stopped_by

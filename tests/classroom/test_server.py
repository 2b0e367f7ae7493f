"""``gradcam-widget app`` as a real process, on loopback only: strangers' Host and Origin
refused, nothing but the app reachable, the session bound and a lost session freed, a port in
use refused in one line, SIGTERM and SIGINT ending everything cleanly.

Slow: each test starts the server (Python, TensorFlow, the model: ~10-20 s)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from urllib.parse import quote

import psutil
import pytest
from classroom_process import AppProcess, free_port, open_session

from gradcam_widget.classroom import server

pytestmark = pytest.mark.slow

UP = "%2e%2e/" * 8
HOSTILE = [  # what a hostile run tried on the Voila app, and the ways around a static folder
    "/api/contents", "/api/contents/etc/passwd", "/api/kernels", "/api/sessions",
    "/api/terminals", "/terminals/1", "/files/etc/passwd", "/voila/files/etc/passwd",
    "/voila/render/x", "/tree", "/lab", "/notebooks/x.ipynb", "/resourcez",
    "/static/../../../../../../etc/passwd", f"/static/{UP}etc/passwd",
    f"/static/public/{UP}etc/passwd", f"/static/assets/{UP}etc/passwd",
    f"/jupyter/nbextensions/{UP}etc/passwd", f"/_solara/cdn/{UP}etc/passwd",
    "/_solara/cdn/" + quote("../" * 8, safe="") + "etc/passwd",
    "/_solara/cdn/not-installed@1.0.0/index.js",  # not fetched from the internet
    "/static/assets/shapes.keras", "/static/assets/shapes.json",  # the package's own files
    "/static/public/x", "/static/assets/../../__init__.py",
]  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    running = AppProcess(tmp_path_factory.mktemp("app"), "--max-sessions", "1")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_the_url_line_and_the_page(app):
    lines = app.out.read_text().splitlines()
    assert lines[0] == f"gradcam-widget app (shapes): http://127.0.0.1:{app.port}/ (at most 1 tabs)"
    status, body = app.get("/")
    assert status == 200 and b"Grad-CAM explorer" in body
    assert app.err.read_text() == "", app.logs()  # quiet: no log lines of its own


@pytest.mark.parametrize("host", ["attacker.example", "localhost.attacker.example:1", "", "x"])
def test_a_strangers_host_is_refused(app, host):
    status, body = app.get("/", host=host)
    assert status == 403 and b"solara" not in body.lower()


@pytest.mark.parametrize("path", HOSTILE)
def test_nothing_but_the_app_is_reachable(app, path):
    status, body = app.get(path)
    assert status in (403, 404), (path, status, body[:200])
    assert b"root:" not in body


def test_the_diagnostics_and_test_routes_are_gone(app):
    assert app.get("/_solara/api/evict/x", method="POST")[0] in (403, 404, 405)


def test_another_sites_page_cannot_open_a_session(app):
    import websockets

    async def attempt():
        with pytest.raises(websockets.InvalidStatus, match="403"):
            await open_session(app.session_url(), origin="http://evil.example")

    asyncio.run(attempt())


def test_the_session_bound_and_a_lost_session_freed(app):
    """One seat (--max-sessions 1): taken by a session, the page says the class is full and
    another session is refused; the session's connection lost, the seat is free again within
    60 s (Solara culls it after CULL_TIMEOUT)."""
    import websockets

    async def scenario():
        first = await open_session(app.session_url())
        deadline = time.monotonic() + 30
        while app.get("/")[0] != 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        status, body = app.get("/")
        assert status == 503 and b"The class is full" in body, body[:300]
        with pytest.raises(websockets.InvalidStatus):
            await open_session(app.session_url())
        await first.close()
        closed = time.monotonic()
        while app.get("/")[0] != 200 and time.monotonic() - closed < 60:
            await asyncio.sleep(0.5)
        return time.monotonic() - closed

    freed_after = asyncio.run(scenario())
    assert freed_after < 60, f"the lost session still held its seat after {freed_after:.0f} s"


def test_a_port_in_use_is_one_line_before_any_url(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        app = AppProcess(tmp_path, port=port)
        assert app.process.wait(120) == 2
    assert app.out.read_text() == ""
    err = app.err.read_text().splitlines()
    assert err == [f"error: port {port} on 127.0.0.1 is in use (another server holds it): "
                   "choose another with --port"], err  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_and_all_it_started(tmp_path, sig):
    app = AppProcess(tmp_path, port=free_port())
    try:
        app.wait_ready()
        tree = psutil.Process(app.process.pid)

        async def with_a_session():
            session = await open_session(app.session_url())
            await asyncio.sleep(2)
            children = tree.children(recursive=True)
            assert children == [], f"the app started processes: {children}"
            assert app.stop(sig) == 0, app.logs()
            await session.close()

        asyncio.run(with_a_session())
    finally:
        app.stop(signal.SIGKILL)
    assert not psutil.pid_exists(app.process.pid) or psutil.Process(app.process.pid).status() == (
        psutil.STATUS_ZOMBIE
    )
    assert app.out.read_text().splitlines()[-1] == (
        f"gradcam-widget app: stopped ({signal.Signals(sig).name})"
    )
    with socket.socket() as again:  # no one listens on the port (a server may take it again)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", app.port))
        again.listen(1)


def test_the_defaults_fit_an_upload():
    from gradcam_widget.explorer import upload

    assert server.WEBSOCKET_BYTES > upload.MAX_UPLOAD_BYTES + 2**20

"""The classroom app, ``gradcam-widget app``, in a real browser: started by its own command
line, an image uploaded through the file chooser, a file over the limit refused in the browser
before sending, a second tab with its own explorer in the same process, a third turned away
while the class is full and let in once a tab is closed.

Run: ``pytest -m e2e tests/e2e/test_app_browser.py`` (after ``bash scripts/e2e_setup.sh``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time

import numpy as np
import psutil
import pytest
from e2e_page import ExplorerPage
from PIL import Image

from gradcam_widget import data, widget

pytestmark = pytest.mark.e2e

# The server loads TensorFlow and the model before it answers; a tab is ready in seconds.
EXPLORER_TIMEOUT_S = 120.0
UPDATE_TIMEOUT_S = 30.0
UPLOAD_NAME = "my_photo.png"
SAMPLE = "shape scene 1000001"
# Over a default server's 10 MiB websocket message limit, under MAX_UPLOAD_BYTES (20 MiB).
# Noise does not compress: ~12.6 MB as PNG.
BIG_NAME = "big_noise.png"
BIG_SIDE = 2048
HUGE_NAME = "huge.png"  # over MAX_UPLOAD_BYTES: refused in the browser
SERVER_START_TIMEOUT_S = 180.0
FREED_TIMEOUT_S = 60.0


def require_solara():
    """Skip without Solara locally; fail in CI (CI set), as conftest.py's fixtures do."""
    if importlib.util.find_spec("solara") is not None:
        return
    reason = "Solara is not installed in this environment; run `bash scripts/e2e_setup.sh`"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the end-to-end tests must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def app(tmp_path_factory):
    """``python -m gradcam_widget app`` (the real command line) on a free port, two tabs at
    most; always shut down."""
    require_solara()
    from e2e_servers import isolated_environment, start_server

    home = tmp_path_factory.mktemp("app")

    def command(port: int, token: str) -> list[str]:
        return [
            sys.executable, "-m", "gradcam_widget", "app",
            "--port", str(port),
            "--ip", "127.0.0.1",
            "--no-browser",
            "--max-sessions", "2",
        ]  # fmt: skip

    server = start_server(
        "gradcam-widget app",
        command,
        ready_path="/readyz",
        environment=isolated_environment(home),
        workdir=home,
        log_path=home / "server.log",
        timeout=SERVER_START_TIMEOUT_S,
    )
    try:
        yield server
    finally:
        server.stop()


def open_app(app, page, failure_shot) -> ExplorerPage:
    """Open the app in ``page`` and wait for a ready explorer."""
    explorer = ExplorerPage(page)
    page.goto(app.url("/", with_token=False), wait_until="commit")
    try:
        explorer.wait_until_ready(EXPLORER_TIMEOUT_S)
    except AssertionError as error:
        note = explorer.screenshot_failure(failure_shot)
        raise AssertionError(f"{error} {note}\nserver log:\n{app.log_tail()}") from None
    return explorer


def sent_bytes(page) -> list[int]:
    """Sizes of the websocket frames ``page`` sends from now on (a list that grows)."""
    sizes: list[int] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sizes.append(len(frame))))
    return sizes


def upload(explorer: ExplorerPage, path):
    """Click the Upload button and give ``path`` to the file chooser it opens, as a person
    picking a file. (ipywidgets' ``<input type=file>`` is never attached to the page, so it
    is reached through the chooser, and ``set_input_files`` is called on it there.)"""
    button = explorer.page.locator(".gw-upload").first
    with explorer.page.expect_file_chooser(timeout=UPDATE_TIMEOUT_S * 1000) as chosen:
        button.click()
    chooser = chosen.value
    assert not chooser.is_multiple(), "the Upload button takes several files"
    chooser.element.set_input_files(str(path))


def choose_sample(explorer: ExplorerPage, label: str):
    """Pick sample ``label`` in the Image menu and wait for the new input picture."""
    before = explorer.panels(["input"])["input"]
    explorer.choose("image", label)
    explorer.wait_for_new_picture("input", before.src, UPDATE_TIMEOUT_S)
    explorer.wait_for_text(".gw-readout", label, UPDATE_TIMEOUT_S)


def test_app_upload_limit_tabs_and_a_full_class(app, browser, page, tmp_path):
    """The app's page: no code, a model menu, the explorer; an uploaded PNG replaces the input
    and overlay and the readout names it; a file over the limit never leaves the browser and
    the status line says why; a second tab gets its own explorer in the same process (no
    kernel per tab); a third is told the class is full until a tab closes."""
    started = time.monotonic()
    assert re.search(r"gradcam-widget app \(shapes\): http://127\.0\.0\.1:\d+/", app.log_tail()), (
        f"the app did not print its URL:\n{app.log_tail()}"
    )
    photo = tmp_path / UPLOAD_NAME
    Image.fromarray(data.scene(31, n_objects=1, size=(300, 400)).image).save(photo)

    frames = sent_bytes(page)
    first = open_app(app, page, tmp_path / "app_first_failure.png")
    first.assert_no_errors()
    assert "app_view(" not in first.page_text(), "the app page shows code"
    models, selected = first.options("app-model")
    assert selected == "shapes" and "shapes_vit" in models, (models, selected)

    before = first.panels()
    upload(first, photo)
    first.wait_for_new_picture("input", before["input"].src, UPDATE_TIMEOUT_S)
    first.wait_for_new_picture("overlay", before["overlay"].src, UPDATE_TIMEOUT_S)
    first.wait_for_text(".gw-readout", UPLOAD_NAME, UPDATE_TIMEOUT_S)
    first.assert_no_errors()

    big = tmp_path / BIG_NAME
    noise = np.random.default_rng(0).integers(0, 256, (BIG_SIDE, BIG_SIDE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, compress_level=1)
    assert 10 * 2**20 < big.stat().st_size < widget.MAX_UPLOAD_BYTES, big.stat().st_size
    upload(first, big)
    first.wait_for_text(".gw-readout", BIG_NAME, 2 * UPDATE_TIMEOUT_S)
    first.assert_no_errors()

    huge = tmp_path / HUGE_NAME
    huge.write_bytes(big.read_bytes() + bytes(widget.MAX_UPLOAD_BYTES))  # > 20 MiB
    shown = first.panels(["overlay"])["overlay"].src
    sent_before = len(frames)
    upload(first, huge)
    first.wait_for_text(".gw-status", "refused in the browser", UPDATE_TIMEOUT_S)
    assert HUGE_NAME in first.status_text()
    assert max(frames[sent_before:], default=0) < 4096, "the refused file was sent"
    assert first.panels(["overlay"])["overlay"].src == shown and BIG_NAME in first.readout_text()

    second_context = browser.new_context(viewport=page.viewport_size)
    second = open_app(app, second_context.new_page(), tmp_path / "app_second_failure.png")
    second.assert_no_errors()
    assert UPLOAD_NAME not in second.readout_text(), "the second tab shares the first's view"
    server = psutil.Process(app.process.pid)
    children = server.children(recursive=True)
    assert children == [], f"the app started processes for its tabs: {children}"
    megabytes = round(server.memory_info().rss / 2**20)

    choose_sample(second, SAMPLE)
    choose_sample(first, SAMPLE)
    first.assert_no_errors()
    second.assert_no_errors()

    third_context = browser.new_context(viewport=page.viewport_size)
    third = third_context.new_page()
    answer = third.goto(app.url("/", with_token=False))
    assert answer.status == 503 and "The class is full" in third.content()

    page.close(run_before_unload=True)  # the first tab closed: its seat is given back
    closed = time.monotonic()
    while time.monotonic() - closed < FREED_TIMEOUT_S:
        answer = third.goto(app.url("/", with_token=False))
        if answer.status == 200:
            break
        third.wait_for_timeout(1000)
    freed = time.monotonic() - closed
    assert answer.status == 200, f"a closed tab still held its seat after {freed:.0f} s"
    last = ExplorerPage(third)
    last.wait_until_ready(EXPLORER_TIMEOUT_S)
    last.assert_no_errors()
    third.reload()  # a reload in a full class: its own seat is given back and taken again
    last.wait_until_ready(EXPLORER_TIMEOUT_S)
    second_context.close()
    third_context.close()
    print(f"app: upload, limit, two tabs and a full class checked in "
          f"{time.monotonic() - started:.1f} s; one process, {megabytes} MiB resident with two "
          f"tabs; a closed tab's seat free after {freed:.1f} s")  # fmt: skip

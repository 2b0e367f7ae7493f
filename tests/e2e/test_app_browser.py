"""The classroom app, ``gradcam-widget app``, in a real browser: started by its own command
line, an image uploaded through the file chooser, and a second tab with its own kernel.

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
from e2e_page import ExplorerPage, open_voila
from PIL import Image

from gradcam_widget import data, widget

pytestmark = pytest.mark.e2e

# Kernel start + TensorFlow import + model load + first pass (~10-20 s on two idle cores).
EXPLORER_TIMEOUT_S = 150.0
UPDATE_TIMEOUT_S = 30.0
UPLOAD_NAME = "my_photo.png"
SAMPLE = "shape scene 1000001"
# Over Tornado's default 10 MiB websocket message limit, under MAX_UPLOAD_BYTES (20 MiB):
# arrives only because the app raises the limit. Noise does not compress: ~12.6 MB as PNG.
BIG_NAME = "big_noise.png"
BIG_SIDE = 2048
SERVER_START_TIMEOUT_S = 90.0


def require_voila():
    """Skip without Voila locally; fail in CI (CI set), as conftest.py's fixtures do."""
    if importlib.util.find_spec("voila") is not None:
        return
    reason = "Voila is not installed in this environment; run `bash scripts/e2e_setup.sh`"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the end-to-end tests must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def app(tmp_path_factory):
    """``python -m gradcam_widget app`` (the real command line) on a free port with a token;
    always shut down, its kernels included."""
    require_voila()
    from e2e_servers import isolated_environment, start_server

    home = tmp_path_factory.mktemp("app")

    def command(port: int, token: str) -> list[str]:
        return [
            sys.executable, "-m", "gradcam_widget", "app",
            "--port", str(port),
            "--ip", "127.0.0.1",
            "--no-browser",
            "--", f"--Voila.token={token}", "--show_tracebacks=True",
        ]  # fmt: skip

    server = start_server(
        "gradcam-widget app",
        command,
        ready_path="/voila/static/",  # answers without running the notebook
        environment=isolated_environment(home),
        workdir=home,
        log_path=home / "server.log",
        timeout=SERVER_START_TIMEOUT_S,
    )
    try:
        yield server
    finally:
        server.stop()


def kernels(app) -> list[psutil.Process]:
    """The app's kernel processes (``ipykernel_launcher``) alive now."""
    found = []
    for child in psutil.Process(app.process.pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


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


def test_app_upload_and_a_second_tab(app, page, tmp_path):
    """The app's page: no code, a model menu, the explorer; an uploaded PNG replaces the input
    and overlay and the readout names it; a second tab at the same time gets its own kernel
    and explorer while the first keeps working."""
    started = time.monotonic()
    assert re.search(r"gradcam-widget app \(shapes\): http://127\.0\.0\.1:\d+/", app.log_tail()), (
        f"the app did not print its URL:\n{app.log_tail()}"
    )
    photo = tmp_path / UPLOAD_NAME
    Image.fromarray(data.scene(31, n_objects=1, size=(300, 400)).image).save(photo)

    first = open_voila(app, page, EXPLORER_TIMEOUT_S, tmp_path / "app_first_failure.png")
    first.assert_no_errors()
    assert "app_view(" not in first.page_text(), "the app page shows the notebook's code"
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

    second_page = page.context.new_page()
    second = open_voila(app, second_page, EXPLORER_TIMEOUT_S, tmp_path / "app_second_failure.png")
    second.assert_no_errors()
    assert UPLOAD_NAME not in second.readout_text(), "the second tab shares the first's view"
    running = kernels(app)
    assert len(running) >= 2, f"two tabs, kernels: {running}\n{app.log_tail()}"
    megabytes = [round(kernel.memory_info().rss / 2**20) for kernel in running]

    choose_sample(second, SAMPLE)
    choose_sample(first, SAMPLE)
    first.assert_no_errors()
    second.assert_no_errors()
    print(f"app: upload and two tabs checked in {time.monotonic() - started:.1f} s; kernels "
          f"{megabytes} MiB resident")  # fmt: skip

"""Fixtures for the browser end-to-end tests: the notebook, Chromium, JupyterLab, Voila.

Set-up: ``bash scripts/e2e_setup.sh`` (Debian's chromium; playwright, voila and jupyterlab in
./.venv). Without it the tests skip locally with the reason, but with ``CI`` set (CI=true)
a missing piece FAILS the test: in CI the browser check never silently disappears.

Parameters (environment variables):
    GW_E2E_NOTEBOOK     notebook to open, relative to the repository (default
                        notebooks/01_quickstart.ipynb).
    GW_E2E_SCREENSHOTS  where screenshots go, relative to the repository or absolute
                        (default: a fresh temporary folder, so that a test run changes no
                        tracked file). ``scripts/refresh_screenshots.sh`` sets it to
                        docs/screenshots to refresh the README's pictures on purpose.
    GW_E2E_CHROMIUM     the browser binary (default /usr/bin/chromium).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_NOTEBOOK = "notebooks/01_quickstart.ipynb"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium as root in a container with no network but the package registries:
# no sandbox (root), no GPU, and none of the background traffic it would otherwise send.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 1000}
SERVER_START_TIMEOUT_S = 90.0
SETUP_HINT = "run `bash scripts/e2e_setup.sh`"


def in_ci() -> bool:
    """Whether this run is CI's (the environment variable CI is set to a true value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip with ``reason`` locally; fail with it in CI, where nothing may be skipped."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the end-to-end tests must run here)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, what: str):
    """Skip (locally) or fail (CI) unless module ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        unavailable(f"{what} is not installed in this environment; {SETUP_HINT}")


@pytest.fixture(scope="session")
def notebook() -> Path:
    """The notebook under test, relative to the repository root."""
    relative = Path(os.environ.get("GW_E2E_NOTEBOOK", DEFAULT_NOTEBOOK))
    absolute = (REPO / relative).resolve()
    if not absolute.is_relative_to(REPO):
        pytest.fail(f"GW_E2E_NOTEBOOK={relative} is outside the repository {REPO}")
    if not absolute.is_file():
        unavailable(f"the notebook {relative} does not exist")
    return absolute.relative_to(REPO)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where the screenshots are saved (created on first use): the folder named by
    ``GW_E2E_SCREENSHOTS`` (relative to the repository), else a temporary one. Never
    docs/screenshots by default: a plain test run must not rewrite tracked files."""
    configured = os.environ.get("GW_E2E_SCREENSHOTS", "").strip()
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    return REPO / configured


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (its own browser download does not
    work on these machines, so Playwright is pointed at the system binary)."""
    require_module("playwright", "playwright")
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("GW_E2E_CHROMIUM", DEFAULT_CHROMIUM)
    if not os.access(executable, os.X_OK):
        unavailable(f"no browser at {executable}; {SETUP_HINT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (own cookies and storage) at a fixed window size."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def lab_root() -> Path:
    """The folder ``jupyter lab`` serves: the repository. A test module may override this
    fixture (and ``notebook``, relative to it) to serve a folder of its own."""
    return REPO


@pytest.fixture
def jupyter_lab(tmp_path_factory, notebook, lab_root):
    """``jupyter lab`` serving ``lab_root`` (the repository); always shut down (kernels
    included)."""
    require_module("jupyterlab", "JupyterLab")
    from e2e_servers import isolated_environment, jupyter_lab_command, start_server

    home = tmp_path_factory.mktemp("jupyter-lab")
    checkpoints = home / "checkpoints"
    (checkpoints / notebook.parent).mkdir(parents=True)
    server = start_server(
        "jupyter lab",
        lambda port, token: jupyter_lab_command(port, token, lab_root, checkpoints),
        ready_path="/api/status",
        environment=isolated_environment(home),
        workdir=lab_root,
        log_path=home / "server.log",
        timeout=SERVER_START_TIMEOUT_S,
    )
    try:
        yield server
    finally:
        server.stop()


def _voila(tmp_path_factory, notebook, name: str, adjust=None):
    """``voila <notebook>`` with its own Jupyter state (``adjust(environment, home)`` may
    change the environment first); always shut down (its kernel included)."""
    require_module("voila", "Voila")
    from e2e_servers import isolated_environment, start_server, voila_command

    home = tmp_path_factory.mktemp(name)
    environment = isolated_environment(home)
    if adjust is not None:
        adjust(environment, home)
    server = start_server(
        "voila",
        lambda port, token: voila_command(port, token, notebook),
        ready_path="/voila/static/",  # answers without running the notebook
        environment=environment,
        workdir=REPO,
        log_path=home / "server.log",
        timeout=SERVER_START_TIMEOUT_S,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def voila(tmp_path_factory, notebook):
    """``voila <notebook>``; always shut down (its kernel included)."""
    yield from _voila(tmp_path_factory, notebook, "voila")


def _jax_without_tensorflow(environment: dict, home: Path) -> None:
    """Keras on JAX in the kernel, and TensorFlow made unimportable there (a module of that
    name that raises ImportError first on the path), as on a machine that has no TensorFlow:
    a notebook that still needed it fails."""
    blocker = home / "no_tensorflow"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text(
        'raise ImportError("TensorFlow is blocked in this test: the JAX kernel must not need it")\n'
    )
    environment["KERAS_BACKEND"] = "jax"
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(blocker), environment.get("PYTHONPATH", "")) if part
    )


@pytest.fixture
def voila_jax(tmp_path_factory, notebook):
    """``voila <notebook>`` whose kernel runs Keras on JAX with no TensorFlow to import."""
    require_module("jax", "JAX")
    yield from _voila(tmp_path_factory, notebook, "voila-jax", _jax_without_tensorflow)

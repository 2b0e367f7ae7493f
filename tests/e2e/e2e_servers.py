"""Start and stop the Jupyter servers the browser tests talk to.

Every server runs from the test's own Python environment (``sys.executable -m ...``), listens
on 127.0.0.1 on a free port, has a random token, and sees only a temporary Jupyter
configuration (``JUPYTER_CONFIG_DIR``, ``JUPYTER_DATA_DIR``, ``JUPYTER_RUNTIME_DIR``,
``IPYTHONDIR``), so no user settings leak in. :meth:`RunningServer.stop` always ends the
server and every process it started (kernels included), first politely, then by force.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# JupyterLab settings that keep pop-ups out of the way: no news or update toasts (they would
# also try to reach the internet), no "build recommended" dialog, and a notebook opened
# without a kernel choice starts the default kernel instead of asking. No autosave: the test
# runs the repository's own notebook and must never write its outputs back.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
    },
}
LAB_PAGE_CONFIG = {"buildAvailable": False, "buildCheck": False}
SERVER_CONFIG = {
    "LabApp": {
        "news_url": None,
        "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
    },
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_environment(home: Path) -> dict[str, str]:
    """Environment variables for a server whose Jupyter state all lives under ``home``.

    Writes the JupyterLab settings above into the new configuration directory.

    Args:
        home: an empty temporary directory.

    Returns:
        A copy of ``os.environ`` with the Jupyter and IPython directories pointing into
        ``home`` and TensorFlow's C++ logging silenced.
    """
    config_dir, data_dir = home / "config", home / "data"
    runtime_dir, ipython_dir = home / "runtime", home / "ipython"
    for directory in (config_dir, data_dir, runtime_dir, ipython_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for relative, settings in LAB_USER_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    (config_dir / "labconfig").mkdir(exist_ok=True)
    (config_dir / "labconfig" / "page_config.json").write_text(json.dumps(LAB_PAGE_CONFIG))
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))

    environment = dict(os.environ)
    environment.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        IPYTHONDIR=str(ipython_dir),
        JUPYTER_PLATFORM_DIRS="0",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYDEVD_DISABLE_FILE_VALIDATION="1",  # debugpy's notice about frozen modules
    )
    return environment


def jupyter_lab_command(port: int, token: str, root_dir: Path, checkpoint_root: Path) -> list[str]:
    """``jupyter lab`` on 127.0.0.1:``port`` serving ``root_dir``, without a browser.

    JupyterLab saves a checkpoint of every notebook it opens; ``checkpoint_root`` (a
    temporary directory holding the notebook's folder, e.g. ``<tmp>/notebooks``) keeps those
    out of the repository.
    """
    return [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--FileCheckpoints.root_dir={checkpoint_root}",
    ]  # fmt: skip


def voila_command(port: int, token: str, notebook: Path) -> list[str]:
    """``voila notebook`` on 127.0.0.1:``port``, without a browser, tracebacks on the page
    (so a failing cell shows its error in the page, where the test reads it)."""
    return [
        sys.executable, "-m", "voila",
        str(notebook),
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--show_tracebacks=True",
    ]  # fmt: skip


@dataclass
class RunningServer:
    """A server process started by :func:`start_server`.

    Attributes:
        name: what it is, for messages ("jupyter lab", "voila").
        process: the server process.
        base_url: ``http://127.0.0.1:PORT``.
        token: the token every request must carry.
        log_path: the server's combined stdout and stderr.
    """

    name: str
    process: subprocess.Popen
    base_url: str
    token: str
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    def url(self, path: str, with_token: bool = True) -> str:
        """Absolute URL of ``path`` (starting with "/"), with ``?token=`` by default."""
        separator = "&" if "?" in path else "?"
        suffix = f"{separator}token={self.token}" if with_token else ""
        return f"{self.base_url}{path}{suffix}"

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def answers(self, path: str) -> bool:
        """Whether ``GET path`` (token in the header) gets a response below 500."""
        request = urllib.request.Request(
            self.base_url + path, headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_seconds: float = 10.0):
        """End the server and every process under it (kernels): ask, terminate, kill.

        Safe to call more than once and on a server that already exited.
        """
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            family = []
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.terminate()  # SIGTERM: Jupyter shuts its kernels down
                self.process.wait(grace_seconds)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(grace_seconds)
        for child in family:  # anything the server did not take down with it
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(family, timeout=grace_seconds)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def start_server(
    name: str,
    command_for: Callable[[int, str], list[str]],
    ready_path: str,
    environment: dict[str, str],
    workdir: Path,
    log_path: Path,
    timeout: float = 60.0,
    attempts: int = 3,
) -> RunningServer:
    """Start a server on a free port and wait until ``ready_path`` answers.

    A port can be taken between :func:`free_port` and the server binding it, so a server
    that exits while starting is retried on a new port, up to ``attempts`` times.

    Args:
        name: for messages.
        command_for: ``(port, token) -> argv``.
        ready_path: a path that answers (status < 500) once the server is up.
        environment: the server's environment (see :func:`isolated_environment`).
        workdir: the server's working directory.
        log_path: where its output goes (appended to on each attempt).
        timeout: seconds to wait for each attempt to answer.
        attempts: how many ports to try.

    Returns:
        The running server.

    Raises:
        RuntimeError: if it never answered; the message ends with the server log.
    """
    token = secrets.token_hex(24)
    failure = ""
    for _ in range(attempts):
        port = free_port()
        log_file = open(log_path, "a")  # noqa: SIM115 -- closed by RunningServer.stop
        process = subprocess.Popen(
            command_for(port, token),
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        server = RunningServer(
            name, process, f"http://127.0.0.1:{port}", token, log_path, _log_file=log_file
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                if server.answers(ready_path):
                    return server
                time.sleep(0.25)
        except BaseException:  # interrupted while waiting: leave nothing running
            server.stop()
            raise
        exit_code = process.poll()
        server.stop()
        if exit_code is None:  # still running but silent: a new port would not help
            failure = f"did not answer {ready_path} within {timeout:.0f} s"
            break
        failure = f"exited with code {exit_code}"
    raise RuntimeError(f"{name} {failure}. Its log ({log_path}):\n{server.log_tail()}")

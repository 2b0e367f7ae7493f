"""``gradcam-widget app`` as a real process on a free loopback port, for the classroom tests:
started by its own command line, asked over HTTP and websockets on 127.0.0.1 only, always
stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppProcess:
    """One app server: ``python -m gradcam_widget app --ip 127.0.0.1 --port P ... ARGS``."""

    def __init__(self, folder: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.out, self.err = folder / "app.out", folder / "app.err"
        command = [sys.executable, "-m", "gradcam_widget", "app", "--ip", "127.0.0.1",
                   "--port", str(self.port), "--no-browser", *args]  # fmt: skip
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=folder,
                env=environment,
            )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()}"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the app exited with {self.process.returncode}\n{self.logs()}"
                )
            if "gradcam-widget app" in self.out.read_text():
                try:
                    if self.get("/readyz")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"the app did not start in {timeout} s\n{self.logs()}")

    def get(self, path: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, method=method)
        request.add_header("Host", f"127.0.0.1:{self.port}" if host is None else host)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def session_url(self, kernel: str | None = None) -> str:
        """The websocket a tab opens for its session (Solara's kernel protocol)."""
        kernel = kernel or str(uuid.uuid4())
        return (f"ws://127.0.0.1:{self.port}/jupyter/api/kernels/{kernel}/channels"
                f"?session_id={uuid.uuid4()}")  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


async def open_session(url: str, origin: str | None = None):
    """A websocket session as a tab opens it (``websockets``); the connection."""
    import websockets

    return await websockets.connect(url, max_size=None, origin=origin, open_timeout=60)

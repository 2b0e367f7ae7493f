"""A Ray address is checked within a bounded time before anything is written: nothing
listening, a server that never answers and a server of another protocol are each one line
naming the address (exit 2 from the CLI), and SIGTERM/SIGINT while connecting stop the CLI.
Every server here is a socket of this test on 127.0.0.1."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import gradcam_widget as gw
from gradcam_widget.auditing import ray as distributed
from gradcam_widget.auditing import ray_connect

SCENES = "scenes:0-4"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def loopback_server(answer):
    """A loopback port whose accepted connections are each handed to ``answer(connection)``
    (then held open until the block ends); yields ``(port, accepted)``, ``accepted`` set once
    a client has connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted, stop = threading.Event(), threading.Event()
    held = []

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(connection)
            accepted.set()
            with contextlib.suppress(OSError):
                answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()


def silent_server():
    """A loopback port that accepts connections and never says a word."""
    return loopback_server(lambda connection: None)


def _http_400(connection):
    connection.settimeout(2)
    connection.recv(1024)
    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def http_server():
    """A loopback port where a plain HTTP/1.1 server answers anything with 400."""
    return loopback_server(_http_400)


def test_nothing_listening_is_one_line_naming_the_address():
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(distributed.RayAddressError) as error:
        distributed.check_address(address, timeout=5)
    message = str(error.value)
    assert "\n" not in message and repr(address) in message and "refused" in message


def test_a_server_that_never_answers_fails_at_the_timeout():
    with silent_server() as (port, accepted):
        with pytest.raises(distributed.RayAddressError, match="no answer"):
            distributed.check_address(f"ray://127.0.0.1:{port}", timeout=1)
        assert accepted.is_set()  # it did connect: the timeout, not the refusal, ended it


def test_a_server_of_another_protocol_is_not_taken_for_ray():
    with (
        http_server() as (port, _),
        pytest.raises(distributed.RayAddressError, match="does not speak gRPC"),
    ):
        distributed.check_address(f"127.0.0.1:{port}", timeout=5)


def settings_only_server():
    """A loopback port that answers HTTP/2's opening with a SETTINGS frame, then nothing: it
    looks like gRPC to a first glance and never answers a call."""
    return loopback_server(lambda c: c.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"))


def test_a_server_that_only_looks_like_grpc_fails_at_the_timeout():
    with (
        settings_only_server() as (port, _),
        pytest.raises(distributed.RayAddressError, match="did not answer"),
    ):
        distributed.check_address(f"127.0.0.1:{port}", timeout=2)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_grpc_server_that_is_not_ray_is_refused(scheme):
    grpc = pytest.importorskip("grpc")
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=1))  # no service at all
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(distributed.RayAddressError, match="the gRPC server there is not"):
            distributed.check_address(f"{scheme}127.0.0.1:{port}", timeout=10)
    finally:
        server.stop(None)


@pytest.mark.parametrize("address", ["ray://", "ray://:10001", ":6379"])
def test_an_address_without_a_host_is_refused(address):
    with pytest.raises(distributed.RayAddressError, match="names no host"):
        distributed.check_address(address, timeout=1)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e300, -1.0])
def test_a_timeout_that_is_no_finite_span_is_refused(timeout):
    with pytest.raises(ValueError, match="at most 3600 seconds"):
        distributed.connect_timeout(timeout)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6380", ("127.0.0.1", 6380)),
        ("127.0.0.1", ("127.0.0.1", 6379)),
        ("ray://localhost", ("localhost", 10001)),
        ("ray://[::1]:10002", ("::1", 10002)),
        ("auto", None),
    ],
)
def test_addresses_are_read_as_ray_reads_them(address, expected):
    assert ray_connect.host_port(address) == expected


def test_a_bad_port_or_timeout_is_one_clear_error(monkeypatch):
    with pytest.raises(distributed.RayAddressError, match="not a number"):
        distributed.check_address("127.0.0.1:http", timeout=1)
    monkeypatch.setenv(distributed.ENV_CONNECT_TIMEOUT, "soon")
    with pytest.raises(ValueError, match="GW_RAY_CONNECT_TIMEOUT must be a number"):
        distributed.connect_timeout()
    monkeypatch.setenv(distributed.ENV_CONNECT_TIMEOUT, "2.5")
    assert distributed.connect_timeout() == 2.5
    with pytest.raises(ValueError, match="must be > 0"):
        distributed.connect_timeout(0)
    with pytest.raises(ValueError, match="must be > 0"):
        distributed.check_address("127.0.0.1:6379", timeout=float("inf"))


def test_the_api_refuses_a_dead_address_before_writing(tmp_path, monkeypatch):
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConnectionError, match=address):
        gw.audit("shapes", SCENES, out=tmp_path / "out", progress=False, ray=address)
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("RAY_ADDRESS", address)  # ray=True reads the cluster it names
    with pytest.raises(ConnectionError, match=address):
        gw.audit("shapes", SCENES, out=tmp_path / "out", progress=False, ray=True)
    assert not (tmp_path / "out").exists()


def cli(*args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "gradcam_widget", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_the_cli_says_one_line_and_exits_2(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    process = cli("audit", SCENES, "--out", str(tmp_path / "out"), "--ray", address)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and address in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_connecting_stops_the_cli(tmp_path, sent):
    """The server accepts and stays silent, the timeout is long: the signal, not the
    timeout, must end the CLI."""
    with silent_server() as (port, accepted):
        process = cli(
            "audit", SCENES, "--out", str(tmp_path / "out"),
            "--ray", f"127.0.0.1:{port}", "--ray-timeout", "600",
        )  # fmt: skip
        try:
            assert accepted.wait(300), "the CLI never tried the address"
            process.send_signal(sent)
            process.communicate(timeout=60)  # well below the 600 s it would wait otherwise
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode != 0
        assert not (tmp_path / "out").exists()


LIVE_RAY = """
import ray
from gradcam_widget import distributed
ray.init(include_dashboard=False, num_cpus=1, log_to_driver=False)
try:
    address = ray.get_runtime_context().gcs_address
    distributed.check_address(address, timeout=30)
    print("answered", address)
finally:
    ray.shutdown()
"""


@pytest.mark.slow
def test_a_live_local_ray_passes_the_check():
    """The check lets a real Ray through: the GCS of a local Ray started in a fresh process
    answers it (and that Ray is shut down by the same process)."""
    pytest.importorskip("ray", reason=f"ray is not installed: {distributed.INSTALL_HINT}")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", LIVE_RAY], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "answered" in done.stdout

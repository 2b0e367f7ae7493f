"""Checking a Ray address before an audit joins it (``gw.audit(..., ray=ADDRESS)``): whether
anything that speaks Ray's protocol answers there, before ``ray.init`` waits on it for
minutes.

:func:`check_before_start` runs before anything is written, so a dead address is refused
with the results folder untouched. Nothing here imports Ray: joining it is
:func:`gradcam_widget.auditing.ray.connect`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable

ENV_CONNECT_TIMEOUT = "GW_RAY_CONNECT_TIMEOUT"
"""Seconds to wait for a Ray cluster's address to answer (default
:data:`CONNECT_TIMEOUT`)."""

CONNECT_TIMEOUT = 10.0
MAX_CONNECT_TIMEOUT = 3600.0

_DEFAULT_PORTS = {"ray": 10001, "gcs": 6379}  # Ray Client server, the head's GCS
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""What a gRPC client says first: HTTP/2's connection preface and an empty SETTINGS frame. A
gRPC server (Ray's GCS, Ray Client's server) answers with a SETTINGS frame of its own."""


class RayAddressError(ConnectionError):
    """Nothing that speaks Ray's protocol answered at a Ray address in time."""


def connect_timeout(timeout: float | None = None) -> float:
    """``timeout``, else :data:`ENV_CONNECT_TIMEOUT`, else :data:`CONNECT_TIMEOUT`; > 0."""
    timeout = setting(timeout, ENV_CONNECT_TIMEOUT, float)
    timeout = CONNECT_TIMEOUT if timeout is None else float(timeout)
    if not 0 < timeout <= MAX_CONNECT_TIMEOUT:  # NaN and inf too
        raise ValueError(
            f"the Ray connect timeout must be > 0 and at most {MAX_CONNECT_TIMEOUT:g} seconds; "
            f"got {timeout}"
        )
    return timeout


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``ray://HOST[:PORT]`` or ``HOST[:PORT]`` address; None for
    ``"auto"`` and ``"local"`` (Ray finds those itself) or a form not understood here.

    Raises:
        RayAddressError: for an address without a host (``ray://``, ``ray://:10001``) or a
            bad port.
    """
    text = address.strip()
    kind = "gcs"
    if text.startswith("ray://"):
        text, kind = text[len("ray://") :], "ray"
    elif "://" in text or text in ("auto", "local", ""):
        return None
    text = text.split("/", 1)[0]
    if text.startswith("["):  # [::1]:6379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise RayAddressError(f"Ray address {address!r} names no host: e.g. ray://HOST:10001")
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[kind]
    except ValueError:
        raise RayAddressError(
            f"Ray address {address!r}: the port {port_text!r} is not a number"
        ) from None
    if not 0 < port < 65536:
        raise RayAddressError(f"Ray address {address!r}: the port {port} is out of range")
    return host, port


def check_address(address, timeout: float | None = None) -> None:
    """Make sure a Ray answers at ``address`` within ``timeout`` seconds, before
    ``ray.init`` (which, pointed at a port where nothing listens, waits for minutes).

    A ``HOST:PORT`` (the head's GCS, port 6379 by default) or ``ray://HOST:PORT`` (Ray
    Client, 10001) address is checked in two steps, both within the timeout: a TCP connection
    that exchanges HTTP/2's opening frames (every gRPC server answers them: a refused
    connection, silence or a server of another protocol fail here), then one call that Ray's
    GCS or Ray Client's server answers (:data:`_PROBES`; a gRPC server that never answers or
    has no such service fails there). ``True``, ``"auto"`` and an address already joined are
    left to Ray.

    Args:
        address: what ``ray=`` was given.
        timeout: seconds (default: :data:`ENV_CONNECT_TIMEOUT`, else 10).

    Raises:
        RayAddressError: one line naming the address and what happened.
    """
    if not isinstance(address, str):
        return
    timeout = connect_timeout(timeout)
    target = host_port(address)
    if target is None:
        return
    host, port = target
    kind = "ray" if address.strip().startswith("ray://") else "gcs"
    deadline = time.monotonic() + timeout
    what = f"no Ray answered at {address!r} within {timeout:g} s"
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:  # the first frame's header: length, type, flags, stream
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                connection.settimeout(min(left, 0.5))
                try:
                    chunk = connection.recv(9 - len(header))
                except TimeoutError:
                    continue
                if not chunk:
                    raise RayAddressError(f"{what}: the server closed the connection")
                header += chunk
    except RayAddressError:
        raise
    except TimeoutError:
        raise RayAddressError(f"{what}: no answer") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayAddressError(f"{what}: {reason.lower()}") from None
    if header[3] != 0x4:  # not a SETTINGS frame: something else listens there
        raise RayAddressError(f"{what}: the server there does not speak gRPC")
    _ask_ray(address, host, port, kind, deadline, what)


_PROBES = {
    "gcs": "/ray.rpc.NodeInfoGcsService/GetClusterId",
    "ray": "/ray.rpc.RayletDriver/ClusterInfo",
}
"""A cheap call that Ray's GCS (``HOST:PORT``) and Ray Client's server (``ray://``) answer."""


def _ask_ray(address: str, host: str, port: int, kind: str, deadline: float, what: str):
    """One call of :data:`_PROBES` through gRPC, within the deadline: a server that speaks
    gRPC but never answers, or answers that it has no such service, is not a Ray (``ray.init``
    would wait on it for minutes). Skipped when grpcio (a dependency of Ray) is missing."""
    try:
        import grpc
    except ImportError:
        return
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(_PROBES[kind])
        left = max(0.05, deadline - time.monotonic())
        future = call.future(b"", timeout=left)  # an empty message: every field at its default
        while not future.done():  # in short waits, so that SIGINT is taken at once
            try:
                future.result(timeout=0.2)
            except grpc.FutureTimeoutError:
                continue
            except grpc.RpcError:
                break
        error = future.exception()
    finally:
        channel.close()
    if error is None:
        return
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise RayAddressError(f"{what}: a gRPC server is there, but it did not answer")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        service = "Ray Client's" if kind == "ray" else "a Ray head's (GCS)"
        raise RayAddressError(f"{what}: the gRPC server there is not {service}")
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = " ".join(str(error.details() or "").split())[:200]
        raise RayAddressError(f"{what}: unavailable ({detail})")
    # any other status: the service is there and refused an empty request; Ray answered


def check_before_start(address, timeout: float | None = None) -> None:
    """:func:`check_address` for what ``ray=`` was given (``True``: ``RAY_ADDRESS``), unless
    this process has joined a Ray already; without importing Ray. Made before anything is
    written, so a dead address is refused with the folder untouched."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return
    if address is True:
        address = os.environ.get("RAY_ADDRESS") or None
    if isinstance(address, str):
        check_address(address, timeout)


def setting(value, variable: str, kind: Callable):
    """``value``, else the environment variable ``variable`` read as ``kind`` (``None`` when
    it is unset or blank).

    Raises:
        ValueError: naming the variable, when its text is not a number.
    """
    if value is not None:
        return value
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{variable} must be a number; got {text!r}") from None

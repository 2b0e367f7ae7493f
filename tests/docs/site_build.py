"""Build the docs site the way scripts/build_docs.py does, in a process of its own, for the
tests that read it (tests/docs/test_site.py) and open it in a browser (tests/e2e)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "docs-cache"  # the widget manager and the lesson, kept between runs


def build(out: Path, source: Path | None = None) -> subprocess.CompletedProcess:
    """Run the strict build into ``out`` (of ``source``, default docs/); returns the run."""
    command = [sys.executable, str(REPO / "scripts" / "build_docs.py"), "--out", str(out)]
    if source is not None:
        command += ["--source", str(source)]
    cache = os.environ.get("GW_DOCS_CACHE", str(CACHE))  # where the set-up fetched to
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GW_DOCS_CACHE=cache)
    environment["GW_DOCS_OFFLINE"] = "1"  # the widget manager was fetched by the set-up

    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=1800
    )


# run first by the scripts the docs' code runs in: they may reach this machine (loopback) only
LOOPBACK_ONLY = """
import ipaddress, socket
_connect = socket.socket.connect
def _loopback_only(sock, address, *rest):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise OSError(f"the docs' code blocks reach this machine only, not {host}")
    return _connect(sock, address, *rest)
socket.socket.connect = _loopback_only
"""

"""Who the classroom app talks to, and how many: :class:`Guard`, an ASGI middleware.

Before anything else sees a request:

- its ``Host`` must be one of the app's own names (:class:`AllowedHosts`: the localhost names,
  the address it listens on, and ``--allow-host`` ones), else ``403`` -- so a web page cannot
  reach a localhost app through a name it controls (DNS rebinding); a websocket's ``Origin``,
  when sent, must be the page's own (same host and port: another site's page, another port
  on the same machine included, cannot open a session);
- a new session (a tab's kernel websocket) is admitted only under the bounds
  (:class:`Sessions`: all tabs, and tabs per client address); over them, the page is
  :data:`FULL_PAGE` (``503``) and the websocket handshake is refused (``403``: a tab that got
  its page just before the last seat went says it lost its connection).
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["LOCAL_NAMES", "AllowedHosts", "Guard", "Sessions", "host_name"]

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
"""The names a Host may always carry."""

KERNEL_PREFIX = "/jupyter/api/kernels/"
"""Where a tab's session websocket connects (Solara's kernel protocol)."""

GRACE_S = 3.0
"""How long a page or session over the bounds waits for a seat before it is refused: a tab
reloaded gives its seat back a moment after it asks for the new one."""

NOT_PAGES = ("/static/", "/_solara/", "/jupyter/", "/readyz")
"""Paths that are not a page (assets, the kernel protocol): no session is counted for them."""

FULL_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>The class is full</title>
</head><body style="font-family: sans-serif; margin: 3em">
<h1>The class is full</h1><p>{reason}</p>
<p>Try again when someone closes a tab: this page does not reload by itself.</p></body></html>"""


_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
"""A Host header: a name or address, or a bracketed IPv6 address, and an optional port."""


def host_name(value: str) -> str:
    """The host part of a ``Host`` header (or a URL's netloc): no port, no brackets, lower
    case, no final dot; ``""`` for a malformed one."""
    value = value.strip().lower()
    if not _HOST.fullmatch(value):
        return ""
    try:
        host = urlsplit(f"//{value}").hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".")


def _plain(name: str) -> str:
    """A host name as given (no port): a bare IPv6 address kept, else as :func:`host_name`."""
    name = name.strip().lower()
    return name.strip("[]") if name.count(":") > 1 else host_name(name)


class AllowedHosts:
    """The host names the app answers to.

    Args:
        names: more names (``--allow-host``): exact, or ``.example.org`` for that domain and
            every name under it. ``*`` allows any (the check is then off: behind a proxy that
            checks it).
    """

    def __init__(self, names=()):
        self.names = {_plain(name) for name in (*LOCAL_NAMES, *names) if name != "*"}
        self.names.discard("")
        self.domains = tuple(
            name.lower().rstrip(".") for name in names if name.startswith(".") and len(name) > 1
        )
        self.any = "*" in names

    def allows(self, host: str) -> bool:
        """Whether a ``Host`` header value names this app."""
        if self.any:
            return True
        name = host_name(host)
        if not name:
            return False
        if name in self.names:
            return True
        return any(name == domain[1:] or name.endswith(domain) for domain in self.domains)


class Sessions:
    """The bounds on sessions: at most ``limit`` in all and ``per_client`` per client address.

    A session counts from its websocket's admission (:meth:`admit`) until the connection ends
    (the release it returns), and as long as its kernel lives (``live``: a tab whose
    connection was lost keeps its kernel until culled). A reconnection of a live kernel with
    no connection open is admitted over the total (its seat is its own); any other socket
    counts against its client's bound.

    Args:
        limit: sessions in all.
        per_client: open sessions of one client address.
        live: the ids of the sessions (kernels) alive now, whatever their tabs do.
    """

    def __init__(self, limit: int, per_client: int, live: Callable[[], set]):
        if limit < 1 or per_client < 1:
            raise ValueError(f"the session bounds must be >= 1; got {limit} and {per_client}")
        self.limit = limit
        self.per_client = per_client
        self.live = live
        self._open: dict[str, int] = {}  # client address -> its open session websockets
        self._sockets: dict[str, int] = {}  # kernel id -> its open websockets
        self._lock = threading.Lock()

    def counts(self, client: str) -> tuple[int, int]:
        """``(sessions in all, open sessions of client)`` now."""
        with self._lock:
            return self._counts(client, set(self.live()))

    def _counts(self, client: str, live: set) -> tuple[int, int]:
        return max(len(live), sum(self._open.values())), self._open.get(client, 0)

    def refusal(self, client: str) -> str | None:
        """Why a new session of ``client`` would be refused now (``None``: it would not)."""
        return self._why(*self.counts(client))

    def _why(self, total: int, mine: int) -> str | None:
        if total >= self.limit:
            return (f"{total} explorers are open, the most this app serves ({self.limit}, "
                    "set by its teacher with --max-sessions).")  # fmt: skip
        if mine >= self.per_client:
            return (
                f"This computer already has {mine} explorers open, the most one computer may "
                f"have ({self.per_client}, --client-sessions): close one of them."
            )
        return None

    def admit(self, client: str, kernel: str):
        """Admit a session websocket of ``client`` for kernel ``kernel``.

        Returns:
            ``(release, None)``: call ``release()`` when the connection ends; or
            ``(None, reason)`` when refused.
        """
        live = set(self.live())
        with self._lock:
            total, mine = self._counts(client, live)
            if kernel in live and not self._sockets.get(kernel):  # its own seat, taken again
                total = 0
            why = self._why(total, mine)
            if why is not None:
                return None, why
            self._open[client] = self._open.get(client, 0) + 1
            self._sockets[kernel] = self._sockets.get(kernel, 0) + 1
        released = []

        def release():
            with self._lock:
                if released:
                    return
                released.append(True)
                for counts, key in ((self._open, client), (self._sockets, kernel)):
                    counts[key] -= 1
                    if not counts[key]:
                        del counts[key]

        return release, None


def _route_path(scope) -> str:
    """The request's path as the app's routes see it: without the ``root_path`` (the
    ``--base-url``) that the server puts in front."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


class Guard:
    """The ASGI middleware in front of the app (see the module's docstring).

    Args:
        app: the ASGI app guarded.
        hosts: the :class:`AllowedHosts`.
        sessions: the :class:`Sessions` bounds.
        on_refusal: called with one line per refusal (the server logs it).
    """

    def __init__(self, app, hosts: AllowedHosts, sessions: Sessions, on_refusal=None):
        self.app = app
        self.hosts = hosts
        self.sessions = sessions
        self.on_refusal = on_refusal or (lambda line: None)

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        host = _header(scope, b"host")
        if not self.hosts.allows(host):
            self.on_refusal(f"refused {client}: Host {host!r} is not this app's")
            why = "this app answers to its own host names only"
            return await self._refuse(kind, send, 403, why)
        if kind == "websocket":
            origin = _header(scope, b"origin")
            if origin and urlsplit(origin).netloc.lower() != host.strip().lower():  # same site
                self.on_refusal(f"refused {client}: websocket Origin {origin!r}")
                return await self._refuse(kind, send, 403, "another site's page")
            path = _route_path(scope)
            if path.startswith(KERNEL_PREFIX):
                kernel = path[len(KERNEL_PREFIX) :].split("/", 1)[0]
                release, why = await self._wait(lambda: self.sessions.admit(client, kernel))
                if why is not None:
                    self.on_refusal(f"refused a session of {client}: {why}")
                    return await self._refuse(kind, send, 1013, why)
                try:
                    return await self.app(scope, receive, send)
                finally:
                    release()
        elif scope.get("method") == "GET" and self._is_page(_route_path(scope)):
            _, why = await self._wait(lambda: (None, self.sessions.refusal(client)))
            if why is not None:
                self.on_refusal(f"refused a page to {client}: {why}")
                page = FULL_PAGE.format(reason=html.escape(why))
                return await self._refuse(kind, send, 503, page)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _wait(attempt):
        """``attempt()`` (``(result, reason)``) until it gives no reason or :data:`GRACE_S`
        has passed."""
        deadline = asyncio.get_running_loop().time() + GRACE_S
        while True:
            result, why = attempt()
            if why is None or asyncio.get_running_loop().time() >= deadline:
                return result, why
            await asyncio.sleep(0.1)

    @staticmethod
    def _is_page(path: str) -> bool:
        return not any(path.startswith(prefix) for prefix in NOT_PAGES)

    @staticmethod
    async def _refuse(kind: str, send, status: int, text: str):
        if kind == "websocket":  # closed before it is accepted: the handshake fails
            await send({"type": "websocket.close", "code": status if status >= 1000 else 1008,
                        "reason": text[:120]})  # fmt: skip
            return
        body = text.encode()
        page = body.startswith(b"<!doctype")
        headers = [
            (b"content-type", b"text/html; charset=utf-8" if page else b"text/plain"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 503:
            headers.append((b"retry-after", b"60"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

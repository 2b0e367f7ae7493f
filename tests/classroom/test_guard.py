"""The classroom app's guard, called as the ASGI server calls it: Host and Origin checks, the
session bounds, the class-is-full page."""

from __future__ import annotations

import asyncio

import pytest

from gradcam_widget.classroom.guard import AllowedHosts, Guard, Sessions, host_name


@pytest.mark.parametrize(
    "value, name",
    [
        ("localhost:8866", "localhost"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8866", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("class.example.org.", "class.example.org"),
        ("", ""),
        ("[::1", ""),
        ("evil@localhost", ""),
        ("localhost/x", ""),
        ("localhost:1, evil", ""),
    ],
)
def test_host_names(value, name):
    assert host_name(value) == name


def test_allowed_hosts():
    local = AllowedHosts()
    assert all(local.allows(h) for h in ("localhost:1", "127.0.0.1:8866", "[::1]:8866"))
    for stranger in ("attacker.example", "localhost.attacker.example", "127.0.0.2", "", "::1"):
        assert not local.allows(stranger), stranger
    more = AllowedHosts(["Lab-PC", ".school.example"])
    assert more.allows("lab-pc:8866") and more.allows("school.example")
    assert more.allows("room3.school.example") and not more.allows("evilschool.example")
    assert AllowedHosts(["*"]).allows("anything.example")


class Live:
    def __init__(self):
        self.ids: set = set()

    def __call__(self):
        return set(self.ids)


def test_session_bounds():
    live = Live()
    sessions = Sessions(limit=4, per_client=2, live=live)
    release_a, why = sessions.admit("10.0.0.1", "a")
    assert why is None
    release_b, _ = sessions.admit("10.0.0.1", "b")
    assert sessions.counts("10.0.0.1") == (2, 2)
    release, why = sessions.admit("10.0.0.1", "c")
    assert release is None and "This computer already has 2" in why
    live.ids = {"a", "b"}
    assert "already has 2" in sessions.admit("10.0.0.1", "a")[1]  # a still connected: counts
    release_b()
    release_b, _ = sessions.admit("10.0.0.1", "b")  # b taken again (its socket had closed)
    release_a()
    sessions_full = Sessions(limit=1, per_client=5, live=lambda: {"a"})
    assert "1 explorers are open" in sessions_full.admit("10.0.0.9", "x")[1]
    back, why = sessions_full.admit("10.0.0.9", "a")  # a's own seat, its socket closed
    assert why is None
    assert "1 explorers are open" in sessions_full.admit("10.0.0.9", "a")[1]  # a 2nd socket
    back()
    release_a, _ = sessions.admit("10.0.0.1", "a")
    release_c, _ = sessions.admit("10.0.0.2", "c")
    assert sessions.counts("10.0.0.3") == (3, 0)
    release_d, _ = sessions.admit("10.0.0.3", "d")
    assert "4 explorers are open" in sessions.refusal("10.0.0.4")
    assert "4 explorers are open" in sessions.admit("10.0.0.4", "e")[1]
    release_a()
    release_a()  # once only
    release_b()
    assert sessions.counts("10.0.0.1") == (2, 0)  # a and b live on (not culled yet)
    live.ids = set()
    release_c()
    release_d()
    assert sessions.counts("10.0.0.1") == (0, 0) and sessions.refusal("10.0.0.3") is None
    live.ids = {"w", "x", "y", "z"}  # kernels of lost connections, until culled
    assert "4 explorers are open" in sessions.refusal("10.0.0.3")
    with pytest.raises(ValueError, match=">= 1"):
        Sessions(0, 1, live)


def call(app, scope) -> list[dict]:
    """Run ``app`` on ``scope`` as an ASGI server would; the messages it sent."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def inner(scope, receive, send):
    """The app behind the guard: answers 200 'inner' (or accepts a websocket)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


def scope(kind="http", path="/", host="localhost:8866", client="127.0.0.1", **headers):
    pairs = [(b"host", host.encode())] + [
        (key.encode(), value.encode()) for key, value in headers.items()
    ]
    return {"type": kind, "path": path, "method": "GET", "headers": pairs,
            "client": (client, 5000)}  # fmt: skip


def test_the_guard_refuses_strangers_and_full_classes():
    live = Live()
    refusals = []
    app = Guard(inner, AllowedHosts(), Sessions(2, 1, live), refusals.append)
    assert call(app, scope())[1]["body"] == b"inner"
    rebinding = call(app, scope(host="attacker.example:8866"))
    assert rebinding[0]["status"] == 403 and b"inner" not in rebinding[1]["body"]
    assert "attacker.example" in refusals[-1]
    ws = call(
        app, scope("websocket", "/jupyter/api/kernels/k1/channels", origin="http://evil.example")
    )
    assert ws == [{"type": "websocket.close", "code": 1008,
                   "reason": "another site's page"}]  # fmt: skip
    other_port = call(
        app, scope("websocket", "/jupyter/api/kernels/k1/channels", origin="http://localhost:9")
    )
    assert other_port[0]["type"] == "websocket.close"  # another server on this machine
    ok = call(app, scope("websocket", "/jupyter/api/kernels/k1/channels",
                         origin="http://localhost:8866"))  # fmt: skip
    assert ok == [{"type": "websocket.accept"}]
    assert app.sessions.counts("127.0.0.1") == (0, 0)  # the connection ended: released
    live.ids = {"k1"}  # its kernel lives on (a lost connection, not culled yet)
    assert call(app, scope("websocket", "/jupyter/api/kernels/k1/channels")) == [
        {"type": "websocket.accept"}
    ]  # its own reconnection
    live.ids = {"k1", "k2"}
    page = call(app, scope())
    assert page[0]["status"] == 503 and b"The class is full" in page[1]["body"]
    assert (b"retry-after", b"60") in page[0]["headers"]
    assert call(app, scope(path="/static/main.js"))[1]["body"] == b"inner"  # assets flow
    assert b"2 explorers are open" in page[1]["body"]
    live.ids = {"k1"}
    other = call(app, scope(client="127.0.0.9"))
    assert other[1]["body"] == b"inner"  # one seat left
    live.ids = {"k1", "k3"}
    refused = call(app, scope("websocket", "/jupyter/api/kernels/k4/channels", client="10.1.1.1"))
    assert refused[0]["type"] == "websocket.close" and refused[0]["code"] == 1013


def test_one_computer_is_bounded_while_its_sessions_are_open():
    held = asyncio.Event()

    async def holding(scope, receive, send):  # a session that stays open until told
        await send({"type": "websocket.accept"})
        await held.wait()

    app = Guard(holding, AllowedHosts(), Sessions(10, 1, set))

    async def two():
        sent = [[], []]

        async def sender(index):
            async def send(message):
                sent[index].append(message)

            return send

        first = asyncio.create_task(
            app(scope("websocket", "/jupyter/api/kernels/a/x"), None, await sender(0))
        )
        await asyncio.sleep(0.05)
        await app(scope("websocket", "/jupyter/api/kernels/b/x"), None, await sender(1))
        assert sent[1][0]["code"] == 1013 and "already has 1" in sent[1][0]["reason"]
        held.set()
        await first
        assert app.sessions.counts("127.0.0.1") == (0, 0)

    asyncio.run(two())


def test_the_base_url_is_no_way_around_the_bounds():
    """Behind ``--base-url /gradcam/`` the server puts ``root_path`` in front of every path."""
    app = Guard(inner, AllowedHosts(), Sessions(1, 1, lambda: {"busy"}))
    prefixed = scope("websocket", "/gradcam/jupyter/api/kernels/k9/channels")
    prefixed["root_path"] = "/gradcam"
    refused = call(app, prefixed)
    assert refused[0]["type"] == "websocket.close" and refused[0]["code"] == 1013
    page = scope(path="/gradcam/")
    page["root_path"] = "/gradcam"
    assert call(app, page)[0]["status"] == 503
    asset = scope(path="/gradcam/static/main.js")
    asset["root_path"] = "/gradcam"
    assert call(app, asset)[1]["body"] == b"inner"


def test_a_lifespan_scope_passes_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(Guard(app, AllowedHosts(), Sessions(1, 1, set))({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]

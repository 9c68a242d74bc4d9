"""The guard in process: origin and session policies, login/logout, and live websockets following their session."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from persession import ConfigError, Record, Session, SessionConfig, SessionNotAvailable, StoreUnavailable
from persession.asgi import SessionMiddleware, live_sockets
from persession.core import Action, Opening, Plan, SessionEngine
from persession.guard import (
    REVOKED_CLOSE_CODE,
    GuardPolicy,
    LiveSockets,
    OriginPolicy,
    WebSocketGuard,
    WSGIWebSocketGuard,
    is_logged_in,
    login,
    logout,
)
from persession.integrations.socketio import SocketIOGuard, WSGISocketIOGuard, get_session
from persession.signing import ItsdangerousSigner, new_session_id
from persession.stores import AsyncMemoryStore, RevocationFeed
from persession.wsgi import SessionMiddleware as WSGISessionMiddleware

SECRET = "guard-secret"
SIGNER = ItsdangerousSigner([SECRET.encode()])
DEADLINE = 5.0
Message = dict[str, Any]

# -- OriginPolicy --------------------------------------------------------------------------

WILDCARD = OriginPolicy(allowed_origins=["https://*.example.com"])
TRUSTED = OriginPolicy(trust_forwarded_host=True)
ONE_PROXY = OriginPolicy(trust_forwarded_host=1)
TWO_PROXIES = OriginPolicy(trust_forwarded_host=2)

ORIGINS = [
    pytest.param(OriginPolicy(), "http://example.com", "example.com", None, True, id="same origin, no port"),
    pytest.param(OriginPolicy(), "http://example.com:8000", "example.com:8000", None, True, id="same origin, port"),
    pytest.param(OriginPolicy(), "http://example.com:8000", "example.com:9000", None, False, id="other port"),
    pytest.param(OriginPolicy(), "http://example.com:8000", "example.com", None, False, id="port vs none"),
    pytest.param(OriginPolicy(), "http://example.com:80", "example.com", None, True, id="explicit default http port"),
    pytest.param(OriginPolicy(), "https://example.com", "example.com:443", None, True, id="explicit default https"),
    pytest.param(OriginPolicy(), "https://example.com", "example.com", None, True, id="https, Host without port"),
    pytest.param(OriginPolicy(), "http://example.com", "example.com:443", None, False, id="http origin, port 443"),
    pytest.param(OriginPolicy(), "HTTP://Example.COM", "example.com", None, True, id="case-insensitive"),
    pytest.param(OriginPolicy(), "http://evil.example", "example.com", None, False, id="foreign origin"),
    pytest.param(OriginPolicy(), "http://example.com", None, None, False, id="no Host header"),
    pytest.param(TRUSTED, "https://public.example", "app:8000", "public.example", True, id="trusted X-Forwarded-Host"),
    pytest.param(TRUSTED, "https://public.example", "app:8000", "public.example, p2", True, id="first forwarded host"),
    pytest.param(TRUSTED, "http://app:8000", "app:8000", None, True, id="trusted, no forwarded header: Host"),
    pytest.param(TRUSTED, "http://app:8000", "app:8000", "public.example", False, id="trusted forwarded wins"),
    pytest.param(OriginPolicy(), "https://public.example", "app", "public.example", False, id="untrusted forwarded"),
    pytest.param(TRUSTED, "https://evil.example", "app", "evil.example, public.example", True, id="True: the leftmost"),
    pytest.param(ONE_PROXY, "https://public.example", "app", "evil.example, public.example", True, id="1: rightmost"),
    pytest.param(
        ONE_PROXY, "https://evil.example", "app", "evil.example, public.example", False, id="1: not a client's"
    ),
    pytest.param(TWO_PROXIES, "https://a.example", "app", "a.example, b.example", True, id="2: second from the right"),
    pytest.param(TWO_PROXIES, "https://public.example", "app", "public.example", False, id="2: one value: Host"),
    pytest.param(TWO_PROXIES, "http://app", "app", "public.example", True, id="2: one value: Host decides"),
    pytest.param(TRUSTED, "https://public.example", "app", " public.example ,p2", True, id="forwarded host stripped"),
    pytest.param(WILDCARD, "https://app.example.com", "other", None, True, id="wildcard subdomain"),
    pytest.param(WILDCARD, "https://a.b.example.com", "other", None, True, id="wildcard nested subdomain"),
    pytest.param(WILDCARD, "https://example.com", "other", None, False, id="wildcard not the apex"),
    pytest.param(WILDCARD, "https://evilexample.com", "other", None, False, id="wildcard needs the dot"),
    pytest.param(WILDCARD, "http://app.example.com", "other", None, False, id="wildcard keeps the scheme"),
    pytest.param(WILDCARD, "https://app.example.com:8443", "other", None, False, id="wildcard keeps the port"),
    pytest.param(
        OriginPolicy(allowed_origins=["app.example.com:8443"]),
        "http://app.example.com:8443",
        "other",
        None,
        True,
        id="schemeless pattern, http",
    ),
    pytest.param(
        OriginPolicy(allowed_origins=["app.example.com:8443"]),
        "https://app.example.com:8443",
        "other",
        None,
        True,
        id="schemeless pattern, https",
    ),
    pytest.param(OriginPolicy(), "null", "example.com", None, False, id="null origin"),
    pytest.param(OriginPolicy(), "file://", "example.com", None, False, id="file origin"),
    pytest.param(OriginPolicy(), "", "example.com", None, False, id="empty origin"),
    pytest.param(OriginPolicy(), "http://", "example.com", None, False, id="no host"),
    pytest.param(OriginPolicy(), "http://example.com/path", "example.com", None, False, id="origin with a path"),
    pytest.param(OriginPolicy(), "http://example.com?x=1", "example.com", None, False, id="origin with a query"),
    pytest.param(OriginPolicy(), "http://user@example.com", "example.com", None, False, id="origin with user"),
    pytest.param(OriginPolicy(), "http://example.com:port", "example.com", None, False, id="bad port"),
    pytest.param(OriginPolicy(), "http://example.com:99999", "example.com", None, False, id="port out of range"),
    pytest.param(OriginPolicy(), None, "example.com", None, True, id="missing origin allowed by default"),
    pytest.param(OriginPolicy(allow_missing_origin=False), None, "example.com", None, False, id="missing refused"),
    pytest.param(OriginPolicy(same_origin=False), "http://example.com", "example.com", None, False, id="no same"),
]


@pytest.mark.parametrize(("policy", "origin", "host", "forwarded", "allowed"), ORIGINS)
def test_origin_policy(
    policy: OriginPolicy, origin: str | None, host: str | None, forwarded: str | None, allowed: bool
) -> None:
    """The origin policy admits exactly the same origin (or the listed ones) and refuses the malformed."""
    assert policy.allows(origin, host, forwarded) is allowed


@pytest.mark.parametrize(
    "origins",
    [
        pytest.param("https://a.example", id="one string"),
        pytest.param(["ftp://a.example"], id="scheme"),
        pytest.param(["*example.com"], id="star without dot"),
        pytest.param(["a.*.example.com"], id="star inside"),
        pytest.param(["https://a.example/path"], id="path"),
    ],
)
def test_bad_allowed_origins_raise_config_error(origins: Any) -> None:
    """A malformed allowed_origins is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match="allowed_origins"):
        OriginPolicy(allowed_origins=origins)


# -- GuardPolicy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "path", "guarded"),
    [
        pytest.param(GuardPolicy(), "/ws", True, id="default guards all"),
        pytest.param(GuardPolicy(include=("/live",)), "/live/feed", True, id="included prefix"),
        pytest.param(GuardPolicy(include=("/live",)), "/ws", False, id="not included"),
        pytest.param(GuardPolicy(exclude=("/public",)), "/public/ws", False, id="excluded"),
        pytest.param(GuardPolicy(include=("/live",), exclude=("/live/open",)), "/live/open", False, id="exclude wins"),
    ],
)
def test_guard_policy_paths(policy: GuardPolicy, path: str, guarded: bool) -> None:
    """include and exclude prefixes choose which paths are guarded, exclude first."""
    assert policy.guards(path) is guarded


def _session(data: dict[str, Any] | None = None, sid: str | None = "sid") -> Session:
    return Session(data, id=sid, read_only=True)


@pytest.mark.parametrize(
    ("policy", "session", "origin", "status"),
    [
        pytest.param(GuardPolicy(), _session({"user": "a"}), "http://h", None, id="logged in, same origin"),
        pytest.param(GuardPolicy(), _session({"user": "a"}), None, None, id="logged in, no origin"),
        pytest.param(GuardPolicy(), _session(), "http://h", 401, id="not logged in"),
        pytest.param(GuardPolicy(), None, "http://h", 401, id="no session at all"),
        pytest.param(
            GuardPolicy(),
            SessionEngine(SessionConfig(secret=SECRET)).unavailable(StoreUnavailable("down")),
            "http://h",
            401,
            id="store down",
        ),
        pytest.param(GuardPolicy(), _session(), "http://evil", 403, id="origin checked first"),
        pytest.param(GuardPolicy(), _session({"user": "a"}), "http://evil", 403, id="logged in, foreign origin"),
        pytest.param(
            GuardPolicy(predicate=lambda s: s.get("role") == "admin"),
            _session({"user": "a", "role": "admin"}),
            "http://h",
            None,
            id="custom predicate admits",
        ),
        pytest.param(
            GuardPolicy(predicate=lambda s: s.get("role") == "admin"),
            _session({"user": "a"}),
            "http://h",
            401,
            id="custom predicate refuses",
        ),
    ],
)
def test_guard_policy_check(
    policy: GuardPolicy, session: Session | None, origin: str | None, status: int | None
) -> None:
    """check() refuses a foreign origin with 403, then a session the predicate rejects with 401."""
    refusal = policy.check(session, origin, "h", None)
    assert (refusal.status if refusal else None) == status


@pytest.mark.parametrize("interval", [0, -1.0])
def test_recheck_interval_must_be_positive(interval: float) -> None:
    """A recheck_interval that is not positive is a ConfigError; None disables the re-check."""
    with pytest.raises(ConfigError, match="recheck_interval"):
        GuardPolicy(recheck_interval=interval)
    assert GuardPolicy(recheck_interval=None).recheck_interval is None
    assert GuardPolicy().recheck_interval == 30.0


# -- login / logout ------------------------------------------------------------------------

ENGINE = SessionEngine(SessionConfig(secret=SECRET))


def test_login_regenerates_and_records_the_user() -> None:
    """login() moves the session to a new id, stores the user and extras, and indexes the user."""
    session = Session({"cart": [1]}, id="old-sid", created=time.time(), expires=time.time() + 60)
    login(session, 42, role="admin")
    assert session.regenerated
    assert session["user"] == 42
    assert session["role"] == "admin"
    assert session.logged_in_as == "42"
    assert is_logged_in(session)
    plan = ENGINE.plan(session, Opening(sid="old-sid", present=True), status=200, secure_request=False)
    assert plan.action is Action.SAVE
    assert plan.replaces == "old-sid"
    assert plan.sid != "old-sid"
    assert plan.user == "42"
    assert plan.record is not None
    assert plan.record.data == {"cart": [1], "user": 42, "role": "admin"}


def test_logout_destroys_the_session() -> None:
    """logout() empties and destroys the session: the plan deletes it and expires the cookie."""
    session = Session({"user": "alice"}, id="sid", created=time.time(), expires=time.time() + 60)
    logout(session)
    assert session.destroyed
    assert not is_logged_in(session)
    assert dict(session) == {}
    plan = ENGINE.plan(session, Opening(sid="sid", present=True), status=200, secure_request=False)
    assert plan.action is Action.DELETE
    assert plan.sid == "sid"
    assert plan.set_cookie is not None
    assert "Max-Age=0" in plan.set_cookie


def test_live_sockets_follow_deletes_and_replacements_only() -> None:
    """after_plan() revokes the deleted id and the replaced id, nothing for other actions."""
    revoked: list[str] = []

    class Probe(LiveSockets):
        def revoke(self, sid: str) -> int:
            revoked.append(sid)
            return 0

    probe = Probe()
    probe.after_plan(Plan(Action.DELETE, sid="gone"))
    probe.after_plan(Plan(Action.SAVE, sid="new", replaces="old"))
    probe.after_plan(Plan(Action.SAVE, sid="fresh"))
    probe.after_plan(Plan(Action.MERGE, sid="kept"))
    probe.after_plan(Plan(Action.TOUCH, sid="kept"))
    probe.after_plan(Plan())
    assert revoked == ["gone", "old"]


# -- the ASGI guard, driven in process ---------------------------------------------------------


class Peer:
    """The server's side of one ASGI websocket: what the app is told and what it sends."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.ended = asyncio.Event()  # a close or a denial response reached the server
        self.incoming.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] in ("websocket.close", "websocket.http.response.body"):
            self.ended.set()

    def types(self) -> list[str]:
        return [message["type"] for message in self.sent]


def ws_scope(cookie: str | None = None, origin: str | None = None, *, denial: bool = True) -> dict[str, Any]:
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", f"session={cookie}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }


class EchoApp:
    """A raw ASGI app: websockets greet with the user and echo; GET /logout and /login act on the session."""

    def __init__(self) -> None:
        self.disconnects: list[Message] = []
        self.accepted = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["type"] == "http":
            if scope["path"] == "/logout":
                logout(scope["session"])
            else:
                login(scope["session"], "alice")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(scope["session"].get("user"))})
        self.accepted.set()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message)
                await send({"type": "websocket.send", "text": "too late"})  # dropped by the guard
                return
            await send({"type": "websocket.send", "text": message["text"]})


async def new_login(store: Any, user: str = "alice") -> tuple[str, str]:
    """A stored logged-in session: its id and its signed cookie."""
    sid, now = new_session_id(), time.time()
    await store.save(sid, Record({"user": user}, now, now, now + 3600))
    return sid, SIGNER.sign(sid)


def middleware(app: EchoApp, store: Any, **policy: Any) -> SessionMiddleware:
    return SessionMiddleware(app, secret=SECRET, store=store, websocket_guard=GuardPolicy(**policy))


@pytest.fixture
def store() -> AsyncMemoryStore:
    """An empty in-memory asyncio store (no revocation feed)."""
    return AsyncMemoryStore()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("logged_in", "origin", "status"),
    [
        pytest.param(False, None, 401, id="no session"),
        pytest.param(True, "http://evil.example", 403, id="foreign origin"),
        pytest.param(False, "http://evil.example", 403, id="both"),
    ],
)
@pytest.mark.parametrize("denial", [pytest.param(True, id="denial-response"), pytest.param(False, id="close")])
async def test_refused_handshake(
    store: AsyncMemoryStore, logged_in: bool, origin: str | None, status: int, denial: bool
) -> None:
    """A refused handshake gets the HTTP status when the server offers it, else close 1008 before accept."""
    app = EchoApp()
    cookie = (await new_login(store))[1] if logged_in else None
    peer = Peer()
    await middleware(app, store)(ws_scope(cookie, origin, denial=denial), peer.receive, peer.send)
    assert app.calls == 0
    if denial:
        assert peer.types() == ["websocket.http.response.start", "websocket.http.response.body"]
        assert peer.sent[0]["status"] == status
    else:
        reason = "login required" if status == 401 else "origin not allowed"
        assert peer.sent == [{"type": "websocket.close", "code": 1008, "reason": reason}]


async def run_socket(guarded: Any, scope: dict[str, Any], peer: Peer, app: EchoApp, tg: Any) -> None:
    """Start the websocket in the task group and wait until the app has accepted and greeted."""
    tg.start_soon(guarded, scope, peer.receive, peer.send)
    with anyio.fail_after(DEADLINE):
        await app.accepted.wait()


def assert_revoked(peer: Peer, app: EchoApp) -> None:
    assert peer.sent[-1] == {"type": "websocket.close", "code": REVOKED_CLOSE_CODE, "reason": "session revoked"}
    assert [m["code"] for m in app.disconnects] == [REVOKED_CLOSE_CODE]
    assert "too late" not in [m.get("text") for m in peer.sent]


@pytest.mark.anyio
@pytest.mark.parametrize("from_thread", [pytest.param(False, id="same-loop"), pytest.param(True, id="other-thread")])
async def test_accepted_websocket_echoes_and_registry_revokes_it(store: AsyncMemoryStore, from_thread: bool) -> None:
    """A logged-in websocket is served; its middleware's live_sockets.revoke closes it (4001) and drops later sends."""
    app, peer = EchoApp(), Peer()
    sid, cookie = await new_login(store)
    guarded = middleware(app, store)
    async with anyio.create_task_group() as tg:
        await run_socket(guarded, ws_scope(cookie, "http://testserver"), peer, app, tg)
        peer.incoming.put_nowait({"type": "websocket.receive", "text": "hello"})
        with anyio.fail_after(DEADLINE):
            while peer.sent[-1].get("text") != "hello":
                await asyncio.sleep(0.01)
        assert middleware(EchoApp(), store).live_sockets.revoke(sid) == 0, "another middleware's registry"
        revoke = guarded.live_sockets.revoke
        assert (await anyio.to_thread.run_sync(revoke, sid) if from_thread else revoke(sid)) == 1
        with anyio.fail_after(DEADLINE):
            await peer.ended.wait()
    assert peer.types()[:3] == ["websocket.accept", "websocket.send", "websocket.send"]
    assert peer.sent[1]["text"] == "alice"
    assert_revoked(peer, app)
    assert guarded.live_sockets.revoke(sid) == 0  # unregistered once the app returned


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/logout", "/login"])
async def test_logout_or_login_in_the_same_process_closes_the_websocket(store: AsyncMemoryStore, path: str) -> None:
    """A request through the middleware that deletes (logout) or replaces (login) the session closes its socket."""
    app, peer = EchoApp(), Peer()
    sid, cookie = await new_login(store)
    guarded = middleware(app, store)
    async with anyio.create_task_group() as tg:
        await run_socket(guarded, ws_scope(cookie), peer, app, tg)
        transport = httpx.ASGITransport(app=guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get(path, headers={"Cookie": f"session={cookie}"})
        assert response.status_code == 200
        with anyio.fail_after(DEADLINE):
            await peer.ended.wait()
    assert await store.load(sid) is None
    assert_revoked(peer, app)


@pytest.mark.anyio
async def test_revocation_before_accept_closes_the_handshake(store: AsyncMemoryStore) -> None:
    """A session revoked between the check and the app's accept is closed before accept (servers answer 403)."""
    sid, cookie = await new_login(store)
    peer = Peer()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        live_sockets(scope).revoke(sid)
        message = await receive()
        await send({"type": "websocket.accept"})
        assert message == {"type": "websocket.disconnect", "code": REVOKED_CLOSE_CODE, "reason": "session revoked"}

    guarded = SessionMiddleware(slow_app, secret=SECRET, store=store, websocket_guard=True)
    await guarded(ws_scope(cookie), peer.receive, peer.send)
    assert peer.sent == [{"type": "websocket.close", "code": REVOKED_CLOSE_CODE, "reason": "session revoked"}]


@pytest.mark.anyio
async def test_recheck_closes_sockets_whose_record_is_gone(store: AsyncMemoryStore) -> None:
    """With a store without a feed, the periodic re-check closes the socket of a session deleted behind its back."""
    app, peer = EchoApp(), Peer()
    sid, cookie = await new_login(store)
    async with anyio.create_task_group() as tg:
        await run_socket(middleware(app, store, recheck_interval=0.05), ws_scope(cookie), peer, app, tg)
        await store.delete(sid)  # not through the middleware: only the re-check can notice
        with anyio.fail_after(DEADLINE):
            await peer.ended.wait()
    assert_revoked(peer, app)


class FlakyStore(AsyncMemoryStore):
    """A memory store whose load fails, counting the attempts."""

    loads = 0

    async def load(self, sid: str) -> Record | None:
        self.loads += 1
        if self.loads > 1:  # the handshake's load succeeds; the re-check's fail
            raise StoreUnavailable("store down")
        return await super().load(sid)


@pytest.mark.anyio
async def test_recheck_store_outage_closes_nothing() -> None:
    """A store outage during the re-check is not a revocation: the socket stays open."""
    store = FlakyStore()
    app, peer = EchoApp(), Peer()
    _, cookie = await new_login(store)
    guard = middleware(app, store, recheck_interval=0.02)
    async with anyio.create_task_group() as tg:
        await run_socket(guard, ws_scope(cookie), peer, app, tg)
        with anyio.fail_after(DEADLINE):
            while store.loads < 4:
                await asyncio.sleep(0.01)
        assert not peer.ended.is_set()
        peer.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert [m["code"] for m in app.disconnects] == [1000]


class FeedStore(AsyncMemoryStore):
    """A memory store with a revocation feed fed by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.feed: asyncio.Queue[str] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self.subscriptions = 0
        self.unsubscribed = 0

    async def watch_revocations(self) -> AsyncIterator[str]:
        self.subscriptions += 1
        self.subscribed.set()
        try:
            while True:
                yield await self.feed.get()
        finally:
            self.unsubscribed += 1
            self.subscribed.clear()


@pytest.mark.anyio
async def test_feed_subscriber_starts_with_first_socket_and_stops_with_last() -> None:
    """One subscriber per guard starts lazily, closes the revoked socket, and stops when no socket remains."""
    store = FeedStore()
    assert isinstance(store, RevocationFeed)
    guarded = middleware(EchoApp(), store, recheck_interval=None)
    guard = guarded.app
    assert isinstance(guard, WebSocketGuard)
    assert guarded.live_sockets.store is store
    first, second = EchoApp(), EchoApp()
    guard.app = first
    (sid1, cookie1), (_, cookie2) = await new_login(store), await new_login(store, "bob")
    peers = Peer(), Peer()
    async with anyio.create_task_group() as tg:
        assert store.subscriptions == 0
        await run_socket(guarded, ws_scope(cookie1), peers[0], first, tg)
        guard.app = second
        await run_socket(guarded, ws_scope(cookie2), peers[1], second, tg)
        with anyio.fail_after(DEADLINE):
            await store.subscribed.wait()
        assert store.subscriptions == 1
        store.feed.put_nowait(sid1)  # as if another process revoked it
        with anyio.fail_after(DEADLINE):
            await peers[0].ended.wait()
        assert_revoked(peers[0], first)
        assert store.unsubscribed == 0  # bob's socket is still open
        peers[1].incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert store.unsubscribed == 1
    assert store.subscriptions == 1
    assert guard._tasks == []


@pytest.mark.anyio
async def test_lifespan_shutdown_stops_the_background_tasks() -> None:
    """lifespan.shutdown passing through the guard stops its subscriber even with a socket open."""
    store = FeedStore()
    app, peer = EchoApp(), Peer()
    guarded = middleware(app, store)
    _, cookie = await new_login(store)
    lifespan: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def lifespan_send(message: Message) -> None:
        sent.append(message)

    async with anyio.create_task_group() as tg:
        await run_socket(guarded, ws_scope(cookie), peer, app, tg)
        with anyio.fail_after(DEADLINE):
            await store.subscribed.wait()
        for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
            lifespan.put_nowait(message)
        await guarded({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, lifespan_send)
        assert store.unsubscribed == 1
        peer.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.parametrize("guard", [WebSocketGuard, WSGIWebSocketGuard, SocketIOGuard, WSGISocketIOGuard])
@pytest.mark.parametrize("option", ["secret", "store", "cookie_name"])
def test_a_guard_takes_no_session_options(guard: Any, option: str) -> None:
    """A guard sits inside the session middleware: a session option names itself and the middleware to use."""
    with pytest.raises(ConfigError, match="SessionMiddleware") as raised:
        guard(EchoApp(), **{option: "x"})
    assert raised.value.option == option


def test_live_sockets_of_a_scope_without_middleware() -> None:
    with pytest.raises(SessionNotAvailable, match="SessionMiddleware"):
        live_sockets({"type": "http"})


# -- WSGI guard and the Socket.IO adapter, in process -------------------------------------------


def wsgi_call(app: Any, path: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """Call a WSGI app once; return its status line and body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "testserver",
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()},
    }
    status: list[str] = []

    def start_response(line: str, _headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], None]:
        status.append(line)
        return lambda _: None

    body = b"".join(app(environ, start_response))
    return status[0], body


def ok_wsgi(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield f"user={get_session(environ).get('user')}".encode()


@pytest.fixture
def wsgi_cookie() -> tuple[Any, str]:
    """A memory store with a logged-in session, and its cookie."""
    from persession.stores import MemoryStore

    store = MemoryStore()
    sid, now = new_session_id(), time.time()
    store.save(sid, Record({"user": "alice"}, now, now, now + 3600))
    return store, SIGNER.sign(sid)


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, "200 OK", id="plain HTTP passes"),
        pytest.param(UPGRADE, "401 Unauthorized", id="upgrade without session"),
        pytest.param({**UPGRADE, "cookie": True}, "200 OK", id="upgrade with session"),
        pytest.param({**UPGRADE, "cookie": True, "Origin": "http://evil.example"}, "403 Forbidden", id="foreign"),
    ],
)
def test_wsgi_guard(wsgi_cookie: tuple[Any, str], headers: dict[str, Any], status: str) -> None:
    """The WSGI guard answers 401/403 to refused upgrade requests and lets everything else through."""
    store, cookie = wsgi_cookie
    headers = {k: (f"session={cookie}" if v is True else v) for k, v in headers.items()}
    headers = {("Cookie" if k == "cookie" else k): v for k, v in headers.items()}
    app = WSGISessionMiddleware(ok_wsgi, secret=SECRET, store=store, websocket_guard=True)
    assert wsgi_call(app, "/ws", headers)[0] == status


@pytest.mark.parametrize(
    ("path", "logged_in", "origin", "status"),
    [
        pytest.param("/socket.io/", False, None, "401 Unauthorized", id="handshake without session"),
        pytest.param("/socket.io/", True, None, "200 OK", id="handshake with session"),
        pytest.param("/socket.io/", True, "http://evil.example", "403 Forbidden", id="foreign origin"),
        pytest.param("/other", False, None, "200 OK", id="outside the path"),
        pytest.param("/socket.iox", False, None, "200 OK", id="prefix is a path segment"),
    ],
)
def test_wsgi_socketio_guard(
    wsgi_cookie: tuple[Any, str], path: str, logged_in: bool, origin: str | None, status: str
) -> None:
    """The WSGI Socket.IO guard checks every request under its path, upgrade or not."""
    store, cookie = wsgi_cookie
    headers = {"Cookie": f"session={cookie}"} if logged_in else {}
    if origin:
        headers["Origin"] = origin
    app = WSGISessionMiddleware(WSGISocketIOGuard(ok_wsgi), secret=SECRET, store=store)
    line, body = wsgi_call(app, path, headers)
    assert line == status
    if status == "200 OK" and logged_in:
        assert body == b"user=alice"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "logged_in", "origin", "status"),
    [
        pytest.param("/socket.io/", False, None, 401, id="handshake without session"),
        pytest.param("/socket.io/", True, None, 200, id="handshake with session"),
        pytest.param("/socket.io/", True, "http://evil.example", 403, id="foreign origin"),
        pytest.param("/elsewhere", False, None, 200, id="outside the path"),
    ],
)
async def test_asgi_socketio_guard_http(path: str, logged_in: bool, origin: str | None, status: int) -> None:
    """The ASGI Socket.IO guard answers 401/403 to HTTP requests under its path and passes the rest."""
    store = AsyncMemoryStore()
    _, cookie = await new_login(store)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        user = get_session({"asgi.scope": scope}).get("user")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"user={user}".encode()})

    headers = {"Cookie": f"session={cookie}"} if logged_in else {}
    if origin:
        headers["Origin"] = origin
    guard = SessionMiddleware(SocketIOGuard(app), secret=SECRET, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://testserver") as client:
        response = await client.get(path, params={"EIO": "4", "transport": "polling"}, headers=headers)
    assert response.status_code == status
    if status == 200 and logged_in:
        assert response.text == "user=alice"


def test_socketio_get_session_without_middleware() -> None:
    """get_session() names the missing middleware instead of returning nothing."""
    with pytest.raises(SessionNotAvailable):
        get_session({})
    with pytest.raises(SessionNotAvailable):
        get_session({"asgi.scope": {}})
    session = Session({"user": "a"})
    assert get_session({"persession.session": session}) is session
    assert get_session({"asgi.scope": {"session": session}}) is session


def test_importing_the_integration_imports_no_socketio() -> None:
    """persession and its Socket.IO adapter import without importing python-socketio."""
    probe = "import sys, persession.guard, persession.integrations.socketio; print('socketio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("trust", [0, -1, "yes", None, 1.5])
def test_trust_forwarded_host_is_a_bool_or_a_number_of_proxies(trust: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        OriginPolicy(trust_forwarded_host=trust)
    assert raised.value.option == "trust_forwarded_host"

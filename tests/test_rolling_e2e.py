"""Rolling sessions through both middlewares in process: the load refreshes the expiry, in one store call.

A Starlette app driven through ``httpx.ASGITransport`` and a Flask app driven by
Werkzeug's test client, each on a memory store wrapped to count its verbs. The
store and the middleware share a fake clock, so expiries are checked exactly.
The last section checks the engine's part (``build(refreshed=True)`` and the
plan it leads to) directly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from werkzeug.test import Client, TestResponse

from persession import Record, Session, SessionConfig, SessionReadOnly, StoreUnavailable
from persession import asgi as persession_asgi
from persession import wsgi as persession_wsgi
from persession.core import Action, Opening, SessionEngine
from persession.records import Change
from persession.signing import ItsdangerousSigner
from persession.stores import AsyncMemoryStore, AsyncRollingLoad, MemoryStore, RollingLoad

SECRET = "test-secret"
IDLE = 3600
START = 1_800_000_000.0


class Clock:
    """A settable clock shared by the middleware and its store."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def sid_of(cookie: str) -> str | None:
    unsigned = ItsdangerousSigner([SECRET.encode()]).unsign(cookie)
    return None if unsigned is None else unsigned.sid


def set_cookies(headers: list[str]) -> list[str]:
    """The ``session`` Set-Cookie header values among ``headers``."""
    return [header for header in headers if header.startswith("session=")]


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].removeprefix("session=")


# --- the stores -------------------------------------------------------------------------------------


class AsyncPlainCountingStore:
    """A real AsyncMemoryStore that counts each verb's calls; no load_touch (the old two-trip path)."""

    def __init__(self, clock: Clock) -> None:
        self.inner = AsyncMemoryStore(clock=clock)
        self.calls: Counter[str] = Counter()
        self.failing: set[str] = set()

    def _call(self, verb: str) -> None:
        self.calls[verb] += 1
        if verb in self.failing:
            raise StoreUnavailable(f"test store: {verb} is down")

    async def load(self, sid: str) -> Record | None:
        self._call("load")
        return await self.inner.load(sid)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._call("save")
        await self.inner.save(sid, record, replaces=replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        self._call("merge")
        return await self.inner.merge(sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        self._call("touch")
        return await self.inner.touch(sid, expires)

    async def delete(self, sid: str) -> None:
        self._call("delete")
        await self.inner.delete(sid)

    async def close(self) -> None:
        await self.inner.close()


class AsyncRollingCountingStore(AsyncPlainCountingStore):
    """The same, with load_touch."""

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        self._call("load_touch")
        return await self.inner.load_touch(sid, idle, absolute)


class PlainCountingStore:
    """A real MemoryStore that counts each verb's calls; no load_touch (the old two-trip path)."""

    def __init__(self, clock: Clock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.calls: Counter[str] = Counter()
        self.failing: set[str] = set()

    def _call(self, verb: str) -> None:
        self.calls[verb] += 1
        if verb in self.failing:
            raise StoreUnavailable(f"test store: {verb} is down")

    def load(self, sid: str) -> Record | None:
        self._call("load")
        return self.inner.load(sid)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._call("save")
        self.inner.save(sid, record, replaces=replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        self._call("merge")
        return self.inner.merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        self._call("touch")
        return self.inner.touch(sid, expires)

    def delete(self, sid: str) -> None:
        self._call("delete")
        self.inner.delete(sid)

    def close(self) -> None:
        self.inner.close()


class RollingCountingStore(PlainCountingStore):
    """The same, with load_touch."""

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        self._call("load_touch")
        return self.inner.load_touch(sid, idle, absolute)


def test_the_wrappers_satisfy_the_protocols_only_with_load_touch() -> None:
    """The rolling wrappers are RollingLoad / AsyncRollingLoad stores and the plain ones are not, as the shells see."""
    clock = Clock()
    assert isinstance(RollingCountingStore(clock), RollingLoad)
    assert not isinstance(PlainCountingStore(clock), RollingLoad)
    assert isinstance(AsyncRollingCountingStore(clock), AsyncRollingLoad)
    assert not isinstance(AsyncPlainCountingStore(clock), AsyncRollingLoad)


# --- ASGI: Starlette through httpx.ASGITransport -------------------------------------------------------


async def set_key(request: Request) -> Response:
    request.session[request.query_params["key"]] = request.query_params.get("value", "")
    return JSONResponse({"ok": True})


async def get_all(request: Request) -> Response:
    return JSONResponse({"session": dict(request.session)})


async def static(request: Request) -> Response:
    return PlainTextResponse("no session here")


async def crash(request: Request) -> Response:
    return JSONResponse({"session": dict(request.session)}, status_code=500)


def starlette_app() -> Starlette:
    routes = [Route("/set", set_key), Route("/get", get_all), Route("/static", static), Route("/crash", crash)]
    return Starlette(routes=routes)


class AsgiHarness:
    """A rolling ASGI middleware over ``store`` and a ``get(path, cookie)`` that sends exactly that cookie."""

    def __init__(self, store: Any, clock: Clock, **options: Any) -> None:
        options.setdefault("rolling", True)
        self.middleware = persession_asgi.SessionMiddleware(
            starlette_app(), secret=SECRET, store=store, clock=clock, idle_timeout=IDLE, **options
        )
        self.store = store

    async def get(self, path: str, cookie: str | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(self.middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = [] if cookie is None else [("cookie", f"session={cookie}")]
            return await client.get(path, headers=headers)

    async def new_session(self, **data: str) -> str:
        """A stored session holding ``data``; its cookie value. The call counts are reset."""
        cookie: str | None = None
        for key, value in data.items():
            response = await self.get(f"/set?key={key}&value={value}", cookie)
            assert response.status_code == 200
            found = set_cookies(response.headers.get_list("set-cookie"))
            cookie = cookie_value(found[0]) if found else cookie
        assert cookie is not None
        self.store.calls.clear()
        return cookie


@pytest.mark.anyio
async def test_asgi_read_only_request_costs_one_load_touch_and_refreshes_the_cookie() -> None:
    """ASGI: a request that only reads its session is one store call, load_touch, and re-sends the cookie."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock, max_age=7200)
    cookie = await harness.new_session(user="ada")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 600
    response = await harness.get("/get", cookie)
    assert response.status_code == 200
    assert response.json() == {"session": {"user": "ada"}}
    assert harness.store.calls == Counter(load_touch=1)
    [refreshed] = set_cookies(response.headers.get_list("set-cookie"))
    assert sid_of(cookie_value(refreshed)) == sid
    assert "Max-Age=7200" in refreshed
    record = await harness.store.inner.load(sid)
    assert record is not None
    assert record.expires == clock.now + IDLE  # refreshed in the store, by the load
    assert record.accessed == clock.now


@pytest.mark.anyio
async def test_asgi_request_that_ignores_the_session_still_rolls_it_in_one_call() -> None:
    """ASGI: a request whose app never touches the session also costs just load_touch, and rolls the cookie."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    clock.now += 60
    response = await harness.get("/static", cookie)
    assert response.text == "no session here"
    assert harness.store.calls == Counter(load_touch=1)
    assert len(set_cookies(response.headers.get_list("set-cookie"))) == 1


@pytest.mark.anyio
async def test_asgi_writing_request_costs_load_touch_and_merge() -> None:
    """ASGI: a request that changes its session costs load_touch plus one merge, and keeps both keys."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 30
    response = await harness.get("/set?key=b&value=2", cookie)
    assert response.status_code == 200
    assert harness.store.calls == Counter(load_touch=1, merge=1)
    assert len(set_cookies(response.headers.get_list("set-cookie"))) == 1
    record = await harness.store.inner.load(sid)
    assert record is not None
    assert record.data == {"a": "1", "b": "2"}
    assert record.expires == clock.now + IDLE


@pytest.mark.anyio
async def test_asgi_store_without_load_touch_keeps_load_then_touch() -> None:
    """ASGI: a store without load_touch still works, with the old load + touch (two calls)."""
    clock = Clock()
    harness = AsgiHarness(AsyncPlainCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    clock.now += 600
    response = await harness.get("/get", cookie)
    assert response.json() == {"session": {"a": "1"}}
    assert harness.store.calls == Counter(load=1, touch=1)
    assert len(set_cookies(response.headers.get_list("set-cookie"))) == 1


@pytest.mark.anyio
async def test_asgi_without_rolling_plain_load_is_used() -> None:
    """ASGI: with rolling off, a store's load_touch is not used: a fresh read is one load and no cookie."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock, rolling=False)
    cookie = await harness.new_session(a="1")
    clock.now += 1
    response = await harness.get("/get", cookie)
    assert response.json() == {"session": {"a": "1"}}
    assert harness.store.calls == Counter(load=1)
    assert set_cookies(response.headers.get_list("set-cookie")) == []


@pytest.mark.anyio
async def test_asgi_active_session_still_ends_at_its_absolute_timeout() -> None:
    """ASGI: rolling never moves the expiry past created + absolute_timeout, so an active session ends there."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock, absolute_timeout=3000)
    cookie = await harness.new_session(user="ada")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 2000
    assert (await harness.get("/get", cookie)).json() == {"session": {"user": "ada"}}
    record = await harness.store.inner.load(sid)
    assert record is not None
    assert record.expires == START + 3000  # capped, not 2000 + IDLE
    clock.now += 1500  # used 1500 s ago, well within the idle timeout, but 3500 s old
    harness.store.calls.clear()
    response = await harness.get("/get", cookie)
    assert response.json() == {"session": {}}
    assert harness.store.calls == Counter(load_touch=1)
    [expired] = set_cookies(response.headers.get_list("set-cookie"))
    assert "Max-Age=0" in expired
    assert await harness.store.inner.load(sid) is None


@pytest.mark.anyio
async def test_asgi_server_error_writes_nothing_more_after_load_touch() -> None:
    """ASGI: a 500 response costs only the load_touch and sends no cookie (nothing is saved after a 5xx)."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    response = await harness.get("/crash", cookie)
    assert response.status_code == 500
    assert harness.store.calls == Counter(load_touch=1)
    assert set_cookies(response.headers.get_list("set-cookie")) == []


@pytest.mark.anyio
async def test_asgi_failing_load_touch_answers_503() -> None:
    """ASGI: when load_touch fails the store is unavailable: the request gets 503, and nothing else is tried."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    harness.store.failing.add("load_touch")
    response = await harness.get("/get", cookie)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert harness.store.calls == Counter(load_touch=1)


@pytest.mark.anyio
async def test_asgi_websocket_uses_plain_load() -> None:
    """ASGI: a websocket's read-only session is loaded with load, never refreshed by load_touch."""
    clock = Clock()
    harness = AsgiHarness(AsyncRollingCountingStore(clock), clock)
    cookie = await harness.new_session(a="1")
    seen: dict[str, Any] = {}

    async def websocket_app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        seen["data"] = dict(session)
        try:
            session["x"] = 1
        except SessionReadOnly:
            seen["read_only"] = True
        await send({"type": "websocket.close", "code": 1000})

    middleware = persession_asgi.SessionMiddleware(
        websocket_app, secret=SECRET, store=harness.store, clock=clock, rolling=True, idle_timeout=IDLE
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"cookie", f"session={cookie}".encode())]}
    await middleware(scope, receive, send)
    assert seen == {"data": {"a": "1"}, "read_only": True}
    assert harness.store.calls == Counter(load=1)
    assert sent == [{"type": "websocket.close", "code": 1000}]


# --- WSGI: Flask through Werkzeug's test client ---------------------------------------------------------


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/set")
    def set_key() -> Any:
        persession_wsgi.get_session(request.environ)[request.args["key"]] = request.args.get("value", "")
        return jsonify({"ok": True})

    @app.get("/get")
    def get_all() -> Any:
        return jsonify({"session": dict(persession_wsgi.get_session(request.environ))})

    @app.get("/try-write")
    def try_write() -> Any:
        try:
            persession_wsgi.get_session(request.environ)["written"] = True
        except SessionReadOnly:
            return jsonify({"refused": True})
        return jsonify({"refused": False})

    return app


class WsgiHarness:
    """A rolling WSGI middleware over ``store`` and a ``get(path, cookie)`` that sends exactly that cookie."""

    def __init__(self, store: Any, clock: Clock, **options: Any) -> None:
        options.setdefault("rolling", True)
        middleware = persession_wsgi.SessionMiddleware(
            flask_app(), secret=SECRET, store=store, clock=clock, idle_timeout=IDLE, **options
        )
        self.client = Client(middleware, use_cookies=False)
        self.store = store

    def get(self, path: str, cookie: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> TestResponse:
        sent = [*headers, *([] if cookie is None else [("Cookie", f"session={cookie}")])]
        response = self.client.get(path, headers=sent)
        response.close()
        return response

    def new_session(self, **data: str) -> str:
        """A stored session holding ``data``; its cookie value. The call counts are reset."""
        cookie: str | None = None
        for key, value in data.items():
            response = self.get(f"/set?key={key}&value={value}", cookie)
            assert response.status_code == 200
            found = set_cookies(response.headers.getlist("Set-Cookie"))
            cookie = cookie_value(found[0]) if found else cookie
        assert cookie is not None
        self.store.calls.clear()
        return cookie


def test_wsgi_read_only_request_costs_one_load_touch_and_refreshes_the_cookie() -> None:
    """WSGI: a request that only reads its session is one store call, load_touch, and re-sends the cookie."""
    clock = Clock()
    harness = WsgiHarness(RollingCountingStore(clock), clock, max_age=7200)
    cookie = harness.new_session(user="ada")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 600
    response = harness.get("/get", cookie)
    assert response.status_code == 200
    assert response.get_json() == {"session": {"user": "ada"}}
    assert harness.store.calls == Counter(load_touch=1)
    [refreshed] = set_cookies(response.headers.getlist("Set-Cookie"))
    assert sid_of(cookie_value(refreshed)) == sid
    assert "Max-Age=7200" in refreshed
    record = harness.store.inner.load(sid)
    assert record is not None
    assert record.expires == clock.now + IDLE
    assert record.accessed == clock.now


def test_wsgi_writing_request_costs_load_touch_and_merge() -> None:
    """WSGI: a request that changes its session costs load_touch plus one merge, and keeps both keys."""
    clock = Clock()
    harness = WsgiHarness(RollingCountingStore(clock), clock)
    cookie = harness.new_session(a="1")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 30
    response = harness.get("/set?key=b&value=2", cookie)
    assert response.status_code == 200
    assert harness.store.calls == Counter(load_touch=1, merge=1)
    assert len(set_cookies(response.headers.getlist("Set-Cookie"))) == 1
    record = harness.store.inner.load(sid)
    assert record is not None
    assert record.data == {"a": "1", "b": "2"}
    assert record.expires == clock.now + IDLE


def test_wsgi_store_without_load_touch_keeps_load_then_touch() -> None:
    """WSGI: a store without load_touch still works, with the old load + touch (two calls)."""
    clock = Clock()
    harness = WsgiHarness(PlainCountingStore(clock), clock)
    cookie = harness.new_session(a="1")
    clock.now += 600
    response = harness.get("/get", cookie)
    assert response.get_json() == {"session": {"a": "1"}}
    assert harness.store.calls == Counter(load=1, touch=1)
    assert len(set_cookies(response.headers.getlist("Set-Cookie"))) == 1


def test_wsgi_absolute_timeout_caps_the_refreshed_expiry() -> None:
    """WSGI: near its absolute limit, load_touch moves the expiry only up to created + absolute_timeout."""
    clock = Clock()
    harness = WsgiHarness(RollingCountingStore(clock), clock, absolute_timeout=5000)
    cookie = harness.new_session(a="1")
    sid = sid_of(cookie)
    assert sid is not None
    clock.now += 3000  # idle would give 3000 + 3600; the limit is 5000 after creation
    response = harness.get("/get", cookie)
    assert response.get_json() == {"session": {"a": "1"}}
    assert harness.store.calls == Counter(load_touch=1)
    record = harness.store.inner.load(sid)
    assert record is not None
    assert record.expires == START + 5000


def test_wsgi_websocket_upgrade_uses_plain_load() -> None:
    """WSGI: an Upgrade: websocket request (read-only session) is loaded with load, never refreshed."""
    clock = Clock()
    harness = WsgiHarness(RollingCountingStore(clock), clock)
    cookie = harness.new_session(a="1")
    response = harness.get("/try-write", cookie, headers=(("Upgrade", "websocket"),))
    assert response.get_json() == {"refused": True}
    assert harness.store.calls == Counter(load=1)


def test_wsgi_failing_load_touch_answers_503() -> None:
    """WSGI: when load_touch fails the request gets 503 with Retry-After, and nothing else is tried."""
    clock = Clock()
    harness = WsgiHarness(RollingCountingStore(clock), clock)
    cookie = harness.new_session(a="1")
    harness.store.failing.add("load_touch")
    response = harness.get("/get", cookie)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert harness.store.calls == Counter(load_touch=1)


# --- the engine's part: build(refreshed=True) and plan() ------------------------------------------------


def _engine(**options: Any) -> SessionEngine:
    return SessionEngine(SessionConfig(secret=SECRET, idle_timeout=IDLE, **options), clock=Clock())


def _refreshed(engine: SessionEngine, **data: Any) -> tuple[Session, Opening]:
    """A session built from a record that load_touch just refreshed."""
    opening = Opening(sid="s" * 43, present=True)
    now = engine.clock()
    record = Record(dict(data), created=now - 100, accessed=now, expires=now + IDLE)
    return engine.build(opening, record, refreshed=True), opening


def test_engine_rolling_load_is_for_rolling_writable_sessions_only() -> None:
    """rolling_load() is true only with rolling on and outside read-only (websocket) sessions."""
    assert _engine(rolling=True).rolling_load() is True
    assert _engine(rolling=True).rolling_load(read_only=True) is False
    assert _engine().rolling_load() is False


def test_engine_refreshed_unchanged_session_gets_the_cookie_and_no_touch() -> None:
    """An unchanged refreshed session plans no store action but still re-sends the rolling cookie."""
    engine = _engine(rolling=True)
    session, opening = _refreshed(engine, a=1)
    assert session.refreshed is True
    assert session["a"] == 1
    plan = engine.plan(session, opening, status=200, secure_request=False)
    assert plan.action is Action.NOTHING
    assert plan.set_cookie is not None
    assert plan.set_cookie.startswith("session=")
    assert plan.vary is True


def test_engine_refreshed_session_touched_by_the_app_is_not_touched_again() -> None:
    """session.touch() on a refreshed session re-sends the cookie without a store touch."""
    engine = _engine(rolling=True)
    session, opening = _refreshed(engine)
    session.touch()
    plan = engine.plan(session, opening, status=200, secure_request=False)
    assert plan.action is Action.NOTHING
    assert plan.set_cookie is not None


def test_engine_refreshed_session_still_merges_deletes_and_skips_5xx() -> None:
    """Refreshed changes nothing else: a change merges, destroy deletes, and a 5xx plans nothing."""
    engine = _engine(rolling=True)
    session, opening = _refreshed(engine, a=1)
    session["b"] = 2
    merge = engine.plan(session, opening, status=200, secure_request=False)
    assert merge.action is Action.MERGE
    assert merge.change == Change({"b": 2})
    assert merge.expires == engine.clock() + IDLE
    session, opening = _refreshed(engine, a=1)
    session.destroy()
    assert engine.plan(session, opening, status=200, secure_request=False).action is Action.DELETE
    session, opening = _refreshed(engine, a=1)
    failed = engine.plan(session, opening, status=503, secure_request=False)
    assert failed.action is Action.NOTHING
    assert failed.set_cookie is None


def test_engine_refreshed_flag_needs_a_live_record() -> None:
    """build(refreshed=True) without a record gives an ordinary new session, which is never refreshed."""
    engine = _engine(rolling=True)
    session = engine.build(Opening(sid="s" * 43, present=True), None, refreshed=True)
    assert session.is_new
    assert session.refreshed is False
    assert Session().refreshed is False

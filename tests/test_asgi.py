"""The ASGI middleware in process: a real Starlette app, driven through httpx.ASGITransport."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from _http import session_cookie
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from persession import ConfigError, Record, SessionConfig, SessionNotAvailable, StoreUnavailable
from persession.asgi import SessionMiddleware, get_session
from persession.records import Change
from persession.signing import ItsdangerousSigner, new_session_id
from persession.stores import AsyncMemoryStore, MemoryStore

pytestmark = pytest.mark.anyio

SECRET = "test-secret"
UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"


class CountingStore:
    """A real AsyncMemoryStore that counts each verb's calls and fails the verbs listed in ``failing``."""

    def __init__(self) -> None:
        self.inner = AsyncMemoryStore()
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

    def writes(self) -> int:
        return self.calls["save"] + self.calls["merge"] + self.calls["touch"] + self.calls["delete"]


class SyncOnlyStore:
    """A synchronous store with no ``to_async()``: the ASGI middleware must refuse it."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def load(self, sid: str) -> Record | None:
        return self.inner.load(sid)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self.inner.save(sid, record, replaces=replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self.inner.merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        return self.inner.touch(sid, expires)

    def delete(self, sid: str) -> None:
        self.inner.delete(sid)

    def close(self) -> None:
        self.inner.close()


# -- the application ----------------------------------------------------------


async def set_key(request: Request) -> Response:
    request.session[request.query_params["key"]] = request.query_params.get("value", "")
    return JSONResponse({"ok": True})


async def get_all(request: Request) -> Response:
    return JSONResponse({"session": dict(request.session)})


async def counter(request: Request) -> Response:
    request.session["counter"] = request.session.get("counter", 0) + 1
    return JSONResponse({"counter": request.session["counter"]})


async def logout(request: Request) -> Response:
    request.session.destroy()  # type: ignore[attr-defined]
    return JSONResponse({"ok": True})


async def static(request: Request) -> Response:
    return PlainTextResponse("no session here")


async def static_vary(request: Request) -> Response:
    return PlainTextResponse("no session here", headers={"Vary": "Accept-Encoding"})


async def get_vary(request: Request) -> Response:
    return JSONResponse({"session": dict(request.session)}, headers={"Vary": "Accept-Encoding"})


async def crash(request: Request) -> Response:
    request.session["crashed"] = True
    return PlainTextResponse("boom", status_code=500)


async def store_down(request: Request) -> Response:
    raise StoreUnavailable("the application's own store call failed")


def starlette_app() -> Starlette:
    routes = [
        Route("/set", set_key),
        Route("/get", get_all),
        Route("/counter", counter),
        Route("/logout", logout),
        Route("/static", static),
        Route("/static-vary", static_vary),
        Route("/get-vary", get_vary),
        Route("/crash", crash),
        Route("/store-down", store_down),
    ]
    return Starlette(routes=routes)


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[Callable[..., Any]]:
    """A ``get(path, cookie=None)`` for ``app``; the cookie is sent exactly as given, nothing else is."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver") as client:

        async def get(path: str, cookie: str | bytes | None = None) -> httpx.Response:
            client.cookies.clear()  # only the cookie the test passes is sent
            headers = [] if cookie is None else [(b"cookie", cookie if isinstance(cookie, bytes) else cookie.encode())]
            return await client.get(path, headers=headers)

        yield get


def middleware(store: Any, **options: Any) -> SessionMiddleware:
    options.setdefault("secret", SECRET)
    return SessionMiddleware(starlette_app(), store=store, **options)


def sid_of(cookie: str, secret: str = SECRET) -> str | None:
    unsigned = ItsdangerousSigner([secret.encode()]).unsign(cookie)
    return None if unsigned is None else unsigned.sid


async def new_session(get: Callable[..., Any], **data: str) -> str:
    """Create a session holding ``data`` and return its cookie value."""
    cookie = None
    for key, value in data.items():
        response = await get(f"/set?key={key}&value={value}", cookie and f"session={cookie}")
        assert response.status_code == 200
        cookie = session_cookie(response) or cookie
    assert cookie is not None
    return cookie


# -- what is and is not written -------------------------------------------------


async def test_untouched_request_without_cookie_calls_no_store_and_sets_no_cookie(store: CountingStore) -> None:
    """A request without a cookie whose app never touches the session makes no store call and sets no cookie."""
    async with serve(middleware(store)) as get:
        response = await get("/static")
    assert response.status_code == 200
    assert response.text == "no session here"
    assert sum(store.calls.values()) == 0
    assert "set-cookie" not in response.headers
    assert "vary" not in response.headers


async def test_untouched_request_with_cookie_only_loads(store: CountingStore) -> None:
    """A request with a session cookie whose app never touches the session writes nothing and sets no cookie."""
    async with serve(middleware(store)) as get:
        cookie = await new_session(get, a="1")
        store.calls.clear()
        response = await get("/static", f"session={cookie}")
    assert response.status_code == 200
    assert store.calls == Counter(load=1)
    assert "set-cookie" not in response.headers
    assert "vary" not in response.headers


async def test_new_session_only_read_is_not_saved(store: CountingStore) -> None:
    """A new session the app reads but never writes is not saved and gets no cookie."""
    async with serve(middleware(store)) as get:
        response = await get("/get")
    assert response.json() == {"session": {}}
    assert store.writes() == 0
    assert len(store.inner) == 0
    assert "set-cookie" not in response.headers


async def test_written_new_session_is_saved_once(store: CountingStore) -> None:
    """A new session the app writes is saved with one store call and gets a signed cookie naming it."""
    async with serve(middleware(store)) as get:
        response = await get("/set?key=colour&value=blue")
    cookie = session_cookie(response)
    assert cookie is not None
    sid = sid_of(cookie)
    assert sid is not None
    assert store.calls == Counter(save=1)
    record = await store.inner.load(sid)
    assert record is not None
    assert record.data == {"colour": "blue"}


async def test_unchanged_session_is_not_rewritten_without_resave(store: CountingStore) -> None:
    """With resave=False a read-only request on an existing session makes no save or merge call."""
    async with serve(middleware(store)) as get:
        cookie = await new_session(get, colour="blue")
        store.calls.clear()
        response = await get("/get", f"session={cookie}")
    assert response.json() == {"session": {"colour": "blue"}}
    assert store.calls["save"] == 0
    assert store.calls["merge"] == 0
    assert store.writes() == 0
    assert session_cookie(response) is None


async def test_unchanged_session_is_rewritten_with_resave(store: CountingStore) -> None:
    """With resave=True a read-only request on an existing session writes the whole session back once."""
    async with serve(middleware(store, resave=True)) as get:
        cookie = await new_session(get, colour="blue")
        store.calls.clear()
        response = await get("/get", f"session={cookie}")
    assert response.json() == {"session": {"colour": "blue"}}
    assert store.calls["save"] + store.calls["merge"] == 1
    sid = sid_of(cookie)
    assert sid is not None
    record = await store.inner.load(sid)
    assert record is not None
    assert record.data == {"colour": "blue"}


async def test_changed_session_merges_only_into_its_record(store: CountingStore) -> None:
    """Counting across requests merges each change into the one stored record."""
    async with serve(middleware(store)) as get:
        first = await get("/counter")
        cookie = session_cookie(first)
        assert cookie is not None
        counts = [(await get("/counter", f"session={cookie}")).json()["counter"] for _ in range(3)]
    assert first.json() == {"counter": 1}
    assert counts == [2, 3, 4]
    assert store.calls["save"] == 1
    assert store.calls["merge"] == 3
    assert len(store.inner) == 1


# -- Vary -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "vary"),
    [
        pytest.param("/static", None, id="not read: no Vary"),
        pytest.param("/get", "Cookie", id="read: Vary Cookie"),
        pytest.param("/static-vary", "Accept-Encoding", id="not read: app's Vary untouched"),
        pytest.param("/get-vary", "Accept-Encoding, Cookie", id="read: Cookie merged into app's Vary"),
    ],
)
async def test_vary_cookie_iff_session_read(store: CountingStore, path: str, vary: str | None) -> None:
    """``Vary: Cookie`` is sent exactly when the session was read, merged into the app's own Vary header."""
    async with serve(middleware(store)) as get:
        cookie = await new_session(get, a="1")
        response = await get(path, f"session={cookie}")
    assert response.status_code == 200
    assert response.headers.get_list("vary") == ([] if vary is None else [vary])


# -- secret rotation ----------------------------------------------------------------


async def test_cookie_signed_by_old_secret_is_accepted_and_reissued(store: CountingStore) -> None:
    """A cookie signed by an older secret still opens its session, and comes back signed by the newest."""
    async with serve(middleware(store, secret="old")) as get:
        old_cookie = await new_session(get, colour="blue")
    old_sid = sid_of(old_cookie, "old")
    assert old_sid is not None
    assert sid_of(old_cookie, "new") is None

    async with serve(middleware(store, secret=["new", "old"])) as get:
        response = await get("/get", f"session={old_cookie}")
    assert response.status_code == 200
    assert response.json() == {"session": {"colour": "blue"}}
    reissued = session_cookie(response)
    assert reissued is not None
    unsigned = ItsdangerousSigner([b"new"]).unsign(reissued)
    assert unsigned is not None
    assert unsigned.sid == old_sid
    assert not unsigned.stale
    assert ItsdangerousSigner([b"old"]).unsign(reissued) is None


# -- bad cookies: client input never errors, never adopts the client's id ---------------


def _tampered(cookie: str) -> bytes:
    # Change the id's first character: every bit of it is covered by the signature.
    return f"session={'B' if cookie[0] == 'A' else 'A'}{cookie[1:]}".encode()


BAD_COOKIES = [
    pytest.param(_tampered, id="tampered"),
    pytest.param(lambda cookie: f"session={cookie[: len(cookie) // 2]}".encode(), id="truncated"),
    pytest.param(lambda cookie: b"session=" + cookie.encode()[:20] + b"\xff\xfe\xc3(", id="not UTF-8"),
    pytest.param(lambda cookie: f"session={cookie}{'A' * 5000}".encode(), id="oversized"),
    pytest.param(
        lambda cookie: _tampered(cookie) + b"; session=" + cookie.encode()[:30], id="duplicated, none verifies"
    ),
    pytest.param(
        lambda cookie: f"session={ItsdangerousSigner([SECRET.encode()]).sign(new_session_id())}".encode(),
        id="validly signed unknown id",
    ),
]


@pytest.mark.parametrize("make_cookie", BAD_COOKIES)
async def test_bad_cookie_gets_a_fresh_session_under_a_new_id(
    store: CountingStore, make_cookie: Callable[[str], bytes]
) -> None:
    """A bad cookie gets a fresh, empty session under a new server-made id, never the client's."""
    async with serve(middleware(store)) as get:
        victim = await new_session(get, colour="blue")
        bad = make_cookie(victim)
        response = await get("/counter", bad)
    assert response.status_code == 200
    assert response.json() == {"counter": 1}
    cookie = session_cookie(response)
    assert cookie is not None
    sid = sid_of(cookie)
    assert sid is not None
    assert sid != sid_of(victim)
    assert sid.encode() not in bad
    stored = await store.inner.load(sid)
    assert stored is not None
    assert stored.data == {"counter": 1}
    victim_sid = sid_of(victim)
    assert victim_sid is not None
    victim_record = await store.inner.load(victim_sid)
    assert victim_record is not None
    assert victim_record.data == {"colour": "blue"}


@pytest.mark.parametrize("make_cookie", BAD_COOKIES)
async def test_bad_cookie_logs_one_security_warning(
    store: CountingStore, make_cookie: Callable[[str], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A bad cookie is logged once, as a WARNING on the persession.security logger."""
    async with serve(middleware(store)) as get:
        victim = await new_session(get, colour="blue")
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="persession.security")
        response = await get("/counter", make_cookie(victim))
    assert response.status_code == 200
    security = [r for r in caplog.records if r.name == "persession.security"]
    assert [r.levelno for r in security] == [logging.WARNING]
    assert victim not in security[0].getMessage()


# -- server errors and store outages -------------------------------------------------------


async def test_no_save_after_a_500(store: CountingStore) -> None:
    """A 500 response saves nothing: no new session, and an existing one keeps its data."""
    async with serve(middleware(store)) as get:
        fresh = await get("/crash")
        cookie = await new_session(get, colour="blue")
        store.calls.clear()
        existing = await get("/crash", f"session={cookie}")
        after = await get("/get", f"session={cookie}")
    assert fresh.status_code == 500
    assert session_cookie(fresh) is None
    assert existing.status_code == 500
    assert session_cookie(existing) is None
    assert store.calls["save"] == store.calls["merge"] == 0
    assert after.json() == {"session": {"colour": "blue"}}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.content == UNAVAILABLE_BODY
    assert b"Traceback" not in response.content
    assert session_cookie(response) is None


@pytest.mark.parametrize(
    ("failing", "path", "with_cookie"),
    [
        pytest.param("load", "/counter", True, id="load fails, app uses the session"),
        pytest.param("save", "/counter", False, id="saving a new session fails"),
        pytest.param("merge", "/counter", True, id="merging a change fails"),
        pytest.param("delete", "/logout", True, id="deleting on logout fails"),
        pytest.param(None, "/store-down", True, id="the app raises StoreUnavailable itself"),
    ],
)
async def test_store_failure_answers_503_then_recovers(
    store: CountingStore, failing: str | None, path: str, with_cookie: bool
) -> None:
    """A store failure gives 503 with Retry-After and no traceback; once the store is back, the session works."""
    async with serve(middleware(store)) as get:
        cookie = await new_session(get, colour="blue")
        sent = f"session={cookie}" if with_cookie else None
        store.failing = {failing} if failing else set()
        response = await get(path, sent)
        store.failing = set()
        recovered = await get("/get", f"session={cookie}")
    assert_unavailable(response)
    assert recovered.status_code == 200
    assert recovered.json() == {"session": {"colour": "blue"}}


async def test_other_exceptions_keep_the_frameworks_500(store: CountingStore) -> None:
    """An exception that is not a StoreError still gets the framework's 500, and still propagates."""

    async def broken(request: Request) -> Response:
        request.session["seen"] = True
        raise RuntimeError("a bug, not an outage")

    app = SessionMiddleware(Starlette(routes=[Route("/", broken)]), secret=SECRET, store=store)
    async with serve(app) as get:
        with pytest.raises(RuntimeError, match="a bug, not an outage"):
            await get("/")
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert store.writes() == 0


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_streamed_500_is_passed_on_as_it_streams(store: CountingStore) -> None:
    """A 500 whose body streams is forwarded chunk by chunk, not held until the app returns."""
    sent: list[dict[str, Any]] = []
    seen_by_app: list[list[str]] = []

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        seen_by_app.append([m["type"] for m in sent])
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    await SessionMiddleware(streaming, secret=SECRET, store=store)(scope, _no_body, send)
    assert seen_by_app == [["http.response.start", "http.response.body"]]
    assert [m.get("status") for m in sent] == [500, None, None]
    assert [m.get("body") for m in sent[1:]] == [b"partial", b""]


async def test_untouched_route_answers_200_while_the_store_is_down(store: CountingStore) -> None:
    """A route that never touches the session answers normally while every store call fails."""
    async with serve(middleware(store)) as get:
        cookie = await new_session(get, a="1")
        store.failing = {"load", "save", "merge", "touch", "delete"}
        with_cookie = await get("/static", f"session={cookie}")
        without_cookie = await get("/static")
    for response in (with_cookie, without_cookie):
        assert response.status_code == 200
        assert response.text == "no session here"
        assert "set-cookie" not in response.headers


# -- ASGI shapes ----------------------------------------------------------------------


class ASGI2Counter:
    """An ASGI 2 (double-callable) application that counts in the session."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        session = get_session(self.scope)
        session["counter"] = session.get("counter", 0) + 1
        body = str(session["counter"]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


async def test_asgi2_double_callable_app_is_accepted(store: CountingStore) -> None:
    """An ASGI 2 double-callable app gets a working session."""
    async with serve(SessionMiddleware(ASGI2Counter, secret=SECRET, store=store)) as get:
        first = await get("/")
        cookie = session_cookie(first)
        assert cookie is not None
        second = await get("/", f"session={cookie}")
    assert (first.text, second.text) == ("1", "2")


async def test_lifespan_scope_passes_through_untouched(store: CountingStore) -> None:
    """A lifespan scope reaches the app as it was sent, with no session and no store call."""
    seen: list[dict[str, Any]] = []
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    inner = Starlette(lifespan=lifespan)

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await inner(scope, receive, send)

    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await SessionMiddleware(recording, secret=SECRET, store=store)(scope, receive, send)
    assert seen == [scope]
    assert seen[0] is scope
    assert "session" not in scope
    assert started == [True]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sum(store.calls.values()) == 0


async def test_sync_store_with_to_async_shares_its_records() -> None:
    """A sync store with ``to_async()`` is accepted, and the async twin works on the same records."""
    sync_store = MemoryStore()
    async with serve(middleware(sync_store)) as get:
        cookie = await new_session(get, colour="blue")
    sid = sid_of(cookie)
    assert sid is not None
    record = sync_store.load(sid)
    assert record is not None
    assert record.data == {"colour": "blue"}


# -- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        pytest.param({"secret": SECRET, "colour": "blue"}, "colour", id="unknown option"),
        pytest.param({"secret": SECRET, "config": SessionConfig(secret=SECRET)}, "config", id="config and secret"),
        pytest.param({"config": SessionConfig(secret=SECRET), "rolling": True}, "config", id="config and options"),
        pytest.param({"secret": SECRET, "store": SyncOnlyStore()}, "store", id="sync store without to_async"),
        pytest.param({}, "secret", id="no secret"),
        pytest.param({"secret": SECRET, "max_age": -1}, "max_age", id="bad option value"),
    ],
)
def test_bad_configuration_raises_config_error_naming_the_option(kwargs: dict[str, Any], option: str) -> None:
    """A bad middleware configuration raises ConfigError naming the offending option."""
    kwargs.setdefault("store", AsyncMemoryStore())
    with pytest.raises(ConfigError) as caught:
        SessionMiddleware(starlette_app(), **kwargs)
    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}:")


def test_get_session_without_middleware_raises_session_not_available() -> None:
    """get_session() on a scope no middleware prepared raises SessionNotAvailable with a hint."""
    with pytest.raises(SessionNotAvailable) as caught:
        get_session({"type": "http", "headers": []})
    assert "SessionMiddleware" in caught.value.hint


async def test_get_session_in_unwrapped_starlette_app_raises() -> None:
    """A real Starlette route calling get_session() without the middleware gets SessionNotAvailable."""

    async def route(request: Request) -> Response:
        get_session(request.scope)
        return PlainTextResponse("unreachable")

    app = Starlette(routes=[Route("/", route)])
    async with serve(app) as get:
        with pytest.raises(SessionNotAvailable):
            await get("/")


# -- X-Forwarded-Proto behind proxies -------------------------------------------


@pytest.mark.parametrize(
    ("proxy", "lines", "secure"),
    [
        pytest.param(1, [b"https, http"], False, id="proxy=1, the client wrote https"),
        pytest.param(1, [b"http, https"], True, id="proxy=1, the proxy wrote https"),
        pytest.param(1, [b"http", b"https"], True, id="proxy=1, repeated header lines read as one list"),
        pytest.param(1, [b"https", b"http"], False, id="proxy=1, the last line is the proxy's"),
        pytest.param(True, [b"https, http"], True, id="proxy=True trusts the leftmost"),
        pytest.param(2, [b"https"], False, id="proxy=2, fewer values than proxies"),
    ],
)
async def test_secure_auto_follows_the_trusted_proxies(
    store: CountingStore, proxy: bool | int, lines: list[bytes], secure: bool
) -> None:
    """With ``proxy=N`` the N-th ``X-Forwarded-Proto`` value from the right decides ``Secure`` (``secure='auto'``)."""
    app = middleware(store, proxy=proxy)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver") as client:
        headers = [(b"x-forwarded-proto", line) for line in lines]
        response = await client.get("/set?key=a&value=1", headers=headers)
    cookies = [value for name, value in response.headers.multi_items() if name == "set-cookie"]
    assert len(cookies) == 1
    attributes = [part.strip() for part in cookies[0].split(";")]
    assert ("Secure" in attributes) is secure

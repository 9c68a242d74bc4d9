"""``store="<url>"`` wherever a store goes: both middlewares and Flask's ``init_app``.

Each entry point builds the store exactly as :func:`~persession.stores.store_from_url`
would (the ASGI middleware then takes its asyncio twin): a value one request
sets is read back by the next, on a real SQLite file and a real Redis, and a
URL it cannot use raises the very ``ConfigError`` ``store_from_url`` raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask import Flask, session
from werkzeug.test import Client

from _http import session_cookie
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from persession import ConfigError
from persession.asgi import SessionMiddleware as AsgiMiddleware
from persession.asgi import get_session as asgi_session
from persession.integrations.flask import init_app
from persession.signing import ItsdangerousSigner
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, MemoryStore, SqliteStore, store_from_url
from persession.wsgi import SessionMiddleware as WsgiMiddleware
from persession.wsgi import get_session as wsgi_session

if TYPE_CHECKING:
    from persession.types import Receive, Scope, Send, StartResponse, WSGIEnvironment

SECRET = "store-url-test-secret-0123456789abcdef"
SHELLS = ("asgi", "wsgi", "flask")
KINDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.server)]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Counts visits in the session and answers the count."""
    current = asgi_session(scope)
    current["visits"] = current.get("visits", 0) + 1
    body = str(current["visits"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The same as a WSGI application."""
    current = wsgi_session(environ)
    current["visits"] = current.get("visits", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(current["visits"]).encode()]


def flask_app() -> Flask:
    """The same with flask.session."""
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    return app


def build(shell: str, url: str) -> Any:
    """The middleware each entry point makes of ``store=url``."""
    if shell == "asgi":
        return AsgiMiddleware(asgi_app, secret=SECRET, store=url)
    if shell == "wsgi":
        return WsgiMiddleware(wsgi_app, secret=SECRET, store=url)
    return init_app(flask_app(), secret=SECRET, store=url)


def visit_twice(shell: str, middleware: Any) -> tuple[list[str], str | None]:
    """Two requests, the second with the first's cookie: their bodies and the cookie; then the store is closed.

    An asyncio store is closed in the event loop its connections belong to.
    """
    if shell == "asgi":

        async def run() -> tuple[list[str], str | None]:
            transport = httpx.ASGITransport(middleware)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                    first = await client.get("/")
                    cookie = session_cookie(first)
                    client.cookies.clear()
                    second = await client.get("/", headers={"Cookie": f"session={cookie}"})
            finally:
                await middleware.store.close()
            return [first.text, second.text], cookie

        return asyncio.run(run())
    client = Client(middleware, use_cookies=False)
    try:
        first = client.get("/")
        cookie = session_cookie(first)
        second = client.get("/", headers={"Cookie": f"session={cookie}"})
    finally:
        middleware.store.close()
    return [first.text, second.text], cookie


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shell", SHELLS)
def test_store_url_is_built_as_store_from_url(
    shell: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """store="<url>" is store_from_url(url) (ASGI: its async twin): the next request reads what one wrote."""
    from persession.stores.redis import AsyncRedisStore, RedisStore

    path = tmp_path / "sessions.db"
    server: RedisServer | None = request.getfixturevalue("redis_server") if kind == "redis" else None
    url = {"memory": "memory://", "sqlite": f"sqlite://{path}", "redis": server.url if server else ""}[kind]
    middleware = build(shell, url)
    types: dict[str, Callable[..., Any]] = (
        {"memory": AsyncMemoryStore, "sqlite": AsyncSqliteStore, "redis": AsyncRedisStore}
        if shell == "asgi"
        else {"memory": MemoryStore, "sqlite": SqliteStore, "redis": RedisStore}
    )
    assert type(middleware.store) is types[kind]
    sid = None
    try:
        bodies, cookie = visit_twice(shell, middleware)
        assert bodies == ["1", "2"]
        assert cookie is not None
        unsigned = ItsdangerousSigner([SECRET.encode()]).unsign(cookie)
        assert unsigned is not None
        sid = unsigned.sid
        if kind == "sqlite":  # the file the URL names holds the session
            on_disk = SqliteStore(path)
            record = on_disk.load(sid)
            on_disk.close()
            assert record is not None
            assert record.data == {"visits": 2}
    finally:
        if server is not None and sid is not None:
            with server.client() as raw:
                raw.delete(f"{middleware.store.prefix}{sid}")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a url", id="no scheme"),
        pytest.param("ftp://example.com/sessions", id="unsupported scheme"),
        pytest.param("sqlite://host/sessions.db", id="sqlite with a host"),
        pytest.param("sqlite:///tmp/x.db?colour=blue", id="unknown sqlite parameter"),
        pytest.param("redis://:secret@/0", id="redis without a host"),
    ],
)
@pytest.mark.parametrize("shell", SHELLS)
def test_malformed_store_url_raises_the_config_error_of_store_from_url(shell: str, url: str) -> None:
    """A store URL an entry point cannot use raises exactly the ConfigError store_from_url raises."""
    with pytest.raises(ConfigError) as expected:
        store_from_url(url)
    with pytest.raises(ConfigError) as caught:
        build(shell, url)
    assert (caught.value.option, str(caught.value)) == (expected.value.option, str(expected.value))


def test_init_app_with_a_malformed_store_url_installs_nothing() -> None:
    """init_app that fails on its store URL leaves the Flask app as it was."""
    app = flask_app()
    wsgi = app.wsgi_app
    with pytest.raises(ConfigError):
        init_app(app, secret=SECRET, store="sqlite://host/sessions.db")
    assert "persession" not in app.extensions
    assert app.wsgi_app == wsgi

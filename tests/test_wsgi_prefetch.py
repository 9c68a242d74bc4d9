"""The WSGI middleware's prefetch and split writes on a real Redis store.

With a :class:`~persession.stores.PrefetchLoad` store the middleware sends
the load when the request arrives and reads the answer at the session's first
use (or when the response starts). These tests hold it to: the application
sees the same session as before, the load is not read before the first use,
the pooled connection always goes back (untouched routes, exceptions,
generators never iterated), and a store that dies with the answer pending
gives the usual 503 or, for a route that never used the session, its own
answer. With a :class:`~persession.stores.SplitWrite` store the write is sent
when the application starts its response and its answer read before the
first byte goes out: the same guarantees, and a write that fails in between
still answers 503.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask, session
from werkzeug.test import Client, TestResponse

from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServer,
    busy_connections,
    command_calls,
    dying_server_fixture,
    key_prefix_fixture,
    raw_client_fixture,
    redis_server_fixture,
    redis_servers_fixture,
)
from persession import Session
from persession.integrations.flask import init_app
from persession.stores.redis import RedisStore
from persession.wsgi import DeferredSession, SessionMiddleware, get_session

pytestmark = pytest.mark.server

SECRET = "prefetch-test-secret"


def cookie_of(response: TestResponse) -> str:
    header = response.headers["Set-Cookie"]
    return header.split(";", 1)[0]


@pytest.fixture(name="store")
def store_fixture(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    yield store
    store.close()


def flask_app(store: RedisStore, crash: RedisServer | None = None, **options: Any) -> tuple[Flask, list[bool]]:
    """A Flask app on ``store``; the list records, per request, whether the session was loaded at the view's start.

    With ``crash``, a request with an ``X-Crash`` header kills that Redis
    server before the view runs (after the middleware sent the load).
    """
    app = Flask(__name__)
    init_app(app, secret=SECRET, store=store, **options)
    loaded_at_start: list[bool] = []

    @app.before_request
    def crash_redis() -> None:
        from flask import request

        if crash is not None and "X-Crash" in request.headers:
            crash.kill()

    @app.teardown_request
    def crash_redis_late(_: BaseException | None) -> None:  # after start_response, before the body goes out
        from flask import request

        if crash is not None and "X-Crash-Late" in request.headers:
            crash.kill()

    @app.get("/login")
    def login() -> str:
        loaded_at_start.append(is_loaded(get_session_of_flask()))
        session["user"] = "alice"
        return "ok"

    @app.get("/read")
    def read() -> str:
        loaded_at_start.append(is_loaded(get_session_of_flask()))
        return str(session.get("user"))

    @app.get("/write")
    def write() -> str:
        loaded_at_start.append(is_loaded(get_session_of_flask()))
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    @app.get("/untouched")
    def untouched() -> str:
        loaded_at_start.append(is_loaded(get_session_of_flask()))
        return "static"

    @app.get("/boom")
    def boom() -> str:
        raise LookupError("a bug in the view")

    return app, loaded_at_start


def is_loaded(session: Session) -> bool:
    """Whether the session's data is here: it was never deferred, or its answer has been read."""
    return not isinstance(session, DeferredSession) or session.loaded


def get_session_of_flask() -> Session:
    """The middleware's session object itself (``loaded`` does not load it)."""
    from flask import request

    found = request.environ["persession.session"]
    assert isinstance(found, Session)
    return found


def logged_in(client: Client) -> str:
    """Log in; the cookie is returned and every request passes it itself (the client's jar is off)."""
    response = client.get("/login")
    assert response.status_code == 200
    return cookie_of(response)


def test_flask_sees_its_session_loaded_at_the_first_use(store: RedisStore) -> None:
    app, loaded_at_start = flask_app(store)
    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    assert client.get("/read", environ_overrides={"HTTP_COOKIE": cookie}).text == "alice"
    assert client.get("/write", environ_overrides={"HTTP_COOKIE": cookie}).text == "1"
    assert client.get("/write", environ_overrides={"HTTP_COOKIE": cookie}).text == "2"
    assert loaded_at_start == [True, False, False, False], "no cookie: nothing to load; with one: loaded at first use"
    assert busy_connections(store) == 0


def test_untouched_route_reads_the_answer_and_gives_the_connection_back(store: RedisStore, raw: redis.Redis) -> None:
    app, _ = flask_app(store)
    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    before = command_calls(raw, "hgetall")
    response = client.get("/untouched", environ_overrides={"HTTP_COOKIE": cookie})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    assert command_calls(raw, "hgetall") - before == 1
    assert busy_connections(store) == 0


def test_rolling_refreshes_the_expiry_in_the_prefetched_load(store: RedisStore, raw: redis.Redis) -> None:
    app, _ = flask_app(store, rolling=True, idle_timeout=600)
    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    keys = list(raw.scan_iter(match=f"{store.prefix}*"))
    assert len(keys) == 1
    raw.pexpire(keys[0], 100_000)
    before = command_calls(raw, "evalsha")
    response = client.get("/untouched", environ_overrides={"HTTP_COOKIE": cookie})
    assert response.status_code == 200
    assert raw.pttl(keys[0]) > 500_000
    assert command_calls(raw, "evalsha") - before == 1, "one script: the load that refreshes, no touch after it"
    assert busy_connections(store) == 0


def test_a_view_that_raises_gives_the_connection_back(store: RedisStore) -> None:
    app, _ = flask_app(store)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    with pytest.raises(LookupError):
        client.get("/boom", environ_overrides={"HTTP_COOKIE": cookie})
    assert busy_connections(store) == 0


def _generator_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield str(get_session(environ).get("user")).encode()


def test_a_generator_closed_unread_gives_the_connection_back(store: RedisStore) -> None:
    app, _ = flask_app(store)
    cookie = logged_in(Client(app, use_cookies=False))
    middleware = SessionMiddleware(_generator_app, secret=SECRET, store=store)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "HTTP_COOKIE": cookie,
    }
    result = middleware(environ, lambda status, headers, exc_info=None: None)
    assert busy_connections(store) == 1, "the load is sent and its answer not read yet"
    result.close()  # type: ignore[attr-defined]  # the server gives up before iterating
    assert busy_connections(store) == 0
    assert isinstance(environ["persession.session"], Session)
    assert is_loaded(environ["persession.session"])


def test_websocket_upgrade_requests_load_at_once(store: RedisStore) -> None:
    app, _ = flask_app(store)
    cookie = logged_in(Client(app, use_cookies=False))
    seen: list[Session] = []

    def ws_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(environ["persession.session"])
        assert is_loaded(environ["persession.session"]), "read-only websocket sessions are loaded before the app"
        start_response("200 OK", [])
        return [b""]

    client = Client(SessionMiddleware(ws_app, secret=SECRET, store=store), use_cookies=False)
    client.get(
        "/", headers={"Upgrade": "websocket", "Connection": "Upgrade"}, environ_overrides={"HTTP_COOKIE": cookie}
    )
    assert seen[0]["user"] == "alice"
    assert busy_connections(store) == 0


def request_while_redis_dies(
    dying: tuple[RedisServer, RedisStore], path: str, crash: str, *, pause_writes_only: bool = False
) -> TestResponse:
    """Log in, pause Redis so what the request sends gets no answer, then request ``path`` with the ``crash`` header.

    The ``X-Crash`` header kills the server before the view runs (the load is
    sent); ``X-Crash-Late`` kills it at teardown (the write is sent). With
    ``pause_writes_only`` reads are still answered.
    """
    server, store = dying
    app, _ = flask_app(store, crash=server)
    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    with server.client() as control:
        control.client_pause(60_000, all=not pause_writes_only)
    return client.get(path, headers={crash: "1"}, environ_overrides={"HTTP_COOKIE": cookie})


def test_store_dead_with_the_answer_pending_answers_503_at_the_first_use(
    dying: tuple[RedisServer, RedisStore],
) -> None:
    response = request_while_redis_dies(dying, "/read", "X-Crash")  # the load is sent, never answered
    assert response.status_code == 503
    assert "Traceback" not in response.text
    assert response.headers["Retry-After"]
    assert busy_connections(dying[1]) == 0


def test_untouched_route_answers_while_the_store_dies_with_the_answer_pending(
    dying: tuple[RedisServer, RedisStore],
) -> None:
    response = request_while_redis_dies(dying, "/untouched", "X-Crash")
    assert response.status_code == 200
    assert response.text == "static"
    assert "Set-Cookie" not in response.headers
    assert busy_connections(dying[1]) == 0


def test_a_write_is_confirmed_before_the_response_goes_out(store: RedisStore, raw: redis.Redis) -> None:
    app, _ = flask_app(store)
    in_flight: list[int] = []

    @app.teardown_request
    def count_in_flight(_: BaseException | None) -> None:  # after start_response, before the body goes out
        in_flight.append(busy_connections(store))

    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    before = command_calls(raw, "evalsha")
    response = client.get("/write", environ_overrides={"HTTP_COOKIE": cookie})
    assert response.status_code == 200
    assert response.text == "1"
    assert in_flight == [0, 1], "login saves at once; the merge is sent, its answer read after teardown"
    assert command_calls(raw, "evalsha") - before == 1
    assert busy_connections(store) == 0
    assert client.get("/write", environ_overrides={"HTTP_COOKIE": cookie}).text == "2"


def test_a_write_lost_after_start_response_answers_503(dying: tuple[RedisServer, RedisStore]) -> None:
    # writes wait (the merge's EVALSHA); the load is answered
    response = request_while_redis_dies(dying, "/write", "X-Crash-Late", pause_writes_only=True)
    assert response.status_code == 503, "the write failed: not the view's 200"
    assert "Set-Cookie" not in response.headers
    assert "Traceback" not in response.text
    assert busy_connections(dying[1]) == 0


def _writing_app(body: Callable[[Callable[[bytes], object]], list[bytes]]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = get_session(environ)
        session["visits"] = session.get("visits", 0) + 1
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        return body(write)

    return app


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(lambda write: [b"body"], b"body", id="iterable"),
        pytest.param(lambda write: [], b"", id="empty"),
        pytest.param(lambda write: (write(b"written"), [])[1], b"written", id="write()"),
    ],
)
def test_every_way_of_answering_confirms_the_write(
    store: RedisStore, raw: redis.Redis, body: Callable[[Callable[[bytes], object]], list[bytes]], expected: bytes
) -> None:
    app, _ = flask_app(store)
    cookie = logged_in(Client(app, use_cookies=False))
    client = Client(SessionMiddleware(_writing_app(body), secret=SECRET, store=store), use_cookies=False)
    response = client.get("/", environ_overrides={"HTTP_COOKIE": cookie})
    assert response.status_code == 200
    assert response.data == expected
    assert busy_connections(store) == 0
    again = client.get("/", environ_overrides={"HTTP_COOKIE": cookie})
    assert again.status_code == 200
    assert busy_connections(store) == 0
    (key,) = raw.scan_iter(match=f"{store.prefix}*")
    assert raw.hget(key, ".visits") == b"2", "both writes were carried out"


def test_an_app_raising_after_start_response_gives_the_write_connection_back(store: RedisStore) -> None:
    app, _ = flask_app(store)
    cookie = logged_in(Client(app, use_cookies=False))

    def raising(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["visits"] = 1
        start_response("200 OK", [])
        raise LookupError("after start_response")

    client = Client(SessionMiddleware(raising, secret=SECRET, store=store), use_cookies=False)
    with pytest.raises(LookupError):
        client.get("/", environ_overrides={"HTTP_COOKIE": cookie})
    assert busy_connections(store) == 0


def test_flask_sends_the_write_from_save_session(store: RedisStore) -> None:
    from flask import request_finished

    app, _ = flask_app(store)
    sent_by_then: list[int] = []

    def finished(sender: Flask, response: Any, **extra: Any) -> None:  # after save_session, before start_response
        sent_by_then.append(busy_connections(store))

    client = Client(app, use_cookies=False)
    cookie = logged_in(client)
    with request_finished.connected_to(finished, app):
        assert client.get("/write", environ_overrides={"HTTP_COOKIE": cookie}).text == "1"
        assert client.get("/read", environ_overrides={"HTTP_COOKIE": cookie}).text == "alice"
    assert sent_by_then == [1, 0], "the merge is on its way before Werkzeug builds the WSGI response; a read sends none"
    assert busy_connections(store) == 0


def _call(app: Callable[..., Any], cookie: str) -> tuple[list[tuple[str, list[tuple[str, str]], Any]], bytes]:
    """Call a WSGI app as a server would; the ``start_response`` calls it got, and the body."""
    calls_made: list[tuple[str, list[tuple[str, str]], Any]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        calls_made.append((status, headers, exc_info))
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "HTTP_COOKIE": cookie,
    }
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return calls_made, body


def test_a_response_replaced_before_its_first_byte_starts_once_with_the_replacement(
    store: RedisStore, raw: redis.Redis
) -> None:
    flask, _ = flask_app(store)
    cookie = logged_in(Client(flask, use_cookies=False))

    def replacing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["visits"] = 5
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise LookupError("found a problem before the body")
        except LookupError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]

    started, body = _call(SessionMiddleware(replacing, secret=SECRET, store=store), cookie)
    assert [status for status, _, _ in started] == ["500 Internal Server Error"], (
        "the server saw one start, the replacement"
    )
    assert started[0][2] is not None, "with the exc_info the application gave"
    assert body == b"replaced"
    assert busy_connections(store) == 0
    (key,) = raw.scan_iter(match=f"{store.prefix}*")
    assert raw.hget(key, ".visits") == b"5", "the write sent at the first start_response was carried out"


def test_a_write_that_fails_while_the_app_raises_is_logged_and_the_connection_freed(
    dying: tuple[RedisServer, RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    server, store = dying
    flask, _ = flask_app(store)
    cookie = logged_in(Client(flask, use_cookies=False))

    def raising(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_session(environ)["visits"] = 1
        with server.client() as control:
            control.client_pause(60_000, all=False)  # the merge waits
        start_response("200 OK", [])
        server.kill()
        raise LookupError("after start_response")

    with caplog.at_level(logging.ERROR, logger="persession"), pytest.raises(LookupError):
        _call(SessionMiddleware(raising, secret=SECRET, store=store), cookie)
    assert busy_connections(store) == 0
    assert "unavailable" in caplog.text.lower()

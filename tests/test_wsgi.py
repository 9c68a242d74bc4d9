"""The WSGI middleware in process: a real Flask app (and plain WSGI apps), driven by Werkzeug's test client."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.test import Client, TestResponse

from _http import session_cookie
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from persession import ConfigError, Record, SessionConfig, SessionNotAvailable, SessionReadOnly, StoreUnavailable
from persession.records import Change
from persession.signing import ItsdangerousSigner, new_session_id
from persession.stores import AsyncMemoryStore, MemoryStore
from persession.wsgi import SessionMiddleware, get_session

SECRET = "test-secret"
UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"


class CountingStore:
    """A real MemoryStore that counts each verb's calls and fails the verbs listed in ``failing``."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
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

    def writes(self) -> int:
        return self.calls["save"] + self.calls["merge"] + self.calls["touch"] + self.calls["delete"]


# -- the applications ------------------------------------------------------------


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/set")
    def set_key() -> Response:
        get_session(request.environ)[request.args["key"]] = request.args.get("value", "")
        return jsonify({"ok": True})

    @app.get("/get")
    def get_all() -> Response:
        return jsonify({"session": dict(get_session(request.environ))})

    @app.get("/counter")
    def counter() -> Response:
        session = get_session(request.environ)
        session["counter"] = session.get("counter", 0) + 1
        return jsonify({"counter": session["counter"]})

    @app.get("/logout")
    def logout() -> Response:
        get_session(request.environ).destroy()
        return jsonify({"ok": True})

    @app.get("/static")
    def static_page() -> str:
        return "no session here"

    @app.get("/static-vary")
    def static_vary() -> tuple[str, dict[str, str]]:
        return "no session here", {"Vary": "Accept-Encoding"}

    @app.get("/get-vary")
    def get_vary() -> tuple[Response, dict[str, str]]:
        return jsonify({"session": dict(get_session(request.environ))}), {"Vary": "Accept-Encoding"}

    @app.get("/try-write")
    def try_write() -> Response:
        try:
            get_session(request.environ)["written"] = True
        except SessionReadOnly as error:
            return jsonify({"refused": type(error).__name__})
        return jsonify({"refused": None})

    @app.get("/crash")
    def crash() -> tuple[str, int]:
        get_session(request.environ)["crashed"] = True
        return "boom", 500

    return app


def middleware(store: Any, app: Any = None, **options: Any) -> SessionMiddleware:
    options.setdefault("secret", SECRET)
    return SessionMiddleware(app if app is not None else flask_app(), store=store, **options)


def lazy_counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """A generator app: nothing, not even ``start_response``, runs until the server iterates it."""
    session = get_session(environ)
    session["counter"] = session.get("counter", 0) + 1
    body = str(session["counter"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    yield body


def raising_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A plain WSGI app whose own store call fails before it responds."""
    get_session(environ)["about to"] = "fail"
    raise StoreUnavailable("the application's own store call failed")


# -- helpers ----------------------------------------------------------------------


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def serve(app: Any) -> Callable[..., TestResponse]:
    """A ``get(path, cookie=None)`` for ``app``; the cookie is sent exactly as given, nothing else is."""
    client = Client(app, use_cookies=False)

    def get(path: str, cookie: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> TestResponse:
        response = client.get(path, headers=[*headers, *([] if cookie is None else [("Cookie", cookie)])])
        response.close()
        return response

    return get


def sid_of(cookie: str, secret: str = SECRET) -> str | None:
    unsigned = ItsdangerousSigner([secret.encode()]).unsign(cookie)
    return None if unsigned is None else unsigned.sid


def new_session(get: Callable[..., TestResponse], **data: str) -> str:
    """Create a session holding ``data`` and return its cookie value."""
    cookie = None
    for key, value in data.items():
        response = get(f"/set?key={key}&value={value}", cookie and f"session={cookie}")
        assert response.status_code == 200
        cookie = session_cookie(response) or cookie
    assert cookie is not None
    return cookie


def assert_unavailable(response: TestResponse) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.data == UNAVAILABLE_BODY
    assert b"Traceback" not in response.data
    assert session_cookie(response) is None


# -- what is and is not written -------------------------------------------------------


def test_untouched_request_without_cookie_calls_no_store_and_sets_no_cookie(store: CountingStore) -> None:
    """A request without a cookie whose app never touches the session makes no store call and sets no cookie."""
    response = serve(middleware(store))("/static")
    assert response.status_code == 200
    assert response.data == b"no session here"
    assert sum(store.calls.values()) == 0
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


def test_untouched_request_with_cookie_only_loads(store: CountingStore) -> None:
    """A request with a session cookie whose app never touches the session writes nothing and sets no cookie."""
    get = serve(middleware(store))
    cookie = new_session(get, a="1")
    store.calls.clear()
    response = get("/static", f"session={cookie}")
    assert response.status_code == 200
    assert store.calls == Counter(load=1)
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


def test_new_session_only_read_is_not_saved(store: CountingStore) -> None:
    """A new session the app reads but never writes is not saved and gets no cookie."""
    response = serve(middleware(store))("/get")
    assert response.get_json() == {"session": {}}
    assert store.writes() == 0
    assert len(store.inner) == 0
    assert "Set-Cookie" not in response.headers


def test_written_new_session_is_saved_once(store: CountingStore) -> None:
    """A new session the app writes is saved with one store call and gets a signed cookie naming it."""
    response = serve(middleware(store))("/set?key=colour&value=blue")
    cookie = session_cookie(response)
    assert cookie is not None
    sid = sid_of(cookie)
    assert sid is not None
    assert store.calls == Counter(save=1)
    record = store.inner.load(sid)
    assert record is not None
    assert record.data == {"colour": "blue"}


def test_unchanged_session_is_not_rewritten_without_resave(store: CountingStore) -> None:
    """With resave=False a read-only request on an existing session makes no save or merge call."""
    get = serve(middleware(store))
    cookie = new_session(get, colour="blue")
    store.calls.clear()
    response = get("/get", f"session={cookie}")
    assert response.get_json() == {"session": {"colour": "blue"}}
    assert store.calls["save"] == 0
    assert store.calls["merge"] == 0
    assert store.writes() == 0
    assert session_cookie(response) is None


def test_unchanged_session_is_rewritten_with_resave(store: CountingStore) -> None:
    """With resave=True a read-only request on an existing session writes the whole session back once."""
    get = serve(middleware(store, resave=True))
    cookie = new_session(get, colour="blue")
    store.calls.clear()
    response = get("/get", f"session={cookie}")
    assert response.get_json() == {"session": {"colour": "blue"}}
    assert store.calls["save"] + store.calls["merge"] == 1
    sid = sid_of(cookie)
    assert sid is not None
    record = store.inner.load(sid)
    assert record is not None
    assert record.data == {"colour": "blue"}


def test_changed_session_merges_only_into_its_record(store: CountingStore) -> None:
    """Counting across requests merges each change into the one stored record."""
    get = serve(middleware(store))
    first = get("/counter")
    cookie = session_cookie(first)
    assert cookie is not None
    counts = [get("/counter", f"session={cookie}").get_json()["counter"] for _ in range(3)]
    assert first.get_json() == {"counter": 1}
    assert counts == [2, 3, 4]
    assert store.calls["save"] == 1
    assert store.calls["merge"] == 3
    assert len(store.inner) == 1


# -- Vary -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "vary"),
    [
        pytest.param("/static", None, id="not read: no Vary"),
        pytest.param("/get", "Cookie", id="read: Vary Cookie"),
        pytest.param("/static-vary", "Accept-Encoding", id="not read: app's Vary untouched"),
        pytest.param("/get-vary", "Accept-Encoding, Cookie", id="read: Cookie merged into app's Vary"),
    ],
)
def test_vary_cookie_iff_session_read(store: CountingStore, path: str, vary: str | None) -> None:
    """``Vary: Cookie`` is sent exactly when the session was read, merged into the app's own Vary header."""
    get = serve(middleware(store))
    cookie = new_session(get, a="1")
    response = get(path, f"session={cookie}")
    assert response.status_code == 200
    assert response.headers.getlist("Vary") == ([] if vary is None else [vary])


# -- secret rotation --------------------------------------------------------------------


def test_cookie_signed_by_old_secret_is_accepted_and_reissued(store: CountingStore) -> None:
    """A cookie signed by an older secret still opens its session, and comes back signed by the newest."""
    old_cookie = new_session(serve(middleware(store, secret="old")), colour="blue")
    old_sid = sid_of(old_cookie, "old")
    assert old_sid is not None
    assert sid_of(old_cookie, "new") is None

    response = serve(middleware(store, secret=["new", "old"]))("/get", f"session={old_cookie}")
    assert response.status_code == 200
    assert response.get_json() == {"session": {"colour": "blue"}}
    reissued = session_cookie(response)
    assert reissued is not None
    unsigned = ItsdangerousSigner([b"new"]).unsign(reissued)
    assert unsigned is not None
    assert unsigned.sid == old_sid
    assert not unsigned.stale
    assert ItsdangerousSigner([b"old"]).unsign(reissued) is None


# -- bad cookies: client input never errors, never adopts the client's id -------------------


def _tampered(cookie: str) -> str:
    # Change the id's first character: every bit of it is covered by the signature.
    return f"session={'B' if cookie[0] == 'A' else 'A'}{cookie[1:]}"


# WSGI servers hand the Cookie header over as Latin-1 text, so non-UTF-8 bytes arrive as such characters.
BAD_COOKIES = [
    pytest.param(_tampered, id="tampered"),
    pytest.param(lambda cookie: f"session={cookie[: len(cookie) // 2]}", id="truncated"),
    pytest.param(lambda cookie: f"session={cookie[:20]}" + b"\xff\xfe\xc3(".decode("latin-1"), id="not UTF-8"),
    pytest.param(lambda cookie: f"session={cookie}{'A' * 5000}", id="oversized"),
    pytest.param(lambda cookie: f"{_tampered(cookie)}; session={cookie[:30]}", id="duplicated, none verifies"),
    pytest.param(
        lambda cookie: f"session={ItsdangerousSigner([SECRET.encode()]).sign(new_session_id())}",
        id="validly signed unknown id",
    ),
]


@pytest.mark.parametrize("make_cookie", BAD_COOKIES)
def test_bad_cookie_gets_a_fresh_session_under_a_new_id(
    store: CountingStore, make_cookie: Callable[[str], str]
) -> None:
    """A bad cookie gets a fresh, empty session under a new server-made id, never the client's."""
    get = serve(middleware(store))
    victim = new_session(get, colour="blue")
    bad = make_cookie(victim)
    response = get("/counter", bad)
    assert response.status_code == 200
    assert response.get_json() == {"counter": 1}
    cookie = session_cookie(response)
    assert cookie is not None
    sid = sid_of(cookie)
    assert sid is not None
    assert sid != sid_of(victim)
    assert sid not in bad
    stored = store.inner.load(sid)
    assert stored is not None
    assert stored.data == {"counter": 1}
    victim_sid = sid_of(victim)
    assert victim_sid is not None
    victim_record = store.inner.load(victim_sid)
    assert victim_record is not None
    assert victim_record.data == {"colour": "blue"}


@pytest.mark.parametrize("make_cookie", BAD_COOKIES)
def test_bad_cookie_logs_one_security_warning(
    store: CountingStore, make_cookie: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A bad cookie is logged once, as a WARNING on the persession.security logger."""
    get = serve(middleware(store))
    victim = new_session(get, colour="blue")
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="persession.security")
    response = get("/counter", make_cookie(victim))
    assert response.status_code == 200
    security = [r for r in caplog.records if r.name == "persession.security"]
    assert [r.levelno for r in security] == [logging.WARNING]
    assert victim not in security[0].getMessage()


# -- server errors and store outages ---------------------------------------------------------


def test_no_save_after_a_500(store: CountingStore) -> None:
    """A 500 response saves nothing: no new session, and an existing one keeps its data."""
    get = serve(middleware(store))
    fresh = get("/crash")
    cookie = new_session(get, colour="blue")
    store.calls.clear()
    existing = get("/crash", f"session={cookie}")
    after = get("/get", f"session={cookie}")
    assert fresh.status_code == 500
    assert session_cookie(fresh) is None
    assert existing.status_code == 500
    assert session_cookie(existing) is None
    assert store.calls["save"] == store.calls["merge"] == 0
    assert after.get_json() == {"session": {"colour": "blue"}}


@pytest.mark.parametrize(
    ("failing", "path", "with_cookie"),
    [
        pytest.param("load", "/counter", True, id="load fails, app uses the session"),
        pytest.param("save", "/counter", False, id="saving a new session fails"),
        pytest.param("merge", "/counter", True, id="merging a change fails"),
        pytest.param("delete", "/logout", True, id="deleting on logout fails"),
    ],
)
def test_store_failure_answers_503_then_recovers(
    store: CountingStore, failing: str, path: str, with_cookie: bool
) -> None:
    """A store failure under Flask gives 503 with Retry-After and no traceback; once back, the session works."""
    get = serve(middleware(store))
    cookie = new_session(get, colour="blue")
    store.failing = {failing}
    response = get(path, f"session={cookie}" if with_cookie else None)
    store.failing = set()
    recovered = get("/get", f"session={cookie}")
    assert_unavailable(response)
    assert recovered.status_code == 200
    assert recovered.get_json() == {"session": {"colour": "blue"}}


def test_app_raising_store_error_itself_answers_503(store: CountingStore) -> None:
    """A WSGI app that lets its own StoreError escape gets the 503, and nothing is saved."""
    response = serve(middleware(store, app=raising_app))("/")
    assert_unavailable(response)
    assert store.writes() == 0


def test_untouched_route_answers_200_while_the_store_is_down(store: CountingStore) -> None:
    """A route that never touches the session answers normally while every store call fails."""
    get = serve(middleware(store))
    cookie = new_session(get, a="1")
    store.failing = {"load", "save", "merge", "touch", "delete"}
    for response in (get("/static", f"session={cookie}"), get("/static")):
        assert response.status_code == 200
        assert response.data == b"no session here"
        assert "Set-Cookie" not in response.headers


# -- websocket upgrades --------------------------------------------------------------------------


def test_websocket_upgrade_request_gets_a_read_only_session(store: CountingStore) -> None:
    """A request with ``Upgrade: websocket`` can read its session but writing raises SessionReadOnly."""
    get = serve(middleware(store))
    cookie = new_session(get, colour="blue")
    store.calls.clear()
    upgrade = get("/try-write", f"session={cookie}", headers=(("Upgrade", "websocket"),))
    plain = get("/get", f"session={cookie}")
    assert upgrade.get_json() == {"refused": "SessionReadOnly"}
    assert session_cookie(upgrade) is None
    assert store.writes() == 0
    assert plain.get_json() == {"session": {"colour": "blue"}}


# -- start_response called lazily, from inside the body ------------------------------------------


def test_lazy_start_response_in_generator_sets_the_cookie(store: CountingStore) -> None:
    """An app that calls start_response from inside its generator body still gets its session saved and cookie set."""
    get = serve(middleware(store, app=lazy_counter))
    first = get("/")
    cookie = session_cookie(first)
    assert cookie is not None
    second = get("/", f"session={cookie}")
    assert (first.status_code, first.data) == (200, b"1")
    assert (second.status_code, second.data) == (200, b"2")
    assert "Cookie" in first.headers["Vary"]
    assert store.calls["save"] == 1
    assert store.calls["merge"] == 1


@pytest.mark.parametrize(
    ("failing", "with_cookie"),
    [
        pytest.param("load", True, id="load fails, the generator uses the session"),
        pytest.param("save", False, id="saving a new session fails"),
        pytest.param("merge", True, id="merging a change fails"),
    ],
)
def test_lazy_start_response_store_failure_answers_503(store: CountingStore, failing: str, with_cookie: bool) -> None:
    """A store failure in an app that starts its response lazily gives the 503, then recovers."""
    get = serve(middleware(store, app=lazy_counter))
    cookie = session_cookie(get("/"))
    assert cookie is not None
    store.failing = {failing}
    response = get("/", f"session={cookie}" if with_cookie else None)
    store.failing = set()
    recovered = get("/", f"session={cookie}")
    assert_unavailable(response)
    assert recovered.data == b"2"


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        pytest.param({"secret": SECRET, "colour": "blue"}, "colour", id="unknown option"),
        pytest.param({"secret": SECRET, "config": SessionConfig(secret=SECRET)}, "config", id="config and secret"),
        pytest.param({"config": SessionConfig(secret=SECRET), "rolling": True}, "config", id="config and options"),
        pytest.param({"secret": SECRET, "store": AsyncMemoryStore()}, "store", id="async store"),
        pytest.param({}, "secret", id="no secret"),
        pytest.param({"secret": SECRET, "max_age": -1}, "max_age", id="bad option value"),
    ],
)
def test_bad_configuration_raises_config_error_naming_the_option(kwargs: dict[str, Any], option: str) -> None:
    """A bad middleware configuration raises ConfigError naming the offending option."""
    kwargs.setdefault("store", MemoryStore())
    with pytest.raises(ConfigError) as caught:
        SessionMiddleware(flask_app().wsgi_app, **kwargs)
    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}:")


def test_config_object_is_accepted(store: CountingStore) -> None:
    """A SessionConfig given as config= configures the middleware as keyword options would."""
    get = serve(SessionMiddleware(flask_app(), config=SessionConfig(secret=SECRET, cookie_name="sid"), store=store))
    response = get("/set?key=a&value=1")
    assert any(h.startswith("sid=") for h in response.headers.getlist("Set-Cookie"))


@pytest.mark.parametrize(("given", "sent"), [("Strict", "SameSite=Strict"), ("LAX", "SameSite=Lax")])
def test_samesite_in_any_case_sets_the_attribute(store: CountingStore, given: str, sent: str) -> None:
    """samesite="Strict" (any case) is accepted and the cookie carries the attribute."""
    response = serve(middleware(store, samesite=given))("/set?key=a&value=1")
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert len(cookies) == 1
    assert sent in [part.strip() for part in cookies[0].split(";")]


def test_get_session_without_middleware_raises_session_not_available() -> None:
    """get_session() on an environ no middleware prepared raises SessionNotAvailable with a hint."""
    with pytest.raises(SessionNotAvailable) as caught:
        get_session({"REQUEST_METHOD": "GET"})
    assert "SessionMiddleware" in caught.value.hint


def test_get_session_in_unwrapped_flask_app_raises() -> None:
    """A real Flask view calling get_session() without the middleware gets SessionNotAvailable."""
    app = flask_app()
    app.testing = True  # let the view's exception reach the test instead of a 500 page
    with pytest.raises(SessionNotAvailable):
        serve(app)("/get")

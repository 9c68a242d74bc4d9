"""persession.integrations.flask: flask.session is the WSGI middleware's session, with Flask's attributes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, flash, get_flashed_messages, request, session
from flask.sessions import SessionMixin
from flask.testing import FlaskClient

from _http import session_cookie
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from persession import ConfigError, Session, SessionError, SessionNotAvailable, StoreUnavailable
from persession.integrations.flask import (
    FlaskSession,
    MissingSession,
    PersessionInterface,
    get_session,
    init_app,
)
from persession.records import Change, Record
from persession.stores import MemoryStore
from persession.wsgi import ENVIRON_KEY, SessionMiddleware

SECRET = "flask-integration-secret"


class FlakyStore(MemoryStore):
    """A memory store that raises StoreUnavailable from every call while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the test store is down")

    def load(self, sid: str) -> Record | None:
        self._check()
        return super().load(sid)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        self._check()
        return super().load_touch(sid, idle, absolute)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._check()
        super().save(sid, record, replaces=replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        self._check()
        return super().merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        self._check()
        return super().touch(sid, expires)

    def delete(self, sid: str) -> None:
        self._check()
        super().delete(sid)


def build(**options: Any) -> tuple[Flask, FlakyStore]:
    """A Flask app with persession installed by init_app, and a few views over flask.session."""
    app = Flask(__name__)
    app.testing = True  # errors a view raises reach the test, unless an error handler answers them
    store = FlakyStore()
    init_app(app, secret=options.pop("secret", SECRET), store=store, **options)

    @app.get("/")
    def index() -> dict[str, Any]:
        session["visits"] = session.get("visits", 0) + 1
        return {"visits": session["visits"], "new": session.new, "data": dict(session)}

    @app.get("/read")
    def read() -> dict[str, Any]:
        return {"data": dict(session), "new": session.new, "permanent": session.permanent}

    @app.get("/identity")
    def identity() -> dict[str, Any]:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return {
            "same": current is request.environ[ENVIRON_KEY] and current is get_session(),
            "types": [isinstance(current, kind) for kind in (Session, dict, SessionMixin, FlaskSession)],
        }

    @app.get("/regenerate")
    def regenerate() -> dict[str, Any]:
        session.regenerate()  # type: ignore[attr-defined]
        return {"ok": True}

    @app.get("/destroy")
    def destroy() -> dict[str, Any]:
        get_session().destroy()
        return {"ok": True}

    @app.get("/cart/<item>")
    def add_to_cart(item: str) -> dict[str, Any]:
        cart = session.setdefault("cart", [])
        cart.append(item)  # a change inside a value: invisible until marked
        if request.args.get("mark") == "1":
            session.modified = True
        return {"modified": session.modified}

    @app.get("/permanent/<value>")
    def set_permanent(value: str) -> dict[str, Any]:
        session.permanent = value == "true"
        return {"permanent": session.permanent}

    @app.get("/flash")
    def flash_message() -> dict[str, Any]:
        flash("saved")
        return {"ok": True}

    @app.get("/flashes")
    def flashes() -> dict[str, Any]:
        return {"messages": get_flashed_messages()}

    @app.get("/outage")
    def outage() -> dict[str, Any]:
        raise StoreUnavailable("the view's own store call failed")

    return app, store


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    app, _ = build()
    with app.test_client() as test_client:
        yield test_client


def test_flask_session_is_the_middlewares_session(client: FlaskClient) -> None:
    """flask.session, environ["persession.session"] and get_session() are one object: a Session, dict, SessionMixin."""
    assert client.get("/identity").json == {"same": True, "types": [True, True, True, True]}


def test_session_data_survives_between_requests(client: FlaskClient) -> None:
    """Values set on flask.session are stored and read back by the next request; new is True only at first."""
    first = client.get("/").json
    second = client.get("/").json
    assert first is not None
    assert second is not None
    assert (first["visits"], first["new"]) == (1, True)
    assert (second["visits"], second["new"]) == (2, False)
    assert session_cookie(client) is not None


def test_reading_an_unused_session_sets_no_cookie(client: FlaskClient) -> None:
    """A request that only reads an empty session stores nothing and sends no cookie, but Vary: Cookie."""
    response = client.get("/read")
    assert response.json == {"data": {}, "new": True, "permanent": True}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"


def test_regenerate_moves_the_session_to_a_new_cookie(client: FlaskClient) -> None:
    """session.regenerate() on flask.session keeps the data under a new id; the old cookie stops working."""
    client.get("/")
    old = session_cookie(client)
    client.get("/regenerate")
    new = session_cookie(client)
    assert old is not None
    assert new not in (None, old)
    assert client.get("/read").json == {"data": {"visits": 1}, "new": False, "permanent": True}
    client.set_cookie("session", old)
    assert client.get("/read").json == {"data": {}, "new": True, "permanent": True}


def test_destroy_deletes_the_session_and_expires_the_cookie(client: FlaskClient) -> None:
    """get_session().destroy() removes the data and the cookie."""
    client.get("/")
    response = client.get("/destroy")
    assert "session=;" in response.headers["Set-Cookie"]
    assert session_cookie(client) is None
    assert client.get("/read").json == {"data": {}, "new": True, "permanent": True}


def test_modified_true_saves_a_change_inside_a_value(client: FlaskClient) -> None:
    """A list changed in place is saved after session.modified = True, and only then."""
    client.get("/")  # a stored session
    assert client.get("/cart/apple?mark=1").json == {"modified": True}
    assert client.get("/read").json["data"]["cart"] == ["apple"]  # type: ignore[index]
    client.get("/cart/pear")  # in place, not marked: the stored list is unchanged
    assert client.get("/read").json["data"]["cart"] == ["apple"]  # type: ignore[index]


def test_modified_false_with_pending_changes_is_refused() -> None:
    """Setting modified to False is a no-op without changes and a SessionError with pending ones."""
    session = FlaskSession({"a": 1}, id="sid")
    session.modified = False
    session["a"] = 2
    with pytest.raises(SessionError, match="pending changes"):
        session.modified = False
    assert session.modified


def test_permanent_reflects_max_age_and_refuses_the_other_value(client: FlaskClient) -> None:
    """permanent is True with a max_age: setting True is a no-op (nothing stored), False raises SessionError."""
    assert client.get("/permanent/true").json == {"permanent": True}
    assert session_cookie(client) is None  # nothing was written
    with pytest.raises(SessionError, match="max_age=None"):
        client.get("/permanent/false")


def test_browser_session_cookies_make_permanent_false() -> None:
    """With max_age=None sessions report permanent False and refuse permanent = True."""
    app, _ = build(max_age=None)
    with app.test_client() as client:
        assert client.get("/read").json == {"data": {}, "new": True, "permanent": False}
        assert client.get("/permanent/false").json == {"permanent": False}
        with pytest.raises(SessionError, match="a max_age"):
            client.get("/permanent/true")


def test_flash_messages_round_trip(client: FlaskClient) -> None:
    """Flask's flash() and get_flashed_messages() work on persession's session."""
    client.get("/flash")
    assert client.get("/flashes").json == {"messages": ["saved"]}
    assert client.get("/flashes").json == {"messages": []}


def test_store_error_raised_by_a_view_is_a_503() -> None:
    """A StoreError escaping a view answers 503 with Retry-After (the error handler init_app registers)."""
    app, _ = build()  # testing: Flask would re-raise the error if no handler answered it
    with app.test_client() as client:
        response = client.get("/outage")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.data == b"Session store unavailable; please retry shortly.\n"


def test_store_down_when_the_session_loads_is_a_503() -> None:
    """With the store down, a view using flask.session answers 503; one not using it still works."""
    app, store = build()

    @app.get("/static-page")
    def static_page() -> str:
        return "no session here"

    with app.test_client() as client:
        client.get("/")
        store.down = True
        response = client.get("/")
        assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
        assert client.get("/static-page").data == b"no session here"
        store.down = False
        assert client.get("/").json["visits"] == 2  # type: ignore[index]


def test_websocket_guard_option_refuses_a_logged_out_upgrade() -> None:
    """init_app(websocket_guard=True) puts the WSGI guard in front: a websocket upgrade without a login is 401."""
    app, _ = build(websocket_guard=True)
    with app.test_client() as client:
        response = client.get("/", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert (response.status_code, response.data) == (401, b"login required\n")


def test_missing_middleware_gives_a_session_that_refuses_writes() -> None:
    """Outside the middleware (test_request_context) flask.session reads empty and refuses writes, naming init_app."""
    app, _ = build()
    with app.test_request_context("/"):
        assert isinstance(session._get_current_object(), MissingSession)  # type: ignore[attr-defined]
        assert session.get("user") is None
        with pytest.raises(SessionNotAvailable, match="init_app"):
            session["user"] = "alice"
        with pytest.raises(SessionNotAvailable, match="not persession's"):
            get_session()


def test_get_session_needs_a_request() -> None:
    """get_session() outside a request raises SessionNotAvailable."""
    with pytest.raises(SessionNotAvailable, match="no request context"):
        get_session()


def test_interface_installed_by_hand_with_the_middleware() -> None:
    """PersessionInterface works with a SessionMiddleware the application installed itself, building its sessions."""
    app = Flask(__name__)
    interface = PersessionInterface(permanent=False)
    app.wsgi_app = SessionMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, secret=SECRET, store=MemoryStore(), max_age=None, session_class=interface.session_class
    )
    app.session_interface = interface

    @app.get("/")
    def index() -> dict[str, Any]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"], "permanent": session.permanent}

    with app.test_client() as client:
        assert [client.get("/").json for _ in range(2)] == [{"n": 1, "permanent": False}, {"n": 2, "permanent": False}]


def test_interface_over_a_middleware_of_plain_sessions_names_the_fix() -> None:
    """A middleware building plain Sessions gives Flask the MissingSession, whose error names session_class."""
    app = Flask(__name__)
    app.wsgi_app = SessionMiddleware(app.wsgi_app, secret=SECRET, store=MemoryStore())  # type: ignore[method-assign]
    app.session_interface = PersessionInterface()
    seen: list[str] = []

    @app.get("/")
    def index() -> str:
        try:
            session["n"] = 1
        except SessionNotAvailable as error:
            seen.append(str(error))
        return "ok"

    with app.test_client() as client:
        assert client.get("/").status_code == 200
    assert len(seen) == 1
    assert "session_class" in seen[0]


def test_secret_defaults_to_the_apps_secret_key_and_fallbacks() -> None:
    """Without secret=, init_app signs with SECRET_KEY and accepts cookies signed with SECRET_KEY_FALLBACKS."""
    store = MemoryStore()
    old_app = Flask(__name__)
    old_app.config["SECRET_KEY"] = "old-key"
    init_app(old_app, store=store)

    @old_app.get("/")
    def set_user() -> str:
        session["user"] = "alice"
        return "ok"

    new_app = Flask(__name__)
    new_app.config.update(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    init_app(new_app, store=store)

    @new_app.get("/")
    def get_user() -> dict[str, Any]:
        return {"user": session.get("user")}

    with old_app.test_client() as client:
        client.get("/")
        cookie = session_cookie(client)
    assert cookie is not None
    with new_app.test_client() as client:
        client.set_cookie("session", cookie)
        assert client.get("/").json == {"user": "alice"}


NO_SECRET = (
    "secret: a secret is required to sign session ids: pass init_app(app, secret=...) or set"
    ' app.config["SECRET_KEY"] (and SECRET_KEY_FALLBACKS for rotation)'
)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="no SECRET_KEY"),
        pytest.param({"SECRET_KEY": ""}, id="empty SECRET_KEY"),
        pytest.param({"SECRET_KEY": None, "SECRET_KEY_FALLBACKS": ["old-key"]}, id="fallbacks without SECRET_KEY"),
    ],
)
def test_init_app_without_a_secret_names_what_it_reads(config: dict[str, Any]) -> None:
    """Without secret= nor SECRET_KEY, the ConfigError names the option and the app settings init_app reads."""
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigError) as caught:
        init_app(app, store=MemoryStore())
    assert caught.value.option == "secret"
    assert str(caught.value) == NO_SECRET
    assert "persession" not in app.extensions  # nothing half-installed


def test_init_app_needs_a_secret_and_runs_once() -> None:
    """init_app without any secret, or twice on one app, raises ConfigError naming the problem."""
    with pytest.raises(ConfigError, match="secret"):
        init_app(Flask(__name__), store=MemoryStore())
    app = Flask(__name__)
    middleware = init_app(app, secret=SECRET, store=MemoryStore())
    assert app.extensions["persession"] is middleware
    assert app.wsgi_app is middleware
    with pytest.raises(ConfigError, match="already"):
        init_app(app, secret=SECRET, store=MemoryStore())


def test_import_persession_does_not_import_flask() -> None:
    """import persession (and its middlewares) never imports Flask or the Flask integration."""
    probe = (
        "import sys, persession, persession.wsgi, persession.asgi, persession.guard; "
        "print(sorted(m for m in ('flask', 'persession.integrations.flask') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""persession behind real servers over sockets: uvicorn + Starlette and gunicorn + Flask, each on a SQLite file."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from _http import session_cookie
from _servers import ServerProcess, gunicorn_server, uvicorn_server
from persession.signing import ItsdangerousSigner, new_session_id
from persession.stores import SqliteStore

pytestmark = pytest.mark.server

SECRET = "e2e-secret"
TIMEOUT = 30.0
UVICORN = ("uvicorn", "starlette_app:app")
GUNICORN = ("gunicorn", "flask_app:app")
FLAVOURS = [pytest.param(UVICORN, id="uvicorn-starlette"), pytest.param(GUNICORN, id="gunicorn-flask")]

Flavour = tuple[str, str]


def server_for(flavour: Flavour, store_url: str) -> ServerProcess:
    """A server of ``flavour`` (not started) whose app keeps sessions at ``store_url``."""
    kind, app = flavour
    env = {"PERSESSION_TEST_STORE": store_url, "PERSESSION_TEST_SECRET": SECRET, "PERSESSION_TEST_OPTIONS": "{}"}
    make = uvicorn_server if kind == "uvicorn" else gunicorn_server
    return make(app, env=env)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@contextlib.contextmanager
def running(flavour: Flavour, db: Path) -> Iterator[ServerProcess]:
    """A started server of ``flavour`` on the SQLite file ``db``, always stopped on exit."""
    with server_for(flavour, sqlite_url(db)) as server:
        yield server


def get_with(url: str, cookie: str | None = None) -> httpx.Response:
    """One request from a fresh client that sends exactly ``cookie`` and nothing else."""
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    with httpx.Client(timeout=TIMEOUT) as client:
        return client.get(url, headers=headers)


def sid_of(cookie: str) -> str:
    unsigned = ItsdangerousSigner([SECRET.encode()]).unsign(cookie)
    assert unsigned is not None
    return unsigned.sid


def stored_data(db: Path, cookie: str) -> dict[str, object] | None:
    """What the SQLite file holds for the session ``cookie`` names, read by the test process itself."""
    store = SqliteStore(db)
    try:
        record = store.load(sid_of(cookie))
    finally:
        store.close()
    return None if record is None else record.data


@pytest.fixture(scope="module", params=FLAVOURS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    """One server per flavour for the tests that need nothing special of it, with its SQLite file."""
    db = tmp_path_factory.mktemp("shared") / "sessions.db"
    with running(request.param, db) as server:
        yield server, db


# -- one server ----------------------------------------------------------------------


def test_counter_increments_across_requests(shared: tuple[ServerProcess, Path]) -> None:
    """A client with a cookie jar sees its counter go up request after request, stored in the SQLite file."""
    server, db = shared
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        counts = [client.get("/counter").json()["counter"] for _ in range(4)]
        cookie = client.cookies["session"]
    assert counts == [1, 2, 3, 4]
    assert stored_data(db, cookie) == {"counter": 4}


def test_login_regenerates_the_session_id(shared: tuple[ServerProcess, Path]) -> None:
    """Logging in moves the session to a new id with its data; the old cookie no longer opens it."""
    server, db = shared
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        before = session_cookie(client.get("/set", params={"key": "colour", "value": "blue"}))
        login = client.get("/login", params={"user": "alice"})
        after = session_cookie(login)
        data = client.get("/get").json()["session"]
    assert login.status_code == 200
    assert before is not None
    assert after is not None
    assert sid_of(after) != sid_of(before)
    assert data == {"colour": "blue", "user": "alice"}
    assert get_with(f"{server.url}/get", before).json()["session"] == {}
    assert stored_data(db, before) is None
    assert stored_data(db, after) == {"colour": "blue", "user": "alice"}


def test_logout_expires_the_cookie_and_deletes_the_session(shared: tuple[ServerProcess, Path]) -> None:
    """Logging out expires the cookie and deletes the session: the old cookie opens an empty one."""
    server, db = shared
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        cookie = session_cookie(client.get("/set", params={"key": "colour", "value": "blue"}))
        logout = client.get("/logout")
    assert cookie is not None
    assert logout.status_code == 200
    assert session_cookie(logout) == ""
    expiry = next(h for h in logout.headers.get_list("set-cookie") if h.startswith("session="))
    assert "Max-Age=0" in expiry
    assert get_with(f"{server.url}/get", cookie).json()["session"] == {}
    assert stored_data(db, cookie) is None


def test_untouched_route_sets_no_cookie(shared: tuple[ServerProcess, Path]) -> None:
    """A route that never touches the session answers without Set-Cookie or Vary, with or without a session."""
    server, _ = shared
    cookie = session_cookie(get_with(f"{server.url}/set?key=a&value=1"))
    assert cookie is not None
    for response in (get_with(f"{server.url}/static"), get_with(f"{server.url}/static", cookie)):
        assert response.status_code == 200
        assert response.text == "no session here"
        assert "set-cookie" not in response.headers
        assert "vary" not in response.headers


def test_no_save_after_a_500(shared: tuple[ServerProcess, Path]) -> None:
    """A 500 from the app saves none of its session changes."""
    server, db = shared
    cookie = session_cookie(get_with(f"{server.url}/set?key=colour&value=blue"))
    assert cookie is not None
    crash = get_with(f"{server.url}/crash", cookie)
    assert crash.status_code == 500
    assert session_cookie(crash) is None
    assert stored_data(db, cookie) == {"colour": "blue"}


# -- restarts and several processes -----------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_session_survives_a_killed_server(flavour: Flavour, tmp_path: Path) -> None:
    """A session outlives its server being SIGKILLed: a new server on the same file serves it to the same cookie."""
    db = tmp_path / "sessions.db"
    with running(flavour, db) as first:
        cookie = session_cookie(get_with(f"{first.url}/set?key=colour&value=blue"))
        assert cookie is not None
        first_pid = get_with(f"{first.url}/get", cookie).json()["pid"]
        first.kill()
        assert first.process is not None
        assert first.process.returncode == -signal.SIGKILL
    with running(flavour, db) as second:
        response = get_with(f"{second.url}/get", cookie)
        counted = get_with(f"{second.url}/counter", cookie)
    assert response.status_code == 200
    assert response.json()["session"] == {"colour": "blue"}
    assert response.json()["pid"] != first_pid
    assert counted.json()["counter"] == 1
    assert stored_data(db, cookie) == {"colour": "blue", "counter": 1}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_two_servers_share_one_sqlite_file(flavour: Flavour, tmp_path: Path) -> None:
    """Two server processes on one SQLite file serve the same session: created on one, updated on either."""
    db = tmp_path / "sessions.db"
    with running(flavour, db) as one, running(flavour, db) as two:
        first = get_with(f"{one.url}/counter")
        cookie = session_cookie(first)
        assert cookie is not None
        second = get_with(f"{two.url}/counter", cookie)
        third = get_with(f"{one.url}/counter", cookie)
        seen = get_with(f"{two.url}/get", cookie)
    assert [r.json()["counter"] for r in (first, second, third)] == [1, 2, 3]
    assert first.json()["pid"] != second.json()["pid"]
    assert seen.json()["session"] == {"counter": 3}
    assert seen.json()["pid"] == second.json()["pid"]


def test_starlette_and_flask_share_one_sqlite_file(tmp_path: Path) -> None:
    """A session written through uvicorn + Starlette is read and updated through gunicorn + Flask, and back."""
    db = tmp_path / "sessions.db"
    with running(UVICORN, db) as asgi, running(GUNICORN, db) as wsgi:
        cookie = session_cookie(get_with(f"{asgi.url}/counter"))
        assert cookie is not None
        via_flask = get_with(f"{wsgi.url}/counter", cookie)
        via_starlette = get_with(f"{asgi.url}/get", cookie)
    assert via_flask.json()["counter"] == 2
    assert via_starlette.json()["session"] == {"counter": 2}


# -- an unusable store ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_unopenable_store_answers_503_but_static_routes_work(flavour: Flavour, tmp_path: Path) -> None:
    """With a SQLite path that cannot be opened, session routes answer 503 and session-free routes 200."""
    not_a_directory = tmp_path / "afile"
    not_a_directory.write_text("a regular file where a directory should be\n")
    url = sqlite_url(not_a_directory / "sessions.db")
    # A well-signed cookie for some id makes the middleware try to load, and fail.
    forged = ItsdangerousSigner([SECRET.encode()]).sign(new_session_id())
    with server_for(flavour, url) as server:
        saving = get_with(f"{server.url}/counter")
        loading = get_with(f"{server.url}/counter", forged)
        static = get_with(f"{server.url}/static")
        static_with_cookie = get_with(f"{server.url}/static", forged)
    for response in (saving, loading):
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert "Traceback" not in response.text
        assert "set-cookie" not in response.headers
    for response in (static, static_with_cookie):
        assert response.status_code == 200
        assert response.text == "no session here"


# -- websockets (uvicorn + Starlette) -------------------------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("ws") / "sessions.db"
    with running(UVICORN, db) as server:
        yield server


def ws_receive(server: ServerProcess, path: str, cookie: str | None) -> object:
    """Open a websocket to ``path`` sending ``cookie``, and return the one JSON message the app sends."""
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    url = server.url.replace("http://", "ws://") + path
    with connect(url, additional_headers=headers, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as websocket:
        return json.loads(websocket.recv(timeout=TIMEOUT))


def test_websocket_sees_the_session_of_its_cookie(uvicorn_shared: ServerProcess) -> None:
    """A websocket handshake carrying the session cookie gets that session's data."""
    server = uvicorn_shared
    cookie = session_cookie(get_with(f"{server.url}/set?key=colour&value=blue"))
    assert cookie is not None
    assert ws_receive(server, "/ws", cookie) == {"session": {"colour": "blue"}}
    assert ws_receive(server, "/ws", None) == {"session": {}}


def test_websocket_session_is_read_only(uvicorn_shared: ServerProcess) -> None:
    """Writing to the session over a websocket raises SessionReadOnly, and nothing reaches the store."""
    server = uvicorn_shared
    cookie = session_cookie(get_with(f"{server.url}/set?key=colour&value=blue"))
    assert cookie is not None
    assert ws_receive(server, "/ws-write", cookie) == {"refused": "SessionReadOnly"}
    assert get_with(f"{server.url}/get", cookie).json()["session"] == {"colour": "blue"}

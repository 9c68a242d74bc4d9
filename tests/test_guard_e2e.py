"""The websocket guards behind real servers, with real clients over sockets.

uvicorn + Starlette (each of uvicorn's three websocket implementations),
gunicorn (gthread workers) + Flask + flask-sock, and uvicorn + python-socketio.
uvicorn advertises ``websocket.http.response``, so refusals arrive as real
401/403 responses; a wrapper that hides the extension shows the 403 uvicorn
sends for a close before accept.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import requests
import socketio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ServerProcess, gunicorn_server, uvicorn_server

pytestmark = pytest.mark.server

SECRET = "guard-e2e-secret"
TIMEOUT = 20.0
#: How long a revocation may take to close a websocket (the re-check runs every RECHECK seconds).
DEADLINE = 10.0
RECHECK = "0.2"
UVICORN_WS = ["websockets-sansio", "websockets", "wsproto"]


def env_for(store_url: str, **extra: str) -> dict[str, str]:
    return {"PERSESSION_TEST_STORE": store_url, "PERSESSION_TEST_SECRET": SECRET, **extra}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def guarded_uvicorn(env: dict[str, str], ws: str = "auto", app: str = "guarded_starlette:app") -> ServerProcess:
    return uvicorn_server(app, env=env, args=["--ws", ws])


def login(server: ServerProcess, user: str = "alice") -> str:
    """Log ``user`` in through the server; return the session cookie's value."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        response = client.get("/login", params={"user": user})
        assert response.status_code == 200
        return client.cookies["session"]


def get(server: ServerProcess, path: str, cookie: str | None = None, **headers: str) -> httpx.Response:
    """One GET from a fresh client that sends exactly ``cookie`` and ``headers``."""
    if cookie is not None:
        headers["Cookie"] = f"session={cookie}"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        return client.get(path, headers=headers)


def open_ws(server: ServerProcess, path: str, cookie: str | None, origin: str | None = None) -> ClientConnection:
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    url = server.url.replace("http://", "ws://") + path
    return connect(url, additional_headers=headers, origin=origin, open_timeout=TIMEOUT, close_timeout=TIMEOUT)  # type: ignore[arg-type]


def refusal(server: ServerProcess, path: str, cookie: str | None, origin: str | None = None) -> tuple[int, bytes]:
    """The HTTP status and body with which the server refuses this handshake (fails if it accepts)."""
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, path, cookie, origin).close()
    response = refused.value.response
    return response.status_code, bytes(response.body or b"")


def closed_by_server(websocket: ClientConnection) -> ConnectionClosed:
    """Wait (at most DEADLINE) for the server to close the websocket; return how it closed."""
    deadline = time.monotonic() + DEADLINE
    while (left := deadline - time.monotonic()) > 0:
        try:
            websocket.recv(timeout=left)
        except ConnectionClosed as closed:
            return closed
        except TimeoutError:
            break
    pytest.fail(f"the server did not close the websocket within {DEADLINE}s")


def assert_revoked(websocket: ClientConnection) -> None:
    closed = closed_by_server(websocket)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "session revoked")


# -- uvicorn + Starlette ---------------------------------------------------------------------


@pytest.fixture(scope="module", params=UVICORN_WS)
def starlette_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """uvicorn with one websocket implementation, serving the guarded Starlette app on a SQLite file."""
    db = tmp_path_factory.mktemp("guard") / "sessions.db"
    with guarded_uvicorn(env_for(sqlite_url(db)), ws=request.param) as server:
        yield server


def test_logged_in_websocket_is_accepted_and_echoes(starlette_server: ServerProcess) -> None:
    """A same-origin handshake with a logged-in cookie is accepted; the app greets with the user and echoes."""
    cookie = login(starlette_server)
    with open_ws(starlette_server, "/ws", cookie, origin=starlette_server.url) as websocket:
        assert json.loads(websocket.recv(timeout=TIMEOUT))["user"] == "alice"
        websocket.send("ping")
        assert websocket.recv(timeout=TIMEOUT) == "ping"
    with open_ws(starlette_server, "/ws", cookie) as websocket:  # no Origin: a non-browser client
        assert json.loads(websocket.recv(timeout=TIMEOUT))["user"] == "alice"


def logged_out_cookie(server: ServerProcess) -> str:
    cookie = login(server)
    assert get(server, "/logout", cookie).status_code == 200
    return cookie


@pytest.mark.parametrize(
    ("case", "status", "body"),
    [
        pytest.param("no cookie", 401, b"login required\n", id="no-cookie"),
        pytest.param("logged out", 401, b"login required\n", id="logged-out-cookie"),
        pytest.param("forged", 401, b"login required\n", id="unsigned-cookie"),
        pytest.param("foreign origin", 403, b"origin not allowed\n", id="foreign-origin"),
    ],
)
def test_refused_handshakes_get_401_or_403(
    starlette_server: ServerProcess, case: str, status: int, body: bytes
) -> None:
    """uvicorn sends the guard's denial response: 401 without a live login, 403 for a foreign Origin."""
    cookie = {
        "no cookie": lambda: None,
        "logged out": lambda: logged_out_cookie(starlette_server),
        "forged": lambda: "not-a-signed-id",
        "foreign origin": lambda: login(starlette_server),
    }[case]()
    origin = "http://evil.example" if case == "foreign origin" else starlette_server.url
    assert refusal(starlette_server, "/ws", cookie, origin) == (status, body)


@pytest.mark.parametrize("path", ["/logout", "/login?user=alice"])
def test_logout_or_new_login_closes_the_open_websocket(starlette_server: ServerProcess, path: str) -> None:
    """Logging out (delete) or in again (new id) over HTTP closes the session's open websocket with 4001."""
    cookie = login(starlette_server)
    with open_ws(starlette_server, "/ws", cookie) as websocket:
        assert json.loads(websocket.recv(timeout=TIMEOUT))["user"] == "alice"
        assert get(starlette_server, path, cookie).status_code == 200
        assert_revoked(websocket)
    assert refusal(starlette_server, "/ws", cookie)[0] == 401


def test_other_sessions_websockets_stay_open(starlette_server: ServerProcess) -> None:
    """Logging one session out leaves another session's websocket open."""
    alice, bob = login(starlette_server), login(starlette_server, "bob")
    with open_ws(starlette_server, "/ws", alice) as alice_ws, open_ws(starlette_server, "/ws", bob) as bob_ws:
        alice_ws.recv(timeout=TIMEOUT)
        bob_ws.recv(timeout=TIMEOUT)
        assert get(starlette_server, "/logout", alice).status_code == 200
        assert_revoked(alice_ws)
        bob_ws.send("still here")
        assert bob_ws.recv(timeout=TIMEOUT) == "still here"


def test_refusal_is_403_when_the_server_cannot_send_denial_responses(tmp_path: Path) -> None:
    """Without websocket.http.response the guard closes before accept, and uvicorn answers 403 with no body."""
    env = env_for(sqlite_url(tmp_path / "sessions.db"), PERSESSION_TEST_NO_DENIAL="1")
    with guarded_uvicorn(env, app="guarded_starlette:served") as server:
        cookie = login(server)
        assert refusal(server, "/ws", None)[0] == 403
        assert refusal(server, "/ws", cookie, "http://evil.example")[0] == 403
        with open_ws(server, "/ws", cookie) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT))["user"] == "alice"


# -- several processes ---------------------------------------------------------------------------


def test_recheck_closes_websocket_after_logout_in_another_process(tmp_path: Path) -> None:
    """Two uvicorn processes on one SQLite file: a logout through B closes A's websocket at A's next re-check."""
    env = env_for(sqlite_url(tmp_path / "sessions.db"), PERSESSION_TEST_RECHECK=RECHECK)
    with guarded_uvicorn(env) as a, guarded_uvicorn(env) as b:
        cookie = login(a)
        with open_ws(a, "/ws", cookie) as websocket:
            a_pid = json.loads(websocket.recv(timeout=TIMEOUT))["pid"]
            logout = get(b, "/logout", cookie)
            assert logout.status_code == 200
            assert logout.json()["pid"] != a_pid
            assert_revoked(websocket)


def wait_for_subscriber(client: redis.Redis, channel: str) -> None:
    """Poll until some process subscribes to ``channel`` (the guard's feed starts with its first websocket)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1:
            return
        time.sleep(0.02)
    raise TimeoutError(f"nobody subscribed to {channel} within {DEADLINE}s")


@pytest.mark.parametrize("path", ["/revoke", "/logout"])
def test_redis_revocation_closes_websocket_in_another_process(redis_server: RedisServer, path: str) -> None:
    """Two uvicorn processes on one Redis, no re-check: revoke_user or logout through B closes A's websocket."""
    prefix = f"persession-test:guard:{uuid.uuid4().hex[:12]}:"
    env = env_for(redis_server.url, PERSESSION_TEST_STORE_PREFIX=prefix)
    with redis_server.client() as client, guarded_uvicorn(env) as a, guarded_uvicorn(env) as b:
        try:
            cookie = login(a)
            with open_ws(a, "/ws", cookie) as websocket:
                a_pid = json.loads(websocket.recv(timeout=TIMEOUT))["pid"]
                wait_for_subscriber(client, f"{prefix}revoked")
                response = get(b, path, cookie)
                assert response.status_code == 200
                assert response.json()["pid"] != a_pid
                if path == "/revoke":
                    assert response.json() == {"via": "revoke_user", "revoked": 1, "pid": response.json()["pid"]}
                assert_revoked(websocket)
            assert refusal(a, "/ws", cookie)[0] == 401
        finally:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)


# -- gunicorn + Flask + flask-sock (the WSGI guard) --------------------------------------------------


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """gunicorn with gthread workers (flask-sock needs a thread per websocket) serving the guarded Flask app."""
    db = tmp_path_factory.mktemp("wsgi-guard") / "sessions.db"
    args = ["--worker-class", "gthread", "--threads", "8"]
    with gunicorn_server("guarded_flask:app", env=env_for(sqlite_url(db)), args=args) as server:
        yield server


def test_wsgi_guard_accepts_a_logged_in_websocket(flask_server: ServerProcess) -> None:
    """Under gunicorn, a logged-in same-origin flask-sock websocket is accepted and echoes."""
    cookie = login(flask_server)
    with open_ws(flask_server, "/ws", cookie, origin=flask_server.url) as websocket:
        assert json.loads(websocket.recv(timeout=TIMEOUT))["user"] == "alice"
        websocket.send("ping")
        assert websocket.recv(timeout=TIMEOUT) == "ping"


def test_wsgi_guard_refuses_with_401_or_403(flask_server: ServerProcess) -> None:
    """Under gunicorn, the WSGI guard answers 401 without a live login and 403 to a foreign Origin."""
    assert refusal(flask_server, "/ws", None) == (401, b"login required\n")
    assert refusal(flask_server, "/ws", logged_out_cookie(flask_server)) == (401, b"login required\n")
    cookie = login(flask_server)
    assert refusal(flask_server, "/ws", cookie, "http://evil.example") == (403, b"origin not allowed\n")


# -- uvicorn + python-socketio -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def socketio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """uvicorn serving socketio.ASGIApp behind SocketIOGuard and SessionMiddleware on a SQLite file."""
    db = tmp_path_factory.mktemp("sio") / "sessions.db"
    with guarded_uvicorn(env_for(sqlite_url(db)), app="guarded_socketio:app") as server:
        yield server


@contextlib.contextmanager
def sio_client(cookie: str | None, **headers: str) -> Iterator[socketio.SimpleClient]:
    """A SimpleClient whose HTTP session sends ``cookie`` with every request, as a browser would; never reconnects."""
    with requests.Session() as http:
        if cookie is not None:
            http.cookies.set("session", cookie)
        client = socketio.SimpleClient(http_session=http, reconnection=False)
        try:
            yield client
        finally:
            client.disconnect()
            # python-engineio leaves its websocket-client socket open when the server closes the connection.
            eio = getattr(client.client, "eio", None)
            if eio is not None and eio.ws is not None:
                eio.ws.shutdown()


TRANSPORTS = [
    pytest.param(["polling"], "polling", id="polling"),
    pytest.param(["websocket"], "websocket", id="websocket"),
    pytest.param(None, "websocket", id="polling-then-upgrade"),
]


@pytest.mark.parametrize(("transports", "final"), TRANSPORTS)
def test_socketio_client_with_session_connects(
    socketio_server: ServerProcess, transports: list[str] | None, final: str
) -> None:
    """A Socket.IO client with a logged-in cookie connects; the connect handler saw the session's user."""
    cookie = login(socketio_server)
    with sio_client(cookie) as client:
        client.connect(socketio_server.url, transports=transports, wait_timeout=TIMEOUT)
        assert client.call("echo", "hi", timeout=TIMEOUT) == {"user": "alice", "data": "hi"}
        assert client.client.transport() == final


@pytest.mark.parametrize(("transports", "final"), TRANSPORTS[:2])
def test_socketio_client_without_session_is_refused(
    socketio_server: ServerProcess, transports: list[str], final: str
) -> None:
    """Without a login the client's connect fails: the first Engine.IO request is answered 401."""
    with sio_client(None) as client, pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(socketio_server.url, transports=transports, wait_timeout=TIMEOUT)
    if final == "polling":
        response = get(socketio_server, "/socket.io/?EIO=4&transport=polling")
        assert (response.status_code, response.text) == (401, "login required\n")
    else:
        assert refusal(socketio_server, "/socket.io/?EIO=4&transport=websocket", None) == (401, b"login required\n")


def test_socketio_handshake_from_a_foreign_origin_is_403(socketio_server: ServerProcess) -> None:
    """A logged-in cookie sent from a foreign Origin gets 403 on polling and websocket handshakes alike."""
    cookie = login(socketio_server)
    polling = get(socketio_server, "/socket.io/?EIO=4&transport=polling", cookie, Origin="http://evil.example")
    assert (polling.status_code, polling.text) == (403, "origin not allowed\n")
    path = "/socket.io/?EIO=4&transport=websocket"
    assert refusal(socketio_server, path, cookie, "http://evil.example") == (403, b"origin not allowed\n")
    with sio_client(cookie) as client, pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(socketio_server.url, headers={"Origin": "http://evil.example"}, wait_timeout=TIMEOUT)
    same = get(socketio_server, "/socket.io/?EIO=4&transport=polling", cookie, Origin=socketio_server.url)
    assert same.status_code == 200
    assert same.text.startswith("0{")  # the Engine.IO OPEN packet


def test_logout_disconnects_the_socketio_websocket(socketio_server: ServerProcess) -> None:
    """Logging out over HTTP closes the session's Socket.IO websocket transport; the client sees it disconnect."""
    cookie = login(socketio_server)
    with sio_client(cookie) as client:
        client.connect(socketio_server.url, transports=["websocket"], wait_timeout=TIMEOUT)
        assert client.call("echo", 1, timeout=TIMEOUT) == {"user": "alice", "data": 1}
        assert get(socketio_server, "/logout", cookie).status_code == 200
        deadline = time.monotonic() + DEADLINE
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.connected
    assert get(socketio_server, "/socket.io/?EIO=4&transport=polling", cookie).status_code == 401

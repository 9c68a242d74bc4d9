"""The examples in examples/, served by the commands their READMEs give, driven over real sockets.

Each example runs its README's serve command (uvicorn for Starlette, gunicorn with threads for Flask) on
the embedded SQLite store and on Redis, chosen with PERSESSION_STORE_URL. httpx drives the JSON routes and
the ``websockets`` client the guarded chat websocket.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from _examples import EXAMPLES, example_server, readme_command, readme_path, sqlite_env
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ROOT, ServerProcess

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest itself depends on tomli before 3.11
    import tomli as tomllib

pytestmark = pytest.mark.server

TIMEOUT = 20.0
SECRET = "examples-test-secret"
FOREIGN_ORIGIN = "http://evil.example"


@dataclass
class Served:
    """One running example: which one, how it is served, and on which store."""

    example: str
    server: ServerProcess
    store: str

    @property
    def url(self) -> str:
        return self.server.url


SERVED = [
    pytest.param(("starlette", "sqlite"), id="starlette-sqlite"),
    pytest.param(("starlette", "redis"), id="starlette-redis"),
    pytest.param(("flask", "sqlite"), id="flask-sqlite"),
    pytest.param(("flask", "redis"), id="flask-redis"),
]


def store_env(request: pytest.FixtureRequest, store: str, directory: Path) -> dict[str, str]:
    """PERSESSION_STORE_URL and PERSESSION_SECRET for a SQLite file in ``directory``, or the test Redis server."""
    if store == "sqlite":
        return sqlite_env(directory / "sessions.db", SECRET)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    return {"PERSESSION_STORE_URL": redis_server.url, "PERSESSION_SECRET": SECRET}


@pytest.fixture(scope="module", params=SERVED)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An example served as its README says, on SQLite or Redis; stopped after the module."""
    example, store = request.param
    server = example_server(example, store_env(request, store, tmp_path_factory.mktemp(example))).start()
    try:
        yield Served(example, server, store)
    finally:
        server.stop()


def login(served: Served, user: str = "alice") -> str:
    """Log in through ``GET /login``; return the session cookie."""
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        response = client.get("/login", params={"user": user})
        assert response.json() == {"user": user}
        return client.cookies["session"]


def get(served: Served, path: str, cookie: str | None) -> httpx.Response:
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        return client.get(path, headers=headers)


def open_chat(served: Served, cookie: str | None, origin: str | None) -> ClientConnection:
    headers = {} if cookie is None else {"Cookie": f"session={cookie}"}
    url = served.url.replace("http://", "ws://") + "/ws"
    return connect(url, additional_headers=headers, origin=origin, open_timeout=TIMEOUT, close_timeout=TIMEOUT)  # type: ignore[arg-type]


def refused_status(served: Served, cookie: str | None, origin: str | None) -> int:
    """The HTTP status with which the example refuses a chat handshake (fails if it accepts)."""
    with pytest.raises(InvalidStatus) as refused:
        open_chat(served, cookie, origin).close()
    return refused.value.response.status_code


# -- the README commands -------------------------------------------------------------------------------


def _extras() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        extras: dict[str, list[str]] = tomllib.load(file)["project"]["optional-dependencies"]
    return extras


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _module_level_imports(source: Path) -> set[str]:
    """Top-level package names the module imports at module level (not inside functions or try blocks)."""
    names: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "persession"}


@pytest.mark.parametrize("example", EXAMPLES)
def test_readme_command_installs_the_examples_extra_and_names_a_real_app(example: str) -> None:
    """The README's command installs the examples extra, then serves a module that exists and defines the app."""
    command = readme_command(example)
    assert command.install == ["python", "-m", "pip", "install", "-e", ".[examples]"]
    assert command.serve[:2] == ["python", "-m"]
    assert command.module == f"examples.{example}_app.app"
    source = ROOT.joinpath(*command.module.split(".")).with_suffix(".py")
    assert source.is_file(), f"{readme_path(example)} names {command.module}, which does not exist"
    assigned = {
        target.id
        for node in ast.parse(source.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert command.attribute in assigned


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_extra_covers_what_the_example_and_its_server_import(example: str) -> None:
    """Every third-party package the example imports, its server and a websocket library are in the examples extra."""
    command = readme_command(example)
    wanted = {_requirement_name(r) for r in _extras()["examples"]}
    source = ROOT.joinpath(*command.module.split(".")).with_suffix(".py")
    providers = packages_distributions()
    for module in _module_level_imports(source) | {command.server}:
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [module])}
        assert distributions & wanted, f"{example} needs {module} ({distributions}), not in the examples extra"
    websocket_libraries = {"websockets", "wsproto"} if command.server == "uvicorn" else {"flask-sock"}
    assert websocket_libraries & wanted


# -- the JSON routes -------------------------------------------------------------------------------------


def test_json_routes_log_in_count_set_and_log_out(served: Served) -> None:
    """GET /login, /counter, /set, /whoami and /logout behave as the README says, on one cookie."""
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        anonymous = client.get("/whoami")
        assert anonymous.json() == {"user": None, "session": {}}
        assert "set-cookie" not in anonymous.headers  # a session nobody wrote gets no cookie
        assert client.get("/login", params={"user": "alice"}).json() == {"user": "alice"}
        assert [client.get("/counter").json() for _ in range(2)] == [{"counter": 1}, {"counter": 2}]
        assert client.get("/set", params={"key": "colour", "value": "blue"}).json() == {
            "key": "colour",
            "value": "blue",
        }
        assert client.get("/whoami").json() == {
            "user": "alice",
            "session": {"user": "alice", "counter": 2, "colour": "blue"},
        }
        assert client.get("/logout").json() == {"user": None}
        assert "session" not in client.cookies  # the cookie was expired
        assert client.get("/whoami").json() == {"user": None, "session": {}}


def test_json_routes_reject_missing_parameters(served: Served) -> None:
    """/login without a user and /set without a key answer 400 with a JSON error."""
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        no_user = client.get("/login")
        no_key = client.get("/set", params={"value": "x"})
    assert (no_user.status_code, no_user.json()) == (400, {"error": "user is required"})
    assert (no_key.status_code, no_key.json()) == (400, {"error": "key is required"})


def test_login_moves_the_session_to_a_new_id(served: Served) -> None:
    """Logging in keeps the anonymous session's data under a new cookie; the old cookie no longer works."""
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
        client.get("/set", params={"key": "cart", "value": "3 apples"})
        anonymous = client.cookies["session"]
        client.get("/login", params={"user": "bob"})
        assert client.cookies["session"] != anonymous
        assert client.get("/whoami").json()["session"] == {"cart": "3 apples", "user": "bob"}
    assert get(served, "/whoami", anonymous).json() == {"user": None, "session": {}}


# -- the chat websocket ----------------------------------------------------------------------------------


def test_chat_websocket_is_accepted_when_logged_in_and_echoes(served: Served) -> None:
    """A logged-in, same-origin handshake is accepted: a greeting with the user, then each message echoed."""
    cookie = login(served)
    with open_chat(served, cookie, served.url) as websocket:
        assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"type": "hello", "user": "alice"}
        websocket.send(json.dumps({"text": "hello there"}))
        assert json.loads(websocket.recv(timeout=TIMEOUT)) == {
            "type": "message",
            "user": "alice",
            "text": "hello there",
        }


def test_chat_websocket_is_refused_when_not_logged_in(served: Served) -> None:
    """Handshakes without a session or with a logged-out one get 401; a foreign Origin gets 403."""
    assert refused_status(served, None, served.url) == 401
    cookie = login(served)
    assert refused_status(served, cookie, FOREIGN_ORIGIN) == 403
    assert get(served, "/logout", cookie).status_code == 200
    assert refused_status(served, cookie, served.url) == 401


def test_logout_closes_the_open_chat_with_4001(served: Served) -> None:
    """After a logout over HTTP the open chat closes with 4001 (Starlette at once, Flask at its next message)."""
    cookie = login(served)
    with open_chat(served, cookie, served.url) as websocket:
        assert json.loads(websocket.recv(timeout=TIMEOUT))["type"] == "hello"
        assert get(served, "/logout", cookie).json() == {"user": None}
        with contextlib.suppress(ConnectionClosed):  # Starlette's may be closed already
            websocket.send(json.dumps({"text": "still there?"}))  # Flask's notices the logout at this message
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "session revoked")


# -- restarts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_sessions_survive_a_server_restart(
    request: pytest.FixtureRequest, tmp_path: Path, example: str, store: str
) -> None:
    """A session made before the server is killed is still there when it starts again on the same store."""
    env = store_env(request, store, tmp_path)
    with example_server(example, env) as server:
        served = Served(example, server, store)
        cookie = login(served)
        assert get(served, "/counter", cookie).json() == {"counter": 1}
        server.kill()
        server.stop()
        server.start()
        assert get(served, "/counter", cookie).json() == {"counter": 2}
        assert get(served, "/whoami", cookie).json()["user"] == "alice"


# -- python-socketio, as the Starlette README shows it ----------------------------------------------------


def _readme_python_block(example: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", readme_path(example).read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 1
    return str(blocks[0])


def test_starlette_readme_socketio_client_snippet_runs(tmp_path: Path) -> None:
    """The README's python-socketio client logs in, connects through SocketIOGuard and gets the echo it shows."""
    pytest.importorskip("socketio")
    snippet = _readme_python_block("starlette")
    assert "http://127.0.0.1:8000" in snippet
    with example_server("starlette", sqlite_env(tmp_path / "sessions.db", SECRET)) as server:
        code = snippet.replace("http://127.0.0.1:8000", server.url)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "{'user': 'alice', 'text': 'hello'}"
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            refused = client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert (refused.status_code, refused.text) == (401, "login required\n")

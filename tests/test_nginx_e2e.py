"""The whole deployment: nginx in front of four processes of the Starlette example sharing a Redis store.

Four processes of examples/starlette_app (``persession serve``, one uvicorn
per port, ``PERSESSION_STORE_URL`` pointing at a real redis-server and one
``PERSESSION_SECRET``), and nginx started from ``render_standalone`` with the
``X-Upstream-Addr`` debug header, so each answer names the process that gave
it. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ROOT, Launched, NginxServer, free_port, nginx_binary, upstream_addresses, wait_until
from persession.nginx import Backend, NginxSpec
from persession.stores.redis import DEFAULT_PREFIX

pytestmark = pytest.mark.server

APP = "examples.starlette_app.app:app"
SECRET = "nginx-e2e-secret"
REQUESTS = 50
TIMEOUT = 20.0


def start_app_processes(redis_server: RedisServer, log: Path, count: int = 4) -> Launched:
    """``count`` processes of the Starlette example via ``persession serve`` (not started), on one Redis and secret."""
    env = {"PERSESSION_STORE_URL": redis_server.url, "PERSESSION_SECRET": SECRET}
    ports = [free_port() for _ in range(count)]
    return Launched(APP, ports, env=env, cwd=ROOT, args=["--", "--log-level", "warning"], log=log)


@pytest.fixture(scope="module")
def session_keys(redis_server: RedisServer) -> Iterator[None]:
    """Delete, at the end of the module, the session keys its tests created in the shared Redis."""
    with redis_server.client() as client:
        before = set(client.scan_iter(match=f"{DEFAULT_PREFIX}*", count=1000))
    yield
    with redis_server.client() as client:
        created = set(client.scan_iter(match=f"{DEFAULT_PREFIX}*", count=1000)) - before
        if created:
            client.delete(*created)


@pytest.fixture(scope="module")
def app_processes(
    redis_server: RedisServer, session_keys: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    """The four example processes, shared by the module's tests that do not kill any."""
    nginx_binary()  # skip (or fail under CI) before starting anything when nginx is missing
    with start_app_processes(redis_server, tmp_path_factory.mktemp("serve") / "serve.log") as launcher:
        yield launcher


def nginx_in_front(processes: Launched, directory: Path, **options: object) -> NginxServer:
    """An NginxServer (not started) for ``processes`` on a free 127.0.0.1 port, with the debug header."""
    spec = NginxSpec(
        servers=tuple(Backend("127.0.0.1", port) for port in processes.ports),
        listen_address="127.0.0.1",
        listen_port=free_port(),
        debug_header=True,
        **options,  # type: ignore[arg-type]
    )
    return NginxServer(spec, directory)


def log_in(nginx: NginxServer, user: str) -> str:
    """Log ``user`` in through nginx (GET /login?user=); return the session cookie's value."""
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.get(f"{nginx.url}/login", params={"user": user})
        assert response.status_code == 200, response.text
        assert response.json() == {"user": user}
        return client.cookies["session"]


def whoami_many(nginx: NginxServer, cookie: str, count: int = REQUESTS) -> tuple[list[str], Counter[str]]:
    """``count`` GET /whoami through nginx with the cookie: the users seen, and which process answered how often."""
    users: list[str] = []
    backends: Counter[str] = Counter()
    with httpx.Client(timeout=TIMEOUT) as client:
        for _ in range(count):
            response = client.get(f"{nginx.url}/whoami", headers={"Cookie": f"session={cookie}"})
            assert response.status_code == 200, response.text
            users.append(response.json()["user"])
            backends[upstream_addresses(response)[-1]] += 1
    return users, backends


@pytest.mark.parametrize(
    ("balancing", "expected_backends"),
    [
        pytest.param("round_robin", "several", id="round_robin"),
        pytest.param("ip_hash", "one", id="ip_hash"),
        pytest.param("cookie", "one", id="cookie"),
        pytest.param("least_conn", "any", id="least_conn"),
    ],
)
def test_a_session_is_seen_by_every_request(
    app_processes: Launched, balancing: str, expected_backends: str, tmp_path: Path
) -> None:
    """Logged in through nginx, 50 requests with the cookie all see the session, from the processes the method picks."""
    with nginx_in_front(app_processes, tmp_path, balancing=balancing) as nginx:
        cookie = log_in(nginx, f"user-{balancing}")
        users, backends = whoami_many(nginx, cookie)
    print(f"{balancing}: {REQUESTS} requests, all saw the session: {set(users)}; backends seen: {dict(backends)}")
    assert users == [f"user-{balancing}"] * REQUESTS
    assert set(backends) <= {f"127.0.0.1:{port}" for port in app_processes.ports}
    if expected_backends == "several":
        assert len(backends) > 1
    elif expected_backends == "one":
        assert len(backends) == 1


def test_cookie_hash_spreads_sessions(app_processes: Launched, tmp_path: Path) -> None:
    """Under cookie hashing each session sticks to one process, and different sessions land on different ones."""
    with nginx_in_front(app_processes, tmp_path, balancing="cookie") as nginx:
        homes: dict[str, set[str]] = {}
        for index in range(12):
            cookie = log_in(nginx, f"spread-{index}")
            users, backends = whoami_many(nginx, cookie, count=5)
            assert users == [f"spread-{index}"] * 5
            homes[f"spread-{index}"] = set(backends)
    print(f"cookie hash: 12 sessions -> {Counter(next(iter(h)) for h in homes.values())}")
    assert all(len(home) == 1 for home in homes.values())
    assert len(set().union(*homes.values())) > 1


def websocket_status(url: str, cookie: str | None, origin: str | None = None) -> tuple[int, list[dict[str, object]]]:
    """Open the chat websocket: (101, the messages exchanged) when accepted, else (status, [])."""
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    try:
        with connect(
            url,
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as websocket:
            hello = json.loads(websocket.recv(timeout=TIMEOUT))
            websocket.send(json.dumps({"text": "through nginx"}))
            echo = json.loads(websocket.recv(timeout=TIMEOUT))
            return 101, [hello, echo]
    except InvalidStatus as refused:
        return refused.response.status_code, []


@pytest.mark.parametrize(
    "websocket_paths", [pytest.param((), id="ws-on-root"), pytest.param(("/ws",), id="ws-location")]
)
@pytest.mark.parametrize("keepalive", [pytest.param(32, id="keepalive"), pytest.param(None, id="no-keepalive")])
def test_websocket_through_nginx(
    app_processes: Launched, websocket_paths: tuple[str, ...], keepalive: int | None, tmp_path: Path
) -> None:
    """The guarded /ws opens through nginx when logged in (same origin too) and is refused without a session."""
    with nginx_in_front(
        app_processes, tmp_path, balancing="cookie", websocket_paths=websocket_paths, keepalive=keepalive
    ) as nginx:
        cookie = log_in(nginx, "ws-user")
        url = f"ws://127.0.0.1:{nginx.spec.port}/ws"
        accepted = websocket_status(url, cookie)
        same_origin = websocket_status(url, cookie, origin=nginx.url)
        anonymous = websocket_status(url, None)
        forged = websocket_status(url, "s%3Anot-a-session.signature")
        cross_origin = websocket_status(url, cookie, origin="http://evil.example")
        with httpx.Client(timeout=TIMEOUT) as client:  # plain HTTP still works in the same location
            assert (
                client.get(f"{nginx.url}/whoami", headers={"Cookie": f"session={cookie}"}).json()["user"] == "ws-user"
            )
    print(
        f"websocket ({'/ws location' if websocket_paths else 'on /'}, keepalive={keepalive}): logged in -> "
        f"{accepted[0]}, same origin -> {same_origin[0]}, anonymous -> {anonymous[0]}, forged cookie -> "
        f"{forged[0]}, cross origin -> {cross_origin[0]}"
    )
    assert accepted == (
        101,
        [{"type": "hello", "user": "ws-user"}, {"type": "message", "user": "ws-user", "text": "through nginx"}],
    )
    assert same_origin[0] == 101  # Host reaches the app with nginx's port, so the same-origin check passes
    assert anonymous == (401, [])
    assert forged == (401, [])
    assert cross_origin == (403, [])


def test_a_killed_process_does_not_lose_the_session(
    redis_server: RedisServer, session_keys: None, tmp_path: Path
) -> None:
    """With the process a session is pinned to killed, nginx retries the next one and the session still answers."""
    nginx_binary()
    with start_app_processes(redis_server, tmp_path / "serve.log") as processes:
        pids = processes.pids()
        with nginx_in_front(processes, tmp_path / "nginx", balancing="cookie") as nginx:
            cookie = log_in(nginx, "survivor")
            users, before = whoami_many(nginx, cookie, count=10)
            assert users == ["survivor"] * 10
            assert len(before) == 1
            (home,) = before
            port = int(home.rsplit(":", 1)[1])
            processes_alive = processes.process
            assert processes_alive is not None
            os.kill(pids[port], signal.SIGKILL)
            wait_until(lambda: f"port {port} (pid {pids[port]}) ended by SIGKILL" in processes.output(), "the kill")
            with httpx.Client(timeout=TIMEOUT) as client:
                first = client.get(f"{nginx.url}/whoami", headers={"Cookie": f"session={cookie}"})
            assert first.status_code == 200
            assert first.json()["user"] == "survivor"
            tried = upstream_addresses(first)
            users, after = whoami_many(nginx, cookie)
            assert processes_alive.poll() is None  # the launcher keeps the other three running
    print(
        f"killed {home}: first request tried {tried}; then {REQUESTS} requests, all saw the session: "
        f"{set(users)}; backends seen: {dict(after)}"
    )
    assert tried[0] == home
    assert tried[-1] != home
    assert users == ["survivor"] * REQUESTS
    assert home not in after
    assert set(after) <= {f"127.0.0.1:{p}" for p in processes.ports if p != port}

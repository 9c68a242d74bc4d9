"""A bounded soak: sustained logins, writes, reads and logouts through nginx and four app processes.

Four processes of tests/apps/starlette_app.py (``persession serve``, one
uvicorn per port) share a real redis-server, behind nginx configured by
:func:`persession.nginx.render_standalone` (round robin, so consecutive
requests of one session land on different processes). ``SOAK_CLIENTS``
asyncio clients loop, each iteration: log in, write ``KEYS`` keys, read them
back and compare, log out, and check that the old cookie no longer sees any
data.

Bounded: ``PERSESSION_SOAK_SECONDS`` (default 60) of load after which every
client stops at its next iteration, and at most ``MAX_REQUESTS`` requests.
Printed: requests, errors, lost sessions, lost keys, sessions still visible
after logout, and the RSS (``VmRSS`` of ``/proc/<pid>/status``) of each worker
after the warm-up and at the end. Asserted: no error, nothing lost, and each
worker's RSS flat: end <= start + ``max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION
* start)`` (memory, unlike wall-clock time, is a fair thing to assert).
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from _redis import RedisServer
from _servers import Launched, NginxServer, free_port, nginx_binary
from persession.nginx import Backend, NginxSpec

#: Seconds of load after the warm-up starts: ``PERSESSION_SOAK_SECONDS``, default 60 (CI uses the default).
SOAK_SECONDS = float(os.environ.get("PERSESSION_SOAK_SECONDS", "60"))
#: The first part of the run, after which each worker's starting RSS is taken.
WARM_UP_SECONDS = max(3.0, SOAK_SECONDS * 0.2)
#: Concurrent clients.
SOAK_CLIENTS = 32
#: Keys each iteration writes and reads back.
KEYS = 4
#: Requests per iteration: login, KEYS writes, one read, logout, one read with the old cookie.
REQUESTS_PER_ITERATION = KEYS + 4
#: A hard cap on requests, whatever the duration.
MAX_REQUESTS = 2_000_000
#: App processes behind nginx.
WORKERS = 4
#: RSS growth allowed per worker between the end of the warm-up and the end: the larger of these two.
RSS_TOLERANCE_BYTES = 15 * 1024 * 1024
RSS_TOLERANCE_FRACTION = 0.20
#: One request's timeout: a hang fails the request (as an error), never the run.
REQUEST_TIMEOUT = 30.0
SECRET = "soak-secret"

pytestmark = [pytest.mark.server, pytest.mark.soak, pytest.mark.timeout(SOAK_SECONDS + 240)]


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Tally:
    """What the clients counted."""

    requests: int = 0
    iterations: int = 0
    errors: list[str] = field(default_factory=list)
    lost_sessions: int = 0
    lost_keys: int = 0
    seen_after_logout: int = 0
    pids: set[int] = field(default_factory=set)


class Soak:
    """The clients: each loops login, writes, read back, logout, read with the old cookie."""

    def __init__(self, base_url: str, deadline: float) -> None:
        self.base_url = base_url
        self.deadline = deadline
        self.tally = Tally()

    def _budget_left(self) -> bool:
        return time.monotonic() < self.deadline and self.tally.requests + REQUESTS_PER_ITERATION <= MAX_REQUESTS

    async def _get(self, client: httpx.AsyncClient, path: str, cookie: str | None, **params: str) -> httpx.Response:
        self.tally.requests += 1
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        client.cookies.clear()  # the cookie is sent explicitly, never from the jar
        response = await client.get(path, params=params, headers=headers)
        if response.status_code != 200:
            raise AssertionError(f"{path}: {response.status_code} {response.text[:200]!r}")
        self.tally.pids.add(response.json()["pid"])
        return response

    async def _iteration(self, client: httpx.AsyncClient, name: str, number: int) -> None:
        tally = self.tally
        user = f"{name}-{number}"
        login = await self._get(client, "/login", None, user=user)
        cookie = login.cookies.get("session")
        if not cookie:
            raise AssertionError(f"/login set no session cookie: {login.headers}")
        expected = {"user": user}
        for index in range(KEYS):
            key, value = f"k{index}", f"{user}-{index}"
            await self._get(client, "/set", cookie, key=key, value=value)
            expected[key] = value
        seen = (await self._get(client, "/get", cookie)).json()["session"]
        if seen.get("user") != user:
            tally.lost_sessions += 1
        tally.lost_keys += sum(seen.get(key) != value for key, value in expected.items() if key != "user")
        await self._get(client, "/logout", cookie)
        after = (await self._get(client, "/get", cookie)).json()["session"]
        if after:
            tally.seen_after_logout += 1
        tally.iterations += 1

    async def _client(self, number: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
            iteration = 0
            while self._budget_left():
                try:
                    await self._iteration(client, f"c{number}", iteration)
                except (httpx.HTTPError, AssertionError, ValueError, KeyError) as error:
                    self.tally.errors.append(f"client {number}: {type(error).__name__}: {error}")
                iteration += 1

    async def run(self) -> Tally:
        await asyncio.gather(*(self._client(number) for number in range(SOAK_CLIENTS)))
        return self.tally


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Launched, NginxServer]]:
    """redis-server, four app processes and nginx in front, all stopped at teardown."""
    nginx_binary()  # skip (or fail under CI) before starting anything when nginx is missing
    env = {"PERSESSION_TEST_STORE": "", "PERSESSION_TEST_SECRET": SECRET, "PERSESSION_TEST_OPTIONS": "{}"}
    with RedisServer() as store:
        env["PERSESSION_TEST_STORE"] = store.url
        ports = [free_port() for _ in range(WORKERS)]
        launcher = Launched(
            "starlette_app:app", ports, env=env, args=["--", "--log-level", "warning"], log=tmp_path / "serve.log"
        )
        with launcher:
            spec = NginxSpec(
                servers=tuple(Backend("127.0.0.1", port) for port in ports),
                balancing="round_robin",
                listen_address="127.0.0.1",
                listen_port=free_port(),
            )
            with NginxServer(spec, tmp_path / "nginx") as nginx:
                yield launcher, nginx


def test_soak_through_nginx_loses_nothing_and_keeps_memory_flat(deployment: tuple[Launched, NginxServer]) -> None:
    """32 clients log in, write, read back and log out through nginx for the soak duration: no error, nothing lost,
    flat RSS."""
    launcher, nginx = deployment
    pids = sorted(launcher.pids().values())
    assert len(pids) == WORKERS

    async def soak() -> tuple[Tally, dict[int, int], dict[int, int]]:
        started = time.monotonic()
        runner = Soak(nginx.url, deadline=started + SOAK_SECONDS)
        task = asyncio.create_task(runner.run())
        # The warm-up: imports, connection pools, allocator arenas; then the starting RSS.
        done, _ = await asyncio.wait({task}, timeout=WARM_UP_SECONDS)
        assert not done, "the soak ended before its warm-up did"
        start_rss = {pid: rss_bytes(pid) for pid in pids}
        tally = await task
        end_rss = {pid: rss_bytes(pid) for pid in pids}
        return tally, start_rss, end_rss

    began = time.monotonic()
    tally, start_rss, end_rss = asyncio.run(soak())
    elapsed = time.monotonic() - began
    mib = 1024 * 1024
    print(
        f"\n[soak] {elapsed:.1f}s (PERSESSION_SOAK_SECONDS={SOAK_SECONDS:g}, warm-up {WARM_UP_SECONDS:g}s),"
        f" {SOAK_CLIENTS} clients: requests={tally.requests} iterations={tally.iterations}"
        f" ({tally.requests / elapsed:.0f} req/s) errors={len(tally.errors)} lost_sessions={tally.lost_sessions}"
        f" lost_keys={tally.lost_keys} seen_after_logout={tally.seen_after_logout}"
        f" workers_seen={len(tally.pids)}"
    )
    for pid in pids:
        grown = end_rss[pid] - start_rss[pid]
        print(
            f"[soak] worker pid {pid}: RSS after warm-up {start_rss[pid] / mib:.1f} MiB,"
            f" at the end {end_rss[pid] / mib:.1f} MiB ({grown / mib:+.1f} MiB)"
        )
    assert not tally.errors, tally.errors[:10]
    assert tally.iterations > 0
    assert tally.lost_sessions == 0
    assert tally.lost_keys == 0
    assert tally.seen_after_logout == 0
    assert tally.pids == set(pids), f"answers came from {tally.pids}, the workers are {pids}"
    for pid in pids:
        allowed = start_rss[pid] + max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION * start_rss[pid])
        assert end_rss[pid] <= allowed, f"worker {pid}: RSS grew from {start_rss[pid]} to {end_rss[pid]} bytes"

"""persession's own cost per request, without a network or a web server.

Calls a minimal WSGI or ASGI application in a loop: bare, and wrapped in
persession's middleware with a :class:`~persession.stores.MemoryStore` (or a
Redis store on a ``redis-server`` this script starts), for three requests:

- ``bare``: no middleware; the application ignores the cookie;
- ``read``: a logged-in cookie; the application reads ``session["user"]``;
- ``write``: a logged-in cookie; the application sets ``session["visits"]``.

Modes::

    python benchmarks/inprocess.py                      # µs per request (best of --repeat timings)
    python benchmarks/inprocess.py --store redis        # the same on a Redis store
    python benchmarks/inprocess.py --profile read       # pyinstrument profile of one case's loop
    python benchmarks/inprocess.py --callgrind          # instructions per request under valgrind

``--callgrind`` runs each case under ``valgrind --tool=callgrind`` for two
loop lengths (``--loops 2000,4000``) and reports ``(I(long) - I(short)) /
(long - short)``: the instructions one more request costs. Start-up, imports
and the login cancel out, and instruction counts do not depend on what else
the machine is doing, so these figures are the ones to compare between
versions on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _support import HERE, Processes, interrupt_on_sigterm, start_redis

SECRET = "benchmark-secret-not-for-production"
LOGIN_DATA: dict[str, Any] = {
    "user": "alice",
    "roles": ["admin", "editor"],
    "csrf": "Zx5sJ3rQ0m2Qe9dW1vY7bK4tH8nL6pC2aF0gS3jD5kE",
    "visits": 0,
}
CASES = ("bare", "read", "write")
INTERFACES = ("wsgi", "asgi")
STORES = ("memory", "redis")
_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "5")]
_AHEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")]


# -- the applications -------------------------------------------------------------------------------


def wsgi_inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path != "/bare":
        session = environ["persession.session"]
        if path == "/login":
            session.update(LOGIN_DATA)
        elif path == "/read":
            session.get("user")
        else:
            session["visits"] = session.get("visits", 0) + 1
    start_response("200 OK", _HEADERS)
    return [b"alice"]


async def asgi_inner(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    path = scope["path"]
    if path != "/bare":
        session = scope["session"]
        if path == "/login":
            session.update(LOGIN_DATA)
        elif path == "/read":
            session.get("user")
        else:
            session["visits"] = session.get("visits", 0) + 1
    await send({"type": "http.response.start", "status": 200, "headers": _AHEADERS})
    await send({"type": "http.response.body", "body": b"alice"})


def make_store(interface: str, store: str, redis_url: str | None) -> Any:
    if store == "memory":
        from persession.stores.memory import AsyncMemoryStore, MemoryStore

        return MemoryStore() if interface == "wsgi" else AsyncMemoryStore()
    assert redis_url is not None
    from persession.stores.redis import AsyncRedisStore, RedisStore

    return RedisStore.from_url(redis_url) if interface == "wsgi" else AsyncRedisStore.from_url(redis_url)


# -- the loops ----------------------------------------------------------------------------------------


def _environ(path: str, cookie: str | None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    return environ


def _scope(path: str, cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class Runner:
    """One case: an application and a request to repeat; :meth:`run` makes ``n`` requests."""

    def __init__(self, interface: str, case: str, store: str, redis_url: str | None) -> None:
        self.interface = interface
        self.case = case
        self.loop = asyncio.new_event_loop() if interface == "asgi" else None
        self.app: Any
        if case == "bare":
            self.app = wsgi_inner if interface == "wsgi" else asgi_inner
            cookie = None
        else:
            if interface == "wsgi":
                from persession.wsgi import SessionMiddleware

                self.app = SessionMiddleware(wsgi_inner, secret=SECRET, store=make_store("wsgi", store, redis_url))
            else:
                from persession.asgi import SessionMiddleware as AsgiSessionMiddleware

                self.app = AsgiSessionMiddleware(
                    asgi_inner, secret=SECRET, store=make_store("asgi", store, redis_url)
                )
            cookie = self._login()
        path = "/" + case
        self.request = _environ(path, cookie) if interface == "wsgi" else _scope(path, cookie)
        self.run(20)  # warm caches, scripts and connections before anything is measured

    def _login(self) -> str:
        captured: list[str] = []
        if self.interface == "wsgi":

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                captured.extend(value for name, value in headers if name == "Set-Cookie")
                return None

            list(self.app(_environ("/login", None), start_response))
        else:

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    headers = message["headers"]
                    captured.extend(value.decode() for name, value in headers if name == b"set-cookie")

            assert self.loop is not None
            self.loop.run_until_complete(self.app(_scope("/login", None), _receive, send))
        if not captured:
            raise RuntimeError("the login request set no cookie")
        return captured[0].split(";", 1)[0]

    def run(self, n: int) -> None:
        if self.interface == "wsgi":
            _wsgi_loop(self.app, self.request, n)
        else:
            assert self.loop is not None
            self.loop.run_until_complete(_asgi_loop(self.app, self.request, n))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def _wsgi_loop(app: Any, environ: dict[str, Any], n: int) -> None:
    for _ in range(n):
        result = app(environ.copy(), _start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST


async def _send(message: dict[str, Any]) -> None:
    return None


async def _asgi_loop(app: Any, scope: dict[str, Any], n: int) -> None:
    for _ in range(n):
        request = scope.copy()
        request["headers"] = list(scope["headers"])
        await app(request, _receive, _send)


# -- modes --------------------------------------------------------------------------------------------


def timings(interfaces: list[str], cases: list[str], store: str, redis_url: str | None, args: Any) -> None:
    print(f"## In-process time per request ({store} store; best of {args.repeat} x {args.requests} requests)\n")
    print("| interface | case | µs/request | over bare |")
    print("|---|---|---:|---:|")
    for interface in interfaces:
        bare: float | None = None
        for case in cases:
            runner = Runner(interface, case, store, redis_url)
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                runner.run(args.requests)
                best = min(best, (time.perf_counter() - start) / args.requests * 1e6)
            runner.close()
            if case == "bare":
                bare = best
            over = f"+{best - bare:.1f}" if bare is not None and case != "bare" else ""
            print(f"| {interface} | {case} | {best:.1f} | {over} |", flush=True)


def profile(interface: str, case: str, store: str, redis_url: str | None, args: Any) -> None:
    from pyinstrument import Profiler

    runner = Runner(interface, case, store, redis_url)
    profiler = Profiler(interval=0.0001)
    profiler.start()
    runner.run(args.requests)
    profiler.stop()
    runner.close()
    print(profiler.output_text(unicode=True, color=False, show_all=args.show_all))


_SUMMARY = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _instructions(interface: str, case: str, store: str, redis_url: str | None, n: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{interface}.{case}.{store}.{n}.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    argv += [str(Path(__file__)), "--child", "--interface", interface, "--cases", case, "--store", store]
    argv += ["--requests", str(n)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if redis_url is not None:
        env["PERSESSION_BENCH_REDIS_URL"] = redis_url
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind run failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
    match = _SUMMARY.search(out.read_bytes())
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def callgrind(
    interfaces: list[str], cases: list[str], store: str, redis_url: str | None, args: Any, tmp: Path
) -> dict[tuple[str, str], float]:
    short, long = (int(n) for n in args.loops.split(","))
    jobs = [(i, c, n) for i in interfaces for c in cases for n in (short, long)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        counts = dict(
            zip(jobs, pool.map(lambda job: _instructions(job[0], job[1], store, redis_url, job[2], tmp), jobs))
        )
    per_request = {(i, c): (counts[i, c, long] - counts[i, c, short]) / (long - short) for i in interfaces for c in cases}
    print(f"## Instructions per request under callgrind ({store} store; (I({long}) - I({short})) / {long - short})\n")
    print("| interface | case | instructions/request | over bare |")
    print("|---|---|---:|---:|")
    for interface in interfaces:
        bare = per_request.get((interface, "bare"))
        for case in cases:
            value = per_request[interface, case]
            over = f"+{value - bare:,.0f}" if bare is not None and case != "bare" else ""
            print(f"| {interface} | {case} | {value:,.0f} | {over} |")
    return per_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interface", choices=(*INTERFACES, "both"), default="both")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: bare,read,write")
    parser.add_argument("--store", choices=STORES, default="memory")
    parser.add_argument("--requests", type=int, default=20000, help="requests per timing (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per case; the best is reported")
    parser.add_argument("--profile", metavar="CASE", help="profile one case's loop with pyinstrument")
    parser.add_argument("--show-all", action="store_true", help="with --profile: keep library frames")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per request with valgrind")
    parser.add_argument("--loops", default="2000,4000", help="with --callgrind: the two loop lengths")
    parser.add_argument("--jobs", type=int, default=2, help="with --callgrind: valgrind runs at once")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    interfaces = list(INTERFACES) if args.interface == "both" else [args.interface]
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.child:  # one loop under valgrind
        runner = Runner(interfaces[0], cases[0], args.store, os.environ.get("PERSESSION_BENCH_REDIS_URL"))
        runner.run(args.requests)
        runner.close()
        return 0
    interrupt_on_sigterm()
    processes = Processes()
    try:
        redis_url = start_redis(processes) if args.store == "redis" else None
        sys.path.insert(0, str(HERE))
        if args.profile:
            for interface in interfaces:
                print(f"## {interface} {args.profile} ({args.store} store, {args.requests} requests)\n")
                profile(interface, args.profile, args.store, redis_url, args)
        elif args.callgrind:
            callgrind(interfaces, cases, args.store, redis_url, args, processes.tmp)
        else:
            timings(interfaces, cases, args.store, redis_url, args)
    finally:
        processes.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

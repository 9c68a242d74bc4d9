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
    python benchmarks/inprocess.py --variants 'starlette-*,starsessions-redis' --callgrind
                                                        # the same for run.py's applications and peers

``--variants`` runs the applications of ``benchmarks/apps.py`` (Flask and
Starlette, bare, with persession or with a peer; ``--routes read,write``)
instead of the minimal ones, starting the stores they need; their cost then
includes the framework's, but not the web server's nor the network's.

``--callgrind`` runs each case under ``valgrind --tool=callgrind`` for two
loop lengths (``--loops 2000,4000``) and reports both totals and
``(I(long) - I(short)) / (long - short)``: the instructions one more request
costs. Start-up, imports and the login cancel out, and instruction counts do
not depend on what else the machine is doing, so these figures are the ones
to compare between versions on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _support import Processes, interrupt_on_sigterm, start_mongo, start_redis
from apps import FLASK_VARIANTS, LOGIN_DATA, SECRET, STARLETTE_VARIANTS

CASES = ("bare", "read", "write")
INTERFACES = ("wsgi", "asgi")
STORES = ("memory", "redis")
VARIANTS = FLASK_VARIANTS + STARLETTE_VARIANTS
ROUTES = ("read", "write")
_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "5")]
_AHEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")]


# -- the minimal applications ---------------------------------------------------------------------------


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


def make_store(interface: str, store: str) -> Any:
    if store == "memory":
        from persession.stores.memory import AsyncMemoryStore, MemoryStore

        return MemoryStore() if interface == "wsgi" else AsyncMemoryStore()
    from persession.stores.redis import AsyncRedisStore, RedisStore

    url = os.environ["PERSESSION_BENCH_REDIS_URL"]
    return RedisStore.from_url(url) if interface == "wsgi" else AsyncRedisStore.from_url(url)


def minimal_app(interface: str, case: str, store: str) -> Any:
    if case == "bare":
        return wsgi_inner if interface == "wsgi" else asgi_inner
    if interface == "wsgi":
        from persession.wsgi import SessionMiddleware

        return SessionMiddleware(wsgi_inner, secret=SECRET, store=make_store("wsgi", store))
    from persession.asgi import SessionMiddleware as AsgiSessionMiddleware

    return AsgiSessionMiddleware(asgi_inner, secret=SECRET, store=make_store("asgi", store))


# -- requests -------------------------------------------------------------------------------------------


def _environ(path: str, cookie: str | None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
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
        "asgi": {"version": "3.0", "spec_version": "2.3"},
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
        "state": {},
    }


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST


class _Capture:
    """A ``start_response`` and a ``send`` that keep the status and the ``Set-Cookie`` headers."""

    def __init__(self) -> None:
        self.status = 0
        self.cookies: list[str] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = int(status[:3])
        self.cookies += [value for name, value in headers if name.lower() == "set-cookie"]
        return None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.cookies += [v.decode("latin-1") for n, v in message.get("headers", ()) if n.lower() == b"set-cookie"]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


async def _send(message: dict[str, Any]) -> None:
    return None


class Runner:
    """One target -- a minimal case, or a variant's route -- and a request to repeat; :meth:`run` makes ``n``."""

    def __init__(self, target: str) -> None:
        kind, *rest = target.split(":")
        self.target = target
        if kind == "minimal":
            interface, case, store = rest
            self.interface = interface
            self.app = minimal_app(interface, case, store)
            path, login = "/" + case, case != "bare"
        else:
            variant, route = rest
            import apps

            self.interface = "wsgi" if variant in FLASK_VARIANTS else "asgi"
            self.app = apps.make_flask(variant) if self.interface == "wsgi" else apps.make_starlette(variant)
            path, login = "/" + route, not variant.endswith("-bare")
        self.loop = asyncio.new_event_loop() if self.interface == "asgi" else None
        cookie = self._login() if login else None
        self.request = _environ(path, cookie) if self.interface == "wsgi" else _scope(path, cookie)
        capture = self._call(self.request, _Capture())
        if capture.status != 200:
            raise RuntimeError(f"{target}: the request answered {capture.status}")
        self.run(20)  # warm caches, scripts and connections before anything is measured

    def _call(self, request: dict[str, Any], capture: _Capture) -> _Capture:
        if self.interface == "wsgi":
            result = self.app(dict(request), capture.start_response)
            for _chunk in result:
                pass
            getattr(result, "close", lambda: None)()
        else:
            assert self.loop is not None
            scope = dict(request, headers=list(request["headers"]))
            self.loop.run_until_complete(self.app(scope, _receive, capture.send))
        return capture

    def _login(self) -> str:
        login = _environ("/login", None) if self.interface == "wsgi" else _scope("/login", None)
        capture = self._call(login, _Capture())
        if capture.status != 200 or not capture.cookies:
            raise RuntimeError(f"{self.target}: the login answered {capture.status} with no cookie")
        return capture.cookies[0].split(";", 1)[0]

    def run(self, n: int) -> None:
        if self.interface == "wsgi":
            _wsgi_loop(self.app, self.request, n)
        else:
            assert self.loop is not None
            self.loop.run_until_complete(_asgi_loop(self.app, self.request, n))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


def _wsgi_loop(app: Any, environ: dict[str, Any], n: int) -> None:
    for _ in range(n):
        result = app(environ.copy(), _start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()


async def _asgi_loop(app: Any, scope: dict[str, Any], n: int) -> None:
    for _ in range(n):
        request = scope.copy()
        request["headers"] = list(scope["headers"])
        request["state"] = {}
        await app(request, _receive, _send)


# -- modes ----------------------------------------------------------------------------------------------


def _rows(targets: list[str]) -> list[tuple[str, str, str | None]]:
    """(label, target, its baseline target or None) for the tables."""
    rows = []
    for target in targets:
        kind, *rest = target.split(":")
        if kind == "minimal":
            interface, case, store = rest
            base = f"minimal:{interface}:bare:{store}"
            rows.append((f"{interface} {case}", target, base if case != "bare" and base in targets else None))
        else:
            variant, route = rest
            bare = ("flask-bare" if variant in FLASK_VARIANTS else "starlette-bare") + ":" + route
            base = f"app:{bare}"
            rows.append((f"{variant} {route}", target, base if base != target and base in targets else None))
    return rows


def timings(targets: list[str], args: argparse.Namespace) -> None:
    print(f"## In-process time per request (best of {args.repeat} x {args.requests} requests)\n")
    print("| target | µs/request | over bare |")
    print("|---|---:|---:|")
    measured: dict[str, float] = {}
    for label, target, base in _rows(targets):
        runner = Runner(target)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            runner.run(args.requests)
            best = min(best, (time.perf_counter() - start) / args.requests * 1e6)
        runner.close()
        measured[target] = best
        over = f"+{best - measured[base]:.1f}" if base in measured else ""
        print(f"| {label} | {best:.1f} | {over} |", flush=True)


def profile(targets: list[str], args: argparse.Namespace) -> None:
    from pyinstrument import Profiler

    for target in targets:
        runner = Runner(target)
        profiler = Profiler(interval=0.0001)
        profiler.start()
        runner.run(args.requests)
        profiler.stop()
        runner.close()
        print(f"## Profile of {target} ({args.requests} requests)\n")
        print(profiler.output_text(unicode=True, color=False, show_all=args.show_all))


_SUMMARY = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _instructions(target: str, n: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{target.replace(':', '.')}.{n}.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    argv += [str(Path(__file__)), "--child", target, "--requests", str(n)]
    done = subprocess.run(argv, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind run of {target} failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
    match = _SUMMARY.search(out.read_bytes())
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    out.unlink()
    return int(match.group(1))


def callgrind(targets: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    short, long = (int(n) for n in args.loops.split(","))
    jobs = [(target, n) for target in targets for n in (short, long)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _instructions(job[0], job[1], tmp), jobs), strict=True))
    per_request = {target: (counts[target, long] - counts[target, short]) / (long - short) for target in targets}
    print(f"## Instructions per request under callgrind ((I({long}) - I({short})) / {long - short})\n")
    # The totals too, so that a figure can be checked (and one loop length's noise seen) without a rerun.
    print(f"| target | I({short}) | I({long}) | instructions/request | over bare |")
    print("|---|---:|---:|---:|---:|")
    for label, target, base in _rows(targets):
        over = f"+{per_request[target] - per_request[base]:,.0f}" if base is not None else ""
        totals = f"{counts[target, short]:,} | {counts[target, long]:,}"
        print(f"| {label} | {totals} | {per_request[target]:,.0f} | {over} |")
    return per_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interface", choices=(*INTERFACES, "both"), default="both", help="minimal apps: which")
    parser.add_argument("--cases", default=",".join(CASES), help="minimal apps: comma-separated bare,read,write")
    parser.add_argument("--store", choices=STORES, default="memory", help="minimal apps: persession's store")
    parser.add_argument("--variants", help="run.py's applications instead: comma-separated names or patterns")
    parser.add_argument("--routes", default=",".join(ROUTES), help="with --variants: read,write")
    parser.add_argument("--requests", type=int, default=20000, help="requests per timing (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per target; the best is reported")
    parser.add_argument("--profile", action="store_true", help="profile each target's loop with pyinstrument")
    parser.add_argument("--show-all", action="store_true", help="with --profile: keep library frames")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per request with valgrind")
    parser.add_argument("--loops", default="2000,4000", help="with --callgrind: the two loop lengths")
    parser.add_argument("--jobs", type=int, default=2, help="with --callgrind: valgrind runs at once")
    parser.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one loop, under valgrind
        runner = Runner(args.child)
        runner.run(args.requests)
        runner.close()
        return 0

    if args.variants:
        patterns = [p.strip() for p in args.variants.split(",") if p.strip()]
        variants = [v for v in VARIANTS if any(fnmatch.fnmatchcase(v, p) for p in patterns)]
        routes = [r.strip() for r in args.routes.split(",") if r.strip()]
        if not variants or not routes or set(routes) - set(ROUTES):
            parser.error(f"no variant matches {args.variants!r}, or bad --routes; variants: {', '.join(VARIANTS)}")
        targets = [f"app:{variant}:{route}" for variant in variants for route in routes]
        needs = " ".join(variants)
    else:
        interfaces = list(INTERFACES) if args.interface == "both" else [args.interface]
        cases = [case.strip() for case in args.cases.split(",") if case.strip()]
        if set(cases) - set(CASES) or not cases:
            parser.error(f"--cases takes {', '.join(CASES)}")
        targets = [f"minimal:{i}:{c}:{args.store}" for i in interfaces for c in cases]
        needs = "redis" if args.store == "redis" and cases != ["bare"] else ""

    interrupt_on_sigterm()
    processes = Processes()
    try:
        os.environ["PERSESSION_BENCH_SQLITE_PATH"] = str(processes.tmp / "sessions.db")
        if "redis" in needs:
            os.environ["PERSESSION_BENCH_REDIS_URL"] = start_redis(processes)
        if "mongo" in needs:
            os.environ["PERSESSION_BENCH_MONGO_URL"] = start_mongo(processes)
        if args.profile:
            profile(targets, args)
        elif args.callgrind:
            callgrind(targets, args, processes.tmp)
        else:
            timings(targets, args)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        processes.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

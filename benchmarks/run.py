"""persession against its peers, over HTTP, with real servers and a real load generator.

From a fresh clone::

    python -m pip install -e ".[benchmarks]" && python benchmarks/run.py

It starts its own ``redis-server`` and SecantusDB (MongoDB-wire) server on
free 127.0.0.1 ports, then serves each variant (see ``benchmarks/apps.py``)
on 127.0.0.1 -- gunicorn with one sync worker for Flask, uvicorn with one
worker for Starlette -- and drives its two routes with ``wrk`` (a Python
client when ``wrk`` is missing; the output says which ran):

- ``read``: a logged-in cookie; the view reads ``session["user"]``;
- ``write``: the same cookie; the view sets ``session["visits"]``.

Every variant's server is started once and serves the whole run. Each round
loads one route on every variant, then the other route, in an order rotated
by one each round, so the variants compared are measured seconds apart (this
shared machine's speed drifts over minutes); the table gives the median of
the rounds (with min-max), p50 and p99 latency, the server's blocking waits
per request (its worker's voluntary context switches: a Redis round trip the
worker waits out is one; Linux only), and the ratio to the bare framework and
to the peer (Flask-Session for Flask, starsessions for Starlette). Then it counts the Redis round trips and writes
of one request of each Redis variant (``INFO`` deltas over ``--round-trips``
requests). Every server is stopped at the end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from _support import (
    HERE,
    HOST,
    Processes,
    free_port,
    interrupt_on_sigterm,
    port_open,
    start_mongo,
    start_redis,
    wait_until,
)
from apps import FLASK_VARIANTS, STARLETTE_VARIANTS

VARIANTS = FLASK_VARIANTS + STARLETTE_VARIANTS
ROUTES = ("read", "write")
#: For each variant, the variants its ratios are taken against: (bare framework, peer).
BARE = {**dict.fromkeys(FLASK_VARIANTS, "flask-bare"), **dict.fromkeys(STARLETTE_VARIANTS, "starlette-bare")}
PEER = {
    **dict.fromkeys(FLASK_VARIANTS, "flask-session-redis"),
    **dict.fromkeys(STARLETTE_VARIANTS, "starsessions-redis"),
}
#: What the goals compare: (variant, route, the variant it is measured against, the ratio wanted).
#: persession on Redis against the peer, per framework and route; the same with client-side caching
#: (``client_cache``); and that stretch goal: within 0.8x of signed cookies when reading, 2x the peer
#: when writing.
GOALS: tuple[tuple[str, str, str, float], ...] = (
    ("flask-persession-redis", "read", "flask-session-redis", 1.5),
    ("flask-persession-redis", "write", "flask-session-redis", 1.25),
    ("starlette-persession-redis", "read", "starsessions-redis", 2.0),
    ("starlette-persession-redis", "write", "starsessions-redis", 1.5),
    ("flask-persession-redis-cached", "read", "flask-session-redis", 1.5),
    ("flask-persession-redis-cached", "write", "flask-session-redis", 1.25),
    ("starlette-persession-redis-cached", "read", "starsessions-redis", 2.0),
    ("starlette-persession-redis-cached", "write", "starsessions-redis", 1.5),
    ("flask-persession-redis-cached", "read", "flask-cookie", 0.8),
    ("flask-persession-redis-cached", "write", "flask-session-redis", 2.0),
    ("starlette-persession-redis-cached", "read", "starlette-cookie", 0.8),
    ("starlette-persession-redis-cached", "write", "starsessions-redis", 2.0),
)
#: Redis commands that write; a read-only request should send none of them.
REDIS_WRITES = frozenset(
    (
        *("set", "setex", "psetex", "getex", "getdel", "del", "unlink", "sadd", "srem", "publish"),
        *("hset", "hmset", "hsetnx", "hdel", "expire", "pexpire", "expireat", "pexpireat", "persist"),
        *("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"),
    )
)
# A stand-in cookie for the bare variants, as long as persession's.
_BARE_COOKIE = "session=" + "x" * 43 + "." + "y" * 43


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int = 0
    bad_status: int = 0
    #: The worker's voluntary context switches per request (NaN where /proc cannot tell).
    waits: float = float("nan")


@dataclass
class Served:
    """A variant's server, up for the whole run."""

    process: subprocess.Popen[bytes]
    url: str
    cookie: str
    #: The process that handles requests: gunicorn's worker, or uvicorn itself (``None``: unknown).
    worker: int | None


@dataclass
class Results:
    tool: str
    rounds: list[dict[str, dict[str, Measurement]]] = field(default_factory=list)


# -- servers ------------------------------------------------------------------------------------------


def framework(variant: str) -> str:
    return "flask" if variant in FLASK_VARIANTS else "starlette"


def serve(processes: Processes, variant: str, stores: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``variant`` on a free port; returns the process and its base URL once it answers."""
    port = free_port()
    env = {"PERSESSION_BENCH_VARIANT": variant, "PYTHONPATH": str(HERE)}
    env.update(stores)
    if framework(variant) == "flask":
        argv = [sys.executable, "-m", "gunicorn", "apps:wsgi", "--bind", f"{HOST}:{port}", "--workers", "1"]
        argv += ["--worker-class", "sync", "--chdir", str(HERE), "--log-level", "warning"]
    else:
        argv = [sys.executable, "-m", "uvicorn", "apps:asgi", "--host", HOST, "--port", str(port), "--workers", "1"]
        argv += ["--app-dir", str(HERE), "--log-level", "warning", "--no-access-log"]
    process = processes.start(argv, variant, env=env)
    url = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: port_open(port), variant, process, 30)
    except Exception as error:
        log = processes.log(process)
        processes.stop(process)
        raise RuntimeError(f"{variant} did not start: {error}\n{log}") from None
    return process, url


def get(url: str, cookie: str | None = None) -> tuple[int, list[str], bytes]:
    # Only ever http://127.0.0.1 URLs this script built.
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, response.headers.get_all("Set-Cookie") or [], response.read()


def login(url: str, variant: str) -> str:
    """The ``name=value`` of the cookie a logged-in client sends."""
    status, cookies, _ = get(url + "/login")
    if status != 200:
        raise RuntimeError(f"{variant}: /login answered {status}")
    if variant in ("flask-bare", "starlette-bare"):
        return _BARE_COOKIE
    if not cookies:
        raise RuntimeError(f"{variant}: /login set no cookie")
    cookie = cookies[0].split(";", 1)[0]
    status, _, body = get(url + "/read", cookie)
    if status != 200 or body != b"alice":
        raise RuntimeError(f"{variant}: /read with the login cookie answered {status} {body!r}")
    return cookie


# -- load generators -----------------------------------------------------------------------------------

_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(url: str, cookie: str, duration: float, connections: int, threads: int) -> Measurement:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s"]
    argv += ["-H", f"Cookie: {cookie}", url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 60)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if done.returncode != 0 or rps is None or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    latencies = {pct: float(value) * _UNITS[unit] for pct, value, unit in _LATENCY.findall(out)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Measurement(
        rps=float(rps.group(1)),
        p50_ms=latencies.get("50", float("nan")),
        p99_ms=latencies.get("99", float("nan")),
        requests=int(total.group(1)),
        # wrk counts a server's close after each response (gunicorn's sync worker) as a read error.
        errors=sum(int(n) for n in errors.groups()[0:1] + errors.groups()[2:]) if errors else 0,
        bad_status=int(bad.group(1)) if bad else 0,
    )


async def _client(host: str, port: int, path: str, cookie: str, deadline: float, latencies: list[float]) -> int:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    bad = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].split(" ")[1].startswith("2"):
            bad += 1
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        latencies.append(time.perf_counter() - start)
        if headers.get("connection", "").lower() == "close":
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
    return bad


def python_load(url: str, cookie: str, duration: float, connections: int) -> Measurement:
    """A plain asyncio HTTP/1.1 client: the fallback when ``wrk`` is not installed."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + duration
        clients = [_client(host, int(port), "/" + path, cookie, deadline, latencies) for _ in range(connections)]
        bad = sum(await asyncio.gather(*clients))
        return latencies, bad, time.perf_counter() - start

    latencies, bad, elapsed = asyncio.run(run())
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return Measurement(len(latencies) / elapsed, pct(0.50), pct(0.99), len(latencies), 0, bad)


# -- Redis round trips ---------------------------------------------------------------------------------


def _redis_snapshot(client: Any) -> tuple[int, dict[str, int]]:
    info = client.execute_command("INFO", "stats", "commandstats")
    calls = {key.removeprefix("cmdstat_"): value["calls"] for key, value in info.items() if key.startswith("cmdstat_")}
    return int(info["total_reads_processed"]), calls


def round_trips(processes: Processes, variant: str, stores: dict[str, str], n: int) -> dict[str, Any]:
    """Redis round trips and commands per request of ``variant``'s two routes, from the server's ``INFO``.

    Round trips are the server's socket reads (``total_reads_processed``):
    one per request the client sends (pipelined commands count once), less
    the ``INFO`` call itself. Commands come from ``INFO commandstats``; it
    also counts the commands a Lua script runs, so they are listed but not
    counted as round trips.
    """
    import redis

    process, url = serve(processes, variant, stores)
    try:
        with redis.Redis.from_url(stores["PERSESSION_BENCH_REDIS_URL"]) as client:
            cookie = login(url, variant)
            for _ in range(5):  # connections, scripts and pools warmed before anything is counted
                get(url + "/read", cookie)
                get(url + "/write", cookie)
            result: dict[str, Any] = {}
            for route in ROUTES:
                reads_before, calls_before = _redis_snapshot(client)
                for _ in range(n):
                    status, _, _ = get(url + "/" + route, cookie)
                    if status != 200:
                        raise RuntimeError(f"{variant} /{route} answered {status}")
                reads_after, calls_after = _redis_snapshot(client)
                commands = {
                    name: (calls_after.get(name, 0) - calls_before.get(name, 0)) / n
                    for name in calls_after
                    if name != "info" and calls_after.get(name, 0) != calls_before.get(name, 0)
                }
                result[route] = {
                    "round_trips": (reads_after - reads_before - 1) / n,
                    "writes": sum(value for name, value in commands.items() if name in REDIS_WRITES),
                    "commands": dict(sorted(commands.items())),
                }
            return result
    finally:
        processes.stop(process)


# -- the run -------------------------------------------------------------------------------------------


def start(processes: Processes, variant: str, stores: dict[str, str]) -> Served:
    """Serve ``variant`` and log in once; the same server and cookie serve every round."""
    process, url = serve(processes, variant, stores)
    try:
        cookie = login(url, variant)
    except BaseException:
        processes.stop(process)
        raise
    worker: int | None = process.pid
    if framework(variant) == "flask":  # gunicorn's master forks the worker that serves
        worker = _child(process.pid)
    return Served(process, url, cookie, worker)


def _child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as children:
            found = children.read().split()
    except OSError:
        return None
    return int(found[0]) if len(found) == 1 else None


def voluntary_switches(pid: int | None) -> int | None:
    """How often ``pid`` has blocked (``voluntary_ctxt_switches``); ``None`` off Linux."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(served: Served, route: str, args: argparse.Namespace) -> Measurement:
    """Warm up, then load ``route`` for ``args.duration`` seconds, counting the worker's blocking waits."""
    url = served.url + "/" + route
    if args.warmup > 0:
        load(url, served.cookie, args.warmup, args)
    before = voluntary_switches(served.worker)
    measured = load(url, served.cookie, args.duration, args)
    after = voluntary_switches(served.worker)
    if before is not None and after is not None and measured.requests:
        measured.waits = (after - before) / measured.requests
    return measured


def load(url: str, cookie: str, duration: float, args: argparse.Namespace) -> Measurement:
    if args.tool == "wrk":
        return wrk(url, cookie, duration, args.connections, args.threads)
    return python_load(url, cookie, duration, args.connections)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: Results, variants: Sequence[str], routes: Sequence[str]) -> dict[tuple[str, str], Any]:
    summary: dict[tuple[str, str], Any] = {}
    for variant in variants:
        for route in routes:
            runs = [round_[variant][route] for round_ in results.rounds if variant in round_]
            summary[variant, route] = {
                "rps": _median([m.rps for m in runs]),
                "rps_min": min((m.rps for m in runs), default=float("nan")),
                "rps_max": max((m.rps for m in runs), default=float("nan")),
                "p50": _median([m.p50_ms for m in runs]),
                "p99": _median([m.p99_ms for m in runs]),
                "waits": _median([m.waits for m in runs]),
                "bad": sum(m.bad_status + m.errors for m in runs),
                "per_round": [m.rps for m in runs],
            }
    return summary


def _ratio(summary: dict[tuple[str, str], Any], variant: str, other: str, route: str) -> str:
    if (other, route) not in summary or variant == other:
        return "-"
    return f"{summary[variant, route]['rps'] / summary[other, route]['rps']:.2f}x"


def table(summary: dict[tuple[str, str], Any], variants: Sequence[str], routes: Sequence[str]) -> str:
    lines = [
        "| variant | route | req/s median (min-max) | p50 ms | p99 ms | waits/request | vs bare | vs peer |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        for route in routes:
            row = summary[variant, route]
            flag = f" ⚠ {row['bad']} errors/non-2xx" if row["bad"] else ""
            lines.append(
                f"| {variant} | {route} | {row['rps']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f}){flag}"
                f" | {row['p50']:.2f} | {row['p99']:.2f} | {row['waits']:.2f}"
                f" | {_ratio(summary, variant, BARE[variant], route)}"
                f" | {_ratio(summary, variant, PEER[variant], route)} |"
            )
    return "\n".join(lines)


def goals(summary: dict[tuple[str, str], Any]) -> str:
    lines = []
    for variant, route, peer, wanted in GOALS:
        if (variant, route) not in summary or (peer, route) not in summary:
            continue
        ours, theirs = summary[variant, route], summary[peer, route]
        ratio = ours["rps"] / theirs["rps"]
        paired = [a / b for a, b in zip(ours["per_round"], theirs["per_round"], strict=False) if b]
        spread = f" (per round {min(paired):.2f}-{max(paired):.2f}, median {_median(paired):.2f})" if paired else ""
        verdict = "met" if ratio >= wanted else "NOT met"
        bare = BARE[variant]
        ceiling = ""
        if (bare, route) in summary and peer == PEER[variant]:
            # What a session middleware costing nothing would reach: the bare framework against the peer.
            ceiling = f"; ceiling (bare / peer) {summary[bare, route]['rps'] / theirs['rps']:.2f}x"
        lines.append(f"- {variant} / {peer}, {route}: **{ratio:.2f}x**{spread}; goal ≥ {wanted}x {verdict}{ceiling}")
    return "\n".join(lines)


def round_trip_table(counts: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | route | Redis round trips/request | modifying commands/request | commands/request |",
        "|---|---|---:|---:|---|",
    ]
    for variant, routes in counts.items():
        for route, row in routes.items():
            commands = ", ".join(f"{name} {value:.2f}" for name, value in row["commands"].items()) or "none"
            lines.append(f"| {variant} | {route} | {row['round_trips']:.2f} | {row['writes']:.2f} | {commands} |")
    return "\n".join(lines)


def machine(tool: str) -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ["persession-web", "flask", "flask-session", "starlette", "starsessions", "redis", "hiredis", "pymongo"]
    packages += ["gunicorn", "uvicorn", "uvloop", "httptools"]
    tool_version = tool
    if tool == "wrk":
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        tool_version = (done.stdout or done.stderr).splitlines()[0].split("[")[0].strip()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}; "
        f"load generator: {tool_version}; load average at start {os.getloadavg()[0]:.2f}\n"
        + ", ".join(f"{name} {version(name)}" for name in packages)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per route and round (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each in a rotated order (default 3)")
    parser.add_argument(
        "--variants",
        default="*",
        help="comma-separated names or shell patterns (default all): " + ", ".join(VARIANTS),
    )
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated: read,write")
    parser.add_argument(
        "--round-trips", type=int, default=200, help="requests to count Redis round trips over (0: skip)"
    )
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument("--json", metavar="PATH", help="also write the raw measurements as JSON")
    args = parser.parse_args(argv)

    patterns = [p.strip() for p in args.variants.split(",") if p.strip()]
    variants = [v for v in VARIANTS if any(fnmatch.fnmatchcase(v, p) for p in patterns)]
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not variants:
        parser.error(f"no variant matches {args.variants!r}; variants: {', '.join(VARIANTS)}")
    if set(routes) - set(ROUTES) or not routes:
        parser.error("--routes takes read, write or both")
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "python"
    if args.tool == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk)")

    interrupt_on_sigterm()
    processes = Processes()
    try:
        return _run(processes, variants, routes, args)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        processes.close()


def _run(processes: Processes, variants: list[str], routes: list[str], args: argparse.Namespace) -> int:
    print(f"# persession benchmarks\n\n{machine(args.tool)}\n")
    if args.tool == "python":
        print("wrk is not installed: the load comes from a Python asyncio client (slower; figures not comparable).\n")
    stores = {"PERSESSION_BENCH_SQLITE_PATH": str(processes.tmp / "sessions.db")}
    if any("redis" in v for v in variants):
        stores["PERSESSION_BENCH_REDIS_URL"] = start_redis(processes)
    if any("mongo" in v for v in variants):
        try:
            stores["PERSESSION_BENCH_MONGO_URL"] = start_mongo(processes)
        except RuntimeError as error:
            print(f"skipping the MongoDB variants: {error}\n")
            variants = [v for v in variants if "mongo" not in v]

    results = Results(args.tool)
    started = time.monotonic()
    served: dict[str, Served] = {}
    for variant in variants:
        served[variant] = start(processes, variant, stores)
    for number in range(args.rounds):
        shift = number % len(variants)
        order = variants[shift:] + variants[:shift]
        route_order = routes if number % 2 == 0 else routes[::-1]
        print(f"round {number + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr, flush=True)
        round_: dict[str, dict[str, Measurement]] = {variant: {} for variant in order}
        for route in route_order:
            for variant in order:
                measured = round_[variant][route] = measure(served[variant], route, args)
                print(f"  {route} {variant}: {measured.rps:,.0f} req/s", file=sys.stderr, flush=True)
        results.rounds.append(round_)
    for variant in variants:
        processes.stop(served.pop(variant).process)

    summary = summarize(results, variants, routes)
    print(
        f"## Throughput ({args.rounds} rounds of {args.duration:g} s per route, {args.connections} connections,"
        f" {args.tool}; {time.monotonic() - started:.0f} s; load average now {os.getloadavg()[0]:.2f})\n"
    )
    print(table(summary, variants, routes))
    goal_lines = goals(summary)
    if goal_lines:
        print(f"\n### Goals (persession + Redis against the peer or cookies, ratio of the medians)\n\n{goal_lines}")

    counts: dict[str, dict[str, Any]] = {}
    if args.round_trips > 0 and "PERSESSION_BENCH_REDIS_URL" in stores:
        for variant in [v for v in variants if v.endswith(("-redis", "-redis-cached", "-redispy"))]:
            counts[variant] = round_trips(processes, variant, stores, args.round_trips)
        print(f"\n## Redis round trips per request ({args.round_trips} sequential requests per route)\n")
        print(round_trip_table(counts))
        print(
            "\nRound trips: the server's socket reads (INFO total_reads_processed). Commands: INFO commandstats,"
            " which also counts the commands a Lua script runs (EVALSHA's HSET, PEXPIRE...)."
        )

    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            raw = {
                "tool": results.tool,
                "rounds": [
                    {v: {r: asdict(m) for r, m in rs.items()} for v, rs in rnd.items()} for rnd in results.rounds
                ],
                "round_trips": counts,
            }
            json.dump(raw, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

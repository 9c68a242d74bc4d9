"""benchmarks/run.py runs end to end: a tiny run of one pair of variants prints its tables.

No timing is asserted (the machine may be busy): only that the run completes,
prints the throughput table, and that persession on Redis makes at most one
store round trip for a read-only request (and writes nothing), and at most
two for a writing one, on its own connections and on a redis-py client
passed in; with client-side caching, none and one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _redis import redis_binary
from _servers import ROOT

pytestmark = pytest.mark.server


@pytest.mark.parametrize(
    ("bare", "variant", "most_read", "most_write"),
    [
        pytest.param("starlette-bare", "starlette-persession-redis", 1.0, 2.0, id="starlette"),
        # A redis.asyncio client passed in: the path Sentinel and Cluster clients take.
        pytest.param("starlette-bare", "starlette-persession-redispy", 1.0, 2.0, id="starlette, redis-py client"),
        # client_cache: a cached, unchanged session loads without a round trip; a write is the merge alone.
        pytest.param("flask-bare", "flask-persession-redis-cached", 0.0, 1.0, id="flask, client-side caching"),
    ],
)
def test_run_py_prints_the_table_and_counts_round_trips(
    tmp_path: Path, bare: str, variant: str, most_read: float, most_write: float
) -> None:
    server = redis_binary("redis-server")  # skips (fails under CI) without one
    out = tmp_path / "results.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--duration", "1", "--warmup", "0", "--rounds", "1"]
    argv += ["--connections", "4", "--variants", f"{bare},{variant}", "--round-trips", "20"]
    argv += ["--json", str(out)]
    env = {**os.environ, "PERSESSION_BENCH_REDIS_SERVER": server}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    header = "| variant | route | req/s median (min-max) | p50 ms | p99 ms | waits/request | vs bare | vs peer |"
    assert header in done.stdout
    for name in (bare, variant):
        for route in ("read", "write"):
            assert f"| {name} | {route} |" in done.stdout
    assert "Redis round trips per request" in done.stdout
    if os.environ.get("CI") == "true":  # .ci/run installs wrk: the Python fallback must not stand in for it
        assert "load generator: wrk" in done.stdout, done.stdout[:400]

    results = json.loads(out.read_text())
    if Path("/proc/self/status").exists():  # the server's blocking waits are counted from /proc
        for name in (bare, variant):
            waits = results["rounds"][0][name]["read"]["waits"]
            assert math.isfinite(waits), f"{name}: no count of the worker's waits"
            assert waits >= 0
    counts = results["round_trips"][variant]
    print(f"\n[benchmarks] {variant} per request: {counts}")
    assert counts["read"]["round_trips"] <= most_read
    assert counts["read"]["writes"] == 0
    assert counts["write"]["round_trips"] <= most_write

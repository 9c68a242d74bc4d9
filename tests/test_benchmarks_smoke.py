"""benchmarks/run.py runs end to end: a tiny run of one pair of variants prints its tables.

No timing is asserted (the machine may be busy): only that the run completes,
prints the throughput table, and that persession on Redis makes at most one
store round trip for a read-only request (and writes nothing), and at most
two for a writing one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _redis import redis_binary
from _servers import ROOT

pytestmark = pytest.mark.server


def test_run_py_prints_the_table_and_counts_round_trips(tmp_path: Path) -> None:
    server = redis_binary("redis-server")  # skips (fails under CI) without one
    out = tmp_path / "results.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--duration", "1", "--warmup", "0", "--rounds", "1"]
    argv += ["--connections", "4", "--variants", "starlette-bare,starlette-persession-redis", "--round-trips", "20"]
    argv += ["--json", str(out)]
    env = {**os.environ, "PERSESSION_BENCH_REDIS_SERVER": server}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    assert "| variant | route | req/s median (min-max) | p50 ms | p99 ms | vs bare | vs peer |" in done.stdout
    for variant in ("starlette-bare", "starlette-persession-redis"):
        for route in ("read", "write"):
            assert f"| {variant} | {route} |" in done.stdout
    assert "Redis round trips per request" in done.stdout
    if os.environ.get("CI") == "true":  # .ci/run installs wrk: the Python fallback must not stand in for it
        assert "load generator: wrk" in done.stdout, done.stdout[:400]

    counts = json.loads(out.read_text())["round_trips"]["starlette-persession-redis"]
    print(f"\n[benchmarks] persession + Redis per request: {counts}")
    assert counts["read"]["round_trips"] <= 1.0
    assert counts["read"]["writes"] == 0
    assert counts["write"]["round_trips"] <= 2.0

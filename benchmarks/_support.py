"""What the benchmark scripts share: servers on free 127.0.0.1 ports, started and always stopped.

Every process started here runs in a session of its own and is stopped
(TERM, then KILL, to its whole process group) by :meth:`Processes.close`,
which the scripts call in a ``finally``; ``SIGTERM`` to a script is turned
into ``KeyboardInterrupt`` so that ``finally`` runs then too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def interrupt_on_sigterm() -> None:
    """Make ``SIGTERM`` raise ``KeyboardInterrupt``, so the scripts' cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def wait_until(predicate: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready within {timeout}s")


def port_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


class Processes:
    """The subprocesses a script started; :meth:`close` stops them all."""

    def __init__(self) -> None:
        self._running: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="persession-bench-"))

    def start(
        self,
        argv: Sequence[str],
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with its output in a log file of the temporary directory."""
        log = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                env={**os.environ, **(env or {})},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running.append((process, log))
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        for candidate, log in self._running:
            if candidate is process:
                return log.read_text(errors="replace")[-4000:]
        return ""

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one process (TERM, then KILL after 10 s) and forget it."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self._running = [(p, log) for p, log in self._running if p is not process]

    def close(self) -> None:
        """Stop every process still running, newest first, and remove the temporary directory."""
        for process, _ in reversed(list(self._running)):
            self.stop(process)
        shutil.rmtree(self.tmp, ignore_errors=True)


def redis_binary() -> str | None:
    """``$PERSESSION_BENCH_REDIS_SERVER``, else Debian's ``/usr/bin/redis-server`` (PATH may hold an older shim),
    else PATH's."""
    if os.environ.get("PERSESSION_BENCH_REDIS_SERVER"):
        return os.environ["PERSESSION_BENCH_REDIS_SERVER"]
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    return shutil.which("redis-server")


def start_redis(processes: Processes) -> str:
    """A ``redis-server`` on a free 127.0.0.1 port that persists nothing; returns its URL."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    data = processes.tmp / "redis"
    data.mkdir()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(data)]
    process = processes.start(argv, "redis")
    url = f"redis://{HOST}:{port}/0"

    def ping() -> bool:
        import redis

        with redis.Redis.from_url(url, socket_timeout=1) as client:
            return bool(client.ping())

    wait_until(ping, "redis-server", process, 20)
    return url


def start_mongo(processes: Processes) -> str:
    """A SecantusDB (MongoDB-wire) server on a free 127.0.0.1 port; returns its URL."""
    import importlib.util

    if importlib.util.find_spec("secantus") is None:
        raise RuntimeError("SecantusDB is not installed (pip install secantusdb)")
    port = free_port()
    data = processes.tmp / "mongo"
    data.mkdir()
    config = processes.tmp / "mongo.toml"
    config.touch()  # an empty config: no auto-discovered secantusd.toml
    argv = [sys.executable, "-m", "secantus", "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--storage-path", str(data), "--log-level", "WARNING"]
    process = processes.start(argv, "mongo", cwd=processes.tmp)
    url = f"mongodb://{HOST}:{port}/"

    def hello() -> bool:
        from pymongo import MongoClient

        client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=500)
        with contextlib.closing(client):
            client.admin.command("hello")
        return True

    wait_until(hello, "SecantusDB", process, 30)
    return url

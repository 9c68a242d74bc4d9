"""Real servers for the tests: subprocesses on free 127.0.0.1 ports, stopped by whoever starts them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from ephemeral_port_reserve import reserve

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
ROOT = HERE.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (reserved as Werkzeug's tests do)."""
    return int(reserve("127.0.0.1"))


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name``; skip when it is missing, except under CI, where that is a failure."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: {install_hint}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts connections, or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode} before listening:\n{output}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


class ServerProcess:
    """One server subprocess: started listening, stopped (TERM, then KILL) on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL to its whole process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> str:
        """Stop the server and return what it printed."""
        process = self.process
        if process is None:
            return ""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        if process.stdout:
            process.stdout.close()
        return output

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def uvicorn_server(
    app: str, *, env: Mapping[str, str] | None = None, workers: int = 1, args: Sequence[str] = ()
) -> ServerProcess:
    """uvicorn serving ``module:attribute`` from tests/apps on a free port; ``args`` are extra options."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning", "--app-dir", str(APPS), *args]
    return ServerProcess(argv, port, env=env)


def gunicorn_server(
    app: str, *, env: Mapping[str, str] | None = None, workers: int = 1, args: Sequence[str] = ()
) -> ServerProcess:
    """gunicorn (sync workers, unless ``args`` choose others) serving ``module:attribute`` from tests/apps."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    argv += ["--chdir", str(APPS), "--log-level", "warning", *args]
    return ServerProcess(argv, port, env=env)


@contextlib.contextmanager
def servers(*processes: ServerProcess) -> Iterator[list[ServerProcess]]:
    """Start several servers; stop them all on exit."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(p) for p in processes]

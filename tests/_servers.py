"""Real servers for the tests: subprocesses on free 127.0.0.1 ports, stopped by whoever starts them."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from ephemeral_port_reserve import reserve

from persession.nginx import NginxSpec, render_standalone

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


# --- nginx (tests/test_nginx.py, test_nginx_e2e.py, test_cli.py, test_soak.py) ----------------------------------

NGINX_HINT = "install nginx (apt-get install nginx-light, or brew install nginx)"
OPENSSL_HINT = "install OpenSSL (apt-get install openssl)"
#: How long the nginx and ``persession serve`` helpers wait for a process.
PROCESS_TIMEOUT = 20.0


def nginx_binary() -> str:
    """The nginx executable: /usr/sbin/nginx (often not on a user's PATH), else PATH; skip or fail when missing."""
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return require_binary("nginx", NGINX_HINT)


def worker_user() -> str | None:
    """The ``user`` for a root-started test nginx (its workers must reach pytest's 0700 tmp dirs), else None."""
    return getpass.getuser() if os.geteuid() == 0 else None


def nginx_test(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``config`` with ``prefix`` as its prefix directory."""
    argv = [nginx_binary(), "-t", "-p", str(prefix), "-c", str(config), "-e", "stderr"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def assert_nginx_accepts(config: Path, prefix: Path) -> None:
    """Fail with nginx's own message unless ``nginx -t`` accepts ``config``."""
    result = nginx_test(config, prefix)
    assert result.returncode == 0, f"nginx -t rejected {config}:\n{result.stderr}\n{config.read_text()}"
    assert "test is successful" in result.stderr


HARNESS = """events {{ worker_connections 64; }}
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    include {snippet};
}}
"""


def check_snippet(text: str, prefix: Path) -> None:
    """``nginx -t`` on a conf.d snippet, included in the http block of a minimal nginx.conf."""
    prefix.mkdir(parents=True, exist_ok=True)
    snippet = prefix / "persession.conf"
    snippet.write_text(text)
    user = f"user {worker_user()};\n" if worker_user() else ""
    config = prefix / "nginx.conf"
    config.write_text(HARNESS.format(prefix=prefix, snippet=snippet, user=user))
    assert_nginx_accepts(config, prefix)


def check_standalone(text: str, prefix: Path) -> None:
    """``nginx -t`` on a complete nginx.conf rendered for ``prefix``."""
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(text)
    assert_nginx_accepts(config, prefix)


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""

    cert: Path
    key: Path


def make_certificate(directory: Path) -> Certificate:
    """Generate a self-signed certificate with ``openssl req -x509`` (skip, or fail under CI, without openssl)."""
    openssl = require_binary("openssl", OPENSSL_HINT)
    cert, key = directory / "cert.pem", directory / "key.pem"
    argv = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    argv += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return Certificate(cert, key)


class NginxServer:
    """nginx from :func:`render_standalone` in its own prefix directory, in the foreground; stopped on exit."""

    def __init__(self, spec: NginxSpec, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.spec.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.spec.port}"

    def start(self) -> NginxServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nginx.conf"
        config.write_text(render_standalone(self.spec, directory=str(self.directory), daemon=False, user=worker_user()))
        assert_nginx_accepts(config, self.directory)
        argv = [nginx_binary(), "-p", str(self.directory), "-c", str(config), "-e", "stderr"]
        self.process = ServerProcess(argv, self.spec.port).start()
        if self.spec.tls is not None and self.spec.tls.redirect_http:
            wait_for_port(self.spec.tls.http_port, self.process.process)
        return self

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def upstream_addresses(response: httpx.Response) -> list[str]:
    """The processes nginx tried, in order (X-Upstream-Addr; the last one answered)."""
    header = response.headers.get("x-upstream-addr")
    assert header, f"no X-Upstream-Addr header in {dict(response.headers)}"
    return [part.strip() for part in header.split(",")]


# --- ``persession serve`` as a subprocess (tests/test_serve.py, test_nginx_e2e.py, test_soak.py) ---------------


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = PROCESS_TIMEOUT) -> None:
    """Poll ``predicate`` until it holds, or fail saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        wait_for_port(port, timeout=0.2)
    except TimeoutError:
        return False
    return True


class Launched:
    """``persession serve`` as a subprocess, its output in a log file; stopped (TERM, then KILL) on exit."""

    def __init__(
        self,
        app: str,
        ports: Sequence[int],
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path = APPS,
        log: Path,
    ) -> None:
        self.ports = list(ports)
        self.log = log
        argv = [sys.executable, "-m", "persession", "serve", app, "--ports", ",".join(map(str, ports)), *args]
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Launched:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            for port in self.ports:
                wait_for_port(port, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> dict[int, int]:
        """Port -> pid of each child, from the launcher's log."""
        found = {int(port): int(pid) for port, pid in re.findall(r"on [^\s]+:(\d+) \(pid (\d+)\)", self.output())}
        assert set(found) == set(self.ports), self.output()
        return found

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(PROCESS_TIMEOUT)

    def __enter__(self) -> Launched:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

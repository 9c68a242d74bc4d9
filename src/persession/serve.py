"""One server process per port, as nginx's ``upstream`` wants them: ``persession serve``.

The seed recipe starts four node processes with pm2 in *fork* mode, each on
its own port, and lets nginx balance between them (``pm2 start -f app.js --
8001`` ... ``8004``), rather than pm2's cluster mode, where the processes
share one port. This module does the same for a Python app::

    persession serve myapp:app --ports 8001-8004            # ASGI: uvicorn, WSGI: gunicorn

- one independent child per port (``python -m uvicorn`` for an ASGI app,
  ``python -m gunicorn`` for a WSGI app; the kind is detected by importing the
  app once, or chosen with ``server=``); a child that dies does not take the
  others down, and nginx routes around it;
- SIGTERM and SIGINT are forwarded to every child (each runs in a session of
  its own, so a terminal's Ctrl-C reaches them once, through the launcher); a
  second signal, or ``stop_timeout`` seconds without all of them gone, sends
  SIGKILL;
- the launcher exits when every child has, with status 0 when they all exited
  cleanly;
- on Linux a child also gets SIGTERM if the launcher itself is killed.

It is deliberately small: it does not restart a crashed child. Under
systemd, prefer a template unit (``app@.service`` with ``%i`` as the port),
which restarts each process on its own; see the deployment guide.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Literal

from .exceptions import ConfigError

__all__ = ["ServerKind", "ServeSpec", "Launcher", "detect_server", "server_command", "serve"]

#: Which server runs each process: uvicorn for ASGI apps, gunicorn for WSGI apps.
ServerKind = Literal["uvicorn", "gunicorn"]
_SERVERS: tuple[str, ...] = ("uvicorn", "gunicorn")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServeSpec:
    """What ``persession serve`` runs; validated at construction.

    :param app: ``module:attribute`` (``attribute`` may be dotted).
    :param ports: one process per port, in this order.
    :param host: the address every process binds. Default ``127.0.0.1``
        (only nginx, on the same host, should reach them).
    :param server: ``"uvicorn"``, ``"gunicorn"`` or ``"auto"`` (default:
        detect ASGI or WSGI by importing the app).
    :param workers_per_port: worker processes behind each port (``--workers``
        of the server). Default 1: the processes are the ports.
    :param app_dir: a directory to import the app from (uvicorn's
        ``--app-dir``, gunicorn's ``--pythonpath``). Default: the current one.
    :param server_args: extra arguments for every server process.
    :param stop_timeout: seconds between forwarding a stop signal and SIGKILL.
    """

    app: str
    ports: tuple[int, ...]
    host: str = "127.0.0.1"
    server: ServerKind | Literal["auto"] = "auto"
    workers_per_port: int = 1
    app_dir: str | None = None
    server_args: tuple[str, ...] = ()
    stop_timeout: int = 30

    def __post_init__(self) -> None:
        module, sep, attribute = self.app.partition(":") if isinstance(self.app, str) else ("", "", "")
        if not sep or not module or not attribute:
            raise ConfigError("app", f"{self.app!r} is not MODULE:ATTRIBUTE (e.g. myapp.main:app)")
        ports = tuple(self.ports)
        if not ports:
            raise ConfigError("ports", "at least one port is required")
        if len(set(ports)) != len(ports):
            raise ConfigError("ports", "a port is listed twice")
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError("ports", f"{port!r} is not a port (1-65535)")
        object.__setattr__(self, "ports", ports)
        if not isinstance(self.host, str) or not self.host or any(c.isspace() for c in self.host):
            raise ConfigError("host", f"{self.host!r} is not an address")
        if self.server not in (*_SERVERS, "auto"):
            raise ConfigError("server", f"must be uvicorn, gunicorn or auto, not {self.server!r}")
        if isinstance(self.workers_per_port, bool) or not isinstance(self.workers_per_port, int):
            raise ConfigError("workers_per_port", f"must be an integer, not {self.workers_per_port!r}")
        if self.workers_per_port < 1:
            raise ConfigError("workers_per_port", f"must be at least 1, not {self.workers_per_port}")
        if self.app_dir is not None and not os.path.isdir(self.app_dir):
            raise ConfigError("app_dir", f"{self.app_dir!r} is not a directory")
        object.__setattr__(self, "server_args", tuple(self.server_args))
        if isinstance(self.stop_timeout, bool) or not isinstance(self.stop_timeout, int) or self.stop_timeout < 1:
            raise ConfigError("stop_timeout", f"must be a whole number of seconds >= 1, not {self.stop_timeout!r}")


def detect_server(app: str, app_dir: str | None = None) -> ServerKind:
    """``"uvicorn"`` when ``module:attribute`` is an ASGI app (its call is a coroutine), else ``"gunicorn"``.

    Imports the module, from ``app_dir`` (default: the current directory, as
    uvicorn and gunicorn do). An import failure raises
    :class:`~persession.ConfigError` naming ``app``.
    """
    module_name, _, attribute = app.partition(":")
    directory = os.path.abspath(app_dir or os.getcwd())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as error:  # the app's own import errors, whatever they are
        raise ConfigError("app", f"cannot import {app}: {type(error).__name__}: {error}") from error
    call = getattr(target, "__call__", None)  # noqa: B004 - the method itself is what gets inspected
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        return "uvicorn"
    if not callable(target):
        raise ConfigError("app", f"{app} is not callable, so neither an ASGI nor a WSGI app")
    return "gunicorn"


def server_command(spec: ServeSpec, server: ServerKind, port: int) -> list[str]:
    """The command line of the process serving ``port``."""
    workers = str(spec.workers_per_port)
    if server == "uvicorn":
        host = spec.host[1:-1] if spec.host.startswith("[") else spec.host  # uvicorn wants ::1, not [::1]
        argv = [sys.executable, "-m", "uvicorn", spec.app, "--host", host, "--port", str(port)]
        argv += ["--workers", workers]
        if spec.app_dir is not None:
            argv += ["--app-dir", spec.app_dir]
    else:
        host = f"[{spec.host}]" if ":" in spec.host and not spec.host.startswith("[") else spec.host
        argv = [sys.executable, "-m", "gunicorn", spec.app, "--bind", f"{host}:{port}", "--workers", workers]
        if spec.app_dir is not None:
            argv += ["--pythonpath", spec.app_dir]
    return argv + list(spec.server_args)


def _child_setup() -> Callable[[], None] | None:
    """A pre-exec hook that asks Linux to SIGTERM the child when the launcher dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return setup


class Launcher:
    """Runs one server process per port and forwards stop signals to them; see the module docs.

    :param spec: what to run.
    :param server: the server, when already known (else ``spec.server``, or detection).
    :param env: the children's environment (default: the launcher's). Each child
        also gets ``PERSESSION_SERVE_PORT`` set to its port.
    :param log: where progress lines go (default: standard error).
    """

    def __init__(
        self,
        spec: ServeSpec,
        *,
        server: ServerKind | None = None,
        env: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        chosen = server or spec.server
        self.server: ServerKind = detect_server(spec.app, spec.app_dir) if chosen == "auto" else chosen
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self._log = log or (lambda line: print(f"persession serve: {line}", file=sys.stderr, flush=True))
        self._children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # pid -> (port, process)
        self._exit_codes: dict[int, int] = {}  # port -> exit code
        self._stopping: signal.Signals | None = None  # the stop signal forwarded, once there is one

    def run(self) -> int:
        """Start the processes, wait until all have exited, and return 0 if every one exited cleanly."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self._start_all()
            self._reap_all()
        finally:
            signal.alarm(0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if self._exit_codes and all(map(self._clean, self._exit_codes.values())) else 1

    def _clean(self, code: int) -> bool:
        # uvicorn re-raises the stop signal after its graceful shutdown, so dying of it is clean too.
        return code == 0 or (self._stopping is not None and code == -self._stopping)

    def _start_all(self) -> None:
        setup = _child_setup()
        for port in self.spec.ports:
            if self._stopping is not None:
                return
            argv = server_command(self.spec, self.server, port)
            env = {**self.env, "PERSESSION_SERVE_PORT": str(port)}
            try:
                process = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=setup)  # noqa: S603
            except OSError as error:
                self._log(f"cannot start the process for port {port}: {error}")
                self._exit_codes[port] = 127
                continue
            self._children[process.pid] = (port, process)
            self._log(f"{self.server} on {self.spec.host}:{port} (pid {process.pid})")

    def _reap_all(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:  # pragma: no cover - only if someone else reaped them
                break
            entry = self._children.pop(pid, None)
            if entry is None:  # pragma: no cover - not one of ours
                continue
            port, process = entry
            code = os.waitstatus_to_exitcode(status)
            process.returncode = code  # reaped here, so Popen must not wait for it again
            self._exit_codes[port] = code
            how = f"exited with status {code}" if code >= 0 else f"ended by {signal.Signals(-code).name}"
            self._log(f"the process on port {port} (pid {pid}) {how}")
            if self._stopping is None and self._children:
                self._log(f"{len(self._children)} process(es) still serving")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            self._log(f"still running after {self.spec.stop_timeout}s; sending SIGKILL")
            self._send(signal.SIGKILL)
        elif self._stopping is not None:
            self._log(f"{signal.Signals(signum).name} again; sending SIGKILL")
            self._send(signal.SIGKILL)
        else:
            self._stopping = signal.Signals(signum)
            self._log(f"{self._stopping.name}: stopping {len(self._children)} process(es)")
            self._send(self._stopping)
            signal.alarm(self.spec.stop_timeout)

    def _send(self, sig: signal.Signals) -> None:
        # os.kill, not Popen.send_signal: that would reap the child behind _reap_all's back.
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def serve(spec: ServeSpec, *, env: Mapping[str, str] | None = None) -> int:
    """Run ``spec`` until stopped; the exit status (see :meth:`Launcher.run`)."""
    return Launcher(spec, env=env).run()

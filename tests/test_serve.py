"""``persession serve``: one independent server process per port, stopped together by SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from _servers import APPS, ROOT, Launched, alive, free_port, listening, wait_for_port, wait_until
from persession import ConfigError
from persession.cli import main
from persession.serve import Launcher, ServeSpec, detect_server, server_command

TIMEOUT = 20.0


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Callable[..., Launched]]:
    """Start ``persession serve`` subprocesses; every one still running is stopped at teardown."""
    started: list[Launched] = []

    def start(app: str, count: int = 3, **options: object) -> Launched:
        ports = [free_port() for _ in range(count)]
        log = tmp_path / f"serve-{len(started)}.log"
        launcher = Launched(app, ports, log=log, **options)  # type: ignore[arg-type]
        started.append(launcher)
        return launcher.start()

    yield start
    for launcher in started:
        launcher.stop()


def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {"PERSESSION_TEST_STORE": f"sqlite:///{tmp_path / 's.db'}", "PERSESSION_TEST_SECRET": "serve-secret"}


# --- processes ----------------------------------------------------------------------------------------------------


@pytest.mark.server
def test_one_uvicorn_process_per_port(launched: Callable[..., Launched], tmp_path: Path) -> None:
    """An ASGI app gets one uvicorn process per port: each answers, from its own pid, sharing sessions."""
    launcher = launched("starlette_app:app", 3, env=sqlite_env(tmp_path))
    pids = launcher.pids()
    assert launcher.process is not None
    assert launcher.process.pid not in pids.values()
    assert len(set(pids.values())) == 3
    answered = {}
    with httpx.Client(timeout=TIMEOUT) as client:  # cookies ignore ports: one session for all three
        for port in launcher.ports:
            answer = client.get(f"http://127.0.0.1:{port}/counter")
            assert answer.status_code == 200
            answered[port] = answer.json()
    assert {port: body["pid"] for port, body in answered.items()} == pids
    assert [body["counter"] for body in answered.values()] == [1, 2, 3]  # one session, three processes
    assert "uvicorn on 127.0.0.1:" in launcher.output()
    assert "INFO" in launcher.output()  # uvicorn's own startup lines (the control for the --log-level test)


@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_stops_every_process(launched: Callable[..., Launched], sig: signal.Signals) -> None:
    """SIGTERM or SIGINT to the launcher stops every child, frees every port, and exits 0."""
    launcher = launched("starlette_app:app", 4)
    pids = launcher.pids()
    assert all(alive(pid) for pid in pids.values())
    launcher.signal(sig)
    assert launcher.wait() == 0, launcher.output()
    assert not [pid for pid in pids.values() if alive(pid)]
    assert not [port for port in launcher.ports if listening(port)]
    assert f"{sig.name}: stopping 4 process(es)" in launcher.output()


@pytest.mark.server
def test_wsgi_app_runs_under_gunicorn(launched: Callable[..., Launched], tmp_path: Path) -> None:
    """A WSGI app is detected and served by gunicorn, one master per port, and stops on SIGTERM."""
    launcher = launched("flask_app:app", 2, env=sqlite_env(tmp_path))
    assert "gunicorn on 127.0.0.1:" in launcher.output()
    pids = launcher.pids()
    for port in launcher.ports:
        response = httpx.get(f"http://127.0.0.1:{port}/get", timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.json()["session"] == {}
    launcher.signal(signal.SIGTERM)
    assert launcher.wait() == 0, launcher.output()
    assert not [pid for pid in pids.values() if alive(pid)]


@pytest.mark.server
def test_a_dead_process_leaves_the_others_serving(launched: Callable[..., Launched]) -> None:
    """Killing one child leaves the launcher and the other children running; the exit status then reports it."""
    launcher = launched("starlette_app:app", 3)
    pids = launcher.pids()
    victim = launcher.ports[0]
    os.kill(pids[victim], signal.SIGKILL)
    wait_until(lambda: f"port {victim} (pid {pids[victim]}) ended by SIGKILL" in launcher.output(), "the death logged")
    assert launcher.process is not None
    assert launcher.process.poll() is None
    for port in launcher.ports[1:]:
        assert httpx.get(f"http://127.0.0.1:{port}/static", timeout=TIMEOUT).text == "no session here"
    assert "2 process(es) still serving" in launcher.output()
    launcher.signal(signal.SIGTERM)
    assert launcher.wait() == 1


@pytest.mark.server
def test_server_args_after_double_dash_reach_every_process(launched: Callable[..., Launched]) -> None:
    """Arguments after ``--`` are passed to each server (here uvicorn's --log-level, which silences its banner)."""
    launcher = launched("starlette_app:app", 2, args=["--server", "uvicorn", "--", "--log-level", "error"])
    for port in launcher.ports:
        assert httpx.get(f"http://127.0.0.1:{port}/static", timeout=TIMEOUT).status_code == 200
    assert "INFO" not in launcher.output()  # --log-level error silenced uvicorn's startup lines


@pytest.mark.server
def test_children_stop_when_the_launcher_is_killed(launched: Callable[..., Launched]) -> None:
    """A launcher killed outright (SIGKILL, no forwarding possible) still takes its children down (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux-only")
    launcher = launched("starlette_app:app", 2)
    pids = launcher.pids()
    assert launcher.process is not None
    launcher.process.kill()
    launcher.wait()
    wait_until(lambda: not [pid for pid in pids.values() if alive(pid)], "the children gone")
    assert not [port for port in launcher.ports if listening(port)]


STUBBORN = textwrap.dedent(
    """
    import signal, socket, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    while True:
        time.sleep(60)
    """
)


def _stubborn_launcher(tmp_path: Path, ports: list[int], stop_timeout: int) -> list[str]:
    """A launcher script whose children ignore SIGTERM and SIGINT (they only listen on their port)."""
    script = tmp_path / "stubborn.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from persession import serve

            child = {STUBBORN!r}
            serve.server_command = lambda spec, server, port: [sys.executable, "-c", child, str(port)]
            spec = serve.ServeSpec(app="unused:app", ports={tuple(ports)!r}, stop_timeout={stop_timeout})
            sys.exit(serve.Launcher(spec, server="uvicorn").run())
            """
        )
    )
    return [sys.executable, str(script)]


@pytest.mark.server
def test_children_that_ignore_sigterm_are_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    """Children still running stop_timeout seconds after SIGTERM get SIGKILL, and the launcher exits 1."""
    ports = [free_port(), free_port()]
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(_stubborn_launcher(tmp_path, ports, 1), stdout=out, stderr=subprocess.STDOUT)
    try:
        for port in ports:
            wait_for_port(port, process)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 1
        assert time.monotonic() - started >= 0.9
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    output = log.read_text()
    assert "still running after 1s; sending SIGKILL" in output
    assert output.count("ended by SIGKILL") == 2
    assert not [port for port in ports if listening(port)]


@pytest.mark.server
def test_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    """A second SIGTERM while stopping sends SIGKILL without waiting for the stop timeout."""
    ports = [free_port()]
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(_stubborn_launcher(tmp_path, ports, 600), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(ports[0], process)
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: stopping 1 process(es)" in log.read_text(), "the first signal handled")
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    assert "SIGTERM again; sending SIGKILL" in log.read_text()


# --- the pieces -----------------------------------------------------------------------------------------------------


def test_server_commands() -> None:
    """uvicorn and gunicorn get host, port, workers, the app directory and the extra arguments."""
    spec = ServeSpec("m:app", (8001,), workers_per_port=2, app_dir=str(APPS), server_args=("--x",))
    assert server_command(spec, "uvicorn", 8001) == [
        sys.executable, "-m", "uvicorn", "m:app", "--host", "127.0.0.1", "--port", "8001",
        "--workers", "2", "--app-dir", str(APPS), "--x",
    ]  # fmt: skip
    assert server_command(ServeSpec("m:app", (8003,), host="[::1]"), "uvicorn", 8003)[4:6] == ["--host", "::1"]
    ipv6 = ServeSpec("m:app", (8002,), host="::1")
    assert server_command(ipv6, "gunicorn", 8002) == [
        sys.executable, "-m", "gunicorn", "m:app", "--bind", "[::1]:8002", "--workers", "1",
    ]  # fmt: skip


def test_detect_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASGI apps (coroutine calls) get uvicorn, WSGI apps gunicorn; import failures name the app option."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # detect_server adds the app directory
    monkeypatch.setenv("PERSESSION_TEST_STORE", "memory://")
    monkeypatch.setenv("PERSESSION_TEST_SECRET", "detect")
    fresh = [name for name in ("starlette_app", "flask_app") if name not in sys.modules]
    try:
        assert detect_server("starlette_app:app", str(APPS)) == "uvicorn"
        assert detect_server("flask_app:app", str(APPS)) == "gunicorn"
        with pytest.raises(ConfigError, match="not callable"):
            detect_server("starlette_app:__doc__", str(APPS))
        with pytest.raises(ConfigError, match="AttributeError"):
            detect_server("starlette_app:missing", str(APPS))
        with pytest.raises(ConfigError, match="cannot import no_such_module:app") as raised:
            detect_server("no_such_module:app")
        assert raised.value.option == "app"
    finally:  # detect_server imported the apps with this test's environment: let other tests import their own
        for name in fresh:
            sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        pytest.param({"app": "module"}, "app", id="no attribute"),
        pytest.param({"ports": ()}, "ports", id="no ports"),
        pytest.param({"ports": (8001, 8001)}, "ports", id="duplicate port"),
        pytest.param({"ports": (0,)}, "ports", id="port 0"),
        pytest.param({"host": ""}, "host", id="empty host"),
        pytest.param({"server": "hypercorn"}, "server", id="unknown server"),
        pytest.param({"workers_per_port": 0}, "workers_per_port", id="no workers"),
        pytest.param({"workers_per_port": True}, "workers_per_port", id="bool workers"),
        pytest.param({"app_dir": "/no/such/dir"}, "app_dir", id="missing app dir"),
        pytest.param({"stop_timeout": 0}, "stop_timeout", id="stop timeout"),
    ],
)
def test_serve_spec_validation(options: dict[str, object], option: str) -> None:
    """A bad option is refused at construction with a ConfigError naming it."""
    with pytest.raises(ConfigError) as raised:
        ServeSpec(**{"app": "m:app", "ports": (8001,), **options})  # type: ignore[arg-type]
    assert raised.value.option == option


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["m:app", "--ports", "9-8"], "--ports: range 9-8 ends before it starts", id="ports"),
        pytest.param(["m:app"], "required: --ports", id="no ports"),
        pytest.param(["app", "--ports", "8001"], "APP: 'app' is not MODULE:ATTRIBUTE", id="app"),
        pytest.param(["nope_module:app", "--ports", "8001"], "APP: cannot import nope_module:app", id="import"),
        pytest.param(["m:app", "--ports", "8001", "--workers-per-port", "0"], "--workers-per-port", id="workers"),
        pytest.param(["m:app", "--ports", "8001", "--server", "daphne"], "invalid choice", id="server"),
    ],
)
def test_serve_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad serve input exits 2 with the option named on stderr and no traceback; nothing is started."""
    assert run_cli(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_builds_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """``persession serve`` turns its options, and the arguments after ``--``, into the launcher's spec."""
    seen: list[Launcher] = []

    def fake_run(self: Launcher) -> int:
        seen.append(self)
        return 0

    monkeypatch.setattr(Launcher, "run", fake_run)
    argv = ["serve", "m:app", "--ports", "8001-8002,8005", "--host", "::1", "--server", "gunicorn"]
    argv += ["--workers-per-port", "2", "--app-dir", str(ROOT), "--stop-timeout", "5", "--", "--timeout", "60"]
    assert run_cli(argv) == 0
    (launcher,) = seen
    assert launcher.server == "gunicorn"
    assert launcher.spec == ServeSpec(
        app="m:app",
        ports=(8001, 8002, 8005),
        host="::1",
        server="gunicorn",
        workers_per_port=2,
        app_dir=str(ROOT),
        server_args=("--timeout", "60"),
        stop_timeout=5,
    )

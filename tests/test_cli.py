"""The persession command line."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import persession
from persession import Record
from persession.cli import main
from persession.stores import SqliteStore


def run(argv: Sequence[str]) -> int:
    """The exit status of ``persession argv``, whether main returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version and exits 0."""
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"persession {persession.__version__}"


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the help goes to stderr and the exit status is 2."""
    assert run([]) == 2
    assert "purge" in capsys.readouterr().err


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, str, str]:
    """A SQLite store file holding one expired and one live session."""
    path = tmp_path / "s.db"
    now = time.time()
    # Written "two hours ago", so the store's own purge-on-write leaves the soon-expired row alone.
    store = SqliteStore(path, clock=lambda: now - 7200)
    store.save("expired", Record({"user": "gone"}, created=now - 7200, accessed=now - 7200, expires=now - 3600))
    store.save("live", Record({"user": "alice"}, created=now - 7200, accessed=now - 60, expires=now + 3600))
    store.close()
    return path, "expired", "live"


def _ids(path: Path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM persession_sessions")}
    finally:
        connection.close()


def test_purge_removes_exactly_the_expired_rows(
    database: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """purge on a sqlite URL deletes the expired session, keeps the live one, reports the count and exits 0."""
    path, expired, live = database
    assert _ids(path) == {expired, live}
    assert run(["purge", f"sqlite://{path}"]) == 0
    assert _ids(path) == {live}
    out = capsys.readouterr().out
    assert "removed 1 expired session(s)" in out
    assert str(path) in out
    store = SqliteStore(path)
    try:
        record = store.load(live)
        assert record is not None
        assert record.data == {"user": "alice"}
    finally:
        store.close()


def test_purge_twice_removes_nothing_the_second_time(
    database: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A second purge finds nothing more to remove."""
    path, _, live = database
    assert run(["purge", f"sqlite://{path}"]) == 0
    assert run(["purge", f"sqlite://{path}"]) == 0
    assert "removed 0 expired session(s)" in capsys.readouterr().out
    assert _ids(path) == {live}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("memory://", "purge works on sqlite: URLs", id="memory store"),
        pytest.param("ftp://example.com/s.db", "purge works on sqlite: URLs", id="unsupported scheme"),
        pytest.param("not a url", "purge works on sqlite: URLs", id="not a URL"),
        pytest.param("sqlite:///nonexistent/dir/s.db", "no SQLite session database at", id="missing file"),
        pytest.param("sqlite://host/s.db", "take a path, not a host", id="sqlite with a host"),
        pytest.param("sqlite:///tmp/s.db?colour=red", "unknown sqlite URL parameter", id="unknown parameter"),
    ],
)
def test_purge_bad_url_exits_2_with_a_message(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """purge with a URL it cannot purge exits 2 and explains why on stderr, writing nothing to stdout."""
    assert run(["purge", url]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_purge_without_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """purge without its URL argument is a usage error."""
    assert run(["purge"]) == 2
    assert "url" in capsys.readouterr().err


def _console_script() -> str:
    beside_python = Path(sys.executable).with_name("persession")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("persession")
    if found is None:
        pytest.fail("the persession console script is not installed (pip install -e .)")
    return found


def test_console_script(database: tuple[Path, str, str]) -> None:
    """The installed persession script runs main: --version prints the version and purge cleans the file."""
    script = _console_script()
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0
    assert version.stdout.strip() == f"persession {persession.__version__}"
    path, _, live = database
    purge = subprocess.run(
        [script, "purge", f"sqlite://{path}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert purge.returncode == 0, purge.stderr
    assert _ids(path) == {live}

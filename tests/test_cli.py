"""The persession command line, and its examples run as a user pastes them into a shell."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import persession
from _servers import OPENSSL_HINT, ROOT, assert_nginx_accepts, check_snippet, nginx_binary, require_binary
from persession import Record
from persession.cli import _parser, main
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


# --- the examples, run as printed ----------------------------------------------------------------------------------
#
# An example is one `persession` command with the commands around it that belong to it: the ones before it
# (openssl, mkdir: what it needs) and after it (nginx -t), up to the next `persession` command. In --help, a
# blank or a `# comment` line also ends one; a fenced ```sh or ```console block of the docs is pasted whole.

DEPLOYMENT = ROOT / "docs" / "deployment.md"
_FENCED = re.compile(r"^```(?P<language>sh|console)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
HELP_COMMANDS = {"persession --help": (), "persession nginx --help": ("nginx",), "persession serve --help": ("serve",)}


@dataclass(frozen=True)
class Example:
    """Shell commands run one after another in one fresh directory; ``where`` says where they are printed."""

    where: str
    commands: tuple[str, ...]

    @property
    def persession(self) -> list[str]:
        """The argv of its persession command."""
        found = [shlex.split(c, comments=True) for c in self.commands if c.startswith("persession ")]
        assert len(found) == 1, f"{self.where}: not one persession command in {self.commands}"
        return found[0]


def help_output(command: Sequence[str]) -> str:
    """What ``persession COMMAND --help`` prints."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return buffer.getvalue()


def _split(paragraph: list[str], where: str) -> list[Example]:
    examples: list[list[str]] = [[]]
    for command in paragraph:
        starts = command.startswith("persession ")
        if starts and any(c.startswith("persession ") for c in examples[-1]):
            examples.append([])
        examples[-1].append(command)
    return [Example(where, tuple(commands)) for commands in examples if commands]


def _commands(lines: list[str]) -> list[str | None]:
    """Lines with their backslash continuations joined; None for a blank or comment line."""
    joined = re.sub(r"\s*\\\n\s*", " ", "\n".join(lines))
    return [line.strip() if line.strip() and not line.strip().startswith("#") else None for line in joined.split("\n")]


def help_examples(where: str, text: str) -> list[Example]:
    """The examples of a --help text: the indented lines under its ``examples`` heading."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("examples"))
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    examples: list[Example] = []
    paragraph: list[str] = []
    for command in [*_commands(block), None]:
        if command is None:
            examples += _split(paragraph, where)
            paragraph = []
        else:
            paragraph.append(command)
    return examples


def document_examples(document: Path) -> list[Example]:
    """The examples of the document's ```sh and ```console blocks (a console block's commands follow ``$ ``)."""
    text = document.read_text(encoding="utf-8")
    examples: list[Example] = []
    for match in _FENCED.finditer(text):
        lines = match.group("body").splitlines()
        if match.group("language") == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        where = f"{document.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
        examples += _split([c for c in _commands(lines) if c is not None], where)
    return examples


def _params(examples: list[Example]) -> list[object]:
    """The examples as pytest parameters, with ids such as ``persession nginx --help #4``."""
    seen: dict[str, int] = {}
    params: list[object] = []
    for example in examples:
        seen[example.where] = seen.get(example.where, 0) + 1
        params.append(pytest.param(example, id=f"{example.where} #{seen[example.where]}"))
    return params


HELP_EXAMPLES = [
    example for where, command in HELP_COMMANDS.items() for example in help_examples(where, help_output(command))
]
NGINX_EXAMPLES = [
    example
    for example in [*HELP_EXAMPLES, *document_examples(DEPLOYMENT)]
    if any(c.startswith("persession nginx ") for c in example.commands)
]


def test_the_examples_are_found() -> None:
    """The parsers find the nginx examples of --help (plain, TLS, standalone) and of docs/deployment.md."""
    nginx_help = [e for e in NGINX_EXAMPLES if e.where == "persession nginx --help"]
    assert len(nginx_help) >= 5
    assert any(c.startswith("openssl req ") for e in nginx_help for c in e.commands)
    assert any("--tls-certificate" in e.persession for e in nginx_help)
    assert any("--standalone" in e.persession for e in nginx_help)
    assert any(e.where == "persession --help" for e in NGINX_EXAMPLES)
    documented = [e for e in NGINX_EXAMPLES if e.where.startswith("docs/")]
    assert any("--tls-certificate" in e.persession for e in documented)
    assert any("--standalone" in e.persession for e in documented)


@pytest.mark.parametrize("example", _params(HELP_EXAMPLES))
def test_help_example_is_a_valid_command(example: Example) -> None:
    """Every --help example parses as a shell command, and the parser takes its persession arguments."""
    for command in example.commands:
        syntax = subprocess.run(
            ["/bin/sh", "-n", "-c", command], capture_output=True, text=True, timeout=60, check=False
        )
        assert syntax.returncode == 0, f"{example.where}: {command!r} is not a shell command: {syntax.stderr}"
    argv = example.persession[1:]
    if "--" in argv:  # what follows goes to the servers, not to the parser
        argv = argv[: argv.index("--")]
    try:
        _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{example.where}: persession refuses {shlex.join(argv)}")


def _option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg in names:
            return argv[index + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.partition("=")[2]
    return None


# Options and commands that write to the path they are given.
_WRITING_OPTIONS = ("--output", "-o", "--standalone", "-keyout", "-out", ">", ">>")
_WRITING_COMMANDS = ("mkdir", "cp", "mv", "install", "tee", "touch")


def _paths_written(argv: list[str]) -> list[str]:
    """The paths a command writes to, as far as the examples' commands go."""
    written = [argv[index + 1] for index, arg in enumerate(argv[:-1]) if arg in _WRITING_OPTIONS]
    written += [arg.partition("=")[2] for arg in argv if arg.startswith(("--output=", "--standalone="))]
    written += [arg.lstrip(">") for arg in argv if arg.startswith(">") and arg.lstrip(">")]
    if argv[0] in _WRITING_COMMANDS:
        written += [arg for arg in argv[1:] if not arg.startswith("-")]
    return written


def _shell_env() -> dict[str, str]:
    """The environment of a user's shell with the console script and nginx on PATH (the shell sets PWD itself)."""
    env = {name: value for name, value in os.environ.items() if name not in ("PWD", "OLDPWD")}
    found = [str(Path(_console_script()).parent), str(Path(nginx_binary()).parent)]
    env["PATH"] = os.pathsep.join([*found, env.get("PATH", os.defpath)])
    return env


@pytest.mark.server
@pytest.mark.parametrize("example", _params(NGINX_EXAMPLES))
def test_nginx_example_runs_as_printed(example: Example, tmp_path: Path) -> None:
    """In an empty directory each command exits 0, and nginx -t accepts the configuration it printed or wrote."""
    for command in example.commands:
        # Root in CI would really write into /etc/nginx: refuse before running anything.
        outside = [path for path in _paths_written(shlex.split(command, comments=True)) if os.path.isabs(path)]
        assert not outside, f"{example.where}: {command!r} writes {outside}, outside the directory it runs in"
    env = _shell_env()
    if any(c.startswith("openssl ") for c in example.commands):
        require_binary("openssl", OPENSSL_HINT)
    for command in example.commands:
        argv = shlex.split(command, comments=True)
        # An nginx that starts would hold its port after the test; examples show it started outside these blocks.
        assert argv[0] != "nginx" or "-t" in argv, f"{example.where}: {command!r} starts nginx rather than test it"
        result = subprocess.run(
            ["/bin/sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{example.where}: {command}\nexit {result.returncode}\n{result.stderr}"
        if argv[:2] != ["persession", "nginx"]:
            continue
        output = _option(argv, "--output", "-o")
        if output is None:
            text = result.stdout
        else:
            assert result.stdout == ""
            text = (tmp_path / output).read_text()
        assert text.startswith("# persession:"), text
        standalone = _option(argv, "--standalone")
        if standalone is None:
            check_snippet(text, tmp_path / "nginx-t")
        else:
            prefix = tmp_path / standalone
            if output is None:
                (prefix / "nginx.conf").write_text(text)
            assert_nginx_accepts(tmp_path / output if output is not None else prefix / "nginx.conf", prefix)

"""CI runs what a newcomer runs: README.md's test command, verbatim, in a virtual environment of its own.

A stock Debian machine has no ``python`` and refuses ``pip install`` into the
system interpreter (externally managed), so ``.ci/run`` may call only
``python3`` until it has made and activated its virtual environment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"
ACTIVATE = ". .venv/bin/activate"


def readme_commands() -> list[str]:
    """The commands of the ``sh`` blocks of README.md's quick start, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", quick_start, flags=re.DOTALL)]


def ci_lines() -> list[str]:
    """.ci/run's command lines (continuations joined), without comments and blank lines."""
    lines = CI_RUN.read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_is_two_commands() -> None:
    """The quick start is one command that serves the example and one that runs the suite."""
    commands = readme_commands()
    assert len(commands) == 2, commands
    serve, suite = commands
    assert "examples.starlette_app.app:app" in serve
    assert suite.endswith("python -m pytest"), suite


def test_ci_runs_the_readme_test_command_verbatim_last() -> None:
    """.ci/run's last command is the README's test command, character for character."""
    assert ci_lines()[-1] == readme_commands()[1]


def test_ci_makes_and_activates_a_virtual_environment_first() -> None:
    """Before the README command, .ci/run makes a venv with python3 and activates it; no bare python before that."""
    lines = ci_lines()
    assert "python3 -m venv .venv" in lines
    assert ACTIVATE in lines
    made, activated = lines.index("python3 -m venv .venv"), lines.index(ACTIVATE)
    assert made < activated < len(lines) - 1
    for line in lines[:activated]:
        words = list(shlex.shlex(line, posix=True, punctuation_chars=True))
        assert "python" not in words, f"{line!r} calls a bare python before the venv is active"
        assert "pip" not in words, f"{line!r} installs outside the venv"
        assert "pip3" not in words, f"{line!r} installs outside the venv"


def test_ci_installs_venv_support_and_the_servers() -> None:
    """The apt-get line installs python3-venv and every server binary the suite starts."""
    text = CI_RUN.read_text(encoding="utf-8")
    install = text.split("apt-get install -y --no-install-recommends", 1)[1].split("\n#", 1)[0]
    packages = set(install.replace("\\\n", " ").split())
    wanted = {
        "python3-venv",
        "redis-server",
        "redis-sentinel",
        "nginx",
        "openssl",
        "chromium",
        "chromium-driver",
        "wrk",
    }
    assert wanted <= packages, wanted - packages

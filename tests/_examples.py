"""The examples in examples/, served the way their READMEs say, for test_examples.py and test_browser.py.

Each example's README has one ``sh`` block: ``python -m pip install -e ".[examples]" && <serve command>``.
:func:`readme_command` parses it, and :func:`example_server` runs the serve command verbatim from the
repository root (with this interpreter for ``python``), adding only the host and port options of the
server it names.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from _servers import ROOT, ServerProcess, free_port

EXAMPLES_DIR = ROOT / "examples"
#: The examples by name: the Starlette app (uvicorn) and the Flask app (gunicorn with threads).
EXAMPLES = ("starlette", "flask")
#: The development secret the examples announce when PERSESSION_SECRET is unset.
DEV_SECRET = "persession-example-development-secret"

_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ReadmeCommand:
    """An example README's command: the install step and the serve step, as argument lists."""

    install: list[str]
    serve: list[str]

    @property
    def target(self) -> str:
        """The ``MODULE:ATTRIBUTE`` the serve step names (``--app`` for Flask, the positional one for the others)."""
        if "--app" in self.serve:  # python -m flask --app MODULE[:NAME] run
            target = self.serve[self.serve.index("--app") + 1]
            return target if ":" in target else f"{target}:app"
        return next(arg for arg in self.serve[3:] if _TARGET.fullmatch(arg))

    @property
    def module(self) -> str:
        """The dotted module the serve step names (``examples.starlette_app.app``)."""
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The application attribute the serve step names (``app``)."""
        return self.target.partition(":")[2]

    @property
    def server(self) -> str:
        """The server module the serve step runs with ``python -m`` (``uvicorn``, ``flask``)."""
        return self.serve[2]


def readme_path(example: str) -> Path:
    return EXAMPLES_DIR / f"{example}_app" / "README.md"


def readme_command(example: str) -> ReadmeCommand:
    """The one ``sh`` block of the example's README, split into its install and serve commands."""
    blocks = _SH_BLOCK.findall(readme_path(example).read_text(encoding="utf-8"))
    if len(blocks) != 1:
        raise AssertionError(f"{readme_path(example)} must have exactly one sh block, found {len(blocks)}")
    install, sep, serve = blocks[0].strip().partition("&&")
    if not sep:
        raise AssertionError(f"{readme_path(example)}: expected '<install> && <serve>', got {blocks[0]!r}")
    return ReadmeCommand(shlex.split(install), shlex.split(serve))


def example_server(example: str, env: Mapping[str, str], *, port: int | None = None) -> ServerProcess:
    """The example's README serve command on 127.0.0.1 (a free port unless given), from the repository root."""
    command = readme_command(example)
    port = free_port() if port is None else port
    argv = list(command.serve)
    if argv[0] != "python" or argv[1] != "-m":
        raise AssertionError(f"the README command should start with 'python -m', got {argv}")
    argv[0] = sys.executable
    if command.server == "uvicorn":
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    elif command.server == "gunicorn":
        argv += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    elif command.server == "flask":
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        raise AssertionError(f"no test support for serving {example} with {command.server}")
    return ServerProcess(argv, port, env=env, cwd=ROOT)


#: The secret the tests give the examples (PERSESSION_SECRET).
TEST_SECRET = "example-test-secret"


def sqlite_env(db: Path, secret: str = TEST_SECRET) -> dict[str, str]:
    """The examples' environment for an embedded SQLite file."""
    return {"PERSESSION_STORE_URL": f"sqlite:///{db.resolve()}", "PERSESSION_SECRET": secret}

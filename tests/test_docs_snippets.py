"""Every ```python block of README.md and docs/*.md is type-checked by mypy, and those labelled run are executed.

A block's label is an HTML comment on the line before its fence (invisible on GitHub, PyPI and in Sphinx):

- none: **type-checked**. mypy (``--check-untyped-defs``, so unannotated view functions are checked too)
  reads the block as a module. A fragment may use a few names it does not define, listed in GIVEN (the
  application it wraps, a session, a user); they are declared with the type given there, and any other
  undefined name fails the test.
- ``<!-- snippet: run -->``: type-checked as above, **and executed** in a fresh interpreter whose default
  SQLite store is a file in tmp_path. If the block defines ``app``, it is then sent ``GET /`` twice (Flask's
  test client, Werkzeug's for a WSGI callable, Starlette's for an ASGI app): no 5xx, and a block that counts
  ``"visits"`` answers ``{"visits": 1}`` then ``{"visits": 2}``.
- ``<!-- snippet: syntax-only: REASON -->``: **only compiled**, not type-checked nor run; the test of such
  a block is named ``...-syntax-only`` and says so.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Names a fragment may use without defining them, and the type mypy gives them.
GIVEN = {
    "app": "typing.Any",  # the application a middleware wraps: Flask, Starlette, any ASGI or WSGI app
    "other_app": "typing.Any",
    "session": "persession.Session",
    "user": "typing.Any",
}
MODES = ("typecheck", "run", "syntax-only")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
_LABEL = re.compile(r"^[ \t]*<!--\s*snippet:\s*(?P<mode>run|syntax-only)(?::\s*(?P<reason>.*?))?\s*-->[ \t]*$")
_MYPY_CONFIG = """\
[mypy]
check_untyped_defs = True
warn_unused_ignores = True
# python-socketio ships no type information: its names are Any.
[mypy-socketio.*]
ignore_missing_imports = True
"""


@dataclass(frozen=True)
class Snippet:
    """One ```python block: where it is, its code, and how it is tested."""

    document: Path
    line: int
    code: str
    mode: str
    reason: str | None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def module(self) -> str:
        """A module name for the block's file."""
        stem = re.sub(r"\W", "_", self.document.stem.lower())
        return f"snippet_{stem}_{self.line}"


def _snippets() -> Iterator[Snippet]:
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            previous = [ln for ln in text[: match.start()].splitlines() if ln.strip()][-1:]
            label = _LABEL.match(previous[0]) if previous else None
            mode = label.group("mode") if label else "typecheck"
            reason = label.group("reason") if label else None
            if mode == "syntax-only" and not reason:
                raise AssertionError(f"{document}:{line}: a syntax-only snippet must say why")
            yield Snippet(document, line, textwrap.dedent(match.group("body")), mode, reason)


SNIPPETS = list(_snippets())


def _bound_by(node: ast.AST) -> set[str]:
    """Every name ``node`` binds anywhere inside it: assignments, imports, definitions, parameters."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).partition(".")[0] for alias in sub.names)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
    return names


def _loaded(nodes: list[ast.AST]) -> set[str]:
    return {
        sub.id
        for node in nodes
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)
    }


def _free_names(code: str) -> set[str]:
    """Names the block uses before (or without) binding them, at module level or inside its functions."""
    known = set(dir(builtins))
    bound: set[str] = set()
    free: set[str] = set()
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for statement in ast.parse(code).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # What a def evaluates where it stands: decorators, defaults, annotations. Its body runs later.
            arguments = statement.args
            every_arg = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            evaluated: list[ast.AST] = [*statement.decorator_list, *arguments.defaults]
            evaluated += [a.annotation for a in every_arg if a.annotation is not None]
            evaluated += [statement.returns] if statement.returns is not None else []
            free |= _loaded(evaluated) - bound - known
            bound.add(statement.name)
            functions.append(statement)
        else:
            free |= _loaded([statement]) - bound - known
            bound |= _bound_by(statement)
    for function in functions:
        free |= _loaded(list(function.body)) - _bound_by(function) - bound - known
    return free


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy's errors for every type-checked block, by block (one mypy run over all of them)."""
    directory = tmp_path_factory.mktemp("snippets")
    preludes: dict[str, int] = {}
    files: list[str] = []
    for snippet in SNIPPETS:
        if snippet.mode == "syntax-only":
            continue
        free = _free_names(snippet.code)
        unknown = free - set(GIVEN)
        assert not unknown, f"{snippet.where} uses {sorted(unknown)} without defining them (GIVEN has {sorted(GIVEN)})"
        prelude = ["import typing", "import persession"] + [f"{name}: {GIVEN[name]}" for name in sorted(free)]
        preludes[snippet.module] = len(prelude)
        path = directory / f"{snippet.module}.py"
        path.write_text("\n".join([*prelude, snippet.code]), encoding="utf-8")
        files.append(str(path))
    config = directory / "mypy.ini"
    config.write_text(_MYPY_CONFIG, encoding="utf-8")
    cache = ROOT / ".mypy_cache" / "docs-snippets"
    argv = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(cache)]
    argv += ["--no-error-summary", "--show-error-codes", *files]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=directory, check=False)
    errors: dict[str, list[str]] = {module: [] for module in preludes}
    for line in result.stdout.splitlines():
        match = re.match(r"^(?:.*/)?(snippet_\w+)\.py:(\d+): (error|note): (.*)$", line)
        if match is None:
            assert result.returncode in (0, 1), result.stdout + result.stderr
            continue
        module, number, kind, message = match.groups()
        if kind == "error":
            errors[module].append(f"line {int(number) - preludes[module]}: {message}")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return errors


def _params(*modes: str) -> list[object]:
    """The blocks of these modes as pytest parameters, with ids such as ``docs/quickstart.md:13-run``."""
    return [
        pytest.param(s, id=f"{s.document.relative_to(ROOT)}:{s.line}-{s.mode}") for s in SNIPPETS if s.mode in modes
    ]


@pytest.mark.parametrize("snippet", _params(*MODES))
def test_snippet_compiles(snippet: Snippet) -> None:
    """The block is valid Python (for a syntax-only block this is the only check, as its id says)."""
    compile(snippet.code, snippet.where, "exec")
    if snippet.mode == "syntax-only":
        assert snippet.reason, "syntax-only snippets carry their reason"


@pytest.mark.parametrize("snippet", _params("typecheck", "run"))
def test_snippet_type_checks(snippet: Snippet, mypy_errors: dict[str, list[str]]) -> None:
    """mypy finds no error in the block (names from GIVEN it does not define are declared with their types)."""
    assert mypy_errors[snippet.module] == [], f"{snippet.where}:\n" + "\n".join(mypy_errors[snippet.module])


_RUNNER = """
import inspect, json, sys
source, where = sys.stdin.read(), sys.argv[1]
namespace = {"__name__": "snippet"}
exec(compile(source, where, "exec"), namespace)
app = namespace.get("app")
answers = []
if app is not None:
    if hasattr(app, "test_client"):  # Flask
        client = app.test_client()
        for _ in range(2):
            response = client.get("/")
            answers.append([response.status_code, response.get_json(silent=True)])
    elif not inspect.iscoroutinefunction(getattr(app, "__call__", None)) and not inspect.iscoroutinefunction(app):
        from werkzeug.test import Client  # a WSGI callable
        client = Client(app)
        for _ in range(2):
            response = client.get("/")
            answers.append([response.status_code, response.get_json(silent=True)])
    else:
        from starlette.testclient import TestClient
        with TestClient(app) as client:
            for _ in range(2):
                response = client.get("/")
                try:
                    body = response.json()
                except ValueError:
                    body = None
                answers.append([response.status_code, body])
print(json.dumps(answers))
"""


@pytest.mark.parametrize("snippet", _params("run"))
def test_runnable_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    """The block runs in a fresh interpreter; its app answers GET / without a 5xx, a visits counter counting 1, 2."""
    env = {**os.environ, "PERSESSION_SQLITE_PATH": str(tmp_path / "sessions.db"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, snippet.where],
        input=snippet.code,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{snippet.where}:\n{result.stderr}"
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(status < 500 for status, _ in answers), answers
    if '"visits"' in snippet.code:  # the quick start's counter: the second request sees the first's session
        assert answers == [[200, {"visits": 1}], [200, {"visits": 2}]]


#: The idiom FastAPI's docs teach, which must type-check as written, without an ignore.
_ADD_MIDDLEWARE = "app.add_middleware(SessionMiddleware"


def test_fastapi_add_middleware_snippet_passes_mypy_strict(tmp_path: Path) -> None:
    """The quick start's ``app.add_middleware(SessionMiddleware, ...)`` block has no ignore and passes mypy --strict."""
    blocks = [s for s in SNIPPETS if s.document.name == "quickstart.md" and _ADD_MIDDLEWARE in s.code]
    assert blocks, f"docs/quickstart.md has no {_ADD_MIDDLEWARE}...) block"
    for snippet in blocks:
        assert "type: ignore" not in snippet.code, f"{snippet.where}: the FastAPI idiom must need no ignore"
        assert not _free_names(snippet.code), f"{snippet.where}: a --strict block defines every name it uses"
        (tmp_path / f"{snippet.module}.py").write_text(snippet.code, encoding="utf-8")
    cache = ROOT / ".mypy_cache" / "docs-snippets-strict"
    argv = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), "--show-error-codes"]
    argv += sorted(str(path) for path in tmp_path.glob("snippet_*.py"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert result.returncode == 0, "\n".join(s.where for s in blocks) + "\n" + result.stdout + result.stderr


def test_every_block_is_covered() -> None:
    """The documents have python blocks, and each is type-checked, run, or explicitly syntax-only."""
    assert len(SNIPPETS) >= 10
    assert {s.mode for s in SNIPPETS} <= set(MODES)
    assert any(s.mode == "run" for s in SNIPPETS)
    assert {s.document.name for s in SNIPPETS} >= {"README.md", "quickstart.md"}

"""The repository's own gates, run by the suite so CI enforces them: lint, types, layering, docs, packaging.

The commands are not written here: they are read from tox.ini's lint, typing,
docs and pkg environments and run as tox runs them (from the repository root,
with this interpreter's scripts first on PATH and the env's ``set_env``), so the
suite and ``tox`` cannot drift apart.

Two guards on the stores are checked here directly: no store module over 500
lines, and no socket opened outside persession's own Redis connections
(``stores/redis/_own/``). Each is a function over a source tree, so a test can
show it failing on a scratch tree.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from _servers import require_binary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TOX_INI = ROOT / "tox.ini"
#: The tox environments besides the test runs; each has a test below.
QUALITY_ENVS = ("lint", "typing", "docs", "pkg")
#: Not resolved: the scripts of this virtualenv sit beside its python, a symlink.
SCRIPTS = Path(sys.executable).parent
INSTALL_HINT = 'pip install -e ".[tests]"'


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def _tox(text: str | None = None) -> configparser.ConfigParser:
    """tox.ini, or the ini ``text``, read as tox reads it (no ``%`` interpolation)."""
    parser = configparser.ConfigParser(interpolation=None)
    if text is None:
        parser.read(TOX_INI, encoding="utf-8")
    else:
        parser.read_string(text)
    return parser


def _expand(factors: str) -> list[str]:
    """tox's generative names: ``py3{10,11}, lint`` is py310, py311 and lint."""
    names: list[str] = []
    for item in re.split(r",\s*(?![^{]*\})", factors.strip()):
        group = re.search(r"\{([^}]*)\}", item)
        if group is None:
            names.append(item.strip())
        else:
            for factor in group[1].split(","):
                names += _expand(item[: group.start()] + factor.strip() + item[group.end() :])
    return names


def _lines(section: configparser.SectionProxy, key: str) -> list[str]:
    return [line.strip() for line in section.get(key, "").splitlines() if line.strip()]


def _tox_commands(env: str, env_tmp_dir: Path, tox: configparser.ConfigParser | None = None) -> list[list[str]]:
    """The commands of ``[testenv:env]`` as argv lists, with ``{env_tmp_dir}`` made ``env_tmp_dir``."""
    commands = []
    for line in _lines((tox or _tox())[f"testenv:{env}"], "commands"):
        argv = shlex.split(line.replace("{env_tmp_dir}", str(env_tmp_dir)))
        unknown = [word for word in argv if "{" in word or word.endswith("\\")]
        assert not unknown, f"tox.ini [testenv:{env}]: {line!r} uses {unknown}, which tests/test_quality.py cannot run"
        assert argv[0][0] not in "-!", f"tox.ini [testenv:{env}]: {line!r} ignores or inverts its exit status"
        commands.append(argv)
    assert commands, f"tox.ini [testenv:{env}] has no commands"
    return commands


def _tox_set_env(env: str, tox: configparser.ConfigParser | None = None) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _lines((tox or _tox())[f"testenv:{env}"], "set_env"))
    return {name.strip(): value.strip() for name, value in pairs}


def run_tox_env(env: str, env_tmp_dir: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands of tox env ``env`` in order, as tox does; fail at the first that fails."""
    path = f"{SCRIPTS}{os.pathsep}{os.environ.get('PATH', '')}"
    environ = {**os.environ, **_tox_set_env(env), "PATH": path}
    results = []
    for argv in _tox_commands(env, env_tmp_dir):
        if argv[0] == "pyright":  # the PyPI package is a launcher for pyright's npm package
            require_binary("node", "apt-get install nodejs (pyright runs on Node.js)")
        program = shutil.which(argv[0], path=path)
        assert program is not None, f"{argv[0]} (tox env {env}) is not installed: {INSTALL_HINT}"
        result = subprocess.run(
            [program, *argv[1:]], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout}{result.stderr}"
        results.append(result)
    return results


def test_the_suite_runs_every_tox_env() -> None:
    """tox's env_list is the py3xx suite runs and exactly the envs this module runs."""
    tox = _tox()
    names = _expand(tox["tox"]["env_list"])
    suites = [name for name in names if re.fullmatch(r"py3\d+", name)]
    assert suites, names
    assert [name for name in names if name not in suites] == list(QUALITY_ENVS)
    assert _lines(tox["testenv"], "commands") == ["python -m pytest {posargs}"]
    envs = {section.removeprefix("testenv:") for section in tox.sections() if section.startswith("testenv:")}
    assert envs == set(QUALITY_ENVS)


def test_tox_commands_are_read_as_tox_reads_them(tmp_path: Path) -> None:
    """The reader behind these tests: generative names, set_env, substitutions, one argv per line, no tricks."""
    assert _expand("py3{10,11}, lint,docs") == ["py310", "py311", "lint", "docs"]
    tox = _tox(
        "[testenv:a]\n"
        "set_env =\n    X = 1\n    Y = a=b\n"
        "commands =\n    python -m build --outdir {env_tmp_dir}/dist\n\n    twine check '{env_tmp_dir}/d i/*'\n"
        "[testenv:b]\ncommands = pytest {posargs}\n"
        "[testenv:c]\ncommands = - ruff check\n"
    )
    assert _tox_set_env("a", tox) == {"X": "1", "Y": "a=b"}
    assert _tox_commands("a", tmp_path, tox) == [
        ["python", "-m", "build", "--outdir", f"{tmp_path}/dist"],
        ["twine", "check", f"{tmp_path}/d i/*"],
    ]
    with pytest.raises(AssertionError, match=r"uses \['\{posargs\}'\]"):
        _tox_commands("b", tmp_path, tox)
    with pytest.raises(AssertionError, match="ignores or inverts its exit status"):
        _tox_commands("c", tmp_path, tox)


def test_ruff_lints_the_roots_it_sorts_imports_for(tmp_path: Path) -> None:
    """Both ruff commands take the same paths, and [tool.ruff] src lists them, so their imports sort as first-party."""
    ruff = [argv for argv in _tox_commands("lint", tmp_path) if argv[0] == "ruff"]
    assert [argv[:2] for argv in ruff] == [["ruff", "check"], ["ruff", "format"]]
    paths = [[word for word in argv[2:] if not word.startswith("-")] for argv in ruff]
    assert paths[0] == paths[1]
    with (ROOT / "pyproject.toml").open("rb") as file:
        assert tomllib.load(file)["tool"]["ruff"]["src"] == paths[0]


def test_lint_env_passes(tmp_path: Path) -> None:
    """ruff finds nothing and the formatting is ruff's; the import-layering contracts hold."""
    results = run_tox_env("lint", tmp_path)
    layering = [result for result in results if Path(result.args[0]).name == "lint-imports"]
    assert len(layering) == 1
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", layering[0].stdout), layering[0].stdout


def test_typing_env_passes(tmp_path: Path) -> None:
    """mypy --strict accepts src/persession and pyright finds every public name's type known."""
    results = run_tox_env("typing", tmp_path)
    verified = [result for result in results if Path(result.args[0]).name == "pyright"]
    assert len(verified) == 1
    assert "Type completeness score: 100%" in verified[0].stdout, verified[0].stdout


def test_docs_env_passes(tmp_path: Path) -> None:
    """The Sphinx site builds with every warning an error, and autodoc documented the API."""
    run_tox_env("docs", tmp_path)
    html = Path(_tox_commands("docs", tmp_path)[-1][-1])
    assert html.is_relative_to(tmp_path)
    assert (html / "index.html").is_file()
    api = (html / "api.html").read_text(encoding="utf-8")
    assert api.count("SessionMiddleware") >= 2
    # The modules that import a driver or a framework are documented too (the docs extra installs them).
    for documented in ("stores.redis.AsyncRedisStore", "stores.mongo.AsyncMongoStore", "integrations.flask.init_app"):
        assert f'id="persession.{documented}"' in api, documented


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the sdist and wheel, built and checked by the pkg env's commands."""
    env_tmp_dir = tmp_path_factory.mktemp("pkg")
    run_tox_env("pkg", env_tmp_dir)
    return next(env_tmp_dir.rglob("*.whl")).parent


def test_pkg_env_builds_a_typed_wheel_without_tests(dist: Path) -> None:
    """The pkg env built one sdist and one wheel (twine check --strict passed); the wheel ships py.typed, no tests."""
    files = sorted(dist.iterdir(), key=lambda f: f.suffix)
    assert [f.suffix for f in files] == [".gz", ".whl"]
    names = zipfile.ZipFile(files[1]).namelist()
    assert "persession/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_wheel_installs_alone_and_imports_no_driver(dist: Path, tmp_path: Path) -> None:
    """In a fresh virtualenv the wheel installs with only its runtime dependencies and imports no driver."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    install = _run(str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel))
    assert install.returncode == 0, install.stdout + install.stderr
    installed = _run(str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check")
    names = {line.split("==")[0].lower() for line in installed.stdout.split()}
    assert {"persession-web", "itsdangerous", "asgiref"} <= names
    assert not names & {"redis", "pymongo", "starlette", "flask"}
    probe = (
        "import sys, persession, persession.stores, persession.wsgi, persession.asgi; "
        "print(sorted(m for m in ('redis', 'pymongo') if m in sys.modules))"
    )
    result = _run(str(python), "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    cli = _run(str(env_dir / "bin" / "persession"), "--version", cwd=tmp_path)
    assert cli.stdout.strip().startswith("persession ")


# --- guards on the stores ---------------------------------------------------------------------------

STORES = ROOT / "src" / "persession" / "stores"
#: The one package that may open sockets: persession's own Redis connections.
OWN_CONNECTIONS = STORES / "redis" / "_own"
#: The longest a store module may be (design.md: modules stay under 500 lines).
MAX_STORE_LINES = 500
#: Modules that open sockets, whose import alone is refused.
SOCKET_MODULES = frozenset({"socket", "ssl"})
#: asyncio's connection machinery: its submodules, and the names asyncio exports for it.
ASYNCIO_TRANSPORT_MODULES = frozenset({"protocols", "transports", "streams", "sslproto", "selector_events"})
ASYNCIO_TRANSPORT_NAMES = frozenset(
    {"Protocol", "BaseProtocol", "BufferedProtocol", "Transport", "open_connection", "open_unix_connection"}
)
#: Event loop methods that open a connection or wrap one in TLS, refused on any receiver.
CONNECTING_METHODS = frozenset(
    {"create_connection", "create_unix_connection", "open_connection", "open_unix_connection", "start_tls"}
)


def long_modules(root: Path, limit: int = MAX_STORE_LINES) -> list[str]:
    """The modules under ``root`` longer than ``limit`` lines, as ``path: N lines``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def _opens_sockets(module: str) -> bool:
    """``socket``, ``ssl``, or one of asyncio's transport submodules (``asyncio.streams``...)."""
    top, _, rest = module.partition(".")
    return top in SOCKET_MODULES or (top == "asyncio" and rest.partition(".")[0] in ASYNCIO_TRANSPORT_MODULES)


def _socket_uses(tree: ast.AST) -> list[tuple[int, str]]:
    # The names asyncio is bound to (``import asyncio as aio`` too), to tell asyncio.Protocol from typing's.
    asyncio_names = {
        alias.asname or "asyncio"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "asyncio"
    }
    uses: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            uses += [(node.lineno, f"import {alias.name}") for alias in node.names if _opens_sockets(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names = sorted(alias.name for alias in node.names)
            if node.module == "asyncio":
                names = [name for name in names if name in ASYNCIO_TRANSPORT_NAMES | ASYNCIO_TRANSPORT_MODULES]
            elif not _opens_sockets(node.module):
                names = []
            uses += [(node.lineno, f"from {node.module} import {name}") for name in names]
        elif isinstance(node, ast.Attribute):
            on_asyncio = isinstance(node.value, ast.Name) and node.value.id in asyncio_names
            if node.attr in CONNECTING_METHODS or (on_asyncio and node.attr in ASYNCIO_TRANSPORT_NAMES):
                uses.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("__import__", "import_module") and _opens_sockets(str(node.args[0].value)):
                uses.append((node.lineno, f"{called}({node.args[0].value!r})"))
    return sorted(uses)


def socket_openers(root: Path, allowed: Path) -> list[str]:
    """Where a module under ``root`` but not under ``allowed`` could open a socket, as ``path:line: what``.

    That is: it imports ``socket`` or ``ssl`` (any way, ``importlib`` too),
    imports or names asyncio's protocols, transports and streams
    (``asyncio.Protocol``, ``open_connection``...), or calls a loop's
    ``create_connection``, ``create_unix_connection`` or ``start_tls``.
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(allowed):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.relative_to(root)}:{line}: {what}" for line, what in _socket_uses(tree)]
    return found


def test_no_store_module_over_500_lines() -> None:
    """Every module under src/persession/stores (the backend packages too) is at most 500 lines long."""
    modules = list(STORES.rglob("*.py"))
    assert len(modules) > 10, "the stores were not found"
    assert long_modules(STORES) == []


def test_only_the_own_connections_open_sockets() -> None:
    """Only stores/redis/_own/ touches socket, ssl or asyncio's transports; every other store goes through a driver."""
    assert OWN_CONNECTIONS.is_dir()
    assert socket_openers(OWN_CONNECTIONS, OWN_CONNECTIONS / "absent") != [], "the walk sees not even _own/'s sockets"
    assert socket_openers(STORES, OWN_CONNECTIONS) == []


SCRATCH_VIOLATIONS = {
    "plain.py": ("import socket\n", ["plain.py:1: import socket"]),
    "aliased.py": (
        "import ssl as _tls\nimport asyncio.streams\nimport asyncio as aio\nclass P(aio.BaseProtocol):\n    pass\n",
        ["aliased.py:1: import ssl", "aliased.py:2: import asyncio.streams", "aliased.py:4: .BaseProtocol"],
    ),
    "from_ssl.py": ("from ssl import SSLContext\n", ["from_ssl.py:1: from ssl import SSLContext"]),
    "protocol.py": (
        "import asyncio\nclass P(asyncio.Protocol):\n    pass\n",
        ["protocol.py:2: .Protocol"],
    ),
    "from_asyncio.py": (
        "from asyncio import Lock, Protocol, open_connection\n",
        ["from_asyncio.py:1: from asyncio import Protocol", "from_asyncio.py:1: from asyncio import open_connection"],
    ),
    "streams.py": (
        "from asyncio.streams import StreamReader\n",
        ["streams.py:1: from asyncio.streams import StreamReader"],
    ),
    "loop.py": (
        "async def f(loop):\n    await loop.create_connection(None)\n    await loop.create_unix_connection(None)\n"
        "    await loop.start_tls(None, None, None)\n",
        ["loop.py:2: .create_connection", "loop.py:3: .create_unix_connection", "loop.py:4: .start_tls"],
    ),
    "dynamic.py": ("import importlib\nimportlib.import_module('socket')\n", ["dynamic.py:2: import_module('socket')"]),
}


def test_the_store_guards_fail_on_a_scratch_tree(tmp_path: Path) -> None:
    """Both guards find what they refuse: a 501-line module, and each way of reaching a socket outside _own/.

    What they must let pass passes: 500 lines, typing.Protocol, asyncio's
    locks and queues, and anything at all under the allowed folder.
    """
    stores = tmp_path / "stores"
    own = stores / "redis" / "_own"
    own.mkdir(parents=True)
    (stores / "long.py").write_text("x = 1\n" * 501)
    (stores / "just_right.py").write_text("x = 1\n" * 500)
    assert long_modules(stores) == ["long.py: 501 lines"]

    (stores / "long.py").unlink()
    (stores / "fine.py").write_text(
        "import asyncio\nfrom typing import Protocol\nclass P(Protocol):\n    pass\n"
        "lock, queue = asyncio.Lock(), asyncio.Queue()\nconnection = sockets = None\n"
    )
    (own / "wire.py").write_text("import socket\nimport ssl\nimport asyncio\nclass M(asyncio.Protocol):\n    pass\n")
    assert socket_openers(stores, own) == []
    for name, (text, _) in SCRATCH_VIOLATIONS.items():
        (stores / "redis" / name).write_text(text)
    expected = sorted(f"redis/{line}" for _, lines in SCRATCH_VIOLATIONS.values() for line in lines)
    assert sorted(socket_openers(stores, own)) == expected


def test_the_importer_check_finds_a_test_module_importing_another(tmp_path: Path) -> None:
    """The check below finds a test module importing another, and nothing in a tree without one."""
    (tmp_path / "test_a.py").write_text("from test_b import helper\n")
    (tmp_path / "test_b.py").write_text("import _servers\nfrom _stores import live\n")
    assert importers_of_test_modules(tmp_path) == ["test_a.py imports test_b"]
    (tmp_path / "test_a.py").write_text("import test_b.sub\n")
    assert importers_of_test_modules(tmp_path) == ["test_a.py imports test_b.sub"]


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/_*.py modules (servers, stores, HTTP), never in a test module."""
    assert importers_of_test_modules(Path(__file__).resolve().parent) == []


def importers_of_test_modules(root: Path) -> list[str]:
    """``path imports module`` for every import of a ``test_*`` module under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [
                f"{path.relative_to(root)} imports {name}" for name in names if name.split(".")[0].startswith("test_")
            ]
    return found


# -- the package's shape: module sizes and no import cycle (issue 17) --------------------------

PACKAGE = ROOT / "src" / "persession"
#: The shells and the session object stay Starlette-sized.
THIN_MODULES = ("wsgi.py", "asgi.py", "session.py")


def test_no_module_over_500_lines_and_the_shells_at_most_300() -> None:
    assert len(list(PACKAGE.rglob("*.py"))) > 40, "the package was not found"
    assert long_modules(PACKAGE) == []
    long_shells = [line for line in long_modules(PACKAGE, 300) if line.split(":")[0] in THIN_MODULES]
    assert long_shells == []


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth (functions too), but not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph(package: Path, name: str) -> dict[str, set[str]]:
    """``module -> modules of the package it imports``, from the source (no import runs)."""
    modules: dict[str, Path] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        dotted = ".".join((name, *parts[:-1])) if parts[-1] == "__init__" else ".".join((name, *parts))
        modules[dotted] = path
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = node.module if node.level == 0 else ".".join(filter(None, (base, node.module)))
                targets = [f"{source}.{alias.name}" for alias in node.names]
                targets = [target if target in modules else str(source) for target in targets]
            graph[module] |= {target for target in targets if target in modules and target != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """A cycle through an import inside a function is found; one under TYPE_CHECKING, which never runs, is not."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .sub.c import x\n")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import f\n"
    )
    assert import_cycles(import_graph(package, "pkg")) == []
    (package / "sub" / "c.py").write_text("x = 1\n\ndef g():\n    from ..a import b\n")
    assert import_cycles(import_graph(package, "pkg")) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph(PACKAGE, "persession")
    assert "persession.core" in graph["persession.wsgi"], "the walk sees the shells' imports"
    assert import_cycles(graph) == []

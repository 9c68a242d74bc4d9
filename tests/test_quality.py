"""The repository's own gates, run by the suite so CI enforces them: lint, types, layering, packaging."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_is_clean() -> None:
    """ruff finds nothing in src, tests and examples, and the formatting is ruff's."""
    lint = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "examples")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "examples")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict accepts src/persession."""
    result = _run(sys.executable, "-m", "mypy", "--strict", "src/persession")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layering_contracts_hold() -> None:
    """The sans-IO core imports no shell, store, driver or framework; stores import no shell."""
    result = _run(str(Path(sys.executable).with_name("lint-imports")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout
    assert "0 broken" in result.stdout


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    """The Sphinx site builds with every warning treated as an error."""
    result = _run(sys.executable, "-m", "sphinx", "-T", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "api.html").read_text(encoding="utf-8").count("SessionMiddleware") >= 2


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel, built from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    result = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    """Both distributions build and twine check --strict passes; the wheel ships py.typed and no tests."""
    files = sorted(dist.iterdir(), key=lambda f: f.suffix)
    assert [f.suffix for f in files] == [".gz", ".whl"]
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
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
    assert {"persession", "itsdangerous", "asgiref"} <= names
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

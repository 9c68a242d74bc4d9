"""The public API is deliberate: docs/api.md lists every public module and every name it exports.

The table under "What you import, and from where" and the modules' ``__all__`` must be equal, so a
name cannot become public (or stop being public) without the documentation saying so.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

import persession

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
SECTION = "## What you import, and from where"


def documented_exports(text: str) -> dict[str, set[str]]:
    """Module -> names, read from the table of the section: backticked names outside parentheses.

    A backticked dotted name in the names column stands for all the names that module's row lists
    (a row saying "the protocols of `persession.stores.base`"); text in parentheses is commentary.
    """
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in body.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        module = cells[0].strip("`")
        names = re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[1]))
        assert module not in rows, f"{module} is listed twice"
        rows[module] = names
    exports: dict[str, set[str]] = {}

    def expand(module: str, seen: tuple[str, ...] = ()) -> set[str]:
        names: set[str] = set()
        for name in rows[module]:
            if "." in name:
                assert name in rows, f"{module} refers to {name}, which has no row"
                assert name not in seen, f"{module} refers back to {name}"
                names |= expand(name, (*seen, module))
            else:
                names.add(name)
        return names

    for module in rows:
        exports[module] = expand(module)
    return exports


def public_modules() -> list[str]:
    """Every importable module of the package with no ``_``-prefixed part after ``persession``."""
    names = ["persession"]
    for info in pkgutil.walk_packages(persession.__path__, "persession."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


def test_the_table_is_read_as_written() -> None:
    text = (
        f"intro\n{SECTION}\n\n| Module | Names | For |\n|---|---|---|\n"
        "| `pkg.a` | `One`, `two` (re-export of `pkg.c`) | apps |\n"
        "| `pkg.b` | `Three`, and the names of `pkg.a` (re-exports) | authors |\n"
        "\n## Next\n| `pkg.z` | `Outside` | no |\n"
    )
    assert documented_exports(text) == {"pkg.a": {"One", "two"}, "pkg.b": {"Three", "One", "two"}}


def test_every_public_module_is_in_the_table_with_exactly_its_exports() -> None:
    documented = documented_exports(API_DOC.read_text())
    listed = {}
    for name in public_modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            # A package holding only modules (persession.integrations) exports nothing itself; its
            # submodules appear as attributes once anything has imported them, and are not exports.
            own = [
                attr
                for attr, value in vars(module).items()
                if not attr.startswith("_") and not isinstance(value, types.ModuleType)
            ]
            assert own == [], f"{name} has no __all__"
            continue
        assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
        listed[name] = set(exported)
    assert set(documented) == set(listed)
    mismatched = {
        name: {"undocumented": sorted(names - documented[name]), "not exported": sorted(documented[name] - names)}
        for name, names in listed.items()
        if names != documented[name]
    }
    assert mismatched == {}


@pytest.mark.parametrize("module", sorted(documented_exports(API_DOC.read_text())))
def test_every_documented_name_can_be_imported(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in sorted(documented_exports(API_DOC.read_text())[module]) if not hasattr(imported, name)]
    assert missing == []

"""Node.js for the tests: the Express app of ``tests/node`` (express-session with connect-redis or connect-mongo).

::

    from _node import INSTALLS, node_app, require_node

    with node_app("redis", secrets=["new", "old"], install=INSTALLS[1], redis_url=server.url, prefix="sess:") as app:
        httpx.get(f"{app.url}/whoami")

- :data:`INSTALLS` are the pairs of versions the interop tests run against,
  each a Node project with its own ``package.json`` and ``package-lock.json``:
  ``tests/node`` (express-session 1.18.0, connect-redis 8.1 on node-redis 4,
  connect-mongo 5.1 on the MongoDB driver 6) and
  ``tests/node/connect-redis9-mongo6`` (express-session 1.19, connect-redis 9
  on node-redis 6, connect-mongo 6 on the MongoDB driver 7, Express 5).
- :func:`require_node` skips the test when ``node`` is missing or too old for
  the install (its ``engines.node``), or the install's packages are missing
  (``npm ci --prefix <its directory>``), and fails it under ``CI``
  (``.ci/run`` installs them).
- :func:`node_app` starts ``node tests/node/app.js`` on a free 127.0.0.1 port
  with the install's packages, configured by environment variables (see the
  header of ``app.js``), waits until it listens, and stops it (TERM, then
  KILL) on exit.
- :func:`node_eval` runs a one-off Node script in the install's directory (so
  it can ``require()`` the pinned packages) and returns what it printed.

express-session 1.18.0 is the last release whose cookie parser accepts a
``:`` in cookie names, such as connect's ``XXX:sess``; 1.18.1 and later
refuse to set them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _servers import HERE, IN_CI, ServerProcess, free_port

#: The Node project of the first install, and app.js, which every install runs.
NODE_DIR = HERE / "node"


@dataclass(frozen=True)
class NodeInstall:
    """One Node project of pinned packages that ``app.js`` and :func:`node_eval` run with."""

    #: The test id: ``connect-redis8-mongo5``.
    id: str
    #: The directory of its package.json, package-lock.json and node_modules.
    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        """Its package.json."""
        result: dict[str, Any] = json.loads((self.path / "package.json").read_text(encoding="utf-8"))
        return result

    @property
    def pins(self) -> dict[str, str]:
        """The exact versions its package.json pins: ``{"express-session": "1.18.0", ...}``."""
        return dict(self.manifest["dependencies"])

    @property
    def min_node(self) -> tuple[int, ...]:
        """The oldest Node its ``engines.node`` (``">=20.19"``) accepts."""
        found = re.fullmatch(r">=\s*(\d+(?:\.\d+)*)", self.manifest["engines"]["node"].strip())
        assert found is not None, "engines.node must read '>=X.Y'"
        return tuple(int(part) for part in found.group(1).split("."))

    @property
    def hint(self) -> str:
        return f"npm ci --prefix {self.path.relative_to(HERE.parent)}"


#: The pairs of versions the interop tests run against (see the module docs).
INSTALLS = (
    NodeInstall("connect-redis8-mongo5", NODE_DIR),
    NodeInstall("connect-redis9-mongo6", NODE_DIR / "connect-redis9-mongo6"),
)
INSTALL_HINT = "install Node.js 20.19 or later, then: " + " && ".join(install.hint for install in INSTALLS)


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


_versions: dict[str, tuple[int, ...]] = {}


def _node_version(node: str) -> tuple[int, ...]:
    if node not in _versions:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        _versions[node] = tuple(int(part) for part in text.strip().lstrip("v").split("."))
    return _versions[node]


def require_node(install: NodeInstall = INSTALLS[0]) -> str:
    """The path of ``node``, recent enough and with ``install``'s packages; skip (fail under CI) otherwise."""
    node = shutil.which("node")
    if node is None:
        _missing(f"node is not installed: {INSTALL_HINT}")
        raise AssertionError("unreachable")  # pragma: no cover
    version, needed = _node_version(node), install.min_node
    if version < needed:
        wanted = ".".join(map(str, needed))
        _missing(f"{install.id} needs Node {wanted} or later, not {'.'.join(map(str, version))}: {INSTALL_HINT}")
    if not (install.path / "node_modules" / "express-session").is_dir():
        _missing(f"the Node packages of {install.id} are not installed: {install.hint}")
    return node


def node_app(
    store: str,
    *,
    secrets: Sequence[str],
    install: NodeInstall = INSTALLS[0],
    cookie_name: str = "connect.sid",
    rolling: bool = False,
    max_age_ms: int | None = 14 * 24 * 3600 * 1000,
    cookie: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
    disable_ttl: bool = False,
    mongo_url: str | None = None,
    mongo_db: str | None = None,
) -> ServerProcess:
    """The Express app on a free port with ``install``'s packages (not started: use it as a context manager)."""
    node = require_node(install)
    env = {
        "PORT": "",
        "NODE_PROJECT": str(install.path),
        "STORE": store,
        "SECRETS": json.dumps(list(secrets)),
        "COOKIE_NAME": cookie_name,
        "ROLLING": "1" if rolling else "0",
        "MAX_AGE_MS": "null" if max_age_ms is None else str(max_age_ms),
        "COOKIE": json.dumps(dict(cookie or {})),
        "REDIS_URL": redis_url or "",
        "REDIS_PREFIX": prefix or "sess:",
        "DISABLE_TTL": "1" if disable_ttl else "0",
        "MONGO_URL": mongo_url or "",
        "MONGO_DB": mongo_db or "",
        "NODE_ENV": "production",
    }
    port = free_port()
    env["PORT"] = str(port)
    return ServerProcess([node, str(NODE_DIR / "app.js")], port, env=env, cwd=install.path)


def node_eval(script: str, install: NodeInstall = INSTALLS[0]) -> str:
    """Run ``script`` with ``node -e`` in ``install``'s directory and return its standard output."""
    node = require_node(install)
    done = subprocess.run(
        [node, "-e", script], cwd=install.path, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"node failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


__all__ = ["INSTALLS", "NODE_DIR", "NodeInstall", "node_app", "node_eval", "require_node"]

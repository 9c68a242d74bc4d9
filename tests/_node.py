"""Node.js for the tests: the Express app of ``tests/node`` (express-session with connect-redis or connect-mongo).

::

    from _node import NodeApp, node_app, require_node

    with node_app("redis", secrets=["new", "old"], redis_url=server.url, prefix="sess:") as app:
        httpx.get(f"{app.url}/whoami")

- :func:`require_node` skips the test when ``node`` or the app's packages
  (``npm ci --prefix tests/node``) are missing, and fails it under ``CI``
  (``.ci/run`` installs both).
- :func:`node_app` starts ``node tests/node/app.js`` on a free 127.0.0.1 port,
  configured by environment variables (see the header of ``app.js``), waits
  until it listens, and stops it (TERM, then KILL) on exit.
- :func:`node_eval` runs a one-off Node script in ``tests/node`` (so it can
  ``require()`` the pinned packages) and returns what it printed.

The package versions are pinned in ``tests/node/package.json`` and
``package-lock.json``: express-session 1.18.0 (the last release whose cookie
parser accepts a ``:`` in cookie names, such as connect's ``XXX:sess``),
connect-redis 8 on node-redis 4, connect-mongo 5 on the MongoDB driver 6.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from _servers import HERE, IN_CI, ServerProcess, free_port

#: The Node project: package.json, package-lock.json, app.js.
NODE_DIR = HERE / "node"
INSTALL_HINT = "install Node.js (apt-get install nodejs npm), then: npm ci --prefix tests/node"


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_node() -> str:
    """The path of ``node``, with the app's packages installed; skip (fail under CI) otherwise."""
    node = shutil.which("node")
    if node is None:
        _missing(f"node is not installed: {INSTALL_HINT}")
        raise AssertionError("unreachable")  # pragma: no cover
    if not (NODE_DIR / "node_modules" / "express-session").is_dir():
        _missing(f"the Node packages of tests/node are not installed: {INSTALL_HINT}")
    return node


def node_app(
    store: str,
    *,
    secrets: Sequence[str],
    cookie_name: str = "connect.sid",
    rolling: bool = False,
    max_age_ms: int | None = 14 * 24 * 3600 * 1000,
    redis_url: str | None = None,
    prefix: str | None = None,
    mongo_url: str | None = None,
    mongo_db: str | None = None,
) -> ServerProcess:
    """The Express app on a free port (not started: use it as a context manager)."""
    node = require_node()
    env = {
        "PORT": "",
        "STORE": store,
        "SECRETS": json.dumps(list(secrets)),
        "COOKIE_NAME": cookie_name,
        "ROLLING": "1" if rolling else "0",
        "MAX_AGE_MS": "null" if max_age_ms is None else str(max_age_ms),
        "REDIS_URL": redis_url or "",
        "REDIS_PREFIX": prefix or "sess:",
        "MONGO_URL": mongo_url or "",
        "MONGO_DB": mongo_db or "",
        "NODE_ENV": "production",
    }
    port = free_port()
    env["PORT"] = str(port)
    return ServerProcess([node, str(NODE_DIR / "app.js")], port, env=env, cwd=NODE_DIR)


def node_eval(script: str) -> str:
    """Run ``script`` with ``node -e`` in tests/node and return its standard output."""
    node = require_node()
    done = subprocess.run([node, "-e", script], cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"node failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


__all__ = ["NODE_DIR", "node_app", "node_eval", "require_node"]

"""A Starlette app in express mode, the Python twin of tests/node/app.js, configured by environment variables.

PERSESSION_TEST_STORE: store URL, with its layout (``redis://...?layout=connect-redis``,
    ``mongodb://.../db?layout=connect-mongo``)
PERSESSION_TEST_PREFIX: the Redis key prefix (default connect-redis' ``sess:``)
PERSESSION_TEST_SECRET: JSON list of secrets, newest first
PERSESSION_TEST_OPTIONS: JSON object of extra SessionConfig options (``compat`` is always ``"express"``)

Routes, as the Node app's: ``/login?user=`` (:func:`persession.guard.login`),
``/whoami``, ``/set?key=&value=``, ``/counter``, ``/logout``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persession.asgi import SessionMiddleware, get_session
from persession.guard import login, logout
from persession.stores import store_from_url


async def login_route(request: Request) -> Response:
    login(get_session(request.scope), request.query_params["user"])
    return JSONResponse({"user": request.query_params["user"]})


async def whoami(request: Request) -> Response:
    session = get_session(request.scope)
    passport = session.get("passport")
    user = passport.get("user") if isinstance(passport, dict) else None
    # A record that never expires (no store TTL, no cookie expiry) has expires == inf, which JSON cannot carry.
    expires = session.expires if session.expires is not None and math.isfinite(session.expires) else None
    return JSONResponse({"user": user, "session": dict(session), "id": session.id, "expires": expires})


async def set_key(request: Request) -> Response:
    get_session(request.scope)[request.query_params["key"]] = request.query_params.get("value", "")
    return JSONResponse({"ok": True})


async def counter(request: Request) -> Response:
    session = get_session(request.scope)
    session["counter"] = session.get("counter", 0) + 1
    return JSONResponse({"counter": session["counter"]})


async def logout_route(request: Request) -> Response:
    logout(get_session(request.scope))
    return JSONResponse({"ok": True})


def build() -> SessionMiddleware:
    secret = json.loads(os.environ.get("PERSESSION_TEST_SECRET", '["test-secret"]'))
    options: dict[str, Any] = json.loads(os.environ.get("PERSESSION_TEST_OPTIONS", "{}"))
    store_options: dict[str, Any] = {}
    if "PERSESSION_TEST_PREFIX" in os.environ:
        store_options["prefix"] = os.environ["PERSESSION_TEST_PREFIX"]
    store = store_from_url(os.environ["PERSESSION_TEST_STORE"], **store_options)
    routes = [
        Route("/login", login_route),
        Route("/whoami", whoami),
        Route("/set", set_key),
        Route("/counter", counter),
        Route("/logout", logout_route),
    ]
    return SessionMiddleware(Starlette(routes=routes), secret=secret, store=store, compat="express", **options)


app = build()

"""A Starlette app whose websockets persession's guard protects, configured by environment variables.

PERSESSION_TEST_STORE: store URL (default: the default SQLite file)
PERSESSION_TEST_STORE_PREFIX: key prefix, for a Redis store
PERSESSION_TEST_SECRET: comma-separated secrets, newest first
PERSESSION_TEST_RECHECK: GuardPolicy.recheck_interval in seconds, or "none" (default)
PERSESSION_TEST_NO_DENIAL: "1" hides the websocket.http.response extension, so refusals close before accept
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from persession.asgi import SessionMiddleware, get_session, live_sockets
from persession.guard import GuardPolicy, login, logout
from persession.stores import store_from_url
from persession.stores.base import AsyncUserIndex


def _pid(payload: dict[str, object]) -> JSONResponse:
    return JSONResponse({**payload, "pid": os.getpid()})


async def login_route(request: Request) -> Response:
    login(get_session(request.scope), request.query_params["user"])
    return _pid({"user": request.query_params["user"]})


async def logout_route(request: Request) -> Response:
    logout(get_session(request.scope))
    return _pid({"ok": True})


async def whoami(request: Request) -> Response:
    return _pid({"user": get_session(request.scope).get("user")})


async def revoke(request: Request) -> Response:
    """Revoke every session of the logged-in user through the store's index, or log this one out without it."""
    session = get_session(request.scope)
    store = app.store
    if isinstance(store, AsyncUserIndex):
        revoked = await store.revoke_user(str(session["user"]))
        for sid in revoked:
            live_sockets(request.scope).revoke(sid)
        return _pid({"via": "revoke_user", "revoked": len(revoked)})
    logout(session)
    return _pid({"via": "logout", "revoked": 1})


async def echo(websocket: WebSocket) -> None:
    """Greet with the session's user, then echo text until the client leaves or the session ends."""
    await websocket.accept()
    await websocket.send_json({"user": websocket.session["user"], "pid": os.getpid()})
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


def _without_denial_extension(inner: Any) -> Any:
    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            extensions = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "websocket.http.response"}
            scope = {**scope, "extensions": extensions}
        await inner(scope, receive, send)

    return wrapper


def build() -> SessionMiddleware:
    secret = os.environ.get("PERSESSION_TEST_SECRET", "test-secret").split(",")
    url = os.environ.get("PERSESSION_TEST_STORE")
    prefix = os.environ.get("PERSESSION_TEST_STORE_PREFIX")
    store = store_from_url(url, **({"prefix": prefix} if prefix else {})) if url else None
    recheck = os.environ.get("PERSESSION_TEST_RECHECK", "none")
    policy = GuardPolicy(recheck_interval=None if recheck == "none" else float(recheck))
    routes = [
        Route("/login", login_route),
        Route("/logout", logout_route),
        Route("/whoami", whoami),
        Route("/revoke", revoke),
        WebSocketRoute("/ws", echo),
    ]
    return SessionMiddleware(Starlette(routes=routes), secret=secret, store=store, websocket_guard=policy)


app = build()
#: What uvicorn serves: the app, or the app behind a server that cannot send denial responses.
served = _without_denial_extension(app) if os.environ.get("PERSESSION_TEST_NO_DENIAL") == "1" else app

"""A python-socketio server (ASGI) behind persession's SessionMiddleware and SocketIOGuard.

PERSESSION_TEST_STORE: store URL (default: the default SQLite file)
PERSESSION_TEST_SECRET: comma-separated secrets, newest first
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persession.asgi import SessionMiddleware
from persession.asgi import get_session as scope_session
from persession.guard import login, logout
from persession.integrations.socketio import SocketIOGuard, get_session
from persession.stores import store_from_url

# Short ping times end long-polls quickly: python-engineio's polling client may otherwise wait out a
# 25 s long-poll (plus the ping timeout) when it disconnects, and uvicorn's shutdown waits for open long-polls.
sio = socketio.AsyncServer(async_mode="asgi", ping_interval=1, ping_timeout=3)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: object) -> None:
    """Remember the user of the persession session the handshake carried."""
    await sio.save_session(sid, {"user": get_session(environ)["user"]})


@sio.event
async def echo(sid: str, data: object) -> dict[str, object]:
    """Acknowledge with the connection's user and the data sent."""
    saved = await sio.get_session(sid)
    return {"user": saved["user"], "data": data}


async def login_route(request: Request) -> Response:
    login(scope_session(request.scope), request.query_params["user"])
    return JSONResponse({"user": request.query_params["user"]})


async def logout_route(request: Request) -> Response:
    logout(scope_session(request.scope))
    return JSONResponse({"ok": True})


def build() -> SessionMiddleware:
    secret = os.environ.get("PERSESSION_TEST_SECRET", "test-secret").split(",")
    url = os.environ.get("PERSESSION_TEST_STORE")
    store = store_from_url(url) if url else None
    http = Starlette(routes=[Route("/login", login_route), Route("/logout", logout_route)])
    guarded = SocketIOGuard(socketio.ASGIApp(sio, other_asgi_app=http))
    return SessionMiddleware(guarded, secret=secret, store=store)


app = build()

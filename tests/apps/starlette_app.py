"""A Starlette app behind persession's ASGI middleware, configured by environment variables.

PERSESSION_TEST_STORE: store URL (default: the default SQLite file)
PERSESSION_TEST_SECRET: comma-separated secrets, newest first
PERSESSION_TEST_OPTIONS: JSON object of extra SessionConfig options
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from persession import SessionReadOnly
from persession.asgi import SessionMiddleware
from persession.stores import store_from_url


def _pid(payload: dict[str, object]) -> JSONResponse:
    return JSONResponse({**payload, "pid": os.getpid()})


async def set_key(request: Request) -> Response:
    request.session[request.query_params["key"]] = request.query_params.get("value", "")
    return _pid({"ok": True})


async def get_all(request: Request) -> Response:
    return _pid({"session": dict(request.session)})


async def counter(request: Request) -> Response:
    request.session["counter"] = request.session.get("counter", 0) + 1
    return _pid({"counter": request.session["counter"]})


async def login(request: Request) -> Response:
    request.session.regenerate()  # type: ignore[attr-defined]
    request.session["user"] = request.query_params["user"]
    return _pid({"user": request.session["user"]})


async def logout(request: Request) -> Response:
    request.session.destroy()  # type: ignore[attr-defined]
    return _pid({"ok": True})


async def static(request: Request) -> Response:
    return PlainTextResponse("no session here")


async def crash(request: Request) -> Response:
    request.session["crashed"] = True
    return PlainTextResponse("boom", status_code=500)


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"session": dict(websocket.session)})
    await websocket.close()


async def ws_write(websocket: WebSocket) -> None:
    """Try to write to the session over a websocket; report the error class it raised, if any."""
    await websocket.accept()
    try:
        websocket.session["written_over_websocket"] = True
    except SessionReadOnly as error:
        await websocket.send_json({"refused": type(error).__name__})
    else:
        await websocket.send_json({"refused": None})
    await websocket.close()


def build() -> SessionMiddleware:
    secret = os.environ.get("PERSESSION_TEST_SECRET", "test-secret").split(",")
    options = json.loads(os.environ.get("PERSESSION_TEST_OPTIONS", "{}"))
    url = os.environ.get("PERSESSION_TEST_STORE")
    store = store_from_url(url) if url else None
    routes = [
        Route("/set", set_key),
        Route("/get", get_all),
        Route("/counter", counter),
        Route("/login", login),
        Route("/logout", logout),
        Route("/static", static),
        Route("/crash", crash),
        WebSocketRoute("/ws", ws),
        WebSocketRoute("/ws-write", ws_write),
    ]
    return SessionMiddleware(Starlette(routes=routes), secret=secret, store=store, **options)


app = build()

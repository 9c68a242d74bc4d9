"""persession's Starlette example: log in, a per-session counter, a websocket chat, log out.

Run it (from the repository root)::

    python -m uvicorn examples.starlette_app.app:app

Configuration, shared with the Flask example:

PERSESSION_STORE_URL   a store URL (``sqlite:///path.db``, ``redis://...``,
                       ``mongodb://...``); default: the embedded SQLite file
PERSESSION_SECRET      comma-separated secrets, newest first; default: a
                       development secret (a loud warning is printed)

The websocket at ``/ws`` is guarded by persession: a handshake without a
logged-in session is refused with 401, one from another origin with 403, and
an open websocket is closed with code 4001 when its session logs out. When
python-socketio is installed, a Socket.IO server is mounted at
``/socket.io`` too, behind :class:`persession.integrations.socketio.SocketIOGuard`.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from persession import Session
from persession.asgi import SessionMiddleware
from persession.guard import GuardPolicy, login, logout
from persession.stores import store_from_url

DEV_SECRET = "persession-example-development-secret"
#: Where python-socketio is mounted, when it is installed (its default path).
SOCKETIO_PATH = "/socket.io"


def _secrets() -> list[str]:
    configured = os.environ.get("PERSESSION_SECRET", "")
    secrets = [s.strip() for s in configured.split(",") if s.strip()]
    if not secrets:
        print(
            "WARNING: PERSESSION_SECRET is not set; using a public development secret. "
            "Anyone can forge sessions. Set PERSESSION_SECRET before deploying.",
            file=sys.stderr,
        )
        secrets = [DEV_SECRET]
    return secrets


def _session(request: Request | WebSocket) -> Session:
    session = request.session
    assert isinstance(session, Session)  # noqa: S101 - the middleware below guarantees it
    return session


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>persession example</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;line-height:1.5}}
button,input{{font-size:1rem}}#chat{{border:1px solid #ccc;border-radius:.4rem;padding:.2rem 1rem;margin:1rem 0}}
#chat-log{{min-height:3rem;padding-left:1.2rem}}</style></head>
<body><h1>persession &middot; {framework}</h1>{body}</body></html>"""

LOGIN_FORM = """<p>You are not logged in.</p>
<form method="post" action="/login"><label>Name <input name="user" required autofocus></label>
<button type="submit">Log in</button></form>"""

# The chat: a websocket to /ws that persession's guard admits only for logged-in, same-origin pages.
# window.chatState records what the page saw (the browser tests read it).
CHAT = """<section id="chat"><p>Chat <small id="chat-status">connecting&hellip;</small></p>
<ol id="chat-log"></ol>
<form id="chat-form"><input id="chat-input" autocomplete="off" placeholder="Say something" required>
<button type="submit">Send</button></form></section>
<script>
(() => {
  const state = window.chatState = {opened: false, error: false, closeCode: null, messages: []};
  const status = document.getElementById("chat-status");
  const log = document.getElementById("chat-log");
  const input = document.getElementById("chat-input");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => { state.opened = true; status.textContent = "connected"; };
  ws.onerror = () => { state.error = true; };
  ws.onclose = (event) => { state.closeCode = event.code; status.textContent = "closed (code " + event.code + ")"; };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    state.messages.push(message);
    if (message.type !== "message") return;
    const item = document.createElement("li");
    item.textContent = message.user + ": " + message.text;
    log.append(item);
  };
  document.getElementById("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({text: input.value}));
    input.value = "";
  });
})();
</script>"""


def page(body: str) -> HTMLResponse:
    return HTMLResponse(PAGE.format(framework="Starlette", body=body))


async def home(request: Request) -> Response:
    session = _session(request)
    user = session.get("user")
    if user is None:
        return page(LOGIN_FORM)
    session["counter"] = session.get("counter", 0) + 1
    return page(f"""<p>Logged in as <strong id="user">{html.escape(str(user))}</strong>.</p>
<p>You have seen this page <strong id="counter">{session["counter"]}</strong> time(s) in this session.</p>
{CHAT}
<form method="post" action="/logout"><button type="submit">Log out</button></form>""")


async def login_route(request: Request) -> Response:
    if request.method == "POST":
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        user = (form.get("user") or [""])[0].strip()
    else:
        user = request.query_params.get("user", "").strip()
    if not user:
        return JSONResponse({"error": "user is required"}, status_code=400)
    login(_session(request), user)  # a new session id (against fixation), then session["user"] = user
    if request.method == "POST":
        return RedirectResponse("/", status_code=303)
    return JSONResponse({"user": user})


async def logout_route(request: Request) -> Response:
    logout(_session(request))  # deleted from the store; this session's open websockets close with 4001
    if request.method == "POST":
        return RedirectResponse("/", status_code=303)
    return JSONResponse({"user": None})


async def whoami(request: Request) -> Response:
    session = _session(request)
    return JSONResponse({"user": session.get("user"), "session": dict(session)})


async def counter(request: Request) -> Response:
    session = _session(request)
    session["counter"] = session.get("counter", 0) + 1
    return JSONResponse({"counter": session["counter"]})


async def set_value(request: Request) -> Response:
    key = request.query_params.get("key")
    if not key:
        return JSONResponse({"error": "key is required"}, status_code=400)
    _session(request)[key] = request.query_params.get("value", "")
    return JSONResponse({"key": key, "value": request.query_params.get("value", "")})


async def chat(websocket: WebSocket) -> None:
    """Greet, then echo every ``{"text": ...}`` with the user's name, until the client leaves or logs out.

    Only logged-in, same-origin handshakes get here: persession's guard refuses the others.
    The session is read-only in a websocket (no cookie can be set after the handshake).
    """
    user = str(_session(websocket)["user"])
    await websocket.accept()
    await websocket.send_json({"type": "hello", "user": user})
    try:
        while True:
            data = await websocket.receive_json()
            text = str(data.get("text", "") if isinstance(data, dict) else data)[:500]
            await websocket.send_json({"type": "message", "user": user, "text": text})
    except WebSocketDisconnect:
        pass  # the client left, or the guard closed the websocket with 4001 on logout


def _with_socketio(http_app: Any) -> tuple[Any, GuardPolicy | bool]:
    """Mount python-socketio at /socket.io, if installed; return the app and the middleware's guard policy.

    SocketIOGuard checks every Socket.IO request (its polling requests too), so the
    middleware's guard leaves /socket.io to it and guards the other websockets (/ws).
    """
    try:
        import socketio

        from persession.integrations.socketio import SocketIOGuard
        from persession.integrations.socketio import get_session as socketio_session
    except ImportError:
        return http_app, True
    sio = socketio.AsyncServer(async_mode="asgi")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: object) -> None:
        await sio.save_session(sid, {"user": socketio_session(environ)["user"]})

    @sio.event
    async def echo(sid: str, data: object) -> dict[str, object]:
        return {"user": (await sio.get_session(sid))["user"], "text": data}

    guarded = SocketIOGuard(socketio.ASGIApp(sio, other_asgi_app=http_app))
    return guarded, GuardPolicy(exclude=[SOCKETIO_PATH])


def create_app() -> SessionMiddleware:
    """The example application, configured from the environment."""
    url = os.environ.get("PERSESSION_STORE_URL")
    routes = [
        Route("/", home),
        Route("/login", login_route, methods=["GET", "POST"]),
        Route("/logout", logout_route, methods=["GET", "POST"]),
        Route("/whoami", whoami),
        Route("/counter", counter),
        Route("/set", set_value),
        WebSocketRoute("/ws", chat),
    ]
    inner, guard = _with_socketio(Starlette(routes=routes))
    return SessionMiddleware(
        inner,
        secret=_secrets(),
        store=store_from_url(url) if url else None,
        websocket_guard=guard,  # True: logged-in, same-origin handshakes only; open websockets close on logout
    )


app = create_app()

"""persession's Flask example: log in, a per-session counter, a websocket chat, log out.

Run it (from the repository root; flask-sock needs a threaded server such as gunicorn's gthread workers)::

    python -m gunicorn --threads 8 examples.flask_app.app:app

``flask.session`` is persession's session, through
:func:`persession.integrations.flask.init_app`. Configuration, shared with the
Starlette example:

PERSESSION_STORE_URL   a store URL (``sqlite:///path.db``, ``redis://...``,
                       ``mongodb://...``); default: the embedded SQLite file
PERSESSION_SECRET      comma-separated secrets, newest first; default: a
                       development secret (a loud warning is printed)

The websocket at ``/ws`` (flask-sock) is guarded by persession's WSGI guard: a
handshake without a logged-in session is refused with 401, one from another
origin with 403. WSGI websockets do not follow their session by themselves, so
the chat checks the store before each message and closes with code 4001 once
the session has logged out.
"""

from __future__ import annotations

import html
import json
import os
import sys

from flask import Flask, jsonify, redirect, request, session
from flask.typing import ResponseReturnValue
from flask_sock import Server, Sock

from persession.guard import REVOKED_CLOSE_CODE, login, logout
from persession.integrations.flask import get_session, init_app
from persession.stores import store_from_url

DEV_SECRET = "persession-example-development-secret"


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

app = Flask(__name__)
sock = Sock(app)
_url = os.environ.get("PERSESSION_STORE_URL")
# The WSGI middleware, flask.session as persession's session, a 503 for StoreError, and the websocket guard.
sessions = init_app(app, secret=_secrets(), store=store_from_url(_url) if _url else None, websocket_guard=True)


def page(body: str) -> str:
    return PAGE.format(framework="Flask", body=body)


@app.get("/")
def home() -> ResponseReturnValue:
    user = session.get("user")
    if user is None:
        return page(LOGIN_FORM)
    session["counter"] = session.get("counter", 0) + 1
    return page(f"""<p>Logged in as <strong id="user">{html.escape(str(user))}</strong>.</p>
<p>You have seen this page <strong id="counter">{session["counter"]}</strong> time(s) in this session.</p>
{CHAT}
<form method="post" action="/logout"><button type="submit">Log out</button></form>""")


@app.route("/login", methods=["GET", "POST"])
def login_route() -> ResponseReturnValue:
    source = request.form if request.method == "POST" else request.args
    user = source.get("user", "").strip()
    if not user:
        return jsonify({"error": "user is required"}), 400
    login(get_session(), user)  # a new session id (against fixation), then session["user"] = user
    if request.method == "POST":
        return redirect("/", code=303)
    return jsonify({"user": user})


@app.route("/logout", methods=["GET", "POST"])
def logout_route() -> ResponseReturnValue:
    logout(get_session())  # deleted from the store, cookie expired
    if request.method == "POST":
        return redirect("/", code=303)
    return jsonify({"user": None})


@app.get("/whoami")
def whoami() -> ResponseReturnValue:
    return jsonify({"user": session.get("user"), "session": dict(session)})


@app.get("/counter")
def counter() -> ResponseReturnValue:
    session["counter"] = session.get("counter", 0) + 1
    return jsonify({"counter": session["counter"]})


@app.get("/set")
def set_value() -> ResponseReturnValue:
    key = request.args.get("key")
    if not key:
        return jsonify({"error": "key is required"}), 400
    session[key] = request.args.get("value", "")
    return jsonify({"key": key, "value": request.args.get("value", "")})


@sock.route("/ws")
def chat(ws: Server) -> None:
    """Greet, then echo every ``{"text": ...}`` with the user's name, until the client leaves or logs out.

    Only logged-in, same-origin handshakes get here: persession's guard refuses the others.
    The session is the handshake's, read-only.
    """
    handshake = get_session()
    user = str(handshake["user"])
    ws.send(json.dumps({"type": "hello", "user": user}))
    while True:
        raw = ws.receive()
        if handshake.id is None or sessions.store.load(handshake.id) is None:
            ws.close(REVOKED_CLOSE_CODE, "session revoked")  # logged out (or expired) since the handshake
            return
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            data = raw
        text = str(data.get("text", "") if isinstance(data, dict) else data)[:500]
        ws.send(json.dumps({"type": "message", "user": user, "text": text}))

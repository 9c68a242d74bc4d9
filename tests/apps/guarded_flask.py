"""A Flask + flask-sock app whose websocket persession's WSGI guard protects (gunicorn with threads).

PERSESSION_TEST_STORE: store URL (default: the default SQLite file)
PERSESSION_TEST_SECRET: comma-separated secrets, newest first
"""

from __future__ import annotations

import json
import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_sock import Server, Sock

from persession.guard import login, logout
from persession.stores import store_from_url
from persession.wsgi import SessionMiddleware, get_session

flask_app = Flask(__name__)
sock = Sock(flask_app)


@flask_app.get("/login")
def login_route() -> ResponseReturnValue:
    login(get_session(request.environ), request.args["user"])
    return jsonify({"user": request.args["user"]})


@flask_app.get("/logout")
def logout_route() -> ResponseReturnValue:
    logout(get_session(request.environ))
    return jsonify({"ok": True})


@sock.route("/ws")
def echo(ws: Server) -> None:
    """Greet with the session's user, then echo until the client leaves."""
    ws.send(json.dumps({"user": get_session(request.environ)["user"], "pid": os.getpid()}))
    while True:
        ws.send(ws.receive())


def build() -> Flask:
    secret = os.environ.get("PERSESSION_TEST_SECRET", "test-secret").split(",")
    url = os.environ.get("PERSESSION_TEST_STORE")
    store = store_from_url(url) if url else None
    flask_app.wsgi_app = SessionMiddleware(  # type: ignore[method-assign]
        flask_app.wsgi_app, secret=secret, store=store, websocket_guard=True
    )
    return flask_app


app = build()

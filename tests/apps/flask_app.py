"""A Flask app behind persession's WSGI middleware, configured like starlette_app.py."""

from __future__ import annotations

import json
import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from persession.stores import store_from_url
from persession.wsgi import SessionMiddleware, get_session

flask_app = Flask(__name__)


def _pid(payload: dict[str, object]) -> ResponseReturnValue:
    return jsonify({**payload, "pid": os.getpid()})


@flask_app.get("/set")
def set_key() -> ResponseReturnValue:
    get_session(request.environ)[request.args["key"]] = request.args.get("value", "")
    return _pid({"ok": True})


@flask_app.get("/get")
def get_all() -> ResponseReturnValue:
    return _pid({"session": dict(get_session(request.environ))})


@flask_app.get("/counter")
def counter() -> ResponseReturnValue:
    session = get_session(request.environ)
    session["counter"] = session.get("counter", 0) + 1
    return _pid({"counter": session["counter"]})


@flask_app.get("/login")
def login() -> ResponseReturnValue:
    session = get_session(request.environ)
    session.regenerate()
    session["user"] = request.args["user"]
    return _pid({"user": session["user"]})


@flask_app.get("/logout")
def logout() -> ResponseReturnValue:
    get_session(request.environ).destroy()
    return _pid({"ok": True})


@flask_app.get("/static")
def static_page() -> ResponseReturnValue:
    return "no session here"


@flask_app.get("/crash")
def crash() -> ResponseReturnValue:
    get_session(request.environ)["crashed"] = True
    return "boom", 500


def build() -> Flask:
    secret = os.environ.get("PERSESSION_TEST_SECRET", "test-secret").split(",")
    options = json.loads(os.environ.get("PERSESSION_TEST_OPTIONS", "{}"))
    url = os.environ.get("PERSESSION_TEST_STORE")
    store = store_from_url(url) if url else None
    flask_app.wsgi_app = SessionMiddleware(flask_app.wsgi_app, secret=secret, store=store, **options)  # type: ignore[method-assign]
    return flask_app


app = build()

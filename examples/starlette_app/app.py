"""persession's Starlette example: log in, a per-session counter, log out.

Run it (from the repository root)::

    python -m uvicorn examples.starlette_app.app:app

Configuration, shared with the Flask example:

PERSESSION_STORE_URL   a store URL (``sqlite:///path.db``, ``redis://...``,
                       ``mongodb://...``); default: the embedded SQLite file
PERSESSION_SECRET      comma-separated secrets, newest first; default: a
                       development secret (a loud warning is printed)
"""

from __future__ import annotations

import html
import os
import sys
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from persession import Session
from persession.asgi import SessionMiddleware
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


def _session(request: Request) -> Session:
    session = request.session
    assert isinstance(session, Session)  # noqa: S101 - the middleware below guarantees it
    return session


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>persession example</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;line-height:1.5}}
button{{font-size:1rem}}</style></head>
<body><h1>persession &middot; Starlette</h1>{body}</body></html>"""


async def home(request: Request) -> Response:
    session = _session(request)
    user = session.get("user")
    if user is None:
        body = """<p>You are not logged in.</p>
<form method="post" action="/login"><label>Name <input name="user" required autofocus></label>
<button type="submit">Log in</button></form>"""
    else:
        session["counter"] = session.get("counter", 0) + 1
        body = f"""<p>Logged in as <strong id="user">{html.escape(str(user))}</strong>.</p>
<p>You have seen this page <strong id="counter">{session["counter"]}</strong> time(s) in this session.</p>
<form method="post" action="/logout"><button type="submit">Log out</button></form>"""
    return HTMLResponse(PAGE.format(body=body))


async def login(request: Request) -> Response:
    if request.method == "POST":
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        user = (form.get("user") or [""])[0].strip()
    else:
        user = request.query_params.get("user", "").strip()
    if not user:
        return JSONResponse({"error": "user is required"}, status_code=400)
    session = _session(request)
    session.regenerate()  # a new id on login, against session fixation
    session["user"] = user
    if request.method == "POST":
        return RedirectResponse("/", status_code=303)
    return JSONResponse({"user": user})


async def logout(request: Request) -> Response:
    _session(request).destroy()
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


def create_app() -> SessionMiddleware:
    """The example application, configured from the environment."""
    url = os.environ.get("PERSESSION_STORE_URL")
    routes = [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/whoami", whoami),
        Route("/counter", counter),
        Route("/set", set_value),
    ]
    return SessionMiddleware(
        Starlette(routes=routes),
        secret=_secrets(),
        store=store_from_url(url) if url else None,
    )


app = create_app()

"""Log in, log out, and keep websockets of strangers out.

::

    from persession.guard import login, logout

    login(session, user.id)          # new session id (against fixation) + session["user"]
    logout(session)                  # the session is destroyed, its cookie expired

With ``SessionConfig(compat="express")`` the user is stored where passport
keeps it, ``session["passport"] = {"user": user.id}``, and the default
predicate looks there, so a login on a Node service (passport on
express-session) is a login here too, and the other way round.

A websocket handshake carries the browser's cookies but is not protected by
the same-origin policy: any page can open a websocket to your site, and the
browser sends your users' cookies with it (cross-site websocket hijacking).
The guards refuse, **before the application sees the connection**:

- handshakes whose session is not logged in (``401``), and
- handshakes whose ``Origin`` is not allowed (``403``).

:class:`WebSocketGuard` does it for ASGI (a real HTTP 401/403 when the server
offers the ``websocket.http.response`` extension, else ``websocket.close``
with code 1008 before ``accept``, which servers answer with 403);
:class:`WSGIWebSocketGuard` for WSGI ``Upgrade: websocket`` requests
(flask-sock, simple-websocket, gevent-websocket). Plain HTTP passes untouched.

**Origin policy.** By default only same-origin handshakes pass: the
``Origin``'s host and port must equal the ``Host`` header (or
``X-Forwarded-Host`` with ``trust_forwarded_host=True``, behind a proxy you
trust). ``allowed_origins`` lists other origins, with ``*.`` wildcards for
subdomains (``"https://*.example.com"``). A handshake **without** ``Origin`` is
allowed by default (``allow_missing_origin=True``): every browser sends
``Origin`` on websocket handshakes, so a missing one means a non-browser
client, which cannot be tricked into lending a victim's cookies; it still
needs a logged-in session. Set it to ``False`` to refuse such clients.

**Live websockets follow the session.** An accepted websocket under
:class:`WebSocketGuard` is closed with code **4001** (:data:`REVOKED_CLOSE_CODE`,
reason ``"session revoked"``) when its session ends: the application's
``receive`` returns ``{"type": "websocket.disconnect", "code": 4001}`` and
its later sends are dropped. The session ends

- at once, when a request through the same middleware logs out, regenerates
  (logs in again) or destroys it: :class:`persession.asgi.SessionMiddleware`
  reports every store delete and replace to its :class:`LiveSockets`;
- when any process revokes it, if the store has a revocation feed
  (:class:`~persession.stores.base.RevocationFeed`, e.g. ``AsyncRedisStore``
  over pub/sub): one subscriber task per guard, started with its first
  websocket and stopped with its last (or at lifespan shutdown);
- within :attr:`GuardPolicy.recheck_interval` (30 s) otherwise: the guard
  loads the session of each live websocket and closes those whose record is
  gone (destroyed, revoked or expired). It runs with a feed too, since
  pub/sub may lose messages while it reconnects.

Code that deletes sessions itself (``revoke_user`` on a store without a
feed) can call ``persession.asgi.live_sockets(scope).revoke(sid)``. WSGI
websockets are not followed.

The guard is in parts, none of which imports a shell: login and logout
(``_login``), the Origin policy (``_origin``, pure functions of the
headers), :class:`GuardPolicy` (``_policy``), the live-socket registry
(``_live``, one per middleware) and the ASGI and WSGI guards
(``_guard_asgi``, ``_guard_wsgi``). This module is their public face.
"""

from __future__ import annotations

from ._guard_asgi import WebSocketGuard
from ._guard_wsgi import WSGIWebSocketGuard
from ._live import REVOKED_CLOSE_CODE, LiveSockets
from ._login import is_logged_in, login, logout
from ._origin import OriginPolicy
from ._policy import GuardPolicy, Refusal
from .core import USER_KEY

__all__ = [
    "REVOKED_CLOSE_CODE",
    "USER_KEY",
    "GuardPolicy",
    "LiveSockets",
    "OriginPolicy",
    "Refusal",
    "WSGIWebSocketGuard",
    "WebSocketGuard",
    "is_logged_in",
    "login",
    "logout",
]

# Defined in the parts; these are their public names, for reprs and the docs.
WebSocketGuard.__module__ = WSGIWebSocketGuard.__module__ = LiveSockets.__module__ = __name__
OriginPolicy.__module__ = GuardPolicy.__module__ = Refusal.__module__ = __name__
login.__module__ = logout.__module__ = is_logged_in.__module__ = __name__

"""Log in, log out, and keep websockets of strangers out.

::

    from persession.guard import login, logout

    login(session, user.id)          # new session id (against fixation) + session["user"]
    logout(session)                  # the session is destroyed, its cookie expired

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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from .session import Session

__all__ = [
    "USER_KEY",
    "GuardPolicy",
    "OriginPolicy",
    "Refusal",
    "WSGIWebSocketGuard",
    "WebSocketGuard",
    "is_logged_in",
    "login",
    "logout",
]

#: The session key :func:`login` stores the user under.
USER_KEY: Final = "user"
_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def login(session: Session, user: str | int, **extra: Any) -> None:
    """Log ``user`` in: a new session id (against fixation), then ``session["user"] = user``.

    ``extra`` keys are stored too. The store indexes the session under
    ``str(user)``, so :meth:`~persession.stores.UserIndex.user_sessions` and
    :meth:`~persession.stores.UserIndex.revoke_user` find it.

    .. versionadded:: 0.1
    """
    session.regenerate()
    session[USER_KEY] = user
    for key, value in extra.items():
        session[key] = value
    session.mark_login(str(user))


def logout(session: Session) -> None:
    """Log out: the session is deleted from the store and its cookie expired.

    .. versionadded:: 0.1
    """
    session.destroy()


def is_logged_in(session: Session) -> bool:
    """The default "logged in" predicate: ``session["user"]`` is set (by :func:`login`)."""
    return session.get(USER_KEY) is not None


def _host_port(host: str, scheme: str) -> tuple[str, int] | None:
    host = host.strip().lower()
    if not host:
        return None
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        return None
    hostname = parts.hostname
    if hostname is None:
        return None
    return hostname, port if port is not None else _DEFAULT_PORTS.get(scheme, 80)


@dataclass(frozen=True, slots=True)
class _Pattern:
    schemes: tuple[str, ...]
    host: re.Pattern[str]
    port: int | None

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        if scheme and scheme not in ("http", "https"):
            raise ValueError(f"allowed origin {text!r}: the scheme must be http or https")
        host, _, port_text = rest.rstrip("/").partition(":")
        if not host or "/" in host or (host.count("*") and not host.startswith("*.")) or host.count("*") > 1:
            raise ValueError(f"allowed origin {text!r}: expected [scheme://]host[:port], '*.' only at the start")
        # "*.example.com": one or more labels before ".example.com", never the apex itself.
        regex = (r"[^.]+(\.[^.]+)*" + re.escape(host[1:])) if host.startswith("*.") else re.escape(host)
        port = int(port_text) if port_text else None
        schemes = (scheme,) if scheme else ("http", "https")
        return cls(schemes, re.compile(f"^{regex}$", re.IGNORECASE), port)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme not in self.schemes or not self.host.match(host):
            return False
        return port == (self.port if self.port is not None else _DEFAULT_PORTS[scheme])


@dataclass(frozen=True)
class OriginPolicy:
    """Which ``Origin`` headers a websocket handshake may carry.

    :param allowed_origins: origins allowed besides the same origin, as
        ``"https://app.example.com"``, ``"https://*.example.com"`` (any
        subdomain, not the apex) or ``"app.example.com:8443"`` (http or https).
    :param allow_missing_origin: allow handshakes without ``Origin``
        (non-browser clients); default ``True`` (see the module docs).
    :param trust_forwarded_host: compare with ``X-Forwarded-Host`` instead of
        ``Host``; only behind a proxy that sets it. Default ``False``.
    :param same_origin: allow the same origin; default ``True``.

    .. versionadded:: 0.1
    """

    allowed_origins: Sequence[str] = ()
    allow_missing_origin: bool = True
    trust_forwarded_host: bool = False
    same_origin: bool = True
    _patterns: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .exceptions import ConfigError

        if isinstance(self.allowed_origins, str):
            raise ConfigError("allowed_origins", "must be a list of origins, not one string")
        try:
            patterns = tuple(_Pattern.parse(origin) for origin in self.allowed_origins)
        except ValueError as error:
            raise ConfigError("allowed_origins", str(error)) from None
        object.__setattr__(self, "_patterns", patterns)

    def allows(self, origin: str | None, host: str | None, forwarded_host: str | None = None) -> bool:
        """Whether a handshake with this ``Origin`` (and ``Host``) may proceed."""
        if origin is None:
            return self.allow_missing_origin
        parts = urlsplit(origin.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.username:
            return False  # "null" origins, file://, and anything malformed
        origin_hp = _host_port(parts.netloc, scheme)
        if origin_hp is None:
            return False
        if self.same_origin:
            target = forwarded_host.split(",")[0] if (self.trust_forwarded_host and forwarded_host) else host
            if target is not None and _host_port(target, scheme) == origin_hp:
                return True
        return any(pattern.matches(scheme, *origin_hp) for pattern in self._patterns)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake was refused."""

    #: The HTTP status: 401 (not logged in) or 403 (origin).
    status: int
    #: A short reason, safe to send to the client.
    reason: str


_NOT_LOGGED_IN = Refusal(401, "login required")
_BAD_ORIGIN = Refusal(403, "origin not allowed")


@dataclass(frozen=True)
class GuardPolicy:
    """What the websocket guards check: the session predicate, the origin, the paths.

    :param predicate: ``predicate(session) -> bool``, "is this session allowed
        a websocket"; default :func:`is_logged_in`.
    :param origins: the :class:`OriginPolicy`; default same-origin only.
    :param include: path prefixes guarded; default every path.
    :param exclude: path prefixes never guarded (checked first).

    .. versionadded:: 0.1
    """

    predicate: Callable[[Session], bool] = is_logged_in
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    include: Sequence[str] = ("/",)
    exclude: Sequence[str] = ()

    def guards(self, path: str) -> bool:
        """Whether websocket handshakes to ``path`` are checked."""
        if any(path.startswith(prefix) for prefix in self.exclude):
            return False
        return any(path.startswith(prefix) for prefix in self.include)

    def check(
        self, session: Session | None, origin: str | None, host: str | None, forwarded_host: str | None
    ) -> Refusal | None:
        """``None`` when the handshake may proceed, else why not. The origin is checked first."""
        if not self.origins.allows(origin, host, forwarded_host):
            return _BAD_ORIGIN
        if session is None or session.failed is not None or not self.predicate(session):
            return _NOT_LOGGED_IN
        return None


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


_DENIAL_HEADERS: Final = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


class WebSocketGuard:
    """Refuse websocket handshakes of logged-out users and foreign origins (ASGI).

    Inside :class:`persession.asgi.SessionMiddleware` (which loads the session
    read-only for websocket scopes), or standalone with the same ``secret``,
    ``store`` and options, in which case it builds that middleware around
    itself. ``SessionMiddleware(app, websocket_guard=GuardPolicy(...))`` is the
    same as wrapping ``app`` in this guard.

    :param app: the ASGI application.
    :param policy: what to check; default :class:`GuardPolicy` (logged in, same origin).
    :param secret: for standalone use: as :class:`persession.asgi.SessionMiddleware`.
    :param options: for standalone use: ``store``, ``config`` and any
        :class:`~persession.SessionConfig` option.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        policy: GuardPolicy | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        **options: Any,
    ) -> None:
        from asgiref.compatibility import guarantee_single_callable

        self.app: Any = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()
        self._entry: Any = self._guard
        if secret is not None or "config" in options:
            from .asgi import SessionMiddleware

            self._entry = SessionMiddleware(self._guard, secret=secret, **options)
        elif options:
            from .exceptions import ConfigError

            raise ConfigError(sorted(options)[0], "session options need secret= or config= (standalone guard)")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._entry(scope, receive, send)

    async def _guard(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or not self.policy.guards(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        session = scope.get("session")
        refusal = self.policy.check(
            session if isinstance(session, Session) else None,
            _first(headers, b"origin"),
            _first(headers, b"host"),
            _first(headers, b"x-forwarded-host"),
        )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        message = await receive()  # the handshake's websocket.connect
        if message.get("type") != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": _DENIAL_HEADERS})
            await send({"type": "websocket.http.response.body", "body": f"{refusal.reason}\n".encode()})
        else:
            # Closing before accept: servers answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason})


class WSGIWebSocketGuard:
    """Refuse ``Upgrade: websocket`` requests of logged-out users and foreign origins (WSGI).

    For flask-sock, simple-websocket and gevent-websocket, which run the
    websocket inside an ordinary WSGI request. Inside
    :class:`persession.wsgi.SessionMiddleware`, or standalone with a
    ``secret`` and options (it then builds that middleware around itself).
    Refused requests get ``401`` or ``403`` and never reach the application.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        policy: GuardPolicy | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        **options: Any,
    ) -> None:
        self.app: Any = app
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()
        self._entry: Any = self._guard
        if secret is not None or "config" in options:
            from .wsgi import SessionMiddleware

            self._entry = SessionMiddleware(self._guard, secret=secret, **options)
        elif options:
            from .exceptions import ConfigError

            raise ConfigError(sorted(options)[0], "session options need secret= or config= (standalone guard)")

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self._entry(environ, start_response)

    def _guard(self, environ: Any, start_response: Any) -> Any:
        upgrade = environ.get("HTTP_UPGRADE", "").lower()
        if upgrade != "websocket" or not self.policy.guards(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        session = environ.get("persession.session")
        refusal = self.policy.check(
            session if isinstance(session, Session) else None,
            environ.get("HTTP_ORIGIN"),
            environ.get("HTTP_HOST"),
            environ.get("HTTP_X_FORWARDED_HOST"),
        )
        if refusal is None:
            return self.app(environ, start_response)
        body = f"{refusal.reason}\n".encode()
        status = "401 Unauthorized" if refusal.status == 401 else "403 Forbidden"
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

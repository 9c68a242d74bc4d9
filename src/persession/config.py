"""Every session option, validated once.

Names follow RFC 6265 and Werkzeug's ``dump_cookie`` for cookie attributes and
express-session for behaviour; each docstring entry gives the express-session
equivalent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Literal, TypeAlias

from ._forwarded import check_trust
from .exceptions import ConfigError
from .types import SameSite

__all__ = ["DEFAULT_MAX_AGE", "EXPRESS_USER_PATH", "USER_PATH", "Compat", "Duration", "SessionConfig"]

#: The values of :attr:`SessionConfig.compat`.
Compat: TypeAlias = Literal["express"]
#: Where :func:`persession.guard.login` puts the user by default: ``session["user"]``.
USER_PATH: tuple[str, ...] = ("user",)
#: ... and with ``compat="express"``: ``session["passport"]["user"]``, where passport keeps it.
EXPRESS_USER_PATH: tuple[str, ...] = ("passport", "user")

#: A duration in seconds, or a :class:`datetime.timedelta`.
Duration: TypeAlias = int | timedelta

#: Default ``max_age``: 14 days, as Django.
DEFAULT_MAX_AGE = 14 * 24 * 3600
#: The server-side lifetime of a browser-session cookie's record when neither
#: ``idle_timeout`` nor ``max_age`` is set: one day, as connect-redis.
DEFAULT_IDLE_FOR_SESSION_COOKIES = 24 * 3600

# Browsers accept ':' in cookie names (connect's "XXX:sess") although RFC 6265's
# token excludes it; everything that would break the header stays out.
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z:]+$")
_ATTRIBUTE_VALUE = re.compile(r"^[\x21-\x3a\x3c-\x7e]+$")  # visible ASCII without ';'
_SAMESITE = ("lax", "strict", "none")
#: Shorter secrets are accepted, with one WARNING per process: what docs/security.md asks for.
_MIN_SECRET_BYTES = 32
_MAKE_KEY_COMMAND = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
security_log: logging.Logger = logging.getLogger("persession.security")
# Module-level, not per config: a process builds a config per app, worker or test, and one line is the point.
_short_secret_warned = False


def _seconds(option: str, value: Duration | None, *, allow_none: bool) -> int | None:
    if value is None:
        if allow_none:
            return None
        raise ConfigError(option, "must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, timedelta)):
        raise ConfigError(option, f"must be an int number of seconds or a timedelta, not {type(value).__name__}")
    seconds = int(value.total_seconds()) if isinstance(value, timedelta) else value
    if seconds <= 0:
        raise ConfigError(option, f"must be positive, got {seconds}")
    return seconds


def _secrets(value: str | bytes | Sequence[str | bytes]) -> tuple[bytes, ...]:
    items: Sequence[str | bytes] = [value] if isinstance(value, (str, bytes)) else value
    if isinstance(items, (set, frozenset)) or not isinstance(items, Sequence):
        raise ConfigError("secret", "must be a string, bytes or a list of them, newest first")
    keys: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes):
            raise ConfigError("secret", f"each secret must be str or bytes, not {type(item).__name__}")
        if not item:
            raise ConfigError("secret", "an empty secret signs nothing")
        keys.append(item)
    if not keys:
        raise ConfigError("secret", "at least one secret is required")
    return tuple(keys)


def _warn_short_secrets(config: SessionConfig) -> None:
    """One WARNING per process for secrets under 32 bytes: their names and lengths, never their values."""
    global _short_secret_warned
    if _short_secret_warned:
        return
    listed = not isinstance(config.secret, (str, bytes))
    named = [(f"secret[{index}]" if listed else "secret", key) for index, key in enumerate(config.secrets)]
    store_key = config.store_key_secret
    if store_key is not None:
        named.append(("store_key_secret", store_key.encode("utf-8") if isinstance(store_key, str) else store_key))
    short = [f"{name} is {len(key)} byte{'s' * (len(key) != 1)}" for name, key in named if len(key) < _MIN_SECRET_BYTES]
    if not short:
        return
    _short_secret_warned = True
    security_log.warning(
        "%s; use secrets of at least %d random bytes, such as the output of: %s"
        " (this warning is logged once per process)",
        ", ".join(short),
        _MIN_SECRET_BYTES,
        _MAKE_KEY_COMMAND,
    )


@dataclass(frozen=True)
class SessionConfig:
    """Every session option, validated at construction.

    A bad value raises :class:`~persession.ConfigError` naming the option. The
    middlewares build one from their keyword arguments; build one yourself to
    share it between a WSGI and an ASGI app.

    .. versionadded:: 0.1
    """

    #: Secret key(s) that sign the session id in the cookie: one string, or a
    #: list **newest first**. The first signs; every one verifies, and a cookie
    #: verified by an older secret is re-issued signed by the first (rotation).
    #: Required (no default). Use 32 random bytes or more: a shorter one is
    #: accepted but logs a WARNING on ``persession.security`` (once per
    #: process). Never shown by ``repr()``. express-session: ``secret`` (also
    #: newest first).
    secret: str | bytes | Sequence[str | bytes] = field(repr=False)
    #: The cookie name. express-session: ``name`` (default ``connect.sid``).
    cookie_name: str = "session"
    #: Cookie lifetime in seconds (``Max-Age`` and ``Expires``); ``None`` makes
    #: a browser-session cookie. Default 14 days. express-session:
    #: ``cookie.maxAge`` (milliseconds there).
    max_age: Duration | None = DEFAULT_MAX_AGE
    #: Server-side idle timeout: a session not used for this long expires in the
    #: store. Default: ``max_age``, or one day for browser-session cookies.
    #: express-session: the store's TTL.
    idle_timeout: Duration | None = None
    #: Absolute lifetime: a session expires this long after it was created,
    #: however active it is. Default ``None`` (no limit). No express-session
    #: equivalent.
    absolute_timeout: Duration | None = None
    #: Re-send the cookie and refresh the expiry on every response.
    #: express-session: ``rolling`` (default ``false``).
    rolling: bool = False
    #: Write an unchanged session back on every request. Default ``False``;
    #: ``True`` exists for express-session parity and can overwrite a concurrent
    #: request's changes with stale values. express-session: ``resave``.
    resave: bool = False
    #: Store (and send a cookie for) a new session nobody wrote to. Default
    #: ``False``. express-session: ``saveUninitialized``.
    save_uninitialized: bool = False
    #: Trust ``X-Forwarded-Proto`` from a TLS-terminating reverse proxy when
    #: deciding whether the request is secure. Default ``False``: set it only
    #: when every request comes through a proxy that sets the header.
    #: ``True`` trusts the header's leftmost value, as express-session's
    #: ``proxy`` (``trust proxy: true``) does: a client can write that value
    #: itself when a proxy appends to the header. An int ``N`` trusts the
    #: ``N`` proxies in front of the app, as Werkzeug's ``ProxyFix`` does:
    #: ``proxy=1`` takes the rightmost value (the one your proxy added),
    #: ``proxy=2`` the second from the right; a header with fewer values is
    #: ignored.
    proxy: bool | int = False
    #: Cookie ``Path``. express-session: ``cookie.path``.
    path: str = "/"
    #: Cookie ``Domain``; ``None`` for a host-only cookie. express-session:
    #: ``cookie.domain``.
    domain: str | None = None
    #: Cookie ``Secure``: ``True``, ``False``, or ``"auto"`` (secure when the
    #: request is HTTPS, as seen directly or through ``proxy``). With ``True``
    #: no cookie is sent over plain HTTP, as express-session does.
    #: express-session: ``cookie.secure``.
    secure: bool | Literal["auto"] = "auto"
    #: Cookie ``HttpOnly``. Default ``True``. express-session: ``cookie.httpOnly``.
    httponly: bool = True
    #: Cookie ``SameSite``: ``"lax"`` (default), ``"strict"`` or ``"none"``
    #: (which requires ``secure``), in any case (``"Lax"`` is stored as
    #: ``"lax"``); ``None`` sends no attribute. express-session:
    #: ``cookie.sameSite``.
    samesite: SameSite | None = "lax"
    #: Cookie ``Partitioned`` (CHIPS); requires ``secure``. express-session:
    #: ``cookie.partitioned``.
    partitioned: bool = False
    #: Largest serialised session in bytes. A bigger one is found when the
    #: response starts (the engine raises :class:`~persession.SessionTooLarge`)
    #: and not saved: the middleware answers a clean 500 instead and logs an
    #: ERROR; the store keeps the previous version. Default 64 KiB.
    max_size: int = 64 * 1024
    #: Share sessions with Node services: ``"express"`` speaks express-session's
    #: dialect, ``None`` (default) persession's own. With ``"express"``:
    #:
    #: - the cookie is express-session's: ``s:`` + id + ``.`` + HMAC-SHA256
    #:   signature, URL-encoded (:class:`~persession.signing.ExpressSigner`),
    #:   with express-session's 32-character ids; use the same ``secret`` list
    #:   and ``cookie_name`` (express-session's default is ``connect.sid``);
    #: - a new session's record gets express-session's ``cookie`` object (its
    #:   ``originalMaxAge``, ``expires``, ``secure``, ``httpOnly``, ``path``,
    #:   ``domain``, ``sameSite``), which the application never sees: the
    #:   session key ``cookie`` is express-session's;
    #: - :func:`~persession.guard.login` stores the user as passport does,
    #:   ``session["passport"] = {"user": user}``, and the default websocket
    #:   predicate checks ``passport.user`` (:attr:`user_path`).
    #:
    #: Pair it with a store in express-session's format:
    #: ``RedisStore(client, layout="connect-redis")`` or
    #: ``MongoStore(collection, layout="connect-mongo")`` (see
    #: :doc:`/express`). The store's expiry is the cookie's, as in
    #: express-session: ``idle_timeout`` is only for browser-session cookies
    #: (``max_age=None``; connect-redis' ``ttl``), and ``absolute_timeout``,
    #: which express-session records cannot carry, is refused.
    compat: Compat | None = None
    #: Keep only a keyed hash of each session id in the store: the record of
    #: the session whose cookie carries id ``x`` lives under
    #: ``base64url(HMAC-SHA256(k, x))``, ``k`` derived from this secret. A
    #: dump of the store then names no session a cookie can carry. Default
    #: ``None`` (the store keeps the ids themselves). It never rotates:
    #: changing it loses every session, so it must differ from every
    #: ``secret`` (which do rotate). Refused with ``compat="express"``, where
    #: Node looks sessions up by the id in its cookie. Like ``secret``, use 32
    #: random bytes or more (a shorter one logs the same WARNING), and never
    #: shown by ``repr()``. See :doc:`/security`.
    store_key_secret: str | bytes | None = field(default=None, repr=False)

    #: The secrets as bytes, newest first (derived from ``secret``).
    secrets: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    #: ``max_age`` in seconds.
    max_age_seconds: int | None = field(init=False, repr=False, compare=False)
    #: How long a record lives in the store after its last use, in seconds.
    idle_seconds: int = field(init=False, repr=False, compare=False)
    #: ``absolute_timeout`` in seconds.
    absolute_seconds: int | None = field(init=False, repr=False, compare=False)
    #: Where the logged-in user lives in the session: ``("user",)``, or
    #: ``("passport", "user")`` with ``compat="express"``.
    user_path: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "secrets", _secrets(self.secret))
        if not isinstance(self.cookie_name, str) or not _COOKIE_NAME.match(self.cookie_name):
            raise ConfigError("cookie_name", f"{self.cookie_name!r} is not a valid cookie name")
        max_age = _seconds("max_age", self.max_age, allow_none=True)
        idle = _seconds("idle_timeout", self.idle_timeout, allow_none=True)
        absolute = _seconds("absolute_timeout", self.absolute_timeout, allow_none=True)
        set_(self, "max_age_seconds", max_age)
        set_(self, "idle_seconds", idle or max_age or DEFAULT_IDLE_FOR_SESSION_COOKIES)
        set_(self, "absolute_seconds", absolute)
        for name in ("rolling", "resave", "save_uninitialized", "httponly", "partitioned"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be True or False, not {getattr(self, name)!r}")
        check_trust("proxy", self.proxy)
        if self.secure not in (True, False, "auto") or not isinstance(self.secure, (bool, str)):
            raise ConfigError("secure", f"must be True, False or 'auto', not {self.secure!r}")
        samesite = self.samesite
        if isinstance(samesite, str):
            # Browsers read the attribute in any case, and Werkzeug's and Flask's docs spell it "Lax".
            set_(self, "samesite", samesite.lower())
        if self.samesite is not None and self.samesite not in _SAMESITE:
            raise ConfigError("samesite", f"must be one of {_SAMESITE} (any case) or None, not {samesite!r}")
        if self.samesite == "none" and self.secure is False:
            raise ConfigError("samesite", "'none' requires secure=True or 'auto'; browsers drop it otherwise")
        if self.partitioned and self.secure is False:
            raise ConfigError("partitioned", "requires secure=True or 'auto'; browsers drop it otherwise")
        if not isinstance(self.path, str) or not self.path.startswith("/") or not _ATTRIBUTE_VALUE.match(self.path):
            raise ConfigError("path", f"must start with '/' and hold visible ASCII without ';', got {self.path!r}")
        if self.domain is not None and (not isinstance(self.domain, str) or not _ATTRIBUTE_VALUE.match(self.domain)):
            raise ConfigError("domain", f"{self.domain!r} is not a valid cookie domain")
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 64:
            raise ConfigError("max_size", f"must be an int of at least 64 bytes, got {self.max_size!r}")
        if self.compat is not None and self.compat != "express":
            raise ConfigError("compat", f"must be 'express' or None, not {self.compat!r}")
        if self.compat == "express":
            if absolute is not None:
                raise ConfigError(
                    "absolute_timeout", "express-session records carry no creation time (compat='express')"
                )
            if idle is not None and max_age is not None:
                raise ConfigError(
                    "idle_timeout",
                    "with compat='express' the store's expiry is the cookie's (max_age), as in express-session;"
                    " idle_timeout applies only to browser-session cookies (max_age=None)",
                )
        set_(self, "user_path", EXPRESS_USER_PATH if self.compat == "express" else USER_PATH)
        if self.store_key_secret is not None:
            key = self.store_key_secret
            if not isinstance(key, (str, bytes)) or not key:
                raise ConfigError("store_key_secret", "must be a non-empty string or bytes, or None")
            if (key.encode("utf-8") if isinstance(key, str) else key) in self.secrets:
                raise ConfigError(
                    "store_key_secret", "must differ from every signing secret: they rotate, the store key never does"
                )
            if self.compat == "express":
                raise ConfigError(
                    "store_key_secret",
                    "must be None with compat='express': express-session looks sessions up by the id in its cookie",
                )
        _warn_short_secrets(self)

    def __repr__(self) -> str:
        # The secrets are counted, never shown: a config ends up in debug output and tracebacks.
        count = len(self.secrets)
        shown = [f"secret=<{count} secret{'s' if count > 1 else ''}>"]
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        shown.append(f"store_key_secret={'<set>' if self.store_key_secret is not None else None}")
        return f"{type(self).__name__}({', '.join(shown)})"

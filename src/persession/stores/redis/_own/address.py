"""Where a server is and how to reach it: :class:`Address`, and :func:`parse_url`, which makes one of a URL."""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from ....exceptions import ConfigError
from .wire import Arg

#: Options :func:`parse_url` accepts (as keywords or URL query parameters).
OPTIONS: Final = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "max_connections",
        "pool_timeout",
        "retries",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
_CERT_REQS: Final = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True)
class Address:
    """Where a server is and how to talk to it: what :func:`parse_url` makes of a URL and options."""

    host: str | None
    port: int
    path: str | None
    ssl_context: ssl.SSLContext | None
    username: str | None
    #: Not in the repr: an Address ends up in debuggers, log lines and tracebacks' locals.
    password: str | None = field(repr=False)
    db: int
    client_name: str | None
    connect_timeout: float | None
    socket_timeout: float | None
    max_connections: int
    pool_timeout: float | None
    retries: int

    def describe(self) -> str:
        """``host:port`` or the socket path, never credentials."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def handshake(self) -> list[tuple[Arg, ...]]:
        """The commands a new connection sends first: AUTH, SELECT, CLIENT SETNAME as configured."""
        commands: list[tuple[Arg, ...]] = []
        if self.password is not None:
            auth: tuple[Arg, ...] = ("AUTH", self.password)
            commands.append(auth if self.username is None else ("AUTH", self.username, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        return commands


def _number(name: str, value: object, kind: type[int] | type[float], *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    number: int | float | None
    try:
        number = kind(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if kind is int and isinstance(value, float) and not value.is_integer():
        number = None  # db=2.7 is a mistake, not database 2
    if number is None or number < 0 or not math.isfinite(number):
        raise ConfigError(name, f"{name} must be a non-negative {kind.__name__}, not {value!r}")
    return number


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
        return value.lower() in {"1", "true", "yes"}
    raise ConfigError(name, f"{name} must be true or false, not {value!r}")


def parse_url(url: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> Address:
    """An :class:`Address` from a ``redis://``, ``rediss://`` or ``unix://`` URL.

    ``options`` (keywords) override the URL's query parameters, which override
    ``defaults``. An option outside :data:`OPTIONS` raises :class:`ConfigError`
    saying how to get redis-py's full set instead.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    merged: dict[str, Any] = dict(defaults)
    merged.update(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    unknown = sorted(set(merged) - OPTIONS)
    if unknown:
        raise ConfigError(
            unknown[0],
            f"unknown Redis option(s) {', '.join(map(repr, unknown))}; "
            f"from_url() accepts {', '.join(sorted(OPTIONS))}. "
            "For any other redis-py option, build the client yourself and pass it: RedisStore(redis.Redis(...))",
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    username = merged.get("username", username) or None
    password = merged.get("password", password)
    if password == "" and username is None:
        password = None
    db_text = merged.get("db", parts.path.strip("/") if scheme != "unix" else None) or 0
    db = _number("db", db_text, int)
    context: ssl.SSLContext | None = None
    if scheme == "rediss":
        try:
            context = ssl.create_default_context(cafile=merged.get("ssl_ca_certs"))
        except OSError as error:  # a missing or unreadable CA file
            raise ConfigError("ssl_ca_certs", f"cannot read the CA certificates: {error}") from None
        check = _flag("ssl_check_hostname", merged.get("ssl_check_hostname", True))
        wanted = merged.get("ssl_cert_reqs", "required")
        reqs = _CERT_REQS.get(wanted.lower()) if isinstance(wanted, str) else wanted
        if not isinstance(reqs, ssl.VerifyMode):
            raise ConfigError("ssl_cert_reqs", "ssl_cert_reqs must be 'none', 'optional' or 'required'")
        context.check_hostname = check and reqs != ssl.CERT_NONE
        context.verify_mode = reqs
        if merged.get("ssl_certfile"):
            try:
                context.load_cert_chain(merged["ssl_certfile"], merged.get("ssl_keyfile"))
            except OSError as error:  # includes ssl.SSLError: a missing file, or a key that does not match
                raise ConfigError("ssl_certfile", f"cannot load the client certificate: {error}") from None
    try:
        port = parts.port or 6379
    except ValueError as error:
        raise ConfigError("url", f"malformed Redis URL: {error}") from None
    return Address(
        host=None if scheme == "unix" else parts.hostname,
        port=port,
        path=unquote(parts.path) if scheme == "unix" else None,
        ssl_context=context,
        username=username,
        password=password,
        db=db,
        client_name=merged.get("client_name") or None,
        connect_timeout=_number("socket_connect_timeout", merged.get("socket_connect_timeout"), float, optional=True),
        socket_timeout=_number("socket_timeout", merged.get("socket_timeout"), float, optional=True),
        max_connections=max(1, _number("max_connections", merged.get("max_connections", 100), int)),
        pool_timeout=_number("pool_timeout", merged.get("pool_timeout"), float, optional=True),
        retries=_number("retries", merged.get("retries", 1), int),
    )

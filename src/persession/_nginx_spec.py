"""The nginx helpers' input: the validated :class:`NginxSpec` and its parts (see :mod:`persession.nginx`).

Kept apart from the renderers so each module reads on its own; the public
names are re-exported, with their ``__module__``, from :mod:`persession.nginx`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .exceptions import ConfigError

#: How nginx picks the app process for a request.
Balancing = Literal["ip_hash", "cookie", "least_conn", "round_robin"]
#: The values :data:`Balancing` allows, in the order the docs present them.
BALANCING_METHODS: tuple[str, ...] = get_args(Balancing)

_UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")
# A server_name: a host name, a leading or trailing wildcard, or "_" (the catch-all convention). No regexes.
_DOMAIN = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*"
_SERVER_NAME = re.compile(rf"^(?:_|\*\.{_DOMAIN}|\.?{_DOMAIN}(?:\.\*)?)$")
# Same token characters persession.SessionConfig accepts for cookie_name.
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z:]+$")
# A cookie name that is also a valid nginx variable suffix, so $cookie_<name> works.
_VARIABLE_SAFE = re.compile(r"^[A-Za-z0-9_]+$")
# Characters that would need quoting or be interpolated in an nginx path argument.
_UNSAFE_PATH = re.compile(r"[\s;{}\"'$\\#]|[\x00-\x1f\x7f]")
_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_INDENT = "    "


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_port(option: str, value: object, what: str = "port") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(option, f"{what} must be an integer, not {value!r}")
    if not 1 <= value <= 65535:
        raise ConfigError(option, f"{what} {value} is out of range (1-65535)")
    return value


def _check_host(option: str, host: object) -> str:
    if not isinstance(host, str) or not host:
        raise ConfigError(option, f"host must be a non-empty string, not {host!r}")
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        if candidate != host or not _HOSTNAME.match(host):
            raise ConfigError(option, f"{host!r} is not a host name or an IP address") from None
        return host
    return candidate


def _tuple(value: object) -> tuple[Any, ...]:
    """A tuple from a tuple, list or other iterable; a lone string is one item, not its characters."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return tuple(value)
    return (value,)


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_path(option: str, value: object, *, absolute: bool = True) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(option, f"must be a non-empty path, not {value!r}")
    if _UNSAFE_PATH.search(value):
        raise ConfigError(option, f"{value!r} contains whitespace, a quote or one of ; {{ }} $ \\ #")
    if absolute and not value.startswith("/"):
        raise ConfigError(option, f"{value!r} must be an absolute path (nginx would resolve it against its prefix)")
    return value


def parse_ports(text: str, option: str = "ports") -> tuple[int, ...]:
    """Ports from ``"8001"``, ``"8001-8004"`` or a comma-separated mix (``"8001,8003-8004"``).

    Order is kept; a port listed twice, an inverted range or a port outside
    1-65535 raises :class:`~persession.ConfigError` naming ``option``.
    """
    ports: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ConfigError(option, f"{part!r} is not a port or a range like 8001-8004")
        first = _check_port(option, int(match.group(1)))
        last = _check_port(option, int(match.group(2))) if match.group(2) else first
        if last < first:
            raise ConfigError(option, f"range {part} ends before it starts")
        ports.extend(range(first, last + 1))
    seen: set[int] = set()
    for port in ports:
        if port in seen:
            raise ConfigError(option, f"port {port} is listed twice")
        seen.add(port)
    return tuple(ports)


@dataclass(frozen=True)
class Backend:
    """One app process nginx proxies to: ``server host:port;`` in the upstream.

    :param host: a host name, an IPv4 address or an IPv6 address (with or
        without brackets).
    :param port: 1-65535.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", _check_host("servers", self.host))
        _check_port("servers", self.port)

    def __str__(self) -> str:
        return f"{_format_host(self.host)}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> tuple[Backend, ...]:
        """Backends from ``host:port`` or ``host:first-last`` (``[::1]:8001`` for IPv6)."""
        if not isinstance(text, str):
            raise ConfigError("servers", f"expected 'host:port' or 'host:first-last', not {text!r}")
        host, sep, ports = text.strip().rpartition(":")
        if not sep or not host or (":" in host and not host.startswith("[")):
            raise ConfigError("servers", f"{text!r} is not 'host:port' or 'host:first-last' ([::1]:8001 for IPv6)")
        return tuple(cls(host, port) for port in parse_ports(ports, "servers"))


def backends(*specs: str, host: str | None = None, ports: str | None = None) -> tuple[Backend, ...]:
    """A tuple of :class:`Backend` from ``host:port`` / ``host:first-last`` strings, or a host and ports.

    ::

        backends("127.0.0.1:8001-8004")
        backends("10.0.0.5:8001", "10.0.0.6:8001")
        backends(host="127.0.0.1", ports="8001-8004")
    """
    found = [backend for spec in specs for backend in Backend.parse(spec)]
    if ports is not None:
        found += [Backend(host or "127.0.0.1", port) for port in parse_ports(ports, "servers")]
    elif host is not None:
        raise ConfigError("servers", "a host needs ports")
    return tuple(found)


@dataclass(frozen=True)
class TLS:
    """TLS termination in nginx: ``listen 443 ssl`` and the certificate.

    :param certificate: absolute path of the certificate chain (PEM), read by
        nginx when it starts, not by persession.
    :param certificate_key: absolute path of its private key (PEM).
    :param redirect_http: also answer plain HTTP on ``http_port`` with a
        ``301`` to the same URL over HTTPS. Default ``False``.
    :param http_port: the plain-HTTP port of that redirect. Default 80.
    :param protocols: ``ssl_protocols``. Default TLS 1.2 and 1.3.
    """

    certificate: str
    certificate_key: str
    redirect_http: bool = False
    http_port: int = 80
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")

    def __post_init__(self) -> None:
        _check_path("certificate", self.certificate)
        _check_path("certificate_key", self.certificate_key)
        if not isinstance(self.redirect_http, bool):
            raise ConfigError("redirect_http", f"must be True or False, not {self.redirect_http!r}")
        _check_port("http_port", self.http_port)
        protocols = _tuple(self.protocols)
        if not protocols or any(p not in _PROTOCOLS for p in protocols):
            raise ConfigError("protocols", f"must be some of {', '.join(_PROTOCOLS)}, not {self.protocols!r}")
        object.__setattr__(self, "protocols", protocols)


@dataclass(frozen=True)
class NginxSpec:
    """Everything the generated nginx configuration depends on; validated at construction.

    :param servers: the app processes (:class:`Backend`; ``"host:port"`` and
        ``"host:first-last"`` strings are accepted and expanded). At least one.
    :param upstream: the ``upstream`` block's name, also the prefix of the
        ``map`` variables. Letters, digits, ``_``, ``.`` and ``-``. Default
        ``"persession"``.
    :param balancing: ``"ip_hash"`` (default, the seed recipe's),
        ``"cookie"`` (``hash`` on the session cookie, ``consistent``),
        ``"least_conn"`` or ``"round_robin"``.
    :param cookie_name: the session cookie ``"cookie"`` balancing hashes on:
        ``SessionConfig.cookie_name`` (default ``"session"``; express-session's
        is ``connect.sid``). A name that is not a valid nginx variable suffix
        (``connect.sid``, ``XXX:sess``, ``my-app``) cannot be read as
        ``$cookie_<name>``; it is extracted from ``$http_cookie`` by a ``map``
        with a regex instead.
    :param keepalive: idle upstream connections kept per worker (``keepalive
        N``), or ``None`` for none. Default 32.
    :param websocket: proxy websocket upgrades. Default ``True``.
    :param websocket_paths: prefixes (``"/ws"``, ``"/socket.io/"``) that get a
        location of their own with the websocket headers and the long timeout,
        leaving ``/`` a plain HTTP location. Empty (default): ``/`` carries
        both, and every request gets the long read timeout.
    :param websocket_timeout: ``proxy_read_timeout`` / ``proxy_send_timeout``
        of websocket locations, in seconds. Default 3600.
    :param listen_address: the address nginx listens on (``127.0.0.1``,
        ``[::]``); ``None`` (default): every address.
    :param listen_port: default 80, or 443 with ``tls``.
    :param server_names: ``server_name`` values (host names, ``*.example.com``,
        ``_``); empty (default) renders none.
    :param tls: a :class:`TLS` to terminate HTTPS in nginx; ``None`` (default)
        for plain HTTP.
    :param debug_header: add ``X-Upstream-Addr`` (the process that answered)
        to every response. Default ``False``.
    """

    servers: tuple[Backend, ...]
    upstream: str = "persession"
    balancing: Balancing = "ip_hash"
    cookie_name: str = "session"
    keepalive: int | None = 32
    websocket: bool = True
    websocket_paths: tuple[str, ...] = ()
    websocket_timeout: int = 3600
    listen_address: str | None = None
    listen_port: int | None = None
    server_names: tuple[str, ...] = ()
    tls: TLS | None = None
    debug_header: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "servers", _coerce_servers(self.servers))
        if not isinstance(self.upstream, str) or not _UPSTREAM_NAME.match(self.upstream):
            raise ConfigError("upstream", f"{self.upstream!r} is not a valid upstream name (letters, digits, _ . -)")
        if self.balancing not in BALANCING_METHODS:
            raise ConfigError("balancing", f"must be one of {', '.join(BALANCING_METHODS)}, not {self.balancing!r}")
        if not isinstance(self.cookie_name, str) or not _COOKIE_NAME.match(self.cookie_name):
            raise ConfigError("cookie_name", f"{self.cookie_name!r} is not a valid cookie name")
        if self.keepalive is not None and (not _is_int(self.keepalive) or self.keepalive < 1):
            raise ConfigError("keepalive", f"must be an integer of at least 1, or None for off; not {self.keepalive!r}")
        for name in ("websocket", "debug_header"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be True or False, not {getattr(self, name)!r}")
        object.__setattr__(self, "websocket_paths", _check_locations(self.websocket_paths))
        if self.websocket_paths and not self.websocket:
            raise ConfigError("websocket_paths", "websocket locations need websocket=True")
        if not _is_int(self.websocket_timeout) or self.websocket_timeout < 1:
            raise ConfigError("websocket_timeout", f"must be a number of seconds >= 1, not {self.websocket_timeout!r}")
        if self.listen_address is not None:
            object.__setattr__(self, "listen_address", _check_host("listen_address", self.listen_address))
        if self.listen_port is not None:
            _check_port("listen_port", self.listen_port)
        names = _tuple(self.server_names)
        for name in names:
            if not isinstance(name, str) or not _SERVER_NAME.match(name):
                raise ConfigError("server_names", f"{name!r} is not a host name, *.wildcard or _")
        object.__setattr__(self, "server_names", names)
        if self.tls is not None and not isinstance(self.tls, TLS):
            raise ConfigError("tls", f"must be a persession.nginx.TLS or None, not {type(self.tls).__name__}")
        if self.tls is not None and self.tls.redirect_http and self.tls.http_port == self.port:
            raise ConfigError("http_port", f"the HTTP redirect and HTTPS cannot share port {self.port}")

    @property
    def port(self) -> int:
        """The port nginx listens on: ``listen_port``, else 443 with TLS and 80 without."""
        if self.listen_port is not None:
            return self.listen_port
        return 443 if self.tls is not None else 80

    @property
    def variable_prefix(self) -> str:
        """The upstream name as an nginx variable name part (``.`` and ``-`` become ``_``)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.upstream)


def _coerce_servers(servers: Iterable[Backend | str] | Backend | str) -> tuple[Backend, ...]:
    if isinstance(servers, (str, Backend)):
        servers = (servers,)
    found: list[Backend] = []
    for item in servers:
        if isinstance(item, Backend):
            found.append(item)
        else:
            found.extend(Backend.parse(item))
    if not found:
        raise ConfigError("servers", "at least one backend (host:port) is required")
    seen: set[Backend] = set()
    for backend in found:
        if backend in seen:
            raise ConfigError("servers", f"{backend} is listed twice")
        seen.add(backend)
    return tuple(found)


def _check_locations(value: object) -> tuple[str, ...]:
    paths = _tuple(value)
    for path in paths:
        _check_path("websocket_paths", path)
        if path == "/":
            raise ConfigError("websocket_paths", "'/' is the main location; leave websocket_paths empty to use it")
    if len(set(paths)) != len(paths):
        raise ConfigError("websocket_paths", "a path is listed twice")
    return paths

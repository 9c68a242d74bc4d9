"""Which ``Origin`` a websocket handshake may carry: a pure policy, no I/O (re-exported by :mod:`persession.guard`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from ._forwarded import check_trust, forwarded_value
from .exceptions import ConfigError

_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}


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
        ``Host``; only behind a proxy that sets it. Default ``False``. As
        :attr:`SessionConfig.proxy <persession.SessionConfig.proxy>`:
        ``True`` believes the header's leftmost value, an int ``N`` the
        ``N``-th from the right (``1``: the value your proxy appended); with
        fewer values, ``Host`` decides.
    :param same_origin: allow the same origin; default ``True``.

    .. versionadded:: 0.1
    """

    allowed_origins: Sequence[str] = ()
    allow_missing_origin: bool = True
    trust_forwarded_host: bool | int = False
    same_origin: bool = True
    _patterns: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_trust("trust_forwarded_host", self.trust_forwarded_host)
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
            target = forwarded_value(forwarded_host, self.trust_forwarded_host) or host
            if target is not None and _host_port(target, scheme) == origin_hp:
                return True
        return any(pattern.matches(scheme, *origin_hp) for pattern in self._patterns)

"""Parse ``Cookie`` request headers defensively and render ``Set-Cookie``.

Parsing never raises: request headers are client input. Bytes that are not
UTF-8 are read as Latin-1 (every byte is a character there), values that are
too long are skipped, and every value sent under the wanted name is returned
in order, so a stale duplicate cannot hide the good one. Values longer than
:data:`MAX_VALUE_LENGTH` are returned too, so that the engine can reject
(and expire) them like any other bad cookie.

``Set-Cookie`` comes in two spellings. persession's own puts the attributes
in RFC 6265's order and sends both ``Max-Age`` and ``Expires``. With
``compat="express"`` it is what express-session sends (its ``cookie``
package's ``serialize``): ``Domain``, ``Path``, ``Expires``, ``HttpOnly``,
``Secure``, ``Partitioned``, ``SameSite``, in that order, and no ``Max-Age``
(express-session never gives one), so the cookie is the same whichever
service set it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone

from .config import Compat
from .exceptions import ConfigError
from .types import SameSite

__all__ = ["MAX_VALUE_LENGTH", "cookie_values", "render_set_cookie"]

#: Longer cookie values are never verified: browsers cap a cookie at 4096 bytes.
MAX_VALUE_LENGTH = 4096
# A header this long is cut before parsing: no legitimate browser sends one.
_MAX_HEADER_LENGTH = 64 * 1024
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
# The attributes before the expiry (head) and after it (tail), in each dialect's order: persession's own, and
# that of the cookie package's serialize(), which express-session calls.
_ORDERS: dict[str | None, tuple[tuple[str, ...], tuple[str, ...]]] = {
    None: (("Path", "Domain"), ("Secure", "HttpOnly", "SameSite", "Partitioned")),
    "express": (("Domain", "Path"), ("HttpOnly", "Secure", "Partitioned", "SameSite")),
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(timestamp: float) -> str:
    """``email.utils.formatdate(timestamp, usegmt=True)``, character for character, in one step instead of four."""
    second = int(timestamp)
    # Every cookie set within one second carries the same date: the last one is kept. A fraction
    # this close to 1 may round up to the next second (as formatdate rounds), so it is not cached.
    cached = _last_date
    if cached[0] == second and timestamp - second < 0.999:
        return cached[1]
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    text = "%s, %02d %s %04d %02d:%02d:%02d GMT" % (  # noqa: UP031 (formatdate's own format)
        _DAYS[moment.weekday()],
        moment.day,
        _MONTHS[moment.month - 1],
        moment.year,
        moment.hour,
        moment.minute,
        moment.second,
    )
    if timestamp - second < 0.999:
        _remember_date(second, text)
    return text


_last_date: tuple[int | None, str] = (None, "")


def _remember_date(second: int, text: str) -> None:
    global _last_date  # one tuple, swapped whole: safe across threads
    _last_date = (second, text)


def _text(header: str | bytes) -> str:
    if isinstance(header, bytes):
        return header.decode("latin-1")
    return header


def cookie_values(headers: str | bytes | Iterable[str | bytes] | None, name: str) -> list[str]:
    """Every value sent for cookie ``name``, in header order.

    ``headers`` is one ``Cookie`` header, several (HTTP/2 sends one per cookie),
    or ``None``. Surrounding double quotes are removed; nothing else is
    decoded.
    """
    if headers is None:
        return []
    if isinstance(headers, (str, bytes)):
        headers = (headers,)
    found: list[str] = []
    budget = _MAX_HEADER_LENGTH
    for header in headers:
        text = _text(header)[:budget]
        budget -= len(text)
        if name not in text:
            continue
        for pair in text.split(";"):
            key, sep, value = pair.partition("=")
            if not sep or key.strip() != name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                found.append(value)
        if budget <= 0:
            break
    return found


def render_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    expires: float | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = True,
    samesite: SameSite | None = "lax",
    partitioned: bool = False,
    compat: Compat | None = None,
) -> str:
    """A ``Set-Cookie`` header value.

    ``max_age`` is in seconds and ``expires`` is a Unix time; a negative or
    zero ``max_age`` deletes the cookie. ``compat`` (default ``None``:
    persession's spelling) is ``"express"`` for express-session's (see the
    module docs). Name and value are trusted: the config validates names and
    persession writes the values itself.
    """
    attributes = CookieFormat(
        name,
        path=path,
        domain=domain,
        secure=secure,
        httponly=httponly,
        samesite=samesite,
        partitioned=partitioned,
        compat=compat,
    )
    return attributes.live(value, max_age=max_age, expires=expires)


class CookieFormat:
    """A ``Set-Cookie`` header's fixed attributes, rendered once, in RFC 6265 spelling and a fixed order.

    :func:`render_set_cookie` builds one per call; the engine keeps one per
    ``Secure`` setting, so :meth:`live` only adds the value, ``Max-Age`` and
    ``Expires`` to what never changes. ``compat="express"`` (default ``None``)
    renders express-session's order and no ``Max-Age`` (see the module docs).
    """

    __slots__ = ("_expires_only", "_head", "_name", "_tail")

    def __init__(
        self,
        name: str,
        *,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
        partitioned: bool = False,
        compat: Compat | None = None,
    ) -> None:
        if compat not in (None, "express"):
            raise ConfigError("compat", f"must be 'express' or None, not {compat!r}")
        self._name = name
        self._expires_only = compat == "express"
        attributes: dict[str, str] = {  # '' where absent
            "Domain": f"Domain={domain}" if domain else "",
            "Path": f"Path={path}" if path else "",
            "Secure": "Secure" if secure else "",
            "HttpOnly": "HttpOnly" if httponly else "",
            "SameSite": f"SameSite={samesite.capitalize()}" if samesite else "",
            "Partitioned": "Partitioned" if partitioned else "",
        }
        head_order, tail_order = _ORDERS[compat]
        head = ["", *(attributes[name] for name in head_order if attributes[name])]
        tail = ["", *(attributes[name] for name in tail_order if attributes[name])]
        self._head = "; ".join(head)
        self._tail = "; ".join(tail)

    def live(self, value: str, *, max_age: int | None, expires: float | None) -> str:
        """The header for ``value``, living ``max_age`` seconds (until ``expires``).

        ``None`` for both: a browser-session cookie. A negative or zero
        ``max_age`` deletes the cookie (``Max-Age=0`` and the 1970 date).
        In express-session's spelling only ``Expires`` is sent: the 1970 date
        to delete, else ``expires`` (``time.time() + max_age`` when ``None``).
        """
        if self._expires_only:
            if max_age is not None and max_age <= 0:
                return f"{self._name}={value}{self._head}; Expires={_EPOCH}{self._tail}"
            if expires is None and max_age is not None:
                expires = time.time() + max_age
            if expires is None:
                return f"{self._name}={value}{self._head}{self._tail}"
            return f"{self._name}={value}{self._head}; Expires={_http_date(expires)}{self._tail}"
        if max_age is None:
            if expires is None:
                return f"{self._name}={value}{self._head}{self._tail}"
            return f"{self._name}={value}{self._head}; Expires={_http_date(expires)}{self._tail}"
        if max_age <= 0:
            return f"{self._name}={value}{self._head}; Max-Age=0; Expires={_EPOCH}{self._tail}"
        if expires is None:
            return f"{self._name}={value}{self._head}; Max-Age={max_age}{self._tail}"
        return f"{self._name}={value}{self._head}; Max-Age={max_age}; Expires={_http_date(expires)}{self._tail}"

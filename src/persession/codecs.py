"""What a session becomes in a store that express-session shares.

Plain data and JSON, no I/O: the Redis and MongoDB stores' ``connect-redis``
and ``connect-mongo`` layouts (and :class:`~persession.core.SessionEngine` in
express mode) build on these functions.

express-session stores a session as the JSON text of ``req.session``, whose
first member is the ``cookie`` object (express-session's ``Cookie#toJSON``)::

    {"cookie":{"originalMaxAge":1209600000,"expires":"2025-01-01T00:00:00.000Z",
               "secure":false,"httpOnly":true,"path":"/","sameSite":"lax"},
     "passport":{"user":"42"},"cart":[1,2]}

``originalMaxAge`` is the cookie's ``maxAge`` in milliseconds (``null`` for a
browser-session cookie, whose ``expires`` is ``null`` too); ``expires`` is
JavaScript's ``Date#toJSON`` (ISO 8601, milliseconds, ``Z``); ``domain``,
``sameSite`` and ``partitioned`` appear only when set. express-session answers
500 to a request whose stored session has no ``cookie`` object, so everything
written here keeps one: the ``cookie`` member is the layout's, not the
application's (see :func:`merge_express`).

When a record expires is decided in one place for both layouts,
:func:`record_expiry`: the store's expiry when it keeps one, else the
cookie's ``expires``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from .exceptions import NotSerializable
from .records import Change

__all__ = [
    "COOKIE",
    "cookie_expiry",
    "decode_express",
    "encode_express",
    "express_cookie",
    "iso_date",
    "merge_express",
    "parse_iso_date",
    "record_expiry",
]

#: The member of an express-session record that holds the cookie object.
COOKIE: Final = "cookie"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Date#toJSON's text, the one form a cookie.expires may keep a session alive by (the
# connect-redis layout's Lua script checks the same form before comparing the text).
_JSON_DATE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def iso_date(timestamp: float) -> str:
    """``timestamp`` (Unix seconds) as JavaScript's ``Date#toJSON`` writes it, rounded down to the millisecond.

    >>> iso_date(1700000000.25)
    '2023-11-14T22:13:20.250Z'
    """
    moment = _EPOCH + timedelta(milliseconds=math.floor(timestamp * 1000))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso_date(text: object) -> float | None:
    """The Unix time of an ISO 8601 date as ``Date#toJSON`` writes it; ``None`` unless it is one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH).total_seconds()


def express_cookie(
    *,
    max_age: int | None,
    expires: float,
    secure: bool,
    httponly: bool,
    path: str,
    domain: str | None,
    samesite: str | None,
    partitioned: bool,
) -> dict[str, Any]:
    """The ``cookie`` object express-session stores, in its member order, for a cookie of these attributes.

    ``max_age`` is in seconds (``None``: a browser-session cookie, whose
    ``expires`` is ``null``); ``expires`` is the record's expiry.
    """
    cookie: dict[str, Any] = {"originalMaxAge": None if max_age is None else max_age * 1000}
    if partitioned:
        cookie["partitioned"] = True
    cookie["expires"] = None if max_age is None else iso_date(expires)
    cookie["secure"] = secure
    cookie["httpOnly"] = httponly
    if domain is not None:
        cookie["domain"] = domain
    cookie["path"] = path
    if samesite is not None:
        cookie["sameSite"] = samesite
    return cookie


def _persistent(cookie: Mapping[str, Any]) -> bool:
    """A cookie with a lifetime (``maxAge``), as opposed to a browser-session cookie."""
    return cookie.get("originalMaxAge") is not None or cookie.get("expires") is not None


def _refreshed(cookie: Mapping[str, Any], expires: float) -> dict[str, Any]:
    """``cookie`` with ``expires`` moved to the record's new expiry (``null`` stays ``null``)."""
    moved = dict(cookie)
    moved["expires"] = iso_date(expires) if _persistent(cookie) else None
    return moved


def _default_cookie(expires: float, now: float) -> dict[str, Any]:
    """The cookie object of a record written without one: a persistent cookie ending with the record."""
    return {
        "originalMaxAge": max(0, math.ceil((expires - now) * 1000)),
        "expires": iso_date(expires),
        "httpOnly": True,
        "path": "/",
    }


def _dumps(document: Mapping[str, Any]) -> str:
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        for key, value in document.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise NotSerializable(key, error) from None
        raise


def _ordered(cookie: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``cookie`` first, then the other members of ``data`` in their order."""
    document: dict[str, Any] = {COOKIE: dict(cookie)}
    document.update((key, value) for key, value in data.items() if key != COOKIE)
    return document


def encode_express(data: Mapping[str, Any], expires: float, now: float) -> str:
    """The stored JSON text of a whole record: ``data``'s ``cookie`` object first, its ``expires`` moved.

    A ``data`` without a ``cookie`` object gets a default one (a persistent
    cookie ending at ``expires``, ``httpOnly``, path ``/``).

    :raises NotSerializable: a value is not JSON, naming its key.
    """
    given = data.get(COOKIE)
    cookie = _refreshed(given, expires) if isinstance(given, Mapping) else _default_cookie(expires, now)
    return _dumps(_ordered(cookie, data))


def decode_express(text: str | bytes) -> dict[str, Any]:
    """A stored express-session record: a JSON object with a ``cookie`` object, members in stored order.

    :raises ValueError: it is not one.
    """
    try:
        document = json.loads(text)
    except RecursionError:  # a planted "[[[[...": malformed, not a crash on every request
        raise ValueError("the record is nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError(f"the record is a JSON {type(document).__name__}, not an object")
    if not isinstance(document.get(COOKIE), dict):
        raise ValueError("the record has no cookie object (express-session needs one)")
    return document


def merge_express(text: str | bytes, change: Change, expires: float) -> str:
    """The stored JSON text ``text`` with ``change`` applied and the cookie's ``expires`` moved.

    The ``cookie`` member stays first and is never replaced or deleted by
    ``change``; the other members keep their order, new ones are appended.

    :raises ValueError: ``text`` is not an express-session record.
    :raises NotSerializable: a value of ``change`` is not JSON.
    """
    document = decode_express(text)
    cookie = _refreshed(document.pop(COOKIE), expires)
    merged: dict[str, Any] = {} if change.cleared else document
    for key in change.deleted:
        merged.pop(key, None)
    merged.update((key, value) for key, value in change.set.items() if key != COOKIE)
    return _dumps(_ordered(cookie, merged))


def cookie_expiry(document: Mapping[str, Any]) -> float | None:
    """The ``cookie.expires`` of a decoded record as a Unix time, or ``None`` (browser-session cookie)."""
    cookie = document.get(COOKIE)
    return parse_iso_date(cookie.get("expires")) if isinstance(cookie, Mapping) else None


def record_expiry(document: Mapping[str, Any], store_expiry: float | None) -> float:
    """When a decoded record expires (Unix time): one rule for the connect-redis and connect-mongo layouts.

    - ``store_expiry`` when the store keeps one (connect-redis' TTL,
      connect-mongo's ``expires`` field): it is what connect-redis' and
      connect-mongo's ``touch`` move, so the ``cookie.expires`` inside the
      JSON may lag behind it.
    - Without one (connect-redis' ``disableTTL``, a connect-mongo document
      with no ``expires``), the cookie's ``expires``: the end the browser was
      given, so a copied cookie cannot keep the session alive after it. Node
      is more lenient here: express-session never reads ``cookie.expires`` to
      decide, and serves such a record for ever.
    - ``math.inf`` (never) when the cookie's ``expires`` is ``null`` or
      absent: a browser-session cookie in a store that keeps no expiry.
    - ``-math.inf`` (already past) when it is anything but ``Date#toJSON``'s
      text: an unreadable date never keeps a session alive.
    """
    if store_expiry is not None:
        return store_expiry
    cookie = document.get(COOKIE)
    expires = cookie.get("expires") if isinstance(cookie, Mapping) else None
    if expires is None:
        return math.inf
    if not isinstance(expires, str) or _JSON_DATE.fullmatch(expires) is None:
        return -math.inf
    moment = parse_iso_date(expires)
    return -math.inf if moment is None else moment

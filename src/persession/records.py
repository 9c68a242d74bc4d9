"""What the core hands to a store and gets back: records and changes.

Plain data, no I/O. Every store speaks in these, whatever its wire format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import NotSerializable

__all__ = ["Change", "Record", "SessionInfo", "dumps", "loads", "rolled_expiry"]


@dataclass(frozen=True, slots=True)
class Record:
    """A stored session: its data and its times (Unix seconds).

    .. versionadded:: 0.1
    """

    #: The session's keys and JSON values.
    data: dict[str, Any]
    #: When the session was first stored.
    created: float
    #: When a request last wrote or touched it.
    accessed: float
    #: When it expires; a store never returns a record past this time.
    expires: float


@dataclass(frozen=True, slots=True)
class Change:
    """Exactly what one request did to a session's data.

    A store applies it atomically to the current record, so that two requests
    changing different keys of one session both survive.

    .. versionadded:: 0.1
    """

    #: Keys the request set, with their final values.
    set: Mapping[str, Any]
    #: Keys the request deleted.
    deleted: frozenset[str] = frozenset()
    #: The request cleared the session before setting ``set``.
    cleared: bool = False

    def apply(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``data`` with this change applied (``data`` is not modified)."""
        merged: dict[str, Any] = {} if self.cleared else dict(data)
        for key in self.deleted:
            merged.pop(key, None)
        merged.update(self.set)
        return merged


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as the per-user index lists it (never log ``sid``).

    .. versionadded:: 0.1
    """

    #: The session id (never in the repr).
    sid: str = field(repr=False)
    #: When the session was created (Unix seconds).
    created: float
    #: When a request last wrote or touched it (Unix seconds).
    accessed: float
    #: When it expires (Unix seconds).
    expires: float


def rolled_expiry(now: float, created: float, idle: float, absolute: float | None) -> float:
    """A session's expiry when refreshed at ``now``: ``now + idle``, capped at ``created + absolute``.

    The engine and every store's ``load_touch`` compute it the same way, so
    they agree to the last bit.
    """
    expires = now + idle
    if absolute is not None:
        expires = min(expires, created + absolute)
    return expires


# json.dumps with options builds a JSONEncoder per call; this one is built once (encode() is thread-safe).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(data: Mapping[str, Any]) -> str:
    """Encode session data as compact JSON, naming the key of a value JSON refuses.

    The text is valid UTF-8, as every store needs: a lone surrogate (which
    ``json.loads`` of a client's ``"\\ud800"`` gives) is refused like any other
    value JSON cannot carry.
    """
    try:
        text = _COMPACT.encode(data)
        text.encode("utf-8")
        return text
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        for key, value in data.items():
            try:
                json.dumps({key: value}, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as error:
                raise NotSerializable(key, error) from None
        raise


def loads(text: str | bytes) -> dict[str, Any]:
    """Decode stored session data; raise :class:`ValueError` unless it is a JSON object."""
    try:
        value = json.loads(text)
    except RecursionError:  # a planted "[[[[...": malformed, not a crash on every request
        raise ValueError("session data is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"session data is a JSON {type(value).__name__}, not an object")
    return value


# json.dumps with options builds a JSONEncoder per call; this one is built once (encode() is thread-safe).
_CHECKER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def check_value(key: object, value: object) -> None:
    """Raise :class:`~persession.NotSerializable` unless ``{key: value}`` is JSON a store can save."""
    if type(key) is str and key.isascii():
        # The common values need no trial encoding: an ASCII key with an int, bool, None or ASCII
        # str is always JSON, and a float is unless it is NaN or infinite.
        if value is None or type(value) is int or type(value) is bool:
            return
        if (type(value) is str and value.isascii()) or (type(value) is float and math.isfinite(value)):
            return
    elif not isinstance(key, str):
        raise NotSerializable(repr(key), TypeError("session keys must be str"))
    try:
        # As the stores encode it: UTF-8 refuses lone surrogates (which json.loads of a
        # client's "\\ud800" gives), so they fail here, in the handler, not at save time.
        _CHECKER.encode({key: value}).encode("utf-8")
    except (TypeError, ValueError) as error:  # UnicodeEncodeError is a ValueError
        raise NotSerializable(key, error) from None

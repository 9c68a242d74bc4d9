"""The connect-mongo layout, shared by both flavours: filters, updates and the compare-and-swap parts."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NoReturn

from pymongo import IndexModel

from ...codecs import decode_express, merge_express, record_expiry
from ...exceptions import ConfigError, NotSerializable, StoreError
from ...records import Change, Record
from ._constants import _EPOCH, _LAYOUTS, CAS_ATTEMPTS, CAS_BACKOFF_MAX, Layout, security_log
from ._documents import _INDEX_KEYS, _date, _Malformed

#: connect-mongo's TTL index, as its ``autoRemove: "native"`` creates it. The Node driver sends
#: ``{background, expireAfterSeconds, name, key}`` in that order, and a server that compares index
#: options in order refuses connect-mongo's own createIndex after one spelled otherwise: IndexModel
#: keeps its keywords in their order and adds ``key`` last (tests/test_express_interop.py compares
#: the two drivers' commands).
_CONNECT_INDEXES: Final = (IndexModel(_INDEX_KEYS, background=True, expireAfterSeconds=0, name="expires_1"),)
_NO_CHANGE: Final = Change(set={})


def _check_layout(layout: object) -> Layout:
    if layout not in _LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(map(repr, _LAYOUTS))}, not {layout!r}")
    return layout


def _connect_live(sid: str, now: float) -> dict[str, Any]:
    """connect-mongo's own filter: the document, unless its ``expires`` has passed (none: see :func:`_connect_dead`)."""
    return {"_id": sid, "$or": [{"expires": {"$exists": False}}, {"expires": {"$gt": _date(now)}}]}


def _connect_swap(sid: str, text: str, now: float) -> dict[str, Any]:
    """:func:`_connect_live`, and only while ``session`` is still ``text`` (compare and swap)."""
    return {**_connect_live(sid, now), "session": text}


def _connect_set(text: str, expires: float) -> dict[str, Any]:
    return {"$set": {"session": text, "expires": _date(expires)}}


def _connect_text(document: Mapping[str, Any]) -> str:
    text = document.get("session")
    if not isinstance(text, str):
        raise _Malformed("field 'session' is missing or not a string (connect-mongo's stringify: false?)")
    return text


def _connect_result(document: Mapping[str, Any] | None, now: float, namespace: str) -> Record | None:
    """The record a connect-mongo document holds; ``None`` (and a warning, if malformed) unless live."""
    if document is None:
        return None
    try:
        data = decode_express(_connect_text(document))
        stored: Any = document.get("expires")
        if isinstance(stored, datetime):
            store_expiry: float | None = (stored - _EPOCH).total_seconds()
        elif "expires" not in document:  # the cookie's expires decides (connect-mongo: live for ever)
            store_expiry = None
        else:
            raise _Malformed("field 'expires' is not a date")
        expires = record_expiry(data, store_expiry)
    except ValueError as error:  # _Malformed, JSONDecodeError, no cookie object
        security_log.warning("malformed session document in MongoDB collection %s ignored: %s", namespace, error)
        return None
    if expires <= now:
        return None
    # connect-mongo keeps no creation or access time: both read as now.
    return Record(data, created=now, accessed=now, expires=expires)


def _connect_merged(document: Mapping[str, Any], change: Change, expires: float, namespace: str) -> str | None:
    """The document's ``session`` text with ``change`` applied; ``None`` (and a warning) if it is malformed."""
    try:
        return merge_express(_connect_text(document), change, expires)
    except NotSerializable:
        raise
    except ValueError as error:
        security_log.warning("malformed session document in MongoDB collection %s ignored: %s", namespace, error)
        return None


def _connect_touched(text: str | None, expires: float, now: float, namespace: str) -> Record | None:
    """The record a ``load_touch`` left behind: the written text, with the new expiry."""
    record = None if text is None else _connect_result({"session": text, "expires": _date(expires)}, now, namespace)
    return None if record is None else Record(record.data, created=now, accessed=now, expires=expires)


#: What a compare-and-swap reads: the text, and whether the document has an ``expires`` at all.
_CAS_FIELDS: Final = {"session": 1, "expires": 1}


def _connect_dead(document: Mapping[str, Any], now: float, namespace: str) -> bool:
    """A document the live filter matched only for having no ``expires``, and whose cookie has expired."""
    return "expires" not in document and _connect_result(document, now, namespace) is None


def _no_index() -> NoReturn:
    raise ConfigError("layout", "the connect-mongo layout keeps no per-user index (user_sessions, revoke_user)")


def _backoff(attempt: int) -> float:
    """A jittered pause before compare-and-swap attempt ``attempt + 1``, so racing writers spread out."""
    return random.uniform(0, min(0.002 * 2**attempt, CAS_BACKOFF_MAX))  # noqa: S311  (not cryptographic)


def _lost_race() -> NoReturn:
    raise StoreError(f"MongoDB store failed: the session changed under {CAS_ATTEMPTS} merges in a row")


def _connect_idle(now: float, idle: float, absolute: float | None) -> float:
    if absolute is not None:
        raise ConfigError("absolute_timeout", "the connect-mongo layout keeps no creation time to count it from")
    return now + idle

"""persession's own layout, shared by both flavours: documents, filters, updates, indexes, infos."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final, TypedDict

from bson.int64 import Int64
from pymongo import IndexModel
from pymongo.errors import OperationFailure

from ...exceptions import NotSerializable
from ...records import Change, Record, SessionInfo, dumps, loads
from ._constants import _EPOCH, _INDEX_CONFLICTS, _INT64_MAX, _INT64_MIN, log, security_log
from ._keys import escape_key, unescape_key


class _StoredSession(TypedDict):
    _id: str
    data: dict[str, Any]
    created: float
    accessed: float
    expires: datetime
    expires_ts: float


class SessionDocument(_StoredSession, total=False):
    """The shape of one stored session (``_id`` is the session id; ``user`` only once indexed)."""

    user: str


class _Malformed(ValueError):
    """A stored document that is not one of ours; the message never holds the id or a key."""


def _date(timestamp: float) -> datetime:
    """``timestamp`` as an aware UTC datetime, rounded down to BSON's millisecond."""
    return _EPOCH + timedelta(milliseconds=math.floor(timestamp * 1000))


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON types, exactly as every other store keeps it (tuples become lists,
    non-string keys strings), or :class:`~persession.NotSerializable` naming the key."""
    return loads(dumps(data))


def _to_bson(value: Any, key: str) -> Any:
    """A plain JSON value with every field name escaped; ``key`` names the session key for errors."""
    if isinstance(value, dict):
        return {escape_key(_utf8(name, key)): _to_bson(item, key) for name, item in value.items()}
    if isinstance(value, list):
        return [_to_bson(item, key) for item in value]
    if isinstance(value, str):
        return _utf8(value, key)
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        raise NotSerializable(key, OverflowError("MongoDB stores integers of at most 64 bits"))
    return value  # None, bool, float, small int


def _utf8(text: str, key: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates: JSON takes them, BSON does not
        raise NotSerializable(key, error) from None
    return text


def _bson_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Session data as the stored ``data`` sub-document (escaped keys, plain values)."""
    return {escape_key(_utf8(key, key)): _to_bson(value, key) for key, value in _plain(data).items()}


def _from_bson(value: Any) -> Any:
    """A stored value as plain JSON, or :class:`_Malformed` for anything JSON has not."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is Int64:  # BSON int64 decodes to this int subclass
        return int(value)
    if kind is dict:
        return {unescape_key(name): _from_bson(item) for name, item in value.items()}
    if kind is list:
        return [_from_bson(item) for item in value]
    raise _Malformed(f"data holds a BSON {kind.__name__} value")


def _number(document: Mapping[str, Any], name: str) -> float:
    value: Any = document.get(name)
    if type(value) not in (float, int, Int64) or not math.isfinite(value):
        raise _Malformed(f"field {name!r} is missing or not a number")
    return float(value)


def _record_from_document(document: Mapping[str, Any], now: float) -> Record | None:
    """The record a stored document holds; ``None`` if it expired; :class:`ValueError` if malformed."""
    data = document.get("data")
    if type(data) is not dict:
        raise _Malformed("field 'data' is missing or not a document")
    if not isinstance(document.get("expires"), datetime):
        raise _Malformed("field 'expires' is missing or not a date")
    created = _number(document, "created")
    accessed = _number(document, "accessed")
    expires = _number(document, "expires_ts")
    if expires <= now:  # written with a date later than its exact expiry: trust the earlier
        return None
    try:
        plain = _from_bson(data)
    except RecursionError:
        raise _Malformed("data is nested too deeply") from None
    return Record(plain, created=created, accessed=accessed, expires=expires)


def _document(sid: str, record: Record) -> _StoredSession:
    """The stored document for ``record`` under ``sid``."""
    return {
        "_id": sid,
        "data": _bson_data(record.data),
        "created": float(record.created),
        "accessed": float(record.accessed),
        "expires": _date(record.expires),
        "expires_ts": float(record.expires),
    }


def _live(sid: str, now: float) -> dict[str, Any]:
    """The filter for ``sid`` while it is live: the TTL monitor may not have run yet."""
    return {"_id": sid, "expires": {"$gt": _date(now)}}


def _load_filter(sid: str, now: float) -> dict[str, Any]:
    """:func:`_live`, plus a document whose ``expires`` is missing or not a date.

    Such a document never expires (the TTL monitor skips it) and is not ours:
    loading it lets :func:`_load_result` report it, still in one round trip.
    """
    return {"_id": sid, "$or": [{"expires": {"$gt": _date(now)}}, {"expires": {"$not": {"$type": "date"}}}]}


def _times(now: float, expires: float) -> dict[str, Any]:
    return {"accessed": float(now), "expires": _date(expires), "expires_ts": float(expires)}


def _merge_update(change: Change, now: float, expires: float) -> dict[str, Any]:
    """The one update document that applies ``change`` and moves the expiry."""
    values = _bson_data(change.set)
    fields = _times(now, expires)
    if change.cleared:
        fields["data"] = values
        return {"$set": fields}
    fields.update((f"data.{name}", value) for name, value in values.items())
    update: dict[str, Any] = {"$set": fields}
    # A key both set and deleted ends up set (Change.apply); Mongo refuses both on one path anyway.
    unset = {f"data.{name}": "" for name in map(escape_key, change.deleted) if name not in values}
    if unset:
        update["$unset"] = unset
    return update


def _touch_update(now: float, expires: float) -> dict[str, Any]:
    return {"$set": _times(now, expires)}


#: True for a document whose ``expires`` is a date and ``created`` a finite number: only
#: those ``load_touch`` changes. (Between -inf and inf in BSON order there are only numbers.)
_REFRESHABLE: Final = {
    "$and": [
        {"$eq": [{"$type": "$expires"}, "date"]},
        {"$in": [{"$type": "$created"}, ["double", "int", "long"]]},
        {"$gt": ["$created", -math.inf]},
        {"$lt": ["$created", math.inf]},
    ]
}


def _load_touch_update(now: float, idle: float, absolute: float | None) -> list[dict[str, Any]]:
    """The pipeline update of ``load_touch``: ``expires`` becomes ``min(now + idle, created + absolute)``.

    Computed by the server from the stored ``created`` (so one round trip),
    exactly as :func:`~persession.records.rolled_expiry` and :func:`_date` do
    in Python. A document that is not one of ours (see :data:`_REFRESHABLE`)
    is left as it is, for :func:`_load_result` to report.
    """
    idle_expires = float(now + idle)
    expires_ts: Any
    expires: Any
    if absolute is None:
        expires_ts, expires = idle_expires, _date(idle_expires)
    else:
        expires_ts = {"$min": [idle_expires, {"$add": ["$created", float(absolute)]}]}
        expires = {"$toDate": {"$floor": {"$multiply": [expires_ts, 1000]}}}
    return [
        {
            "$set": {
                "accessed": {"$cond": [_REFRESHABLE, float(now), "$accessed"]},
                "expires": {"$cond": [_REFRESHABLE, expires, "$expires"]},
                "expires_ts": {"$cond": [_REFRESHABLE, expires_ts, "$expires_ts"]},
            }
        }
    ]


def _load_result(document: Mapping[str, Any] | None, now: float, namespace: str) -> Record | None:
    if document is None:
        return None
    try:
        return _record_from_document(document, now)
    except ValueError as error:  # _Malformed, or unescape_key's refusal
        security_log.warning("malformed session document in MongoDB collection %s ignored: %s", namespace, error)
        return None


_INDEX_KEYS: Final = [("expires", 1)]
_USER_KEYS: Final = [("user", 1)]
#: The indexes every store ensures on first use: the TTL index, and the per-user index.
_INDEXES: Final = (
    IndexModel(_INDEX_KEYS, expireAfterSeconds=0),
    IndexModel(_USER_KEYS, sparse=True),
)


def _index_conflict(error: OperationFailure, field: str = "expires") -> bool:
    """An index on ``field`` exists already under another name or options: use it."""
    if error.code not in _INDEX_CONFLICTS:
        return False
    log.info("MongoDB index on %r not created: an index on that field exists (code %s)", field, error.code)
    return True


def _save_update(document: _StoredSession) -> dict[str, Any]:
    """The upsert that writes ``document`` whole, keeping the stored ``user`` (the index entry)."""
    return {"$set": {name: value for name, value in document.items() if name != "_id"}}


def _user_filter(user: str, now: float) -> dict[str, Any]:
    return {"user": user, "expires": {"$gt": _date(now)}}


_INFO_FIELDS: Final = {"_id": 1, "created": 1, "accessed": 1, "expires_ts": 1}


def _infos(documents: list[dict[str, Any]], now: float, namespace: str) -> list[SessionInfo]:
    """The live sessions among ``documents`` (projected on :data:`_INFO_FIELDS`), oldest first."""
    infos = []
    for document in documents:
        try:
            info = SessionInfo(
                str(document["_id"]),
                created=_number(document, "created"),
                accessed=_number(document, "accessed"),
                expires=_number(document, "expires_ts"),
            )
        except _Malformed as error:
            security_log.warning("malformed session document in MongoDB collection %s ignored: %s", namespace, error)
            continue
        if info.expires > now:
            infos.append(info)
    return sorted(infos, key=lambda info: (info.created, info.sid))


def _revoked(documents: list[dict[str, Any]], now: float) -> list[str]:
    """The ids of the live sessions among ``documents`` (projected on ``expires_ts``)."""
    live = []
    for document in documents:
        expires: Any = document.get("expires_ts")
        if type(expires) in (float, int, Int64) and expires > now:
            live.append(str(document["_id"]))
    return sorted(live)

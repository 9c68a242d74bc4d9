"""MongoDB session stores: :class:`MongoStore` (WSGI) and :class:`AsyncMongoStore` (ASGI).

Both flavours speak PyMongo (``pip install "persession-web[mongo]"``): the sync
store wraps a :class:`pymongo.collection.Collection`, the asyncio store a
:class:`pymongo.asynchronous.collection.AsyncCollection` from PyMongo's native
:class:`~pymongo.AsyncMongoClient` (no threads). Build either on a collection
you already have, or with ``from_url("mongodb://host/db")``.

One document per session::

    {
        "_id": "<session id>",
        "data": {"user": 42, "a%2Eb": 1},     # the session, field names escaped
        "created": 1700000000.25,             # Unix seconds (float, exact)
        "accessed": 1700000100.5,             # Unix seconds (float, exact)
        "expires": ISODate("2023-11-14T23:13:20.250Z"),  # aware UTC date: TTL index, filters
        "expires_ts": 1700003600.2504,        # the same instant, exact (a BSON date keeps ms)
    }

``created`` and ``accessed`` are floats rather than dates so that a record
loads back exactly as it was saved. ``expires`` is the date the TTL index and
every query filter use, rounded *down* to the millisecond so the store never
calls a session live past its expiry; ``expires_ts`` is the exact value the
record reports.

Field names in ``data`` (at every depth) are escaped so that any JSON key is
stored safely and ``$set`` / ``$unset`` on ``data.<key>`` address exactly one
field: ``%`` becomes ``%25``, ``.`` ``%2E``, ``$`` ``%24``, NUL ``%00``, and the
empty key is stored as a lone ``%``. Values are plain JSON; a document holding
anything else (a BSON Binary, a date, an ObjectId, a field name that is not a
valid escape, a missing field) is treated as no session and logged once on
the ``persession.security`` logger. Integers outside BSON's signed 64-bit range
are refused with :class:`~persession.NotSerializable`.

Expiry: a TTL index on ``expires`` (``expireAfterSeconds=0``) is created on
the store's first use; MongoDB's TTL monitor deletes expired documents only
about once a minute, so every read and write also filters on
``expires > now``. (A load also fetches a document whose ``expires`` is
missing or not a date, only to report it as malformed: the TTL monitor would
never delete it.)

``load_touch`` (a rolling session's load) is one ``findAndModify`` whose
update is an aggregation pipeline (MongoDB 4.2+): the server computes
``min(now + idle, created + absolute)`` from the stored ``created`` and writes
``expires``, ``expires_ts`` and ``accessed`` in the same atomic step.

**The connect-mongo layout.** ``MongoStore(collection, layout="connect-mongo")``
(or ``?layout=connect-mongo`` in the URL) stores sessions as connect-mongo does,
to share them with express-session (see :doc:`/express`)::

    {"_id": "<session id>", "session": "<JSON text, cookie object first>", "expires": ISODate(...)}

with connect-mongo's TTL index (``{expires: 1}``, ``expireAfterSeconds: 0``,
``background: true``, sent as connect-mongo sends it). A document's expiry is
its ``expires``; a document without one (connect-mongo never writes such a
document, but reads it as live for ever) lives until its cookie's
``expires``, or for ever when that is ``null``
(:func:`~persession.codecs.record_expiry`), and is never written again once
that has passed. No single update can merge into a JSON string, so ``merge``,
``touch`` and ``load_touch`` are a compare-and-swap: read the document, merge
in Python (members in order, ``cookie`` first, its ``expires`` moved), then
``update`` filtered on the text read and on the session being live; when
another writer got there first, re-read and retry, up to
:data:`CAS_ATTEMPTS` times with a jittered pause of at most
:data:`CAS_BACKOFF_MAX` seconds, then raise :class:`~persession.StoreError`.
A session deleted meanwhile is never written again. This layout keeps no
creation time (records report the load time) and no per-user index.

**Per-user index.** The index is a field of the session document itself:
``index_user`` sets ``"user": "<user id>"`` on the live document (one
``update``), and a sparse index on ``user``, created with the TTL index in
the same ``createIndexes`` command (and as tolerantly), finds a user's
sessions. There is no second collection and nothing to keep in step: an entry
lives exactly as long as its session however often the session is touched,
and the TTL monitor removes both at once. ``user_sessions`` is one ``find``
(filtered on ``expires > now``, so expired sessions never show);
``revoke_user`` is a ``find`` for the ids, then one ``delete_many`` on
``user``, which also deletes a session indexed between the two (its id is
then not in the returned list). ``save`` over an existing id keeps its
``user``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypedDict
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from ..codecs import decode_express, encode_express, merge_express, record_expiry
from ..exceptions import ConfigError, NotSerializable, StoreError, StoreUnavailable
from ..records import Change, Record, SessionInfo, dumps, loads

try:
    from bson.codec_options import CodecOptions
    from bson.errors import BSONError
    from bson.int64 import Int64
    from pymongo import AsyncMongoClient, IndexModel, MongoClient, ReturnDocument
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.collection import Collection
    from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess
    raise ConfigError(
        "store", f'the MongoDB stores need pymongo>=4.13 ({_missing}): pip install "persession-web[mongo]"'
    ) from _missing

__all__ = [
    "AsyncMongoStore",
    "MongoStore",
    "SessionDocument",
    "escape_key",
    "unescape_key",
    "DEFAULT_COLLECTION",
    "CAS_ATTEMPTS",
    "CAS_BACKOFF_MAX",
    "Layout",
    "DEFAULT_CONNECT_TIMEOUT_MS",
    "DEFAULT_SERVER_SELECTION_TIMEOUT_MS",
    "DEFAULT_SOCKET_TIMEOUT_MS",
]

log: logging.Logger = logging.getLogger("persession")
security_log: logging.Logger = logging.getLogger("persession.security")

#: The collection ``from_url`` uses when neither the URL nor the caller names one.
DEFAULT_COLLECTION: Final = "sessions"
#: ``from_url`` default: milliseconds to find a usable server before
#: :class:`~persession.StoreUnavailable` (PyMongo's own default is 30 s).
DEFAULT_SERVER_SELECTION_TIMEOUT_MS: Final = 2000
#: ``from_url`` default: milliseconds to open a connection (PyMongo: 20 s).
DEFAULT_CONNECT_TIMEOUT_MS: Final = 2000
#: ``from_url`` default: milliseconds to wait for a reply on an open
#: connection (PyMongo: no limit). Session reads and writes are small.
DEFAULT_SOCKET_TIMEOUT_MS: Final = 2000

_SCHEMES: Final = ("mongodb", "mongodb+srv")
#: Query parameters persession reads from a URL and removes before PyMongo sees it.
_OWN_PARAMS: Final = frozenset({"collection", "layout"})
#: How sessions are stored: persession's documents, or connect-mongo's.
Layout: TypeAlias = Literal["persession", "connect-mongo"]
_LAYOUTS: Final = ("persession", "connect-mongo")
#: Times a connect-mongo ``merge`` or ``touch`` re-reads and retries when another write changed the session.
CAS_ATTEMPTS: Final = 10
#: Longest pause, in seconds, between two of those attempts (jittered, doubling from 2 ms).
CAS_BACKOFF_MAX: Final = 0.05
_TIMEOUT_DEFAULTS: Final = {
    "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    "connectTimeoutMS": DEFAULT_CONNECT_TIMEOUT_MS,
    "socketTimeoutMS": DEFAULT_SOCKET_TIMEOUT_MS,
}
# Decode to plain dicts and aware UTC datetimes whatever the caller's client uses.
_CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(document_class=dict, tz_aware=True, tzinfo=timezone.utc)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# MongoDB's codes for "an index on these keys exists with another name or options".
_INDEX_CONFLICTS: Final = frozenset({85, 86})


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


# --- field-name escaping -------------------------------------------------------------------------

_ESCAPES: Final = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES: Final = {code[1:]: char for char, code in _ESCAPES.items()}
_NEEDS_ESCAPE: Final = re.compile(r"[%.$\x00]")
_EMPTY_KEY: Final = "%"


def escape_key(key: str) -> str:
    """The field name under which session key ``key`` is stored (see the module docs)."""
    if not key:
        return _EMPTY_KEY
    if _NEEDS_ESCAPE.search(key) is None:
        return key
    return "".join(_ESCAPES.get(char, char) for char in key)


def unescape_key(name: str) -> str:
    """The session key stored as field ``name``; :class:`ValueError` unless ``escape_key`` made it.

    Strict on purpose: accepting a raw ``.`` or ``$`` here would give a key
    that ``$unset`` (which goes through :func:`escape_key`) could never reach.
    """
    if name == _EMPTY_KEY:
        return ""
    if not name or "." in name or "$" in name or "\x00" in name:
        raise ValueError("a field name in data is not escaped")
    if "%" not in name:
        return name
    head, *rest = name.split("%")
    parts = [head]
    for piece in rest:
        char = _UNESCAPES.get(piece[:2])
        if char is None:
            raise ValueError("a field name in data holds an unknown escape")
        parts.append(char)
        parts.append(piece[2:])
    return "".join(parts)


# --- documents: shared by both flavours ----------------------------------------------------------


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


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate PyMongo's errors: the one place this module does so (both flavours)."""
    try:
        yield
    except (ConnectionFailure, ExecutionTimeout) as error:
        raise StoreUnavailable(f"MongoDB store unavailable: {error}", error) from error
    except PyMongoError as error:
        if error.timeout:
            raise StoreUnavailable(f"MongoDB store unavailable: {type(error).__name__}", error) from error
        # Server messages can quote the filter (a duplicate key quotes the id): name only the error.
        code = getattr(error, "code", None)
        raise StoreError(f"MongoDB store failed: {type(error).__name__} (code {code})", error) from error
    except BSONError as error:
        raise StoreError(f"MongoDB store failed: {type(error).__name__}: {error}", error) from error


# --- the connect-mongo layout: shared by both flavours -------------------------------------------

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


# --- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What ``from_url`` builds a store from: kept so ``to_async()`` can build the twin."""

    url: str
    database: str | None
    collection: str | None
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    layout: Layout = "persession"


def _url_layout(url: str, layout: Layout | None) -> Layout:
    """The layout: the ``layout`` keyword, else the URL's ``layout`` query parameter, else ``"persession"``."""
    query = urlsplit(url).query if isinstance(url, str) else ""
    from_url = next((unquote_plus(v) for k, v in parse_qsl(query.replace(";", "&")) if k == "layout"), None)
    if layout is not None and from_url is not None and layout != from_url:
        raise ConfigError("layout", f"the URL says layout={from_url!r}, the keyword {layout!r}")
    return _check_layout(layout or from_url or "persession")


def _split_url(url: str, database: str | None, collection: str | None) -> tuple[str, str, str]:
    """``(url for PyMongo, database, collection)``; :class:`ConfigError` naming ``url`` if unusable."""
    if not isinstance(url, str):
        raise ConfigError("url", f"{url!r} is not a MongoDB URL such as 'mongodb://host/dbname'")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigError("url", f"{parts.scheme!r} is not a MongoDB URL scheme; use mongodb:// or mongodb+srv://")
    if not parts.netloc.rpartition("@")[2].strip(","):
        # PyMongo never assumes localhost either, but say so before it does.
        raise ConfigError("url", "the MongoDB URL names no host (a store URL never falls back to localhost)")
    path_database = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    kept: list[str] = []
    own: dict[str, str] = {}
    for piece in re.split(r"[&;]", parts.query) if parts.query else ():
        name, _, value = piece.partition("=")
        if unquote_plus(name) in _OWN_PARAMS:
            own[unquote_plus(name)] = unquote_plus(value)
        else:
            kept.append(piece)
    url_collection = own.get("collection")
    chosen_database = database or path_database
    if not chosen_database:
        raise ConfigError("url", "name the database in the URL path ('mongodb://host/dbname') or pass database=")
    chosen_collection = collection or url_collection or DEFAULT_COLLECTION
    driver_url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
    if kept:
        driver_url += "?" + "&".join(kept)
    return driver_url, chosen_database, chosen_collection


def _client_options(driver_url: str, client_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``client_kwargs`` plus the bounded timeouts the URL or the caller did not set themselves."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(driver_url).query.replace(";", "&"))}
    given.update(name.lower() for name in client_kwargs)
    options = {name: value for name, value in _TIMEOUT_DEFAULTS.items() if name.lower() not in given}
    # Connect on first use, not now: safe to build before a fork (gunicorn --preload), and a
    # mongodb+srv:// lookup happens when the store is used, not at import time.
    options.setdefault("connect", False)
    options.update(client_kwargs)
    return options


# --- the stores ----------------------------------------------------------------------------------


class MongoStore:
    """A synchronous MongoDB session store (WSGI).

    :param collection: a PyMongo :class:`~pymongo.collection.Collection` the store
        owns the documents of (one collection per application). The store reads
        and writes through it with its own codec options (plain dicts, aware
        UTC dates), and never closes its client.
    :param clock: returns the current Unix time; default :func:`time.time`.

    The TTL index on ``expires`` is created on first use (an existing index on
    ``expires`` is used as it is). ``save(..., replaces=old)`` writes the new
    document and then deletes ``old``: two writes, not a transaction, so a
    crash between them leaves the old session live until it expires (see
    :meth:`save`).

    .. versionadded:: 0.1
    """

    def __init__(
        self, collection: Collection[Any], *, clock: Callable[[], float] = time.time, layout: Layout = "persession"
    ) -> None:
        if not isinstance(collection, Collection):
            raise ConfigError(
                "collection",
                "MongoStore needs a pymongo Collection; for an AsyncMongoClient collection use AsyncMongoStore",
            )
        self._collection: Collection[dict[str, Any]] = collection.with_options(codec_options=_CODEC_OPTIONS)
        self._clock = clock
        self._namespace = collection.full_name
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-mongo"
        self._indexes = _CONNECT_INDEXES if self._connect else _INDEXES
        self._indexed = False
        self._index_lock = threading.Lock()
        self._client: MongoClient[dict[str, Any]] | None = None
        self._target: _Target | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str | None = None,
        collection: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        **client_kwargs: Any,
    ) -> MongoStore:
        """A store on its own :class:`~pymongo.MongoClient`, closed by :meth:`close`.

        :param url: ``mongodb://[user:pass@]host[:port][,host...]/dbname[?options]``
            or ``mongodb+srv://``; the query parameter ``collection`` is
            persession's, the rest go to PyMongo.
        :param database: the database, when the URL path names none (this wins
            over the path when both do).
        :param collection: the collection; default the URL's ``collection``
            parameter, else ``"sessions"``.
        :param clock: returns the current Unix time.
        :param layout: as for the constructor; also the URL's ``layout`` query
            parameter (``mongodb://db/app?layout=connect-mongo``).
        :param client_kwargs: more :class:`~pymongo.MongoClient` options. Unless
            the URL or these set them, ``serverSelectionTimeoutMS``,
            ``connectTimeoutMS`` and ``socketTimeoutMS`` are 2000 (see the
            ``DEFAULT_*_MS`` constants), and ``connect=False``.
        :raises ConfigError: naming ``url``: not a MongoDB URL, no host, no database,
            or options PyMongo refuses.
        """
        chosen_layout = _url_layout(url, layout)
        target = _Target(url, database, collection, dict(client_kwargs), chosen_layout)
        driver_url, db_name, coll_name = _split_url(url, database, collection)
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(driver_url, **_client_options(driver_url, client_kwargs))
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            store = cls(client[db_name][coll_name], clock=clock, layout=chosen_layout)
        except PyMongoError as error:  # InvalidName
            client.close()
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error
        store._client = client
        store._target = target
        return store

    @property
    def collection(self) -> Collection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._collection

    def _ready(self) -> Collection[dict[str, Any]]:
        """The collection, with the TTL index ensured once per store object."""
        if not self._indexed:
            with self._index_lock:
                if not self._indexed:
                    with _map_errors():
                        try:
                            self._collection.create_indexes(list(self._indexes))
                        except OperationFailure as error:
                            if not _index_conflict(error):
                                raise
                            for model in self._indexes:  # one of them exists already: the others one by one
                                field = next(iter(model.document["key"]))
                                try:
                                    self._collection.create_indexes([model])
                                except OperationFailure as again:
                                    if not _index_conflict(again, field):
                                        raise
                    self._indexed = True
        return self._collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout

    def load(self, sid: str) -> Record | None:
        collection = self._ready()
        now = self._clock()
        if self._connect:
            with _map_errors():
                found = collection.find_one(_connect_live(sid, now))
            return _connect_result(found, now, self._namespace)
        with _map_errors():
            document = collection.find_one(_load_filter(sid, now))
        return _load_result(document, now, self._namespace)

    def _connect_write(self, sid: str, change: Change, expires: float, now: float) -> str | None:
        """Compare and swap the ``session`` text; the new text, or ``None`` when the session is gone."""
        collection = self._ready()
        with _map_errors():
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    time.sleep(_backoff(attempt))
                document = collection.find_one(_connect_live(sid, now), _CAS_FIELDS)
                if document is None or _connect_dead(document, now, self._namespace):
                    return None
                text = _connect_merged(document, change, expires, self._namespace)
                if text is None:
                    return None
                swapped = collection.update_one(
                    _connect_swap(sid, document["session"], now), _connect_set(text, expires)
                )
                if swapped.matched_count == 1:
                    return text
        _lost_race()

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry: one ``findAndModify`` with a pipeline update.

        The server computes the capped expiry from the stored ``created``
        (MongoDB 4.2+). See :class:`~persession.stores.RollingLoad`.
        """
        now = self._clock()
        if self._connect:  # a compare and swap (see the module docs)
            expires = _connect_idle(now, idle, absolute)
            text = self._connect_write(sid, _NO_CHANGE, expires, now)
            return _connect_touched(text, expires, now, self._namespace)
        collection = self._ready()
        with _map_errors():
            document = collection.find_one_and_update(
                _load_filter(sid, now), _load_touch_update(now, idle, absolute), return_document=ReturnDocument.AFTER
            )
        return _load_result(document, now, self._namespace)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write ``record`` whole, then delete ``replaces``.

        Two writes, not a transaction: a transaction needs a replica set and
        costs a third round trip, and the only state a crash between the
        writes can leave is the *old* session still live until it expires —
        with its old data, never the new record's — which is what it was
        before the regenerate began.
        """
        update = (
            _connect_set(encode_express(record.data, record.expires, self._clock()), record.expires)
            if self._connect
            else _save_update(_document(sid, record))  # refuse bad data before writing anything
        )
        collection = self._ready()
        with _map_errors():
            collection.update_one({"_id": sid}, update, upsert=True)
            if replaces is not None and replaces != sid:
                collection.delete_one({"_id": replaces})

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        now = self._clock()
        if self._connect:  # a compare and swap (see the module docs)
            return self._connect_write(sid, change, expires, now) is not None
        update = _merge_update(change, now, expires)
        collection = self._ready()
        with _map_errors():
            result = collection.update_one(_live(sid, now), update)
        return result.matched_count == 1

    def touch(self, sid: str, expires: float) -> bool:
        now = self._clock()
        if self._connect:  # cookie.expires in the text moves with expires
            return self._connect_write(sid, _NO_CHANGE, expires, now) is not None
        collection = self._ready()
        with _map_errors():
            result = collection.update_one(_live(sid, now), _touch_update(now, expires))
        return result.matched_count == 1

    def delete(self, sid: str) -> None:
        collection = self._ready()
        with _map_errors():
            collection.delete_one({"_id": sid})

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Set ``user`` on the live session's document: one ``update`` (see the module docs).

        The ``connect-mongo`` layout keeps no index: this does nothing.
        """
        if self._connect:
            return
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            collection.update_one(_live(sid, now), {"$set": {"user": user}})

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first: one ``find`` on the ``user`` index.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        if self._connect:
            _no_index()
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            documents = list(collection.find(_user_filter(user, now), _INFO_FIELDS))
        return _infos(documents, now, self._namespace)

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` (a ``find``, then one ``delete_many``); return the live ids.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        if self._connect:
            _no_index()
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            documents = list(collection.find({"user": user}, {"_id": 1, "expires_ts": 1}))
            collection.delete_many({"user": user})
        return _revoked(documents, now)

    def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        if self._client is not None:
            self._client.close()

    def to_async(self) -> AsyncMongoStore:
        """An :class:`AsyncMongoStore` on the same URL, database and collection (its own client).

        :raises ConfigError: this store was not built by :meth:`from_url`.
        """
        target = self._target
        if target is None:
            raise ConfigError(
                "store",
                "to_async() needs a store built with MongoStore.from_url(); otherwise construct "
                "AsyncMongoStore on a collection of an AsyncMongoClient",
            )
        return AsyncMongoStore.from_url(
            target.url,
            target.database,
            target.collection,
            clock=self._clock,
            layout=target.layout,
            **target.client_kwargs,
        )


class AsyncMongoStore:
    """The asyncio twin of :class:`MongoStore` (ASGI), on PyMongo's native async client.

    :param collection: an :class:`~pymongo.asynchronous.collection.AsyncCollection`
        from an :class:`~pymongo.AsyncMongoClient`; never closed by the store.
    :param clock: returns the current Unix time; default :func:`time.time`.

    An ``AsyncMongoClient`` belongs to the event loop it first runs on, so build
    the store inside the application's loop (or with :meth:`from_url`, which
    connects lazily). Semantics as :class:`MongoStore`.

    .. versionadded:: 0.1
    """

    def __init__(
        self, collection: AsyncCollection[Any], *, clock: Callable[[], float] = time.time, layout: Layout = "persession"
    ) -> None:
        if not isinstance(collection, AsyncCollection):
            raise ConfigError(
                "collection",
                "AsyncMongoStore needs an AsyncMongoClient collection; for a MongoClient collection use MongoStore",
            )
        self._collection: AsyncCollection[dict[str, Any]] = collection.with_options(codec_options=_CODEC_OPTIONS)
        self._clock = clock
        self._namespace = collection.full_name
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-mongo"
        self._indexes = _CONNECT_INDEXES if self._connect else _INDEXES
        self._indexed = False
        self._index_lock = asyncio.Lock()  # binds to a loop only when first contended
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str | None = None,
        collection: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        **client_kwargs: Any,
    ) -> AsyncMongoStore:
        """A store on its own :class:`~pymongo.AsyncMongoClient`, closed by :meth:`close`.

        Parameters and defaults as :meth:`MongoStore.from_url`.

        :raises ConfigError: naming ``url``.
        """
        chosen_layout = _url_layout(url, layout)
        driver_url, db_name, coll_name = _split_url(url, database, collection)
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                driver_url, **_client_options(driver_url, client_kwargs)
            )
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            store = cls(client[db_name][coll_name], clock=clock, layout=chosen_layout)
        except PyMongoError as error:  # InvalidName; the client has not connected yet
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error
        store._client = client
        return store

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._collection

    async def _ready(self) -> AsyncCollection[dict[str, Any]]:
        """The collection, with the TTL index ensured once per store object."""
        if not self._indexed:
            async with self._index_lock:
                if not self._indexed:
                    with _map_errors():
                        try:
                            await self._collection.create_indexes(list(self._indexes))
                        except OperationFailure as error:
                            if not _index_conflict(error):
                                raise
                            for model in self._indexes:  # one of them exists already: the others one by one
                                field = next(iter(model.document["key"]))
                                try:
                                    await self._collection.create_indexes([model])
                                except OperationFailure as again:
                                    if not _index_conflict(again, field):
                                        raise
                    self._indexed = True
        return self._collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout

    async def load(self, sid: str) -> Record | None:
        collection = await self._ready()
        now = self._clock()
        if self._connect:
            with _map_errors():
                found = await collection.find_one(_connect_live(sid, now))
            return _connect_result(found, now, self._namespace)
        with _map_errors():
            document = await collection.find_one(_load_filter(sid, now))
        return _load_result(document, now, self._namespace)

    async def _connect_write(self, sid: str, change: Change, expires: float, now: float) -> str | None:
        """See :meth:`MongoStore._connect_write`."""
        collection = await self._ready()
        with _map_errors():
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(_backoff(attempt))
                document = await collection.find_one(_connect_live(sid, now), _CAS_FIELDS)
                if document is None or _connect_dead(document, now, self._namespace):
                    return None
                text = _connect_merged(document, change, expires, self._namespace)
                if text is None:
                    return None
                swapped = await collection.update_one(
                    _connect_swap(sid, document["session"], now), _connect_set(text, expires)
                )
                if swapped.matched_count == 1:
                    return text
        _lost_race()

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`MongoStore.load_touch`."""
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            text = await self._connect_write(sid, _NO_CHANGE, expires, now)
            return _connect_touched(text, expires, now, self._namespace)
        collection = await self._ready()
        with _map_errors():
            document = await collection.find_one_and_update(
                _load_filter(sid, now), _load_touch_update(now, idle, absolute), return_document=ReturnDocument.AFTER
            )
        return _load_result(document, now, self._namespace)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`MongoStore.save`: the new document first, then the old one deleted."""
        update = (
            _connect_set(encode_express(record.data, record.expires, self._clock()), record.expires)
            if self._connect
            else _save_update(_document(sid, record))
        )
        collection = await self._ready()
        with _map_errors():
            await collection.update_one({"_id": sid}, update, upsert=True)
            if replaces is not None and replaces != sid:
                await collection.delete_one({"_id": replaces})

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        now = self._clock()
        if self._connect:
            return await self._connect_write(sid, change, expires, now) is not None
        update = _merge_update(change, now, expires)
        collection = await self._ready()
        with _map_errors():
            result = await collection.update_one(_live(sid, now), update)
        return result.matched_count == 1

    async def touch(self, sid: str, expires: float) -> bool:
        now = self._clock()
        if self._connect:
            return await self._connect_write(sid, _NO_CHANGE, expires, now) is not None
        collection = await self._ready()
        with _map_errors():
            result = await collection.update_one(_live(sid, now), _touch_update(now, expires))
        return result.matched_count == 1

    async def delete(self, sid: str) -> None:
        collection = await self._ready()
        with _map_errors():
            await collection.delete_one({"_id": sid})

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`MongoStore.index_user`."""
        if self._connect:
            return
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            await collection.update_one(_live(sid, now), {"$set": {"user": user}})

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`MongoStore.user_sessions`."""
        if self._connect:
            _no_index()
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            documents = await collection.find(_user_filter(user, now), _INFO_FIELDS).to_list(None)
        return _infos(documents, now, self._namespace)

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`MongoStore.revoke_user`."""
        if self._connect:
            _no_index()
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            documents = await collection.find({"user": user}, {"_id": 1, "expires_ts": 1}).to_list(None)
            await collection.delete_many({"user": user})
        return _revoked(documents, now)

    async def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        if self._client is not None:
            await self._client.close()

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

from typing import Final

from ...exceptions import MissingExtra

# Before any submodule imports them, so a missing or too old pymongo is MissingExtra with the install hint.
try:
    from bson.codec_options import CodecOptions  # noqa: F401  (imported for the check only)
    from bson.errors import BSONError  # noqa: F401
    from bson.int64 import Int64  # noqa: F401
    from pymongo import AsyncMongoClient, IndexModel, MongoClient, ReturnDocument  # noqa: F401
    from pymongo.asynchronous.collection import AsyncCollection  # noqa: F401
    from pymongo.collection import Collection  # noqa: F401
    from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError  # noqa: F401
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess
    raise MissingExtra(
        "store",
        f'the MongoDB stores need pymongo>=4.13 ({_missing}): pip install "persession-web[mongo]"',
        extra="mongo",
    ) from _missing

from ._async import AsyncMongoStore
from ._constants import CAS_ATTEMPTS as _CAS_ATTEMPTS
from ._constants import (
    CAS_BACKOFF_MAX,
    DEFAULT_COLLECTION,
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    DEFAULT_SOCKET_TIMEOUT_MS,
    Layout,
)
from ._documents import SessionDocument
from ._keys import escape_key, unescape_key
from ._sync import MongoStore

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

# Bound here, not only imported: autodoc (docs/api.md) reads this doc comment from this file.
#: Times a connect-mongo ``merge`` or ``touch`` re-reads and retries when another write changed the session.
CAS_ATTEMPTS: Final = _CAS_ATTEMPTS

# They live in private submodules; report this module, so that reprs, tracebacks and the docs' ids stay as they were.
for _public in (MongoStore, AsyncMongoStore, SessionDocument, escape_key, unescape_key):
    _public.__module__ = __name__
del _public

"""The connect-mongo layout (see the package docs): a compare-and-swap flow over connect-mongo's documents."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, NoReturn

from pymongo import IndexModel

from ...codecs import encode_express
from ...exceptions import StoreError
from ...records import Change, Record, SessionInfo
from .._express import NO_CHANGE, check_idle, express_record, no_index, touched
from .._splice import Edit, Malformed, splice
from ._constants import _EPOCH, CAS_ATTEMPTS, CAS_BACKOFF_MAX, security_log
from ._documents import _INDEX_KEYS, _date, _Malformed
from ._ops import DeleteOne, FindOne, Flow, Pause, Step, UpdateOne, Work, matched, nothing
from ._ops import upsert as _upsert

#: connect-mongo's TTL index, as its ``autoRemove: "native"`` creates it. The Node driver sends
#: ``{background, expireAfterSeconds, name, key}`` in that order, and a server that compares index
#: options in order refuses connect-mongo's own createIndex after one spelled otherwise: IndexModel
#: keeps its keywords in their order and adds ``key`` last (tests/test_express_interop.py compares
#: the two drivers' commands).
_CONNECT_INDEXES: Final = (IndexModel(_INDEX_KEYS, background=True, expireAfterSeconds=0, name="expires_1"),)
#: What a compare-and-swap reads: the text, and whether the document has an ``expires`` at all.
_CAS_FIELDS: Final = {"session": 1, "expires": 1}


def _connect_live(sid: str, now: float) -> dict[str, Any]:
    """connect-mongo's own filter: the document, unless its ``expires`` has passed (none: see ``_dead``)."""
    return {"_id": sid, "$or": [{"expires": {"$exists": False}}, {"expires": {"$gt": _date(now)}}]}


def _connect_set(text: str, expires: float) -> dict[str, Any]:
    return {"$set": {"session": text, "expires": _date(expires)}}


def _connect_text(document: Mapping[str, Any]) -> str:
    text = document.get("session")
    if not isinstance(text, str):
        raise _Malformed("field 'session' is missing or not a string (connect-mongo's stringify: false?)")
    return text


def _store_expiry(document: Mapping[str, Any]) -> float | None:
    stored: Any = document.get("expires")
    if isinstance(stored, datetime):
        return (stored - _EPOCH).total_seconds()
    if "expires" not in document:  # the cookie's expires decides (connect-mongo: live for ever)
        return None
    raise _Malformed("field 'expires' is not a date")


def _backoff(attempt: int) -> float:
    """A jittered pause before compare-and-swap attempt ``attempt + 1``, so racing writers spread out."""
    return random.uniform(0, min(0.002 * 2**attempt, CAS_BACKOFF_MAX))  # noqa: S311  (not cryptographic)


def _lost_race() -> NoReturn:
    raise StoreError(f"MongoDB store failed: the session changed under {CAS_ATTEMPTS} merges in a row")


class ConnectMongo:
    """connect-mongo's documents: ``{_id, session: "<JSON text>", expires}``, merged by compare-and-swap."""

    __slots__ = ("_clock", "_namespace")

    name: Final[Literal["connect-mongo"]] = "connect-mongo"
    #: connect-mongo's own TTL index.
    indexes: Final[tuple[IndexModel, ...]] = _CONNECT_INDEXES

    def __init__(self, clock: Callable[[], float], namespace: str) -> None:
        self._clock = clock
        self._namespace = namespace

    def _malformed(self, error: ValueError | Malformed) -> None:
        security_log.warning("malformed session document in MongoDB collection %s ignored: %s", self._namespace, error)

    def _result(self, document: Mapping[str, Any] | None, now: float) -> Record | None:
        """The record a document holds; ``None`` (and a warning, if malformed) unless it is live."""
        if document is None:
            return None
        try:
            return express_record(_connect_text(document), _store_expiry(document), now)
        except ValueError as error:  # _Malformed, JSONDecodeError, no cookie object
            self._malformed(error)
            return None

    def _merged(self, document: Mapping[str, Any], edit: Edit) -> str | None:
        """The text with ``edit`` spliced in as connect-redis' script splices it; ``None``: gone or malformed.

        No ``expires`` field: the cookie's expires decides, and a dead record is never written again.
        """
        try:
            text = splice(_connect_text(document), edit, keeps_expiry="expires" in document)
        except ValueError as error:  # _Malformed: no session text
            self._malformed(error)
            return None
        if isinstance(text, Malformed):
            self._malformed(text)
            return None
        return text

    def _swap(self, sid: str, change: Change, expires: float, now: float) -> Flow[str | None]:
        """Compare and swap the ``session`` text; the new text, or ``None`` when the session is gone."""
        edit = Edit(change, expires, now)  # refuses bad data before any I/O
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                yield Pause(_backoff(attempt))
            document = yield FindOne(_connect_live(sid, now), _CAS_FIELDS)
            if document is None:
                return None
            text = self._merged(document, edit)
            if text is None:
                return None
            swap = {**_connect_live(sid, now), "session": document["session"]}
            if matched((yield UpdateOne(swap, _connect_set(text, expires)))):
                return text
        _lost_race()

    def load(self, sid: str) -> Step[Record | None]:
        now = self._clock()
        return FindOne(_connect_live(sid, now)), lambda document: self._result(document, now)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Flow[Record | None]:
        now = self._clock()
        expires = check_idle(self.name, now, idle, absolute)
        text = yield from self._swap(sid, NO_CHANGE, expires, now)
        # The text written back, read with the expiry it was given.
        record = None if text is None else self._result({"session": text, "expires": _date(expires)}, now)
        return touched(record, expires, now)

    def save(self, sid: str, record: Record, replaces: str | None) -> Work[None]:
        text = encode_express(record.data, record.expires, self._clock())  # refuses bad data before any write
        return _upsert(sid, _connect_set(text, record.expires), replaces)

    def merge(self, sid: str, change: Change, expires: float) -> Flow[bool]:
        return (yield from self._swap(sid, change, expires, self._clock())) is not None

    def touch(self, sid: str, expires: float) -> Flow[bool]:
        # cookie.expires in the text moves with expires
        return (yield from self._swap(sid, NO_CHANGE, expires, self._clock())) is not None

    def delete(self, sid: str) -> Step[None]:
        return DeleteOne(sid), nothing

    def index_user(self, user: str, sid: str) -> None:
        """This layout keeps no index: nothing to do."""

    def user_sessions(self, user: str) -> Step[list[SessionInfo]]:
        no_index(self.name)

    def revoke_user(self, user: str) -> Step[list[str]]:
        no_index(self.name)

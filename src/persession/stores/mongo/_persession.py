"""persession's own layout of MongoDB documents (see the package docs), as steps for the transports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

from pymongo import IndexModel

from ...records import Change, Record, SessionInfo
from ._documents import (
    _INDEXES,
    _INFO_FIELDS,
    _document,
    _infos,
    _live,
    _load_filter,
    _load_result,
    _load_touch_update,
    _merge_update,
    _revoked,
    _save_update,
    _touch_update,
    _user_filter,
)
from ._ops import (
    DeleteMany,
    DeleteOne,
    FindMany,
    FindOne,
    FindOneAndUpdate,
    Flow,
    Step,
    UpdateOne,
    Work,
    matched,
    nothing,
)
from ._ops import upsert as _upsert

_REVOKE_FIELDS: Final = {"_id": 1, "expires_ts": 1}


class PersessionDocuments:
    """One document per session, its data a sub-document: every verb but ``save`` is one round trip."""

    __slots__ = ("_clock", "_namespace")

    name: Final[Literal["persession"]] = "persession"
    #: The TTL index on ``expires``, and the sparse per-user index.
    indexes: Final[tuple[IndexModel, ...]] = _INDEXES

    def __init__(self, clock: Callable[[], float], namespace: str) -> None:
        self._clock = clock
        self._namespace = namespace

    def load(self, sid: str) -> Step[Record | None]:
        now = self._clock()
        return FindOne(_load_filter(sid, now)), lambda document: _load_result(document, now, self._namespace)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Step[Record | None]:
        now = self._clock()
        op = FindOneAndUpdate(_load_filter(sid, now), _load_touch_update(now, idle, absolute))
        return op, lambda document: _load_result(document, now, self._namespace)

    def save(self, sid: str, record: Record, replaces: str | None) -> Work[None]:
        return _upsert(sid, _save_update(_document(sid, record)), replaces)  # refuses bad data before any write

    def merge(self, sid: str, change: Change, expires: float) -> Step[bool]:
        now = self._clock()
        return UpdateOne(_live(sid, now), _merge_update(change, now, expires)), matched

    def touch(self, sid: str, expires: float) -> Step[bool]:
        now = self._clock()
        return UpdateOne(_live(sid, now), _touch_update(now, expires)), matched

    def delete(self, sid: str) -> Step[None]:
        return DeleteOne(sid), nothing

    def index_user(self, user: str, sid: str) -> Step[None]:
        return UpdateOne(_live(sid, self._clock()), {"$set": {"user": user}}), nothing

    def user_sessions(self, user: str) -> Step[list[SessionInfo]]:
        now = self._clock()
        return FindMany(_user_filter(user, now), _INFO_FIELDS), lambda found: _infos(found, now, self._namespace)

    def revoke_user(self, user: str) -> Flow[list[str]]:
        now = self._clock()
        documents: Any = yield FindMany({"user": user}, _REVOKE_FIELDS)
        yield DeleteMany({"user": user})
        return _revoked(documents, now)

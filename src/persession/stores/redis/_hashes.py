"""The persession layout: one hash per session; what each verb runs, and the decoder of what a hash holds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NoReturn

from redis.crc import key_slot

from ...records import Change, Record, SessionInfo
from ._constants import _ACCESSED, _CREATED, _EXPIRES, security_log
from ._index import _INDEX_SCRIPTS, _delete_op, _index_flow, _list_flow, _revoke_flow
from ._ops import _Call, _Delete, _field, _fields, _Flow, _Op, _Read, _time, _ttl_ms
from ._scripts import _LOAD_TOUCH, _LOAD_TOUCH_INDEXED, _MERGE, _MERGE_INDEXED, _SAVE, _TOUCH, _TOUCH_INDEXED


class _Hashes:
    """The persession layout: what each verb runs (one hash per session, see the package docs) and what it returns.

    Built once per store: the cluster's scripts (which leave the user index,
    in another slot, alone) are chosen here, never in a verb. Each one-round-trip
    verb gives an op and the function that turns its reply into the result.
    """

    name: Final = "persession"
    #: Loads and writes may be sent now and read later (the WSGI split).
    splits: Final = True
    #: Client-side caching can keep its loads.
    cacheable: Final = True
    scripts: Final = (
        *(_SAVE, _MERGE, _MERGE_INDEXED, _TOUCH, _TOUCH_INDEXED, _LOAD_TOUCH, _LOAD_TOUCH_INDEXED),
        *_INDEX_SCRIPTS,
    )

    def __init__(self, prefix: str, clock: Callable[[], float], *, cluster: bool) -> None:
        self.prefix = prefix
        self._clock = clock
        self._cluster = cluster
        self._merge = _MERGE if cluster else _MERGE_INDEXED
        self._touch = _TOUCH if cluster else _TOUCH_INDEXED
        # In a cluster the index key is in another slot: the script leaves it alone, as touch does.
        self._load_touch = _LOAD_TOUCH if cluster else _LOAD_TOUCH_INDEXED
        self._finish_load = self._loaded  # one bound method, not one per request

    def load(self, sid: str) -> tuple[_Read, Callable[[Any], Record | None]]:
        return _Read(self.prefix + sid), self._finish_load

    def _loaded(self, reply: Any) -> Record | None:
        if isinstance(reply, Exception):  # the key is not a hash (WRONGTYPE)
            _malformed(self.prefix, "the key is not a hash")
            return None
        return _record(self.prefix, reply, self._clock())

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> tuple[_Call, Callable[[Any], Record | None]]:
        now = self._clock()
        cap = "" if absolute is None else _time(absolute)
        op = _Call(self._load_touch, (self.prefix + sid,), (_time(now), _time(now + idle), cap))
        prefix = self.prefix

        def touched(reply: Any) -> Record | None:
            # The script's reply is an HGETALL's (see _LOAD_TOUCH_BODY); 0: gone, -1: not a hash.
            if not isinstance(reply, list):
                if reply == -1:
                    _malformed(prefix, "the key is not a hash")
                return None
            return _record(prefix, reply, now)

        return op, touched

    def save(self, sid: str, record: Record, replaces: str | None) -> tuple[_Call | _Delete, ...]:
        key = self.prefix + sid
        old = self.prefix + replaces if replaces is not None and replaces != sid else None
        now = self._clock()
        ttl = _ttl_ms(record.expires, now)
        args = (_time(record.created), _time(record.accessed), _time(record.expires), ttl, *_fields(record.data))
        if ttl == 0:  # already expired: write nothing, and leave no live key behind
            return (_Delete((key,) if old is None else (key, old)),)
        if old is None:
            return (_Call(_SAVE, (key,), args),)
        if self._cluster and key_slot(key.encode()) != key_slot(old.encode()):
            # Cluster: one script cannot touch keys in two slots. Write the new key
            # first, so a failure in between leaves the old session, never none.
            return (_Call(_SAVE, (key,), args), _Delete((old,)))
        return (_Call(_SAVE, (key, old), args),)

    def merge(self, sid: str, change: Change, expires: float) -> tuple[_Call, Callable[[Any], bool]]:
        now = self._clock()
        deleted = [] if change.cleared else [_field(key) for key in change.deleted]
        args = (_time(now), _time(expires), _ttl_ms(expires, now), int(change.cleared), len(deleted))
        key = self.prefix + sid
        return _Call(self._merge, (key,), (*args, *deleted, *_fields(change.set)), reads_back=key), bool

    def touch(self, sid: str, expires: float) -> tuple[_Call, Callable[[Any], bool]]:
        now = self._clock()
        return _Call(self._touch, (self.prefix + sid,), (_time(now), _time(expires), _ttl_ms(expires, now))), bool

    def delete(self, sid: str) -> _Op:
        return _delete_op(self.prefix, sid, self._cluster)

    def index_user(self, user: str, sid: str) -> _Flow[None] | None:
        return _index_flow(self.prefix, user, sid, self._clock(), self._cluster)

    def user_sessions(self, user: str) -> _Flow[list[SessionInfo]]:
        return _list_flow(self.prefix, user, self._clock(), self._cluster)

    def revoke_user(self, user: str) -> _Flow[list[str]]:
        return _revoke_flow(self.prefix, user, self._clock(), self._cluster)


def _malformed(prefix: str, reason: str) -> None:
    # Never the id (or the key, which contains it).
    security_log.warning("malformed session record under Redis prefix %r ignored: %s", prefix, reason)


def _is_wrong_type(error: BaseException) -> bool:
    """A reply error of a key that is not a hash (redis-py's or the own connections')."""
    return str(error).startswith("WRONGTYPE")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's C scanner (what decode() calls after its whitespace scans), typed loosely by typeshed.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _json_value(text: str) -> Any:
    """``_DECODER.decode(text)``, without its two whitespace scans when there is none (json.dumps writes none)."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        return _DECODER.decode(text)  # surrounding whitespace is fine; anything else raises as before
    return value


def _record(prefix: str, raw: Mapping[bytes | str, bytes | str] | list[Any], now: float) -> Record | None:
    """Decode an ``HGETALL`` reply; ``None`` (and a warning, if malformed) unless it is a live record.

    ``raw`` is redis-py's dict, or the reply as the lean connections give it: a
    flat list of fields and values.
    """
    if not raw:
        return None
    if isinstance(raw, list):
        fields = iter(raw)
        pairs: Iterable[tuple[Any, Any]] = zip(fields, fields, strict=False)  # HGETALL: always pairs
    else:
        pairs = raw.items()
    data: dict[str, Any] = {}
    # A missing time reads as NaN: one check covers missing and non-finite metadata.
    created = accessed = expires = math.nan
    for name, value in pairs:
        field = name if type(name) is bytes else name.encode("utf-8")
        try:
            if field[:1] == b".":
                text = value.decode("utf-8") if type(value) is bytes else value  # strict: planted bytes fail
                data[field[1:].decode("utf-8")] = _json_value(text)
            elif field == _EXPIRES:
                expires = float(value)
            elif field == _ACCESSED:
                accessed = float(value)
            elif field == _CREATED:
                created = float(value)
            # Any other field is reserved for later versions: ignored, never decoded.
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a bad float, "[[[[..."
            _malformed(prefix, "a field is not valid JSON" if field[:1] == b"." else "a time is not a number")
            return None
    if not (math.isfinite(created) and math.isfinite(accessed) and math.isfinite(expires)):
        _malformed(prefix, "the hash lacks its created/accessed/expires metadata")
        return None
    if expires <= now:
        return None
    return Record(data, created=created, accessed=accessed, expires=expires)

"""The connect-redis layout: express-session's JSON strings, shared with Node (see the package docs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from redis.crc import key_slot

from ...codecs import encode_express, iso_date
from ...exceptions import NotSerializable
from ...records import Change, Record, SessionInfo
from .._express import NO_CHANGE, check_idle, choose_layout, express_record, no_index, touched
from ._constants import _LAYOUTS, CONNECT_REDIS_PREFIX, DEFAULT_PREFIX, Layout
from ._express_scripts import _CONNECT_LOAD, _CONNECT_SAVE, _CONNECT_WRITE
from ._hashes import _malformed
from ._index import _delete_op
from ._ops import _Arg, _Call, _Delete, _field, _Flow, _Op, _ttl_ms


def _check_layout(layout: object) -> Layout:
    return choose_layout(layout, _LAYOUTS)


def _json_text(key: str, value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:  # not JSON, NaN, circular, lone surrogate
        raise NotSerializable(key, error) from None


_NO_CHANGE: Final = NO_CHANGE


def _default_prefix(prefix: str | None, layout: object) -> object:
    if prefix is not None:
        return prefix
    return CONNECT_REDIS_PREFIX if layout == "connect-redis" else DEFAULT_PREFIX


def _connect_idle(now: float, idle: float, absolute: float | None) -> float:
    return check_idle("connect-redis", now, idle, absolute)


def _connect_save_steps(
    prefix: str, sid: str, record: Record, replaces: str | None, now: float, cluster: bool
) -> tuple[_Call | _Delete, ...]:
    key = prefix + sid
    old = prefix + replaces if replaces is not None and replaces != sid else None
    ttl = _ttl_ms(record.expires, now)
    try:
        text = encode_express(record.data, record.expires, now).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise NotSerializable("?", error) from None
    if ttl == 0:
        return (_Delete((key,) if old is None else (key, old)),)
    if old is None:
        return (_Call(_CONNECT_SAVE, (key,), (text, ttl)),)
    if cluster and key_slot(key.encode()) != key_slot(old.encode()):
        return (_Call(_CONNECT_SAVE, (key,), (text, ttl)), _Delete((old,)))
    return (_Call(_CONNECT_SAVE, (key, old), (text, ttl)),)


def _connect_write_step(prefix: str, sid: str, change: Change, expires: float, now: float) -> _Call:
    deleted = [] if change.cleared else [_field(key)[1:] for key in change.deleted]
    args: list[_Arg] = [
        iso_date(expires),
        _ttl_ms(expires, now),
        iso_date(now),
        int(change.cleared),
        len(deleted),
        *deleted,
    ]
    for key, value in change.set.items():
        name = _field(key)[1:]
        args += (name, _json_text(key, key), _json_text(key, value))
    return _Call(_CONNECT_WRITE, (prefix + sid,), tuple(args))


def _connect_record(prefix: str, text: bytes | str, pttl: int, now: float) -> Record | None:
    """A connect-redis value and its ``PTTL`` as a record; ``None`` (and a warning) unless it is one."""
    try:
        # No TTL (connect-redis' disableTTL): the cookie's expires decides.
        return express_record(text, None if pttl == -1 else now + pttl / 1000, now)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, no cookie object
        _malformed(prefix, "the value is not an express-session record")
        return None


def _connect_load_result(prefix: str, reply: Any, now: float) -> Record | None:
    if not isinstance(reply, list):  # 0: missing; -1: not a string
        if reply == -1:
            _malformed(prefix, "the key is not a string")
        return None
    return _connect_record(prefix, reply[0], int(reply[1]), now)


def _connect_write_result(prefix: str, reply: Any) -> bool:
    if isinstance(reply, (bytes, str)):
        return True
    if reply == -1:
        _malformed(prefix, "the value is not an express-session record")
    return False


def _connect_touched(prefix: str, reply: Any, expires: float, now: float) -> Record | None:
    """The record a ``load_touch`` write left behind (its expiry the new one)."""
    if not _connect_write_result(prefix, reply):
        return None
    return touched(_connect_record(prefix, reply, _ttl_ms(expires, now), now), expires, now)


class _ConnectRedis:
    """The connect-redis layout: what each verb runs (express-session's JSON strings) and what it returns.

    No user index; no creation time (``absolute_timeout`` is refused); loads
    and writes are carried out at once, never split.
    """

    name: Final = "connect-redis"
    splits: Final = False
    cacheable: Final = False
    scripts: Final = (_CONNECT_LOAD, _CONNECT_SAVE, _CONNECT_WRITE)

    def __init__(self, prefix: str, clock: Callable[[], float], *, cluster: bool) -> None:
        self.prefix = prefix
        self._clock = clock
        self._cluster = cluster
        self._finish_write = self._written  # one bound method, not one per request

    def load(self, sid: str) -> tuple[_Call, Callable[[Any], Record | None]]:
        now = self._clock()
        prefix = self.prefix
        return _Call(_CONNECT_LOAD, (prefix + sid,)), lambda reply: _connect_load_result(prefix, reply, now)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> tuple[_Call, Callable[[Any], Record | None]]:
        now = self._clock()
        expires = _connect_idle(now, idle, absolute)
        prefix = self.prefix
        op = _connect_write_step(prefix, sid, _NO_CHANGE, expires, now)
        return op, lambda reply: _connect_touched(prefix, reply, expires, now)

    def save(self, sid: str, record: Record, replaces: str | None) -> tuple[_Call | _Delete, ...]:
        return _connect_save_steps(self.prefix, sid, record, replaces, self._clock(), self._cluster)

    def merge(self, sid: str, change: Change, expires: float) -> tuple[_Call, Callable[[Any], bool]]:
        return _connect_write_step(self.prefix, sid, change, expires, self._clock()), self._finish_write

    def touch(self, sid: str, expires: float) -> tuple[_Call, Callable[[Any], bool]]:
        # The JSON's cookie.expires moves with the TTL.
        return _connect_write_step(self.prefix, sid, _NO_CHANGE, expires, self._clock()), self._finish_write

    def _written(self, reply: Any) -> bool:
        return _connect_write_result(self.prefix, reply)

    def delete(self, sid: str) -> _Op:
        return _delete_op(self.prefix, sid, self._cluster)

    def index_user(self, user: str, sid: str) -> _Flow[None] | None:
        return None  # no index to keep

    def user_sessions(self, user: str) -> _Flow[list[SessionInfo]]:
        no_index(self.name)

    def revoke_user(self, user: str) -> _Flow[list[str]]:
        no_index(self.name)

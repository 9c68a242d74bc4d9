"""The connect-redis layout: express-session's JSON strings, shared with Node (see the package docs)."""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

from redis.crc import key_slot

from ...codecs import decode_express, encode_express, iso_date, record_expiry
from ...exceptions import ConfigError, NotSerializable
from ...records import Change, Record
from ._constants import _LAYOUTS, CONNECT_REDIS_PREFIX, DEFAULT_PREFIX, Layout
from ._express_scripts import _CONNECT_SAVE, _CONNECT_WRITE
from ._hashes import _malformed
from ._ops import _Arg, _field, _Step, _ttl_ms


def _check_layout(layout: object) -> Layout:
    if layout not in _LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(map(repr, _LAYOUTS))}, not {layout!r}")
    return layout


def _json_text(key: str, value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:  # not JSON, NaN, circular, lone surrogate
        raise NotSerializable(key, error) from None


_NO_CHANGE: Final = Change(set={})


def _default_prefix(prefix: str | None, layout: object) -> object:
    if prefix is not None:
        return prefix
    return CONNECT_REDIS_PREFIX if layout == "connect-redis" else DEFAULT_PREFIX


def _connect_idle(now: float, idle: float, absolute: float | None) -> float:
    if absolute is not None:
        raise ConfigError("absolute_timeout", "the connect-redis layout keeps no creation time to count it from")
    return now + idle


def _connect_save_steps(
    prefix: str, sid: str, record: Record, replaces: str | None, now: float, cluster: bool
) -> tuple[_Step, ...]:
    key = prefix + sid
    old = prefix + replaces if replaces is not None and replaces != sid else None
    ttl = _ttl_ms(record.expires, now)
    try:
        text = encode_express(record.data, record.expires, now).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise NotSerializable("?", error) from None
    if ttl == 0:
        return (_Step(None, (key,) if old is None else (key, old)),)
    if old is None:
        return (_Step(_CONNECT_SAVE, (key,), (text, ttl)),)
    if cluster and key_slot(key.encode()) != key_slot(old.encode()):
        return (_Step(_CONNECT_SAVE, (key,), (text, ttl)), _Step(None, (old,)))
    return (_Step(_CONNECT_SAVE, (key, old), (text, ttl)),)


def _connect_write_step(prefix: str, sid: str, change: Change, expires: float, now: float) -> _Step:
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
    return _Step(_CONNECT_WRITE, (prefix + sid,), tuple(args))


def _connect_record(prefix: str, text: bytes | str, pttl: int, now: float) -> Record | None:
    """A connect-redis value and its ``PTTL`` as a record; ``None`` (and a warning) unless it is one."""
    try:
        data = decode_express(text)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, no cookie object
        _malformed(prefix, "the value is not an express-session record")
        return None
    # No TTL (connect-redis' disableTTL): the cookie's expires decides.
    expires = record_expiry(data, None if pttl == -1 else now + pttl / 1000)
    if expires <= now:
        return None
    # connect-redis keeps no creation or access time: both read as now.
    return Record(data, created=now, accessed=now, expires=expires)


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
    record = _connect_record(prefix, reply, _ttl_ms(expires, now), now)
    return None if record is None else Record(record.data, created=now, accessed=now, expires=expires)


def _no_index(layout: str) -> NoReturn:
    raise ConfigError("layout", f"the {layout} layout keeps no per-user index (user_sessions, revoke_user)")

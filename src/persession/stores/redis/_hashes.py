"""The persession layout: one hash per session; the steps that write it and the decoder of what it holds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from redis.crc import key_slot

from ...records import Change, Record
from ._constants import _ACCESSED, _CREATED, _EXPIRES, security_log
from ._ops import _field, _fields, _Step, _time, _ttl_ms
from ._scripts import _LOAD_TOUCH, _LOAD_TOUCH_INDEXED, _MERGE, _MERGE_INDEXED, _SAVE, _TOUCH, _TOUCH_INDEXED


def _save_steps(
    prefix: str, sid: str, record: Record, replaces: str | None, now: float, cluster: bool
) -> tuple[_Step, ...]:
    key = prefix + sid
    old = prefix + replaces if replaces is not None and replaces != sid else None
    ttl = _ttl_ms(record.expires, now)
    args = (_time(record.created), _time(record.accessed), _time(record.expires), ttl, *_fields(record.data))
    if ttl == 0:  # already expired: write nothing, and leave no live key behind
        return (_Step(None, (key,) if old is None else (key, old)),)
    if old is None:
        return (_Step(_SAVE, (key,), args),)
    if cluster and key_slot(key.encode()) != key_slot(old.encode()):
        # Cluster: one script cannot touch keys in two slots. Write the new key
        # first, so a failure in between leaves the old session, never none.
        return (_Step(_SAVE, (key,), args), _Step(None, (old,)))
    return (_Step(_SAVE, (key, old), args),)


def _merge_step(prefix: str, sid: str, change: Change, expires: float, now: float, cluster: bool) -> _Step:
    deleted = [] if change.cleared else [_field(key) for key in change.deleted]
    args = (_time(now), _time(expires), _ttl_ms(expires, now), int(change.cleared), len(deleted))
    script = _MERGE if cluster else _MERGE_INDEXED
    return _Step(script, (prefix + sid,), (*args, *deleted, *_fields(change.set)))


def _touch_step(prefix: str, sid: str, expires: float, now: float, cluster: bool) -> _Step:
    script = _TOUCH if cluster else _TOUCH_INDEXED
    return _Step(script, (prefix + sid,), (_time(now), _time(expires), _ttl_ms(expires, now)))


def _load_touch_step(prefix: str, sid: str, idle: float, absolute: float | None, now: float, cluster: bool) -> _Step:
    # In a cluster the index key is in another slot: the script leaves it alone, as touch does.
    script = _LOAD_TOUCH if cluster else _LOAD_TOUCH_INDEXED
    cap = "" if absolute is None else _time(absolute)
    return _Step(script, (prefix + sid,), (_time(now), _time(now + idle), cap))


def _load_touch_result(prefix: str, reply: Any, now: float) -> Record | None:
    """Decode the ``load_touch`` script's reply like an ``HGETALL`` (see :data:`_LOAD_TOUCH_BODY`)."""
    if not isinstance(reply, list):  # 0: gone; -1: not a hash
        if reply == -1:
            _malformed(prefix, "the key is not a hash")
        return None
    return _record(prefix, reply, now)


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

"""What the connect-redis and connect-mongo layouts share: express-session's rules, written once.

Both keep express-session's JSON text and no creation time, so both refuse
an ``absolute_timeout`` and a per-user index in the same words, and decode a
stored text into a :class:`~persession.records.Record` the same way. Nothing
here does I/O or imports a backend.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, NoReturn, TypeVar, cast

from ..codecs import decode_express, record_expiry
from ..exceptions import ConfigError
from ..records import Change, Record

_Name = TypeVar("_Name")

#: The change a touch applies: nothing but the expiry moves.
NO_CHANGE: Final = Change(set={})


def choose_layout(name: object, names: Collection[_Name], option: str = "layout") -> _Name:
    """``name`` if it is one of ``names`` (a tuple, or a mapping's keys); else a :class:`ConfigError` naming ``option``.

    The message is the one every store gives: ``must be one of 'a', 'b', not 'c'``.
    """
    try:
        known = name in names
    except TypeError:  # an unhashable name asked of a mapping
        known = False
    if not known:
        raise ConfigError(option, f"must be one of {', '.join(map(repr, names))}, not {name!r}")
    return cast("_Name", name)


def check_idle(layout: str, now: float, idle: float, absolute: float | None) -> float:
    """A rolling load's new expiry, ``now + idle``; no ``absolute_timeout``: ``layout`` keeps no creation time."""
    if absolute is not None:
        raise ConfigError("absolute_timeout", f"the {layout} layout keeps no creation time to count it from")
    return now + idle


def no_index(layout: str) -> NoReturn:
    """Refuse ``user_sessions`` and ``revoke_user``: ``layout`` keeps no per-user index."""
    raise ConfigError("layout", f"the {layout} layout keeps no per-user index (user_sessions, revoke_user)")


def express_record(text: str | bytes, store_expiry: float | None, now: float) -> Record | None:
    """The record an express-session text holds, ``None`` once it expired; :class:`ValueError` if it is not one.

    ``store_expiry`` is the store's own expiry (a TTL, an ``expires`` field)
    or ``None`` when it keeps none (:func:`~persession.codecs.record_expiry`).
    The caller logs the :class:`ValueError` without the id.
    """
    data = decode_express(text)
    expires = record_expiry(data, store_expiry)
    if expires <= now:
        return None
    # express-session's stores keep no creation or access time: both read as now.
    return Record(data, created=now, accessed=now, expires=expires)


def touched(record: Record | None, expires: float, now: float) -> Record | None:
    """What a ``load_touch`` left behind: the record written back, with its new expiry."""
    return None if record is None else Record(record.data, created=now, accessed=now, expires=expires)

"""The per-user index and revocations, as flows of round trips (see the package docs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from ...records import SessionInfo
from ._ops import _Batch, _Call, _Flow, _Op, _time
from ._scripts import _ADD, _DELETE, _INDEX, _LIST, _PUBLISH, _REVOKE

#: Goes between the prefix and the user id in an index key (see the package docs).
_USER: Final = "user:"
#: Goes after the prefix to make the revocation channel.
_REVOKED: Final = "revoked"
#: What the flows below may run (loaded when a connection opens).
_INDEX_SCRIPTS: Final = (_ADD, _DELETE, _INDEX, _LIST, _PUBLISH, _REVOKE)


def _user_key(prefix: str, user: str) -> str:
    if not isinstance(user, str):
        raise TypeError(f"a user id is a str, not {type(user).__name__}")
    return prefix + _USER + user


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _info(sid: bytes | str, meta: Sequence[Any], now: float) -> SessionInfo | None:
    """A session's created/accessed/expires replies as :class:`SessionInfo`; ``None`` unless live."""
    try:
        created, accessed, expires = (float(_text(value)) for value in meta)
    except (TypeError, ValueError):  # missing (None) or not a number
        return None
    if not all(math.isfinite(t) for t in (created, accessed, expires)) or expires <= now:
        return None
    return SessionInfo(_text(sid), created=created, accessed=accessed, expires=expires)


def _oldest_first(infos: list[SessionInfo]) -> list[SessionInfo]:
    return sorted(infos, key=lambda info: (info.created, info.sid))


def _meta_reads(prefix: str, sids: Sequence[str]) -> _Batch:
    return _Batch(tuple(("HMGET", prefix + sid, "created", "accessed", "expires") for sid in sids), tolerant=True)


def _live_infos(sids: Sequence[str], replies: Sequence[Any], now: float) -> tuple[list[SessionInfo], list[str]]:
    """Split ``sids`` into the live sessions' infos and the dead ids, from :func:`_meta_reads` replies."""
    live: list[SessionInfo] = []
    dead: list[str] = []
    for sid, reply in zip(sids, replies, strict=True):
        info = None if isinstance(reply, Exception) else _info(sid, reply, now)
        if info is None:
            dead.append(sid)
        else:
            live.append(info)
    return live, dead


def _delete_op(prefix: str, sid: str, cluster: bool) -> _Op:
    """Delete one session and announce it, in one round trip."""
    key, channel = prefix + sid, prefix + _REVOKED
    if cluster:
        return _Call(_DELETE, (key,), (channel, sid))
    return _Batch((("DEL", key), ("PUBLISH", channel, sid)), keys=(key,))


def _members_flow(index: str) -> _Flow[list[str]]:
    (members,) = yield _Batch((("SMEMBERS", index),))
    return sorted(_text(member) for member in members)


def _prune_flow(prefix: str, index: str, sids: list[str], now: float) -> _Flow[list[SessionInfo]]:
    """Cluster: the live sessions among ``sids``; the dead are removed from ``index``."""
    if not sids:
        return []
    replies = yield _meta_reads(prefix, sids)
    live, dead = _live_infos(sids, replies, now)
    if dead:
        yield _Batch((("SREM", index, *dead),))
    return live


def _index_flow(prefix: str, user: str, sid: str, now: float, cluster: bool) -> _Flow[None]:
    index, key = _user_key(prefix, user), prefix + sid
    if not cluster:
        yield _Call(_INDEX, (key, index), (_time(now), prefix, sid))
        return
    # Cluster: the session, the index and the other sessions are in different slots.
    (meta,) = yield _meta_reads(prefix, [sid])
    if isinstance(meta, Exception) or _info(sid, meta, now) is None:
        return
    members = yield _Call(_ADD, (index,), (sid,))
    yield from _prune_flow(prefix, index, sorted(_text(member) for member in members), now)


def _list_flow(prefix: str, user: str, now: float, cluster: bool) -> _Flow[list[SessionInfo]]:
    index = _user_key(prefix, user)
    if not cluster:
        rows = yield _Call(_LIST, (index,), (_time(now), prefix))
        infos = [_info(row[0], row[1:], now) for row in rows]
        return _oldest_first([info for info in infos if info is not None])
    sids = yield from _members_flow(index)
    live = yield from _prune_flow(prefix, index, sids, now)
    return _oldest_first(live)


def _revoke_flow(prefix: str, user: str, now: float, cluster: bool) -> _Flow[list[str]]:
    index, channel = _user_key(prefix, user), prefix + _REVOKED
    if not cluster:
        revoked = yield _Call(_REVOKE, (index,), (_time(now), prefix, channel), wide=True)
        return sorted(_text(sid) for sid in revoked)
    # Cluster: until the index is empty, read its members, delete their sessions,
    # announce the live ones, and only then remove them from the index; a session
    # indexed meanwhile is caught by the next pass, and a failure leaves the
    # index naming every session not yet deleted.
    revoked_ids: list[str] = []
    while sids := (yield from _members_flow(index)):
        reads = _meta_reads(prefix, sids).commands
        replies = yield _Batch(
            tuple(command for sid, read in zip(sids, reads, strict=True) for command in (read, ("DEL", prefix + sid))),
            tolerant=True,
        )
        for reply in replies[1::2]:  # the DELs
            if isinstance(reply, Exception):
                raise reply
        live, _ = _live_infos(sids, replies[0::2], now)
        live_ids = [info.sid for info in live]
        if live_ids:
            yield _Call(_PUBLISH, (), (channel, *live_ids))
        yield _Batch((("SREM", index, *sids),))
        revoked_ids += live_ids
    return sorted(revoked_ids)

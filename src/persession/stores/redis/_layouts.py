"""The Redis layouts, as the stores see them: one protocol, and the one place a layout name becomes an object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ...records import Change, Record, SessionInfo
from ._connect_redis import _check_layout, _ConnectRedis, _default_prefix
from ._hashes import _Hashes
from ._ops import _Call, _check_prefix, _Delete, _Flow, _Op
from ._scripts import _Script


class _Layout(Protocol):
    """What a store asks of its layout (for typing only: never checked at run time).

    A one-round-trip verb gives ``(op, finish)``: the op to run and what turns
    its reply into the verb's result. A verb of several round trips gives a
    flow (:data:`._ops._Flow`).
    """

    @property
    def name(self) -> str: ...
    @property
    def splits(self) -> bool: ...
    @property
    def cacheable(self) -> bool: ...
    @property
    def scripts(self) -> tuple[_Script, ...]: ...

    prefix: str

    def load(self, sid: str) -> tuple[_Op, Callable[[Any], Record | None]]: ...
    def load_touch(
        self, sid: str, idle: float, absolute: float | None
    ) -> tuple[_Call, Callable[[Any], Record | None]]: ...
    def save(self, sid: str, record: Record, replaces: str | None) -> tuple[_Call | _Delete, ...]: ...
    def merge(self, sid: str, change: Change, expires: float) -> tuple[_Call, Callable[[Any], bool]]: ...
    def touch(self, sid: str, expires: float) -> tuple[_Call, Callable[[Any], bool]]: ...
    def delete(self, sid: str) -> _Op: ...
    def index_user(self, user: str, sid: str) -> _Flow[None] | None: ...
    def user_sessions(self, user: str) -> _Flow[list[SessionInfo]]: ...
    def revoke_user(self, user: str) -> _Flow[list[str]]: ...


def _make_layout(name: object, prefix: str | None, clock: Callable[[], float], *, cluster: bool) -> _Layout:
    """The layout called ``name``, with its default prefix unless ``prefix`` is given.

    :raises ConfigError: the name is not a layout, or the prefix not a str.
    """
    chosen = _check_layout(name)
    key_prefix = _check_prefix(_default_prefix(prefix, chosen))
    if chosen == "connect-redis":
        return _ConnectRedis(key_prefix, clock, cluster=cluster)
    return _Hashes(key_prefix, clock, cluster=cluster)

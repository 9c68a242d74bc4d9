"""What the stores run (script calls, DELs, pipelined batches) and how values become arguments."""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Mapping
from typing import Any, TypeAlias, TypeVar

from ...exceptions import ConfigError, NotSerializable
from ._constants import _DATA, DEFAULT_PREFIX
from ._scripts import _Script

_T = TypeVar("_T")

_Arg: TypeAlias = bytes | str | int


class _Call:
    """One script call (``EVALSHA``, ``EVAL`` when the server lacks the script).

    For client-side caching: ``reads_back`` names the hash the script leaves
    behind (a merge's), read in the same round trip to refresh the cached
    copy; ``wide`` says the script changes sessions it is not given as keys
    (a user's revocation), so the cache forgets everything.
    """

    __slots__ = ("args", "keys", "reads_back", "script", "wide")

    def __init__(
        self,
        script: _Script,
        keys: tuple[str, ...],
        args: tuple[_Arg, ...] = (),
        *,
        reads_back: str | None = None,
        wide: bool = False,
    ) -> None:
        self.script: _Script = script
        self.keys: tuple[str, ...] = keys
        self.args: tuple[_Arg, ...] = args
        self.reads_back: str | None = reads_back
        self.wide: bool = wide


class _Delete:
    """``DEL keys``."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys: tuple[str, ...] = keys


class _Read:
    """``HGETALL key``: the flat reply, or (a key that is not a hash) the ``WRONGTYPE`` error, returned, not raised."""

    __slots__ = ("key", "keys")

    def __init__(self, key: str) -> None:
        self.key: str = key
        self.keys: tuple[str, ...] = (key,)


class _Batch:
    """One round trip of plain commands, pipelined without a transaction (one per node in a cluster).

    The result is the list of replies. With ``tolerant``, a command's error is
    its reply (a ``WRONGTYPE`` read means "not a session"); otherwise it raises.
    ``keys`` are the sessions it changes, for client-side caching; ``None``:
    it does not say (the user-index operations), so a cache forgets everything.
    """

    __slots__ = ("commands", "keys", "tolerant")

    def __init__(
        self, commands: tuple[tuple[_Arg, ...], ...], tolerant: bool = False, keys: tuple[str, ...] | None = None
    ) -> None:
        self.commands: tuple[tuple[_Arg, ...], ...] = commands
        self.tolerant: bool = tolerant
        self.keys: tuple[str, ...] | None = keys


#: What a store's transport runs: each is one round trip.
_Op: TypeAlias = _Call | _Delete | _Read | _Batch
#: A sequence of round trips whose later steps depend on earlier replies, written once for both
#: flavours: the store sends each op's reply back in and returns the flow's value.
_Flow: TypeAlias = Generator[_Op, Any, _T]


def _commands(op: _Op) -> tuple[tuple[_Arg, ...], ...]:
    if type(op) is _Read:
        return (("HGETALL", op.key),)
    if type(op) is _Call:
        return (("EVALSHA", op.script.sha, len(op.keys), *op.keys, *op.args),)
    if type(op) is _Delete:
        return (("DEL", *op.keys),)
    return op.commands  # type: ignore[union-attr]  # the one op left: a _Batch


def _eval(call: _Call) -> tuple[_Arg, ...]:
    return ("EVAL", call.script.text, len(call.keys), *call.keys, *call.args)


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise ConfigError("prefix", f"must be a str such as {DEFAULT_PREFIX!r}, not {type(prefix).__name__}")
    return prefix


def _ttl_ms(expires: float, now: float) -> int:
    """The Redis TTL for ``expires``: rounded up, so Redis never drops a record early; 0 when past."""
    return max(0, math.ceil((expires - now) * 1000))


def _time(value: float) -> str:
    return repr(float(value))  # repr round-trips a float exactly


def _field(key: object) -> bytes:
    if not isinstance(key, str):
        raise NotSerializable(repr(key), TypeError("session keys must be str"))
    try:
        return (_DATA + key).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise NotSerializable(key, error) from None


# json.dumps and json.loads with options build an encoder or decoder per call: these are built once.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _fields(data: Mapping[str, Any]) -> list[_Arg]:
    """``field, json, field, json, ...`` for ``data``; raises before any I/O if a value is not JSON."""
    flat: list[_Arg] = []
    for key, value in data.items():
        field = _field(key)
        try:
            text = _COMPACT.encode(value).encode("utf-8")
        except (TypeError, ValueError) as error:  # not JSON, NaN, circular, lone surrogate
            raise NotSerializable(key, error) from None
        flat += (field, text)
    return flat

"""redis-py's errors and those of persession's own connections as persession's: the one place they are translated."""

from __future__ import annotations

from typing import Final

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...exceptions import StoreError, StoreUnavailable
from .._errors import ErrorMap
from ._own import (
    AuthFailed,
    Loading,
    NoPermission,
    NoScript,
    OwnError,
    ReadOnly,
    ReplyError,
    Timeout,
    Unreachable,
)

#: The redis-py class a StoreError's ``original_error`` gets for an error of persession's own connections
#: (the first that matches), so ``original_error`` stays "the driver's error" whichever connections failed.
_REDIS_PY_CLASSES: Final[tuple[tuple[type[OwnError], type[RedisError]], ...]] = (
    (AuthFailed, AuthenticationError),
    (NoScript, NoScriptError),
    (ReadOnly, ReadOnlyError),
    (Loading, BusyLoadingError),
    (NoPermission, NoPermissionError),
    (ReplyError, ResponseError),
    (Unreachable, RedisConnectionError),  # includes ProtocolError
    (Timeout, RedisTimeoutError),
)


def _as_redis_py(error: OwnError) -> RedisError:
    """The redis-py error ``error`` stands for, with the same message, caused by it."""
    kind: type[RedisError] = RedisError
    for own, redis_py in _REDIS_PY_CLASSES:
        if isinstance(error, own):
            kind = redis_py
            break
    translated = kind(*error.args)
    translated.__cause__ = error
    return translated


class _MapErrors(ErrorMap):
    """Translate redis-py's errors and :mod:`._own`'s: the one place the Redis stores do so (both flavours use it)."""

    __slots__ = ()

    def translate(self, error: BaseException) -> None:
        if isinstance(error, OwnError):
            # persession's own connections: mapped through the redis-py class each stands for, so both
            # kinds of connection give the same StoreError, message and original_error class.
            error = _as_redis_py(error)
        if isinstance(error, (AuthenticationError, AuthorizationError)):
            # Connection errors by class, but retrying will not help: a configuration problem.
            raise StoreError(f"Redis store refused the credentials: {error}", error) from error
        if isinstance(
            error,
            (
                RedisConnectionError,  # includes BusyLoadingError, MaxConnectionsError, MasterNotFoundError
                RedisTimeoutError,
                ClusterError,  # includes ClusterDownError, MasterDownError
                TryAgainError,  # a cluster slot is migrating
                ReadOnlyError,  # a replica promoted away from us during failover
                RedisClusterException,  # no reachable node, slot not covered
            ),
        ):
            raise StoreUnavailable(f"Redis store unavailable: {error}", error) from error
        if isinstance(error, RedisError):
            raise StoreError(f"Redis store failed: {error}", error) from error


_map_errors = _MapErrors()

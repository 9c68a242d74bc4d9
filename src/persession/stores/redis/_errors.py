"""redis-py's errors as persession's: the one place the Redis stores translate them."""

from __future__ import annotations

from types import TracebackType

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...exceptions import StoreError, StoreUnavailable


class _MapErrors:
    """Translate redis-py's errors: the one place the Redis stores do so (both flavours use it).

    A class, not a ``@contextmanager`` generator: one shared instance costs
    nothing per use, where a generator context manager builds two objects.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is None:
            return
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

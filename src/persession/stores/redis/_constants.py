"""The Redis stores' constants, loggers and the types of the clients they work on."""

from __future__ import annotations

import logging
from typing import Final, Literal, TypeAlias

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

log: logging.Logger = logging.getLogger("persession")
security_log: logging.Logger = logging.getLogger("persession.security")

#: The key prefix: a session lives at ``DEFAULT_PREFIX + session_id``.
DEFAULT_PREFIX: Final = "persession:"
#: The key prefix of the ``connect-redis`` layout (connect-redis' own default).
CONNECT_REDIS_PREFIX: Final = "sess:"
#: How sessions are stored: persession's hashes, or connect-redis' JSON strings.
Layout: TypeAlias = Literal["persession", "connect-redis"]
_LAYOUTS: Final = ("persession", "connect-redis")
#: Seconds a client built from a URL waits for a TCP (or unix socket) connection.
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
#: Seconds a client built from a URL waits for a reply.
DEFAULT_SOCKET_TIMEOUT: Final = 2.0
#: Times a client built from a URL retries a command after a connection error or timeout.
DEFAULT_RETRIES: Final = 1
#: The port of a ``redis+sentinel://`` host given without one.
DEFAULT_SENTINEL_PORT: Final = 26379
#: Connections a client built from a ``redis://``, ``rediss://`` or ``unix://`` URL opens at most.
DEFAULT_MAX_CONNECTIONS: Final = 100
#: Seconds a command waits for a free connection when all are busy.
DEFAULT_POOL_TIMEOUT: Final = 2.0
#: Longest wait, in seconds, of :meth:`AsyncRedisStore.watch_revocations` between resubscribe attempts.
REVOCATION_RETRY_MAX: Final = 5.0
_REVOCATION_RETRY_MIN: Final = 0.1
_POLL_SECONDS: Final = 1.0

#: Clients :class:`RedisStore` works on.
SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
#: Clients :class:`AsyncRedisStore` works on.
AsyncClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel")
_DATA: Final = "."  # every session key's field starts with it; metadata fields never do
_CREATED: Final = b"created"
_ACCESSED: Final = b"accessed"
_EXPIRES: Final = b"expires"

"""persession's own RESP2 connections, for the Redis stores built from a URL: what they send, and nothing else.

Why not redis-py's own connections? On the request path a session store sends
one or two commands per request, and redis-py spends several times the cost of
the round trip itself around each one (its pool, its per-command timeout
tasks, its parser layers): on a 2-core machine, 100-130 µs of CPU per
``HGETALL`` against 15-25 µs here (see :doc:`/benchmarks`). This package keeps
only what the stores need:

- :class:`SyncPool` (:mod:`.sync`): thread-safe, a LIFO of idle sockets, at
  most ``max_connections`` of them (a caller waits up to ``pool_timeout`` for
  one); a forked child never reuses its parent's sockets.
- :class:`AsyncMux` (:mod:`.aio`): one connection per event loop that every
  task shares: commands are written as they come and replies matched in order
  (Redis answers in order), so concurrent requests pipeline instead of
  queueing for a pool.
- Both send a batch of commands in one write and read their replies in one
  go (one round trip), parse with ``hiredis`` when it is installed (a pure
  Python parser otherwise, :mod:`.wire`), bound every connect and reply by a
  timeout, and retry a batch once on a fresh connection when the connection
  failed (every command the stores send is idempotent).
- :class:`Invalidations` (:mod:`.invalidations`): client-side caching's
  invalidation messages; :class:`Address` and :func:`parse_url`
  (:mod:`.address`): where the server is and how to reach it.

Errors are the package's own (:mod:`.errors`, :class:`OwnError` and below),
never redis-py's: an error reply is a :class:`ReplyError` (:class:`NoScript`,
:class:`ReadOnly`, :class:`Loading`... by prefix), a dead or refused
connection :class:`Unreachable`, a reply later than the timeout
:class:`Timeout`. The stores translate them where they translate redis-py's.
Nothing here imports redis-py or the stores (an import-linter contract).

Not a general client: no RESP3, no pub/sub beyond :meth:`AsyncMux.subscribe`,
no cluster or sentinel (the stores use redis-py for those).
"""

from __future__ import annotations

from .address import OPTIONS, Address, parse_url
from .aio import AsyncMux
from .errors import (
    AuthFailed,
    Loading,
    NoPermission,
    NoScript,
    OwnError,
    ProtocolError,
    ReadOnly,
    ReplyError,
    Timeout,
    Unreachable,
    error_reply,
)
from .invalidations import INVALIDATE_CHANNEL, Invalidations
from .sync import Sent, SyncPool, fork_count
from .wire import Arg, Command, PyReader, pack, pack_python, reader

# HIREDIS is not re-exported: reader() reads wire.HIREDIS, so that is the one to patch.
__all__ = [
    "Address",
    "OPTIONS",
    "parse_url",
    "Arg",
    "Command",
    "pack",
    "pack_python",
    "PyReader",
    "reader",
    "OwnError",
    "Unreachable",
    "ProtocolError",
    "Timeout",
    "ReplyError",
    "NoScript",
    "ReadOnly",
    "Loading",
    "NoPermission",
    "AuthFailed",
    "error_reply",
    "SyncPool",
    "Sent",
    "fork_count",
    "Invalidations",
    "INVALIDATE_CHANNEL",
    "AsyncMux",
]

"""Redis stores: :class:`RedisStore` (WSGI) and :class:`AsyncRedisStore` (ASGI).

Both work on a client you pass in, unchanged for a single server, a Sentinel
master (``Sentinel(...).master_for(name)``) and Redis Cluster
(``redis.cluster.RedisCluster`` / ``redis.asyncio.cluster.RedisCluster``)::

    store = RedisStore(redis.Redis(host="cache", socket_timeout=2))
    astore = AsyncRedisStore(redis.asyncio.Redis(host="cache", socket_timeout=2))

or build their own client from a URL with :meth:`RedisStore.from_url` (also
reached through :func:`persession.stores.store_from_url`).

**Layout.** One Redis hash per session, at ``prefix + session_id`` (the prefix
defaults to ``"persession:"``)::

    persession:<id>   created   "1700000000.25"     (Unix seconds, Python repr)
                      accessed  "1700000042.5"
                      expires   "1700003600.125"
                      .user     "42"                (one field per session key:
                      .cart     "[1,2]"              "." + key -> the value's JSON)

Every session key's field starts with ``"."`` and no metadata field does, so a
session key can never collide with the metadata, whatever its name (``""``,
``"created"`` and ``".x"`` included). The key also carries a Redis TTL
(``PEXPIRE``) matching ``expires``, so Redis itself drops dead sessions.
Values are JSON, never pickle: a field that is not JSON, or a hash without
its metadata, loads as no session and logs a warning on
``persession.security``.

**The connect-redis layout.** ``RedisStore(client, layout="connect-redis")``
(or ``?layout=connect-redis`` in the URL) stores sessions as connect-redis
does, to share them with express-session (see :doc:`/express`): one string per
session at ``prefix + session_id`` (prefix default ``"sess:"``), the session's
JSON with express-session's ``cookie`` object first, and a TTL that is the
session's expiry (and is read as such: connect-redis' ``touch`` moves only the
TTL). A key without a TTL (connect-redis' ``disableTTL``) lives until its
cookie's ``expires``, or for ever when that is ``null``
(:func:`~persession.codecs.record_expiry`), and is never written again once
that has passed. ``load`` is one script (``GET`` and ``PTTL``). ``merge``,
``touch`` and ``load_touch`` are one script each that splices the stored
JSON: the members a request changed are replaced in place or appended,
deleted ones dropped, ``cookie.expires`` moved, every other member copied
byte for byte (``cjson`` only validates the text and decodes member names, so
no value is re-encoded), and the result ``SET`` with the new TTL; a missing
key is never written (no resurrection), and a value that is not an
express-session record is left alone and reported as no session. This layout keeps no creation time
(records report the load time) and no per-user index.

**The per-user index.** One Redis set per user, at ``prefix + "user:" +
user_id``, holding the user's session ids; once indexed, a session's hash also
gets an ``index`` field naming that key::

    persession:user:42   {"<id>", "<id>", ...}        (a set; TTL of its longest session)
    persession:<id>      index  "persession:user:42"   (beside created/accessed/expires)

The two kinds of key cannot collide: the index key has a ``":"`` right after
``"user"``, and a session id never contains one (the default signer makes and
accepts only 43 characters of ``[A-Za-z0-9_-]``; a custom
:class:`~persession.signing.SessionIdSigner` must not put ``":"`` in its ids
either). On a single server the set's TTL is kept at least that of its
longest-lived session: ``index_user`` sets it, and ``touch`` and ``merge`` of
an indexed session extend it, so an active session never outlives its index
entry. ``index_user``, ``user_sessions`` and ``revoke_user`` are one
``EVALSHA`` each, which also drop the ids of dead sessions from the set;
``revoke_user`` deletes the sessions and the set atomically. (These scripts
read the session keys the set names, which a single server allows and a
cluster does not: see below.)

**Revocations.** ``delete`` (logout) and ``revoke_user`` publish each deleted
session's id on the channel ``prefix + "revoked"``, in the same round trip
(``delete`` pipelines ``DEL`` and ``PUBLISH``; ``revoke_user`` publishes from
its script). :meth:`AsyncRedisStore.watch_revocations` yields them, in any
process, so a websocket server can close the connections of a logged-out
session. Pub/sub delivers at most once: an id published while a watcher is
disconnected is lost to it.

**Round trips and atomicity.** :meth:`~RedisStore.load` is one ``HGETALL``.
``save``, ``merge`` and ``touch`` are each one ``EVALSHA`` of a short Lua
script, so each is atomic: ``merge`` rewrites only the fields a request
changed (two requests setting different keys both survive) and does nothing
when the session is gone (a slow request cannot resurrect a destroyed
session); ``save(replaces=old)`` writes the new hash and deletes the old key in
the same step. ``load_touch`` (a rolling session's load) is one ``EVALSHA``
too: it moves ``expires`` and ``accessed`` (capped by the absolute timeout,
computed from the stored ``created``), the key's TTL and, on a single server,
the user index's TTL as ``touch`` does, and returns the hash. The first call
of a script on a server adds one ``EVAL``.

**Redis Cluster.** A regenerated session's old and new keys usually hash to
different slots, and no single atomic step can span slots. In a cluster,
``save(replaces=)`` therefore writes the new key first, then deletes the old
one: if the second step fails, the old session outlives the error until its
TTL, but no session is ever lost. A prefix with a hash tag (``"{sessions}:"``)
puts every key in one slot (and on one node), which makes this atomic again at
the price of all sessions living on one shard.

The user index spans slots too, so in a cluster its operations are steps that
each touch one slot (pipelined per node): ``user_sessions`` reads the set,
then the sessions' metadata, then removes dead ids; ``index_user`` checks the
session, adds it (one script on the set) and prunes the same way;
``revoke_user`` reads the set, deletes the sessions, publishes the live ids,
removes them from the set, and repeats until the set is empty, so a session
indexed meanwhile is revoked as well and a failure part-way leaves every
surviving session still in the set. A cluster's ``touch`` and ``merge`` cannot
reach the set, so there it has **no TTL**: it lives on, pruned of dead ids
whenever the user logs in, is listed or is revoked. ``delete`` is one script
(``DEL`` and ``PUBLISH``: redis-py refuses ``PUBLISH`` in cluster pipelines),
and revocations use regular (not sharded) pub/sub: every node forwards a
``PUBLISH`` to the whole cluster, so the watcher may subscribe on any node.

**Connections.** A store built by :meth:`RedisStore.from_url` on a
``redis://``, ``rediss://`` or ``unix://`` URL does not use redis-py's
connections but its own, which send exactly what the store needs (RESP2,
parsed by ``hiredis`` when installed): ``RedisStore`` keeps a thread-safe
pool of blocking sockets (a forked worker never reuses its parent's);
``AsyncRedisStore`` keeps one connection per event loop shared by every
request, whose commands are pipelined (Redis answers in order) and whose
writes during one turn of the loop go out in one system call. A request's
round trip costs several times less CPU than through redis-py. A
``redis+sentinel://`` URL, and any client passed to the constructor, use
redis-py.

**Timeouts.** Stores built from a URL wait at most
:data:`DEFAULT_CONNECT_TIMEOUT` seconds to connect and
:data:`DEFAULT_SOCKET_TIMEOUT` seconds for a reply (an asyncio store notices
a late reply within a quarter of that more), and retry a failed command
:data:`DEFAULT_RETRIES` time(s) on a new connection without backoff (every
command here is idempotent), so an unreachable server becomes
:class:`~persession.StoreUnavailable` within about
``(1 + DEFAULT_RETRIES) * timeout`` instead of hanging a worker. A
synchronous store holds up to :data:`DEFAULT_MAX_CONNECTIONS` connections; a
thread that finds them all busy waits up to :data:`DEFAULT_POOL_TIMEOUT`
seconds for one. A Sentinel client's pool cannot wait: past
``max_connections`` it fails at once. A client you pass in keeps its own
settings: give it timeouts.
"""

from __future__ import annotations

from ...exceptions import MissingExtra

try:
    # Every part of redis-py the submodules use, imported before any of them: without redis-py (or
    # with one too old) importing the package fails here, saying how to install it.
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.backoff
    import redis.cluster
    import redis.crc
    import redis.exceptions
    import redis.retry
    import redis.sentinel  # noqa: F401  (every line binds the name redis, unused here)
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess
    raise MissingExtra(
        "store",
        f'the Redis stores need redis-py>=5 ({_missing}): pip install "persession-web[redis]"',
        extra="redis",
    ) from _missing

from ._async import AsyncRedisStore
from ._constants import (
    CONNECT_REDIS_PREFIX,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    DEFAULT_RETRIES,
    DEFAULT_SENTINEL_PORT,
    DEFAULT_SOCKET_TIMEOUT,
    REVOCATION_RETRY_MAX,
    Layout,
)
from ._constants import AsyncClient as AsyncClient
from ._constants import SyncClient as SyncClient
from ._sync import RedisStore

__all__ = [
    "AsyncRedisStore",
    "RedisStore",
    "DEFAULT_PREFIX",
    "CONNECT_REDIS_PREFIX",
    "Layout",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_RETRIES",
    "DEFAULT_SENTINEL_PORT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_POOL_TIMEOUT",
    "REVOCATION_RETRY_MAX",
]

# Reprs, tracebacks, pickling and the docs name the public classes where users import them from.
RedisStore.__module__ = __name__
AsyncRedisStore.__module__ = __name__

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

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, Literal, NoReturn, TypeAlias, TypeVar, cast
from urllib.parse import unquote, urlsplit

from ..codecs import decode_express, encode_express, iso_date, record_expiry
from ..core import Action, Plan
from ..exceptions import ConfigError, NotSerializable, StoreError, StoreUnavailable
from ..records import Change, Record, SessionInfo
from .base import PendingLoad, PendingWrite, _need, run_plan

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.cluster
    import redis.retry
    import redis.sentinel
    from redis.backoff import NoBackoff
    from redis.crc import key_slot
    from redis.exceptions import (
        AuthenticationError,
        AuthorizationError,
        ClusterError,
        NoScriptError,
        ReadOnlyError,
        RedisClusterException,
        RedisError,
        ResponseError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from . import _resp
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess
    raise ConfigError(
        "store", f'the Redis stores need redis-py>=5 ({_missing}): pip install "persession-web[redis]"'
    ) from _missing

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

log: logging.Logger = logging.getLogger("persession")
security_log: logging.Logger = logging.getLogger("persession.security")
_T = TypeVar("_T")

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

# -- Lua -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> _Script:
        return cls(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


# Live means: the hash exists and its expires (ARGV[1] is now) is still ahead.
_IF_GONE_RETURN_0 = """
local live = tonumber(redis.call('HGET', KEYS[1], 'expires') or '')
if not live or live <= tonumber(ARGV[1]) then return 0 end
"""

# KEYS: the key[, the key it replaces]. ARGV: created, accessed, expires, ttl_ms, field, json, ...
# Saving over an existing key keeps its 'index' field (the user index it is in).
_SAVE = _Script.of("""
local index = redis.pcall('HGET', KEYS[1], 'index')
if KEYS[2] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'created', ARGV[1], 'accessed', ARGV[2], 'expires', ARGV[3])
if type(index) == 'string' then redis.call('HSET', KEYS[1], 'index', index) end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""")

# Single server only: a session in a user index ('index' names the index key)
# extends that key's TTL to its own, so the index outlives every session in it.
# ARGV[3] is the session's new TTL in milliseconds.
_EXTEND_INDEX = """
local index = redis.call('HGET', KEYS[1], 'index')
if index then
  local left = redis.call('PTTL', index)
  if left >= 0 and left < tonumber(ARGV[3]) then redis.call('PEXPIRE', index, ARGV[3]) end
end
"""

# KEYS: the key. ARGV: now, expires, ttl_ms, cleared (1/0), n, n deleted fields, field, json, ...
_MERGE_BODY = (
    _IF_GONE_RETURN_0
    + """
if ARGV[4] == '1' then
  local kept = redis.call('HMGET', KEYS[1], 'created', 'index')
  redis.call('DEL', KEYS[1])
  if kept[1] then redis.call('HSET', KEYS[1], 'created', kept[1]) end
  if kept[2] then redis.call('HSET', KEYS[1], 'index', kept[2]) end
end
local n = tonumber(ARGV[5])
for i = 6, 5 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], 'accessed', ARGV[1], 'expires', ARGV[2])
for i = 6 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""
)
_MERGE = _Script.of(_MERGE_BODY + "return 1")
_MERGE_INDEXED = _Script.of(_MERGE_BODY + _EXTEND_INDEX + "return 1")

# KEYS: the key. ARGV: now, expires, ttl_ms.
_TOUCH_BODY = (
    _IF_GONE_RETURN_0
    + """
redis.call('HSET', KEYS[1], 'accessed', ARGV[1], 'expires', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""
)
_TOUCH = _Script.of(_TOUCH_BODY + "return 1")
_TOUCH_INDEXED = _Script.of(_TOUCH_BODY + _EXTEND_INDEX + "return 1")

# KEYS: the key. ARGV: now, now + idle, absolute seconds ('' for none).
# load_touch: a live session's expiry becomes min(now + idle, created + absolute)
# and accessed now; returns the hash (HGETALL's reply). Returns 0 when the key is
# missing, expired or just past its absolute limit (then deleted), -1 when it is
# not a hash, and the hash unchanged when its metadata is not three finite
# numbers, so the caller reports it as load() does. Times are written as
# '%.17g', which reads back as the exact double (like Python's repr).
_LOAD_TOUCH_BODY = """
local function finite(value)
  local n = tonumber(value or '')
  if n and n == n and n ~= math.huge and n ~= -math.huge then return n end
  return nil
end
local meta = redis.pcall('HMGET', KEYS[1], 'created', 'accessed', 'expires')
if meta.err then return -1 end
local created, live = finite(meta[1]), finite(meta[3])
if not created or not finite(meta[2]) or not live then return redis.call('HGETALL', KEYS[1]) end
local now = tonumber(ARGV[1])
if live <= now then return 0 end
local expires, text = tonumber(ARGV[2]), ARGV[2]
if ARGV[3] ~= '' then
  local cap = created + tonumber(ARGV[3])
  if cap < expires then expires, text = cap, string.format('%.17g', cap) end
end
if expires <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
local ttl = string.format('%d', math.ceil((expires - now) * 1000))
redis.call('HSET', KEYS[1], 'accessed', ARGV[1], 'expires', text)
redis.call('PEXPIRE', KEYS[1], ttl)
"""
# As _EXTEND_INDEX, with the TTL in the local ``ttl``.
_LOAD_TOUCH_EXTEND_INDEX = """
local index = redis.call('HGET', KEYS[1], 'index')
if index then
  local left = redis.call('PTTL', index)
  if left >= 0 and left < tonumber(ttl) then redis.call('PEXPIRE', index, ttl) end
end
"""
_LOAD_TOUCH = _Script.of(_LOAD_TOUCH_BODY + "return redis.call('HGETALL', KEYS[1])")
_LOAD_TOUCH_INDEXED = _Script.of(_LOAD_TOUCH_BODY + _LOAD_TOUCH_EXTEND_INDEX + "return redis.call('HGETALL', KEYS[1])")

# -- the user index (single server: one script each; see the module docs) --------------------------

# ARGV[1] is now and ARGV[2] the key prefix. A session's created/accessed/expires
# when it is live, else nil (missing, expired, not a hash, or without metadata).
_LIVE_META = """
local function live_meta(sid)
  local meta = redis.pcall('HMGET', ARGV[2] .. sid, 'created', 'accessed', 'expires')
  if type(meta) ~= 'table' or meta.err then return nil end
  local expires = tonumber(meta[3] or '')
  if not tonumber(meta[1] or '') or not tonumber(meta[2] or '') or not expires then return nil end
  if expires <= tonumber(ARGV[1]) then return nil end
  return meta
end
"""

# KEYS: the session key, the index key. ARGV: now, prefix, session id.
# Adds the live session to the index and points the session at it; drops dead
# members; gives the index the TTL of its longest-lived session.
_INDEX = _Script.of(
    _IF_GONE_RETURN_0
    + _LIVE_META
    + """
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'index', KEYS[2])
local longest, forever = 0, false
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if live_meta(sid) then
    local left = redis.call('PTTL', ARGV[2] .. sid)
    if left == -1 then forever = true elseif left > longest then longest = left end
  else
    redis.call('SREM', KEYS[2], sid)
  end
end
if forever then redis.call('PERSIST', KEYS[2]) elseif longest > 0 then redis.call('PEXPIRE', KEYS[2], longest) end
return 1
"""
)

# KEYS: the index key. ARGV: now, prefix. Returns {id, created, accessed, expires} per live session.
_LIST = _Script.of(
    _LIVE_META
    + """
local live = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local meta = live_meta(sid)
  if meta then
    live[#live + 1] = {sid, meta[1], meta[2], meta[3]}
  else
    redis.call('SREM', KEYS[1], sid)
  end
end
return live
"""
)

# KEYS: the index key. ARGV: now, prefix, channel. Deletes every session in the
# index and the index; publishes and returns the ids of the live ones.
_REVOKE = _Script.of(
    _LIVE_META
    + """
local revoked = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local live = live_meta(sid)
  redis.call('DEL', ARGV[2] .. sid)
  if live then
    revoked[#revoked + 1] = sid
    redis.call('PUBLISH', ARGV[3], sid)
  end
end
redis.call('DEL', KEYS[1])
return revoked
"""
)

# -- the same in a cluster, where one script cannot reach keys in other slots -----------------------

# KEYS: the session key. ARGV: channel, session id. (redis-py refuses PUBLISH in cluster pipelines.)
_DELETE = _Script.of("""
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
""")

# No keys (runs on any node). ARGV: channel, session id, ...
_PUBLISH = _Script.of("""
for i = 2, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end
return #ARGV - 1
""")

# KEYS: the index key. ARGV: session id. Returns the members, the new one included.
_ADD = _Script.of("""
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SMEMBERS', KEYS[1])
""")

# -- the connect-redis layout: one JSON string per session (see the module docs) --------------------

# KEYS: the key. Returns {json, pttl}; 0 when the key is missing; -1 when it is not a string.
_CONNECT_LOAD = _Script.of("""
local ok, text = pcall(redis.call, 'GET', KEYS[1])
if not ok then return -1 end
if not text then return 0 end
return {text, redis.call('PTTL', KEYS[1])}
""")

# KEYS: the key[, the key it replaces]. ARGV: json, ttl_ms.
_CONNECT_SAVE = _Script.of("""
if KEYS[2] then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""")

# Splices the stored JSON text: the members a change names are replaced, deleted
# or appended as raw JSON text, every other member is copied byte for byte (so
# cjson never re-encodes a value: no array/object confusion, no float rounding,
# and the member order stays), and the cookie object goes first with its
# 'expires' moved (left null for a browser-session cookie). cjson only checks
# that the text is a JSON object with a cookie object, and decodes member names.
# A key without a TTL (connect-redis' disableTTL) is live until its cookie's
# 'expires' (codecs.record_expiry): Date#toJSON texts compare as their instants
# do, so the script compares the text with now's; any other non-null value is
# already past.
#
# KEYS: the key. ARGV: expires (ISO), ttl_ms, now (ISO), cleared (1/0), n, n
# deleted keys, then (key, key as JSON, value as JSON) per key set.
# Returns the new JSON text; 0 when the key is missing or expired (never
# resurrected); -1 when the stored value is not an express-session record (left
# as it is).
_CONNECT_WRITE = _Script.of(r"""
local function skip_ws(s, i) return string.find(s, '[^ \t\r\n]', i) end
local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if not k then return nil end
    if string.byte(s, k) == 92 then j = k + 2 else return k + 1 end
  end
end
local function skip_value(s, i)
  local c = string.byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '["{}%[%]]', j)
      if not k then return nil end
      if string.byte(s, k) == 34 then
        j = skip_string(s, k)
        if not j then return nil end
      else
        local d = string.byte(s, k)
        if d == 123 or d == 91 then depth = depth + 1 else depth = depth - 1 end
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return string.find(s, '[,}%] \t\r\n]', i) or (#s + 1)
end
-- The members of the JSON object text s: {name, name as stored, value as stored}, in order.
local function members(s)
  local out = {}
  local i = skip_ws(s, 1)
  if not i or string.byte(s, i) ~= 123 then return nil end
  i = skip_ws(s, i + 1)
  if not i then return nil end
  if string.byte(s, i) == 125 then return out end
  while true do
    if string.byte(s, i) ~= 34 then return nil end
    local stop = skip_string(s, i)
    if not stop then return nil end
    local raw = string.sub(s, i, stop - 1)
    local ok, name = pcall(cjson.decode, raw)
    if not ok or type(name) ~= 'string' then return nil end
    i = skip_ws(s, stop)
    if not i or string.byte(s, i) ~= 58 then return nil end
    i = skip_ws(s, i + 1)
    if not i then return nil end
    local after = skip_value(s, i)
    if not after or after <= i then return nil end
    out[#out + 1] = {name, raw, string.sub(s, i, after - 1)}
    i = skip_ws(s, after)
    if not i then return nil end
    local c = string.byte(s, i)
    if c == 125 then return out end
    if c ~= 44 then return nil end
    i = skip_ws(s, i + 1)
    if not i then return nil end
  end
end

local ok, text = pcall(redis.call, 'GET', KEYS[1])
if not ok then return -1 end
if not text then return 0 end
local valid, decoded = pcall(cjson.decode, text)
if not valid or type(decoded) ~= 'table' or type(decoded.cookie) ~= 'table' then return -1 end
local top = members(text)
if not top then return -1 end
local cookie
for _, m in ipairs(top) do if m[1] == 'cookie' then cookie = members(m[3]) end end
if not cookie then return -1 end
if redis.call('PTTL', KEYS[1]) == -1 then
  local at = decoded.cookie.expires
  if at ~= nil and at ~= cjson.null then
    local date = '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$'
    if type(at) ~= 'string' or not string.find(at, date) or at <= ARGV[3] then return 0 end
  end
end

local persistent = false
for _, m in ipairs(cookie) do
  if (m[1] == 'expires' or m[1] == 'originalMaxAge') and m[3] ~= 'null' then persistent = true end
end
local expires = persistent and ('"' .. ARGV[1] .. '"') or 'null'
local parts, moved = {}, false
for _, m in ipairs(cookie) do
  if m[1] == 'expires' then
    parts[#parts + 1] = m[2] .. ':' .. expires
    moved = true
  else
    parts[#parts + 1] = m[2] .. ':' .. m[3]
  end
end
if not moved then parts[#parts + 1] = '"expires":' .. expires end

local out = {'"cookie":{' .. table.concat(parts, ',') .. '}'}
local n = tonumber(ARGV[5])
local deleted, sets, order = {}, {}, {}
for i = 6, 5 + n do deleted[ARGV[i]] = true end
for i = 6 + n, #ARGV, 3 do
  if ARGV[i] ~= 'cookie' then
    sets[ARGV[i]] = ARGV[i + 1] .. ':' .. ARGV[i + 2]
    order[#order + 1] = ARGV[i]
  end
end
local written = {}
if ARGV[4] ~= '1' then
  for _, m in ipairs(top) do
    local name = m[1]
    if name ~= 'cookie' and not written[name] then
      if sets[name] then
        out[#out + 1] = sets[name]
        written[name] = true
      elseif not deleted[name] then
        out[#out + 1] = m[2] .. ':' .. m[3]
        written[name] = true
      end
    end
  end
end
for _, name in ipairs(order) do
  if not written[name] then
    out[#out + 1] = sets[name]
    written[name] = true
  end
end
local result = '{' .. table.concat(out, ',') .. '}'
redis.call('SET', KEYS[1], result, 'PX', ARGV[2])
return result
""")

# -- shared by both flavours: keys, TTLs, the hash, errors -----------------------------------------

_Arg: TypeAlias = bytes | str | int


@dataclass(frozen=True, slots=True)
class _Step:
    """One round trip: a script call, or a DEL of ``keys`` when ``script`` is None."""

    script: _Script | None
    keys: tuple[str, ...]
    args: tuple[_Arg, ...] = ()


@dataclass(frozen=True, slots=True)
class _Batch:
    """One round trip of plain commands, pipelined without a transaction (one per node in a cluster).

    The result is the list of replies. With ``tolerant``, a command's error is
    its reply (a ``WRONGTYPE`` read means "not a session"); otherwise it raises.
    """

    commands: tuple[tuple[_Arg, ...], ...]
    tolerant: bool = False


#: What a flow (below) asks its store to run next.
_Op: TypeAlias = _Step | _Batch
#: A sequence of round trips whose later steps depend on earlier replies, written once for both
#: flavours: the store sends each op's reply back in and returns the flow's value.
_Flow: TypeAlias = Generator[_Op, Any, _T]


class _MapErrors:
    """Translate redis-py's errors: the one place this module does so (both flavours use it).

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


# -- the connect-redis layout, for both flavours ----------------------------------------------------


def _check_layout(layout: object) -> Layout:
    if layout not in _LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(map(repr, _LAYOUTS))}, not {layout!r}")
    return layout


def _json_text(key: str, value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:  # not JSON, NaN, circular, lone surrogate
        raise NotSerializable(key, error) from None


_NO_CHANGE: Final = Change(set={})


def _default_prefix(prefix: str | None, layout: object) -> object:
    if prefix is not None:
        return prefix
    return CONNECT_REDIS_PREFIX if layout == "connect-redis" else DEFAULT_PREFIX


def _split_layout(url: str, layout: Layout | None) -> tuple[str, Layout]:
    """``url`` without its ``layout`` query parameter, and the layout (the keyword's, or the URL's)."""
    if not isinstance(url, str) or "?" not in url:
        return url, _check_layout(layout or "persession")
    base, _, query = url.partition("?")
    kept: list[str] = []
    from_url: str | None = None
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if unquote(name) == "layout":
            from_url = unquote(value)
        elif piece:
            kept.append(piece)
    if layout is not None and from_url is not None and layout != from_url:
        raise ConfigError("layout", f"the URL says layout={from_url!r}, the keyword {layout!r}")
    chosen = _check_layout(layout or from_url or "persession")
    return (f"{base}?{'&'.join(kept)}" if kept else base), chosen


def _connect_idle(now: float, idle: float, absolute: float | None) -> float:
    if absolute is not None:
        raise ConfigError("absolute_timeout", "the connect-redis layout keeps no creation time to count it from")
    return now + idle


def _connect_save_steps(
    prefix: str, sid: str, record: Record, replaces: str | None, now: float, cluster: bool
) -> tuple[_Step, ...]:
    key = prefix + sid
    old = prefix + replaces if replaces is not None and replaces != sid else None
    ttl = _ttl_ms(record.expires, now)
    try:
        text = encode_express(record.data, record.expires, now).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise NotSerializable("?", error) from None
    if ttl == 0:
        return (_Step(None, (key,) if old is None else (key, old)),)
    if old is None:
        return (_Step(_CONNECT_SAVE, (key,), (text, ttl)),)
    if cluster and key_slot(key.encode()) != key_slot(old.encode()):
        return (_Step(_CONNECT_SAVE, (key,), (text, ttl)), _Step(None, (old,)))
    return (_Step(_CONNECT_SAVE, (key, old), (text, ttl)),)


def _connect_write_step(prefix: str, sid: str, change: Change, expires: float, now: float) -> _Step:
    deleted = [] if change.cleared else [_field(key)[1:] for key in change.deleted]
    args: list[_Arg] = [
        iso_date(expires),
        _ttl_ms(expires, now),
        iso_date(now),
        int(change.cleared),
        len(deleted),
        *deleted,
    ]
    for key, value in change.set.items():
        name = _field(key)[1:]
        args += (name, _json_text(key, key), _json_text(key, value))
    return _Step(_CONNECT_WRITE, (prefix + sid,), tuple(args))


def _connect_record(prefix: str, text: bytes | str, pttl: int, now: float) -> Record | None:
    """A connect-redis value and its ``PTTL`` as a record; ``None`` (and a warning) unless it is one."""
    try:
        data = decode_express(text)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, no cookie object
        _malformed(prefix, "the value is not an express-session record")
        return None
    # No TTL (connect-redis' disableTTL): the cookie's expires decides.
    expires = record_expiry(data, None if pttl == -1 else now + pttl / 1000)
    if expires <= now:
        return None
    # connect-redis keeps no creation or access time: both read as now.
    return Record(data, created=now, accessed=now, expires=expires)


def _connect_load_result(prefix: str, reply: Any, now: float) -> Record | None:
    if not isinstance(reply, list):  # 0: missing; -1: not a string
        if reply == -1:
            _malformed(prefix, "the key is not a string")
        return None
    return _connect_record(prefix, reply[0], int(reply[1]), now)


def _connect_write_result(prefix: str, reply: Any) -> bool:
    if isinstance(reply, (bytes, str)):
        return True
    if reply == -1:
        _malformed(prefix, "the value is not an express-session record")
    return False


def _connect_touched(prefix: str, reply: Any, expires: float, now: float) -> Record | None:
    """The record a ``load_touch`` write left behind (its expiry the new one)."""
    if not _connect_write_result(prefix, reply):
        return None
    record = _connect_record(prefix, reply, _ttl_ms(expires, now), now)
    return None if record is None else Record(record.data, created=now, accessed=now, expires=expires)


def _no_index(layout: str) -> NoReturn:
    raise ConfigError("layout", f"the {layout} layout keeps no per-user index (user_sessions, revoke_user)")


# -- the user index and revocations, for both flavours ----------------------------------------------

#: Goes between the prefix and the user id in an index key (see the module docs).
_USER: Final = "user:"
#: Goes after the prefix to make the revocation channel.
_REVOKED: Final = "revoked"


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


def _delete_ops(prefix: str, sid: str, cluster: bool) -> _Op:
    """Delete one session and announce it, in one round trip."""
    key, channel = prefix + sid, prefix + _REVOKED
    if cluster:
        return _Step(_DELETE, (key,), (channel, sid))
    return _Batch((("DEL", key), ("PUBLISH", channel, sid)))


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
        yield _Step(_INDEX, (key, index), (_time(now), prefix, sid))
        return
    # Cluster: the session, the index and the other sessions are in different slots.
    (meta,) = yield _meta_reads(prefix, [sid])
    if isinstance(meta, Exception) or _info(sid, meta, now) is None:
        return
    members = yield _Step(_ADD, (index,), (sid,))
    yield from _prune_flow(prefix, index, sorted(_text(member) for member in members), now)


def _list_flow(prefix: str, user: str, now: float, cluster: bool) -> _Flow[list[SessionInfo]]:
    index = _user_key(prefix, user)
    if not cluster:
        rows = yield _Step(_LIST, (index,), (_time(now), prefix))
        infos = [_info(row[0], row[1:], now) for row in rows]
        return _oldest_first([info for info in infos if info is not None])
    sids = yield from _members_flow(index)
    live = yield from _prune_flow(prefix, index, sids, now)
    return _oldest_first(live)


def _revoke_flow(prefix: str, user: str, now: float, cluster: bool) -> _Flow[list[str]]:
    index, channel = _user_key(prefix, user), prefix + _REVOKED
    if not cluster:
        revoked = yield _Step(_REVOKE, (index,), (_time(now), prefix, channel))
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
            yield _Step(_PUBLISH, (), (channel, *live_ids))
        yield _Batch((("SREM", index, *sids),))
        revoked_ids += live_ids
    return sorted(revoked_ids)


def _malformed(prefix: str, reason: str) -> None:
    # Never the id (or the key, which contains it).
    security_log.warning("malformed session record under Redis prefix %r ignored: %s", prefix, reason)


def _is_wrong_type(error: ResponseError) -> bool:
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


# -- URLs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError("url", f"a redis+sentinel URL needs host[:port] for every sentinel: {_redact(url)!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ConfigError("url", f"bad sentinel port {port_text!r} in {_redact(url)!r}") from None
    if not 0 < port < 65536:
        raise ConfigError("url", f"bad sentinel port {port} in {_redact(url)!r}")
    return host, port


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:  # 'redis:/:pw@host' or 'redis:pw@host': no '://', but a password all the same
        scheme, rest = "", url
    _, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at else url


def _parse_url(url: object) -> _SentinelTarget | str:
    """Validate a store URL: the URL itself for redis-py, or where a Sentinel setup lives."""
    if not isinstance(url, str) or "://" not in url:
        shown = repr(_redact(url)) if isinstance(url, str) else repr(url)
        raise ConfigError("url", f"{shown} is not a Redis URL such as 'redis://host:6379/0'")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError("url", f"unsupported scheme {scheme!r}; use one of {', '.join(_SCHEMES)}")
    if scheme == "unix":
        if not urlsplit(url).path:
            raise ConfigError("url", f"a unix:// URL needs a socket path ('unix:///run/redis.sock'): {_redact(url)!r}")
        return url
    if scheme != "redis+sentinel":
        try:
            host = urlsplit(url).hostname
        except ValueError as error:
            raise ConfigError("url", f"malformed Redis URL {_redact(url)!r}: {error}") from None
        if not host:  # redis-py would quietly use localhost
            raise ConfigError("url", f"the Redis URL names no host: {_redact(url)!r}")
        return url
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if query:
        raise ConfigError("url", "redis+sentinel URLs take no query; pass client options as keywords")
    userinfo, _, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if colon else (None, unquote(user))
    if not hosts:
        raise ConfigError("url", f"the redis+sentinel URL names no sentinel host: {_redact(url)!r}")
    sentinels = tuple(_host_port(part, url) for part in hosts.split(","))
    service, _, db_text = path.strip("/").partition("/")
    if not service:
        raise ConfigError("url", "a redis+sentinel URL needs the service name: redis+sentinel://host:26379/mymaster")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ConfigError("url", f"bad database number {db_text!r} in the redis+sentinel URL") from None
    return _SentinelTarget(sentinels, unquote(service), db, username, password)


def _client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    merged = {"socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT, "socket_timeout": DEFAULT_SOCKET_TIMEOUT}
    merged.update(options)
    return merged


def _master_options(target: _SentinelTarget) -> dict[str, Any]:
    master: dict[str, Any] = {"db": target.db}
    if target.username is not None:
        master["username"] = target.username
    if target.password is not None:
        master["password"] = target.password
    return master


def _sentinel_options(options: Mapping[str, Any]) -> dict[str, Any]:
    # Sentinels get the timeouts and retry policy, never the master's credentials.
    return {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}


@dataclass(frozen=True, slots=True)
class _Source:
    """What a store was built from, so ``to_async()`` can build its twin."""

    url: str
    prefix: str
    clock: Callable[[], float]
    options: Mapping[str, Any]
    layout: Layout


def _check_client(client: object, *, want_async: bool) -> None:
    is_async = isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster))
    if is_async and not want_async:
        raise ConfigError("client", "RedisStore needs a synchronous client; use AsyncRedisStore for redis.asyncio")
    if not is_async and want_async:
        raise ConfigError("client", "AsyncRedisStore needs a redis.asyncio client; use RedisStore for redis.Redis")


# -- persession's own connections (stores built from a redis://, rediss:// or unix:// URL) -------------


def _command(step: _Step, *, cached: bool) -> tuple[_Arg, ...]:
    if step.script is None:
        return ("DEL", *step.keys)
    if cached:
        return ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
    return ("EVAL", step.script.text, len(step.keys), *step.keys, *step.args)


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")


def _raise_errors(replies: list[Any], tolerant: bool) -> list[Any]:
    """Error replies raised (the first one) or, with ``tolerant``, typed as redis-py would."""
    for index, reply in enumerate(replies):
        if isinstance(reply, ResponseError):
            error = _resp.error_reply(str(reply))
            if not tolerant:
                raise error
            replies[index] = error
    return replies


def _lean_address(url: str, options: Mapping[str, Any]) -> _resp.Address:
    defaults = {
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "retries": DEFAULT_RETRIES,
        "max_connections": DEFAULT_MAX_CONNECTIONS,
        "pool_timeout": DEFAULT_POOL_TIMEOUT,
    }
    return _resp.parse_url(url, options, defaults)


# -- the stores --------------------------------------------------------------------------------------


class _CacheEntries:
    """What :class:`_ClientCache` and :class:`_AsyncClientCache` share: the entries, the pending reads, the lock.

    Keeps up to ``size`` ``HGETALL`` replies (raw, decoded afresh on every
    hit, so no request can change another's data), least recently used first
    out. Redis tracks the keys our connections read (``CLIENT TRACKING ON
    REDIRECT ... NOLOOP``) and tells :class:`~persession.stores._resp.Invalidations`
    when another connection changes one; every lookup first drains those
    messages. Redis writes a change's answer and its invalidations in the same
    pass of its event loop, so a lookup that starts after that pass (any
    request in another process that follows the change's answer through a
    browser) sees the change. The store's own writes evict (or, for a merge,
    refresh with an ``HGETALL`` in the same round trip) the keys they touch.

    A read's reply is kept only if no invalidation for its key arrived while
    it was in flight (a pending token per key), and only while the
    invalidation connection its connection redirects to is the current one:
    when that connection is lost or the process forks, the cache empties and
    starts over.
    """

    def __init__(self, address: _resp.Address, size: int) -> None:
        self._address = address
        self._size = size
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self._pending: dict[str, object] = {}
        self._invalidations: _resp.Invalidations | None = None

    def _drained(self) -> bool:
        """Apply the invalidations that have arrived; ``False`` when their connection must be (re)opened."""
        invalidations = self._invalidations
        if invalidations is None or invalidations.forks != _resp.fork_count() or invalidations.lost:
            return False
        keys = invalidations.drain()
        if keys is None:  # FLUSHALL, or the connection was lost: everything
            self._forget_all()
            return not invalidations.lost
        for key in keys:
            text = key.decode("utf-8", "surrogateescape")
            self._entries.pop(text, None)
            self._pending.pop(text, None)
        return True

    def _forget_all(self) -> None:
        self._entries.clear()
        self._pending.clear()

    def _retire(self) -> None:
        """Forget everything and drop the invalidation connection (a forked child's copy of it only)."""
        self._forget_all()
        if self._invalidations is not None:
            self._invalidations.close()
        self._invalidations = None

    def _lookup(self, key: str) -> tuple[list[Any] | None, object | None]:
        """Under the lock, drained: the cached reply, or a token to keep the read's reply with (``None``: do not)."""
        raw = self._entries.get(key)
        if raw is not None:
            self._entries.move_to_end(key)
            return raw, None
        if self._invalidations is None:
            return None, None
        token = self._pending[key] = object()
        return None, token

    def _keep(self, key: str, token: object | None, raw: Any) -> None:
        with self._lock:
            if token is None or self._pending.get(key) is not token:
                return  # not tracked, or invalidated (or evicted) while the read was in flight
            del self._pending[key]
            if isinstance(raw, list) and raw:
                self._entries[key] = raw
                self._entries.move_to_end(key)
                if len(self._entries) > self._size:
                    self._entries.popitem(last=False)

    def forget(self, keys: tuple[str, ...] | None) -> None:
        """Forget ``keys`` (a write of ours is about to change them, or just did), or everything for ``None``."""
        with self._lock:
            if keys is None:
                self._forget_all()
                return
            for key in keys:
                self._entries.pop(key, None)
                self._pending.pop(key, None)

    def _settle(self, key: str, token: object | None, result: Any, raw: Any) -> Any:
        """After a merge with an ``HGETALL`` behind it: keep what it read, or forget a session found gone."""
        if result:
            self._keep(key, token, raw)
        else:
            self.forget((key,))
        return result

    def close(self) -> None:
        with self._lock:
            self._retire()


def _check_client_cache(size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError("client_cache", f"must be a number of sessions (an int >= 0), not {size!r}")


def _tracking(invalidations: _resp.Invalidations) -> tuple[tuple[_Arg, ...], ...]:
    return (("CLIENT", "TRACKING", "ON", "REDIRECT", invalidations.client_id, "NOLOOP"),)


class _ClientCache(_CacheEntries):
    """Client-side caching for a :class:`RedisStore` on its own connections (``client_cache=N``).

    See :class:`_CacheEntries`. When the invalidation connection is (re)opened,
    the pool retires every connection made before, which redirect elsewhere.
    """

    def __init__(self, pool: _resp.SyncPool, size: int) -> None:
        super().__init__(pool.address, size)
        self._pool = pool

    def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        with self._lock:
            if not self._drained():
                self._retire()
                invalidations = _resp.Invalidations(self._address)
                self._pool.renew(_tracking(invalidations))
                self._invalidations = invalidations
            return self._lookup(key)


class _AsyncClientCache(_CacheEntries):
    """Client-side caching for an :class:`AsyncRedisStore` on its own connection (``client_cache=N``).

    See :class:`_CacheEntries`. The invalidation connection is opened in a
    thread (its socket is only ever read without blocking); then the live
    pipelined connection is switched to it with ``CLIENT TRACKING``, queued
    ahead of every read made afterwards, and new connections send it first.
    Until that has answered, reads are not cached.
    """

    def __init__(self, mux: _resp.AsyncMux, size: int) -> None:
        super().__init__(mux.address, size)
        self._mux = mux
        self._opening = False

    async def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        with self._lock:
            ready = self._drained()
            if ready:
                return self._lookup(key)
            self._retire()
            if self._opening:
                return None, None  # another task is opening it: this read goes uncached
            self._opening = True
        try:
            loop = asyncio.get_running_loop()
            invalidations = await loop.run_in_executor(None, _resp.Invalidations, self._address)
            try:
                self._mux.setup = _tracking(invalidations)
                _raise_errors(await self._mux.execute(self._mux.setup), tolerant=False)
            except BaseException:
                invalidations.close()
                raise
            with self._lock:
                self._invalidations = invalidations
        finally:
            self._opening = False
        return None, None  # this read was not tracked yet when it began: not cached

    async def load(self, key: str) -> list[Any]:
        """See :meth:`_ClientCache.load`."""
        raw, token = await self._begin(key)
        if raw is not None:
            return raw
        try:
            (reply,) = _raise_errors(await self._mux.execute((("HGETALL", key),)), tolerant=False)
        except BaseException:
            self.forget((key,))
            raise
        self._keep(key, token, reply)
        return cast("list[Any]", reply)

    async def merge(self, key: str, step: _Step) -> Any:
        """See :meth:`_ClientCache.merge`."""
        self.forget((key,))
        _, token = await self._begin(key)
        read = ("HGETALL", key)
        try:
            replies = await self._mux.execute((_command(step, cached=True), read))
            if _is_noscript(replies[0]):
                replies = await self._mux.execute((_command(step, cached=False), read))
            result, raw = _raise_errors(replies, tolerant=False)
        except BaseException:
            self.forget((key,))
            raise
        return self._settle(key, token, result, raw)


class _Awaited(Generic[_T]):
    """A command a :class:`RedisStore` sent on its pool, whose answer :meth:`result` reads.

    Holds the pool's connection until the first :meth:`result`; the outcome
    (a value or the :class:`~persession.StoreError`) is kept for later calls.
    """

    __slots__ = ("outcome", "sent", "store")

    def __init__(self, store: RedisStore, sent: _resp.Sent | None, outcome: _T | StoreError) -> None:
        self.store = store
        self.sent = sent
        self.outcome = outcome

    def result(self) -> _T:
        """The store's answer (see :class:`~persession.stores.PendingLoad` and ``PendingWrite``)."""
        sent = self.sent
        if sent is not None:
            self.sent = None
            try:
                self.outcome = self._read(sent)
            except StoreError as error:
                self.outcome = error
        outcome = self.outcome
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome

    def _read(self, sent: _resp.Sent) -> _T:
        raise NotImplementedError  # pragma: no cover - every subclass reads its answer


class _Prefetch(_Awaited["Record | None"]):
    """A load :meth:`RedisStore.prefetch` sent (or did at once): see :class:`~persession.stores.PendingLoad`."""

    __slots__ = ("key", "now", "step", "token")

    def __init__(
        self,
        store: RedisStore,
        sent: _resp.Sent | None,
        *,
        key: str = "",
        step: _Step | None = None,
        now: float = 0.0,
        token: object | None = None,
        outcome: Record | StoreError | None = None,
    ) -> None:
        super().__init__(store, sent, outcome)
        #: The hash ``HGETALL`` reads (``step`` is ``None``), or ``load_touch``'s script.
        self.key = key
        self.step = step
        self.now = now
        #: The client-side cache's token for the read, if it may keep the reply.
        self.token = token

    @classmethod
    def done(cls, store: RedisStore, load: Callable[[], Record | None]) -> _Prefetch:
        """A load done at once (stores without connections of their own, the connect-redis layout)."""
        try:
            return cls(store, None, outcome=load())
        except StoreError as error:
            return cls(store, None, outcome=error)

    def _read(self, sent: _resp.Sent) -> Record | None:
        return self.store._receive(self, sent)


class _PendingStep(_Awaited[bool]):
    """A merge or touch sent (:meth:`RedisStore.send_plan`): see :class:`~persession.stores.PendingWrite`."""

    __slots__ = ("commands", "key", "step", "token")

    def __init__(
        self,
        store: RedisStore,
        sent: _resp.Sent,
        step: _Step,
        commands: tuple[tuple[_Arg, ...], ...],
        key: str | None = None,
        token: object | None = None,
    ) -> None:
        super().__init__(store, sent, False)
        self.step = step
        #: What was sent: the script, and with client-side caching after a merge the HGETALL that refreshes it.
        self.commands = commands
        #: With client-side caching, after a merge: the key the HGETALL refreshes and the cache's token.
        self.key = key
        self.token = token

    def _read(self, sent: _resp.Sent) -> bool:
        return self.store._confirm(self, sent)


class RedisStore:
    """A synchronous Redis session store (WSGI), on a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    A Sentinel master client (``Sentinel(...).master_for(name)``) is a
    ``redis.Redis`` too. See the module documentation for the key layout,
    atomicity and cluster behaviour.

    :param client: the client to use; the store never closes it. Give it
        ``socket_timeout`` and ``socket_connect_timeout``, or a dead server
        blocks a worker for redis-py's defaults.
    :param prefix: prepended to the session id to make its key; default
        ``"persession:"`` (``"sess:"`` for the ``connect-redis`` layout). Use
        one prefix per application sharing a server. (connect-redis's
        ``prefix``; its default is ``"sess:"``.)
    :param clock: returns the current Unix time; default :func:`time.time`.
    :param layout: ``"persession"`` (default: the hashes described in the
        module docs) or ``"connect-redis"``: connect-redis' JSON strings, to
        share sessions with express-session (see the module docs).
    :raises ConfigError: the client is an asyncio client, the prefix is not a
        str, or the layout is unknown.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: SyncClient,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        _check_client(client, want_async=False)
        self._setup(client, None, prefix, clock, layout)

    def _setup(
        self,
        client: SyncClient | None,
        pool: _resp.SyncPool | None,
        prefix: str | None,
        clock: Callable[[], float],
        layout: Layout,
    ) -> None:
        self._client = client
        self._pool = pool
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-redis"
        self._prefix = _check_prefix(_default_prefix(prefix, layout))
        self._clock = clock
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._owned: list[Callable[[], None]] = []
        self._source: _Source | None = None
        self._cache: _ClientCache | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        client_cache: int = 0,
        **client_options: Any,
    ) -> RedisStore:
        """A store on a client of its own, built from ``url``; :meth:`close` closes that client.

        Accepted URLs (a URL never falls back to localhost):

        - ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS);
        - ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``;
        - ``redis+sentinel://[[user:]password@]host[:port][,host[:port]...]/service_name[/db]``:
          asks the sentinels (port default 26379) for the master of
          ``service_name``, following failovers. The password is the master's;
          pass ``sentinel_kwargs={"password": ...}`` if the sentinels need one.

        :param client_options: for ``redis://``, ``rediss://`` and
            ``unix://`` URLs, the options of persession's own connections
            (see the module docs and :doc:`/stores`): ``db``, ``username``,
            ``password``, ``client_name``, ``socket_timeout`` (default 2.0,
            :data:`DEFAULT_SOCKET_TIMEOUT`), ``socket_connect_timeout``
            (default 2.0, :data:`DEFAULT_CONNECT_TIMEOUT`), ``retries``
            (default 1, :data:`DEFAULT_RETRIES`), ``max_connections`` (default
            100, :data:`DEFAULT_MAX_CONNECTIONS`), ``pool_timeout`` (default
            2.0, :data:`DEFAULT_POOL_TIMEOUT`) and the ``ssl_*`` options of a
            ``rediss://`` URL; they override the URL's query parameters. For
            ``redis+sentinel://``, passed to ``redis.sentinel.Sentinel`` with
            the same timeout and retry defaults.
        :param layout: as for the constructor; also accepted as the URL's
            ``layout`` query parameter (``redis://cache/0?layout=connect-redis``).
        :param client_cache: keep up to this many sessions in this process
            (Redis client-side caching, Redis 6 or later), so a request whose
            session is cached and unchanged makes no round trip to load it;
            ``0`` (the default) keeps none. Redis tells the store which
            sessions another connection changed, and each load first reads
            what it was told (one non-blocking ``recv``). Redis sends that
            in the same pass of its event loop as the change's answer, so a
            load that starts after it sees the change; only a load racing
            those microseconds can still get the previous version. Needs a
            ``redis://``, ``rediss://`` or ``unix://`` URL, Redis 6 or later
            and the ``persession`` layout. See :doc:`/stores`.
        :raises ConfigError: the URL is malformed, names no host, its
            scheme is not one of the above, an option is unknown, or
            ``client_cache`` is not a non-negative int or cannot be used.

        .. versionchanged:: 0.2 ``client_cache``.
        """
        url, layout = _split_layout(url, layout)
        target = _parse_url(url)
        _check_client_cache(client_cache)
        if not isinstance(target, _SentinelTarget):
            store = cls.__new__(cls)
            pool = _resp.SyncPool(_lean_address(target, client_options))
            store._setup(None, pool, prefix, clock, layout)
            store._owned = [pool.close]
            if client_cache:
                if store._connect:
                    raise ConfigError("client_cache", "needs the persession layout, not connect-redis")
                store._cache = _ClientCache(pool, client_cache)
                store._owned.insert(0, store._cache.close)
            store._source = _Source(url, store._prefix, clock, dict(client_options), layout)
            return store
        if client_cache:
            raise ConfigError("client_cache", "needs persession's own connections: a redis, rediss or unix URL")
        options = _client_options(client_options)
        # Sync and asyncio retry objects differ: the twin gets the default policy.
        twin_options = {k: v for k, v in options.items() if k != "retry"}
        options.setdefault("retry", redis.retry.Retry(NoBackoff(), DEFAULT_RETRIES))
        sentinel_options = _sentinel_options(options)
        # redis-py's sync Sentinel is unannotated.
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.sentinels), sentinel_kwargs=options.pop("sentinel_kwargs", sentinel_options), **options
        )
        client: redis.Redis = sentinel.master_for(target.service, **_master_options(target))  # type: ignore[no-untyped-call, unused-ignore]
        owned: list[Callable[[], None]] = [client.close]
        owned += [sentinel_client.close for sentinel_client in sentinel.sentinels]
        store = cls(client, prefix=prefix, clock=clock, layout=layout)
        store._owned = owned
        store._source = _Source(url, store._prefix, clock, twin_options, layout)
        return store

    @property
    def client(self) -> SyncClient | None:
        """The redis-py client the store was built on, or ``None`` when it has connections of its own.

        A store from :meth:`from_url` on a ``redis://``, ``rediss://`` or
        ``unix://`` URL speaks RESP over its own connections (see the module
        docs); one on a ``redis+sentinel://`` URL uses a redis-py client.
        """
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout

    def _run(self, step: _Step) -> Any:
        if self._cache is not None:
            self._cache.forget(step.keys)
            try:
                return self._run_uncached(step)
            finally:
                self._cache.forget(step.keys)
        return self._run_uncached(step)

    def _run_uncached(self, step: _Step) -> Any:
        if self._pool is not None:
            (reply,) = self._pool.execute((_command(step, cached=True),))
            if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                (reply,) = self._pool.execute((_command(step, cached=False),))
            return _raise_errors([reply], tolerant=False)[0]
        assert self._client is not None  # noqa: S101  (one of the two is set)
        if step.script is None:
            return self._client.delete(*step.keys)
        try:
            return self._client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
            return self._client.eval(step.script.text, len(step.keys), *step.keys, *step.args)

    def _execute(self, op: _Op, touched: tuple[str, ...] | None = None) -> Any:
        if isinstance(op, _Step):
            return self._run(op)
        cache = self._cache
        if cache is None:
            return self._execute_batch(op)
        # Forget what the batch changes before and after it: ``touched``, or (user index
        # operations, which do not list the sessions they change) everything.
        cache.forget(touched)
        try:
            return self._execute_batch(op)
        finally:
            cache.forget(touched)

    def _execute_batch(self, op: _Batch) -> Any:
        if self._pool is not None:
            return _raise_errors(self._pool.execute(op.commands), op.tolerant)
        assert self._client is not None  # noqa: S101
        with self._client.pipeline(transaction=False) as pipe:
            for command in op.commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=not op.tolerant)

    def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            try:
                op = next(flow)
                while True:
                    op = flow.send(self._execute(op))
            except StopIteration as done:
                result: _T = done.value
                return result

    def load(self, sid: str) -> Record | None:
        """The live record for ``sid``, or ``None``: one ``HGETALL`` (connect-redis: one script, GET and PTTL)."""
        if self._connect:
            now = self._clock()
            with _map_errors:
                reply = self._run(_Step(_CONNECT_LOAD, (self._prefix + sid,)))
            return _connect_load_result(self._prefix, reply, now)
        if self._pool is not None:  # connections of our own: send, then read (and cache)
            return self.prefetch(sid).result()
        assert self._client is not None  # noqa: S101  (one of the two is set)
        with _map_errors:
            try:
                raw = self._client.hgetall(self._prefix + sid)
            except ResponseError as error:
                if not _is_wrong_type(error):
                    raise
                _malformed(self._prefix, "the key is not a hash")
                return None
        return _record(self._prefix, raw, self._clock())

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry (and its user index's TTL): one ``EVALSHA``.

        See :class:`~persession.stores.RollingLoad`. In a cluster, as with
        :meth:`touch`, the user index's TTL is left alone.
        """
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_touched(self._prefix, reply, expires, now)
        if self._pool is not None:
            return self.prefetch(sid, (idle, absolute)).result()
        step = _load_touch_step(self._prefix, sid, idle, absolute, now, self._cluster)
        with _map_errors:
            reply = self._run(step)
        return _load_touch_result(self._prefix, reply, now)

    def prefetch(self, sid: str, refresh: tuple[float, float | None] | None = None) -> PendingLoad:
        """Send the load of ``sid`` now and read the answer later: see :class:`~persession.stores.PrefetchLoad`.

        ``refresh=(idle, absolute)`` makes it :meth:`load_touch`. On a store
        with connections of its own (:meth:`from_url` on a ``redis://``,
        ``rediss://`` or ``unix://`` URL, ``persession`` layout) the command
        is written at once and the answer read by ``result()``, which holds
        one pooled connection until then; otherwise the load happens now.
        A session in the client-side cache needs no command at all.

        :raises StoreError: the command could not be sent.

        .. versionadded:: 0.2
        """
        pool = self._pool
        if pool is None or self._connect:
            if refresh is None:
                return _Prefetch.done(self, lambda: self.load(sid))
            return _Prefetch.done(self, lambda: self.load_touch(sid, *refresh))
        key = self._prefix + sid
        cache = self._cache
        with _map_errors:
            if refresh is not None:
                now = self._clock()
                step = _load_touch_step(self._prefix, sid, refresh[0], refresh[1], now, self._cluster)
                if cache is not None:
                    cache.forget(step.keys)
                sent = pool.send((_command(step, cached=True),))
                return _Prefetch(self, sent, key=key, step=step, now=now)
            token = None
            if cache is not None:
                raw, token = cache._begin(key)
                if raw is not None:
                    return _Prefetch(self, None, outcome=_record(self._prefix, raw, self._clock()))
            try:
                sent = pool.send((("HGETALL", key),))
            except BaseException:
                if cache is not None:
                    cache.forget((key,))
                raise
            return _Prefetch(self, sent, key=key, token=token)

    def _receive(self, prefetch: _Prefetch, sent: _resp.Sent) -> Record | None:
        """:meth:`prefetch`'s second half: read the answer it sent for (and keep it in the cache)."""
        assert self._pool is not None  # noqa: S101  (prefetch sends only on a pool)
        cache = self._cache
        step = prefetch.step
        try:
            with _map_errors:
                (reply,) = self._pool.receive(sent)
                if step is not None:
                    if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                        (reply,) = self._pool.execute((_command(step, cached=False),))
                    (reply,) = _raise_errors([reply], tolerant=False)
                    return _load_touch_result(self._prefix, reply, prefetch.now)
                if isinstance(reply, ResponseError):
                    (reply,) = _raise_errors([reply], tolerant=True)
                    if not _is_wrong_type(reply):
                        raise reply
                    _malformed(self._prefix, "the key is not a hash")
                    return None
        except BaseException:
            if cache is not None:
                cache.forget((prefetch.key,))
            raise
        finally:
            if cache is not None and step is not None:
                cache.forget(step.keys)
        if cache is not None:
            cache._keep(prefetch.key, prefetch.token, reply)
        return _record(self._prefix, reply, self._clock())

    def send_plan(self, plan: Plan) -> PendingWrite | None:
        """Start carrying out ``plan``: see :class:`~persession.stores.SplitWrite`.

        A merge or a touch on a store with connections of its own
        (:meth:`from_url` on a ``redis://``, ``rediss://`` or ``unix://`` URL,
        ``persession`` layout) is written at once and its answer read by
        ``result()``, which holds one pooled connection until then; any other
        plan is carried out now (:func:`~persession.stores.run_plan`) and
        ``None`` returned.

        :raises StoreError: the write could not be sent, or failed (carried out now).

        .. versionadded:: 0.2
        """
        action = plan.action
        if self._pool is None or self._connect or (action is not Action.MERGE and action is not Action.TOUCH):
            run_plan(self, plan)
            return None
        if action is Action.MERGE:
            return self._send_merge(_need(plan.sid), _need(plan.change), _need(plan.expires))
        return self._send(_touch_step(self._prefix, _need(plan.sid), _need(plan.expires), self._clock(), self._cluster))

    def _send_merge(self, sid: str, change: Change, expires: float) -> _PendingStep:
        step = _merge_step(self._prefix, sid, change, expires, self._clock(), self._cluster)
        return self._send(step, refresh=self._prefix + sid)

    def _send(self, step: _Step, refresh: str | None = None) -> _PendingStep:
        """Send a merge or touch ``step`` on the pool; with client-side caching, an ``HGETALL`` of ``refresh`` too."""
        assert self._pool is not None  # noqa: S101  (only stores with a pool send)
        cache = self._cache
        commands: tuple[tuple[_Arg, ...], ...] = (_command(step, cached=True),)
        token: object | None = None
        with _map_errors:
            if cache is None:
                return _PendingStep(self, self._pool.send(commands), step, commands)
            cache.forget(step.keys)
            if refresh is not None:  # the merged record comes back in the same round trip
                _, token = cache._begin(refresh)
                commands += (("HGETALL", refresh),)
            try:
                sent = self._pool.send(commands)
            except BaseException:
                cache.forget(step.keys)
                raise
        return _PendingStep(self, sent, step, commands, refresh, token)

    def _confirm(self, pending: _PendingStep, sent: _resp.Sent) -> bool:
        """:meth:`_send`'s second half: read the answer (and keep a merged record in the cache)."""
        assert self._pool is not None  # noqa: S101  (only stores with a pool send)
        cache = self._cache
        try:
            with _map_errors:
                replies = self._pool.receive(sent)
                if _is_noscript(replies[0]):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                    replies = self._pool.execute((_command(pending.step, cached=False), *pending.commands[1:]))
                replies = _raise_errors(replies, tolerant=False)
        except BaseException:
            if cache is not None:
                cache.forget(pending.step.keys)
            raise
        if cache is None:
            return bool(replies[0])
        if pending.key is not None:
            return bool(cache._settle(pending.key, pending.token, replies[0], replies[1]))
        cache.forget(pending.step.keys)
        return bool(replies[0])

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write the whole record (and its TTL), deleting ``replaces``, in one atomic script.

        In a cluster, when the two keys are in different slots: two steps (see the module docs).
        """
        steps = (_connect_save_steps if self._connect else _save_steps)(
            self._prefix, sid, record, replaces, self._clock(), self._cluster
        )
        with _map_errors:
            for step in steps:
                self._run(step)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        """Apply ``change`` and move the expiry in one atomic script; ``False`` if the record is gone."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, change, expires, now))
            return _connect_write_result(self._prefix, reply)
        if self._pool is not None:  # with client-side caching the merged record comes back too
            return self._send_merge(sid, change, expires).result()
        step = _merge_step(self._prefix, sid, change, expires, now, self._cluster)
        with _map_errors:
            return bool(self._run(step))

    def touch(self, sid: str, expires: float) -> bool:
        """Move the expiry (and ``accessed``) in one atomic script; ``False`` if the record is gone."""
        now = self._clock()
        if self._connect:  # the JSON's cookie.expires moves with the TTL
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _touch_step(self._prefix, sid, expires, now, self._cluster)
        if self._pool is not None:
            return self._send(step).result()
        with _map_errors:
            return bool(self._run(step))

    def delete(self, sid: str) -> None:
        """Delete the record, if any, and publish its id on the revocation channel: one round trip.

        A pipelined ``DEL`` and ``PUBLISH``; in a cluster, one script.
        """
        with _map_errors:
            self._execute(_delete_ops(self._prefix, sid, self._cluster), (self._prefix + sid,))

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Add the live session ``sid`` to ``user``'s index: one script (cluster: a few steps).

        ``expires`` is not needed: the index follows the session's own expiry.
        The ``connect-redis`` layout keeps no index: this does nothing.
        """
        if self._connect:
            return
        self._drive(_index_flow(self._prefix, user, sid, self._clock(), self._cluster))

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first, pruning dead entries: one script (cluster: 2 or 3 steps).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        if self._connect:
            _no_index(self._layout)
        return self._drive(_list_flow(self._prefix, user, self._clock(), self._cluster))

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` and the index, publishing each live id: one script.

        Returns the ids of the live sessions deleted. In a cluster: steps
        repeated until the index is empty (see the module docs).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        if self._connect:
            _no_index(self._layout)
        return self._drive(_revoke_flow(self._prefix, user, self._clock(), self._cluster))

    def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        owned, self._owned = self._owned, []
        with _map_errors:
            for close in owned:
                close()

    def to_async(self) -> AsyncRedisStore:
        """An :class:`AsyncRedisStore` on a new asyncio client built from the same URL and options.

        :raises ConfigError: this store was built on a client passed in; build
            ``AsyncRedisStore(redis.asyncio.Redis(...))`` yourself for ASGI.
        """
        source = self._source
        if source is None:
            raise ConfigError(
                "client",
                "to_async() needs a store built with RedisStore.from_url(); for a client you built, "
                "construct AsyncRedisStore on a redis.asyncio client to the same server",
            )
        return AsyncRedisStore.from_url(
            source.url, prefix=source.prefix, clock=source.clock, layout=source.layout, **source.options
        )


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore` (ASGI), on ``redis.asyncio.Redis`` or its ``RedisCluster``.

    Parameters as :class:`RedisStore`. Create the client inside the event loop
    that will use it, or let :meth:`from_url` do so lazily.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        _check_client(client, want_async=True)
        self._setup(client, None, prefix, clock, layout)

    def _setup(
        self,
        client: AsyncClient | None,
        mux: _resp.AsyncMux | None,
        prefix: str | None,
        clock: Callable[[], float],
        layout: Layout,
    ) -> None:
        self._client = client
        self._mux = mux
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-redis"
        self._prefix = _check_prefix(_default_prefix(prefix, layout))
        self._clock = clock
        self._cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._owned: list[Callable[[], Any]] = []
        self._cache: _AsyncClientCache | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        client_cache: int = 0,
        **client_options: Any,
    ) -> AsyncRedisStore:
        """A store on an asyncio client of its own, built from ``url``: see :meth:`RedisStore.from_url`.

        :raises ConfigError: the URL is malformed, names no host, its scheme
            is unsupported, an option is unknown, or ``client_cache`` is not
            a non-negative int or cannot be used.

        .. versionchanged:: 0.2 ``client_cache``.
        """
        url, layout = _split_layout(url, layout)
        target = _parse_url(url)
        _check_client_cache(client_cache)
        if not isinstance(target, _SentinelTarget):
            store = cls.__new__(cls)
            mux = _resp.AsyncMux(_lean_address(target, client_options))
            store._setup(None, mux, prefix, clock, layout)
            store._owned = [mux.aclose]
            if client_cache:
                if store._connect:
                    raise ConfigError("client_cache", "needs the persession layout, not connect-redis")
                cache = store._cache = _AsyncClientCache(mux, client_cache)

                async def close_cache() -> None:
                    cache.close()

                store._owned.insert(0, close_cache)
            return store
        if client_cache:
            raise ConfigError("client_cache", "needs persession's own connections: a redis, rediss or unix URL")
        options = _client_options(client_options)
        options.setdefault("retry", redis.asyncio.retry.Retry(NoBackoff(), DEFAULT_RETRIES))
        sentinel_options = _sentinel_options(options)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # unannotated
            list(target.sentinels), sentinel_kwargs=options.pop("sentinel_kwargs", sentinel_options), **options
        )
        client: redis.asyncio.Redis = sentinel.master_for(target.service, **_master_options(target))
        owned: list[Callable[[], Any]] = [client.aclose]
        owned += [sentinel_client.aclose for sentinel_client in sentinel.sentinels]
        store = cls(client, prefix=prefix, clock=clock, layout=layout)
        store._owned = owned
        return store

    @property
    def client(self) -> AsyncClient | None:
        """The redis-py client the store was built on, or ``None``: see :attr:`RedisStore.client`."""
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout

    async def _run(self, step: _Step) -> Any:
        if self._cache is not None:
            self._cache.forget(step.keys)
            try:
                return await self._run_uncached(step)
            finally:
                self._cache.forget(step.keys)
        return await self._run_uncached(step)

    async def _run_uncached(self, step: _Step) -> Any:
        if self._mux is not None:
            (reply,) = await self._mux.execute((_command(step, cached=True),))
            if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                (reply,) = await self._mux.execute((_command(step, cached=False),))
            return _raise_errors([reply], tolerant=False)[0]
        assert self._client is not None  # noqa: S101  (one of the two is set)
        if step.script is None:
            return await self._client.delete(*step.keys)
        try:
            return await self._client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
            return await self._client.eval(step.script.text, len(step.keys), *step.keys, *step.args)

    async def _execute(self, op: _Op, touched: tuple[str, ...] | None = None) -> Any:
        if isinstance(op, _Step):
            return await self._run(op)
        cache = self._cache
        if cache is None:
            return await self._execute_batch(op)
        cache.forget(touched)  # see RedisStore._execute
        try:
            return await self._execute_batch(op)
        finally:
            cache.forget(touched)

    async def _execute_batch(self, op: _Batch) -> Any:
        if self._mux is not None:
            return _raise_errors(await self._mux.execute(op.commands), op.tolerant)
        assert self._client is not None  # noqa: S101
        async with self._client.pipeline(transaction=False) as pipe:
            for command in op.commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=not op.tolerant)

    async def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            try:
                op = next(flow)
                while True:
                    op = flow.send(await self._execute(op))
            except StopIteration as done:
                result: _T = done.value
                return result

    async def load(self, sid: str) -> Record | None:
        """See :meth:`RedisStore.load`."""
        if self._connect:
            now = self._clock()
            with _map_errors:
                reply = await self._run(_Step(_CONNECT_LOAD, (self._prefix + sid,)))
            return _connect_load_result(self._prefix, reply, now)
        with _map_errors:
            try:
                raw = await self._hgetall(self._prefix + sid)
            except ResponseError as error:
                if not _is_wrong_type(error):
                    raise
                _malformed(self._prefix, "the key is not a hash")
                return None
        return _record(self._prefix, raw, self._clock())

    async def _hgetall(self, key: str) -> Mapping[bytes | str, bytes | str] | list[Any]:
        if self._cache is not None:
            return await self._cache.load(key)
        if self._mux is not None:
            (reply,) = _raise_errors(await self._mux.execute((("HGETALL", key),)), tolerant=False)
            return cast("list[Any]", reply)
        assert self._client is not None  # noqa: S101
        return await self._client.hgetall(key)

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`RedisStore.load_touch`."""
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_touched(self._prefix, reply, expires, now)
        step = _load_touch_step(self._prefix, sid, idle, absolute, now, self._cluster)
        with _map_errors:
            reply = await self._run(step)
        return _load_touch_result(self._prefix, reply, now)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`RedisStore.save`."""
        steps = (_connect_save_steps if self._connect else _save_steps)(
            self._prefix, sid, record, replaces, self._clock(), self._cluster
        )
        with _map_errors:
            for step in steps:
                await self._run(step)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        """See :meth:`RedisStore.merge`."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, change, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _merge_step(self._prefix, sid, change, expires, now, self._cluster)
        with _map_errors:
            if self._cache is not None:  # the merged record comes back in the same round trip
                return bool(await self._cache.merge(self._prefix + sid, step))
            return bool(await self._run(step))

    async def touch(self, sid: str, expires: float) -> bool:
        """See :meth:`RedisStore.touch`."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _touch_step(self._prefix, sid, expires, now, self._cluster)
        with _map_errors:
            return bool(await self._run(step))

    async def delete(self, sid: str) -> None:
        """See :meth:`RedisStore.delete`."""
        with _map_errors:
            await self._execute(_delete_ops(self._prefix, sid, self._cluster), (self._prefix + sid,))

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`RedisStore.index_user`."""
        if self._connect:
            return
        await self._drive(_index_flow(self._prefix, user, sid, self._clock(), self._cluster))

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`RedisStore.user_sessions`."""
        if self._connect:
            _no_index(self._layout)
        return await self._drive(_list_flow(self._prefix, user, self._clock(), self._cluster))

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`RedisStore.revoke_user`."""
        if self._connect:
            _no_index(self._layout)
        return await self._drive(_revoke_flow(self._prefix, user, self._clock(), self._cluster))

    async def watch_revocations(self) -> AsyncIterator[str]:
        """Yield the id of every session deleted or revoked from now on, by any process, until cancelled.

        Subscribes to ``prefix + "revoked"`` on a connection of the store's own
        client (a cluster: regular pub/sub on one node, which sees every
        node's ``PUBLISH``). When the server is unreachable it logs a warning
        on ``persession`` and resubscribes, waiting up to
        :data:`REVOCATION_RETRY_MAX` seconds between tries; ids published
        meanwhile are missed. Cancelling the consumer (or ``aclose()``) closes
        the subscription. Implements :class:`~persession.stores.RevocationFeed`.
        """
        channel = self._prefix + _REVOKED
        if self._mux is not None:
            async for sid in self._watch_lean(channel):
                yield sid
            return
        client = self._client
        assert client is not None  # noqa: S101
        delay = _REVOCATION_RETRY_MIN
        while True:
            pubsub = None
            try:
                try:
                    with _map_errors:
                        if isinstance(client, redis.asyncio.cluster.RedisCluster):
                            await client.initialize()  # its pubsub needs the slot map
                        pubsub = client.pubsub()
                        await pubsub.subscribe(channel)
                    while True:
                        with _map_errors:
                            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_SECONDS)
                        delay = _REVOCATION_RETRY_MIN
                        if message is not None and message.get("type") == "message":
                            yield _text(message["data"])
                except StoreUnavailable as error:
                    log.warning("revocation feed: Redis unreachable (%s); resubscribing in %.1f s", error, delay)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in redis-py
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVOCATION_RETRY_MAX)

    async def _watch_lean(self, channel: str) -> AsyncIterator[str]:
        assert self._mux is not None  # noqa: S101
        delay = _REVOCATION_RETRY_MIN
        while True:
            try:
                with _map_errors:
                    async for data in self._mux.subscribe(channel, _POLL_SECONDS):
                        delay = _REVOCATION_RETRY_MIN
                        yield _text(data)
            except StoreUnavailable as error:
                log.warning("revocation feed: Redis unreachable (%s); resubscribing in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVOCATION_RETRY_MAX)

    async def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        owned, self._owned = self._owned, []
        with _map_errors:
            for close in owned:
                await close()

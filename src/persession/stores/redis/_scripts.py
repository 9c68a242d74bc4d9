"""The Lua scripts of the persession layout and of the user index (single server and cluster)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


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

# -- the user index (single server: one script each; see the package docs) -------------------------

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

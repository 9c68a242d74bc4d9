"""The Lua scripts of the connect-redis layout: one JSON string per session."""

from __future__ import annotations

from ._scripts import _Script

# -- the connect-redis layout: one JSON string per session (see the package docs) -------------------

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

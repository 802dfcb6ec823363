"""The Lua scripts of :class:`~tierwise.guards.redis_limits.RedisLimitBackend`, one per operation.

Each script runs atomically in Redis, so check-then-reserve over several limit keys is one
step for every process sharing the server. Time is Redis ``TIME`` (processes share no
monotonic clock) divided by ``ARGV[1]``, the time scale, so windows shrink as they do in
:class:`~tierwise.guards.limits.RateLimiter` for tests against a scaled simulator.

Per limit key there are three Redis keys (``KEYS`` come in these triples): ``m`` a sorted
set of the last minute's requests, member ``"<id>:<tokens>"`` scored by start time, so
expiry can subtract tokens; ``d`` the same for the day (member ``"<id>"``), only for keys
with an RPD limit; ``h`` a hash holding the minute's token sum (``mtok``), a block
(``bu`` until, ``bl`` blamed limit), the provider's request / token allowances
(``ra_*`` / ``ta_*``, with a generation so a cancel only refunds the allowance it drew on)
and caps learned from headers. Numbers go back to Python as strings: Lua numbers would be
truncated to integers, and ``inf`` must survive.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "ADJUST", "RESTRICT", "USAGE"]

_COMMON: Final = r"""
local MINUTE, DAY = 60, 86400
local t = redis.call('TIME')
local scale = tonumber(ARGV[1])
local now = (tonumber(t[1]) + tonumber(t[2]) / 1000000) / scale
local ttl = math.ceil(DAY * scale * 1000) + 60000

-- HINCRBY refuses "-0", which a Lua -0 becomes; a zero change is no change anyway
local function incr(h, field, by)
  if by ~= 0 then redis.call('HINCRBY', h, field, by) end
end

local function num(h, field)
  local v = redis.call('HGET', h, field)
  if v then return tonumber(v) end
  return nil
end

local function prune(m, d, h)
  local cut = now - MINUTE
  local old = redis.call('ZRANGEBYSCORE', m, '-inf', cut)
  if #old > 0 then
    local sum = 0
    for _, member in ipairs(old) do sum = sum + tonumber(string.match(member, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', m, '-inf', cut)
    incr(h, 'mtok', -sum)
  end
  redis.call('ZREMRANGEBYSCORE', d, '-inf', now - DAY)
end

local function limit(h, configured, cap_field)
  local cap = num(h, cap_field)
  if cap and (configured < 0 or cap < configured) then return cap end
  return configured
end

local function allowance(h, prefix)
  local untl = num(h, prefix .. '_until')
  if untl == nil then return nil end
  if untl <= now then
    redis.call('HDEL', h, prefix .. '_rem', prefix .. '_until', prefix .. '_lim')
    return nil
  end
  return num(h, prefix .. '_rem'), untl
end
"""

ACQUIRE: Final = _COMMON + r"""
-- KEYS: seq, then (m, d, h) per limit key; ARGV: scale, tokens, then (rpm, tpm, rpd) per key
local tokens = tonumber(ARGV[2])
local n = (#KEYS - 1) / 3
local worst, worst_limit, worst_key = nil, nil, nil
for i = 1, n do
  local m, d, h = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  prune(m, d, h)
  local rpm = limit(h, tonumber(ARGV[3 * i]), 'rpm_cap')
  local tpm = limit(h, tonumber(ARGV[3 * i + 1]), 'tpm_cap')
  local rpd = tonumber(ARGV[3 * i + 2])
  local waits = {}
  local bu = num(h, 'bu')
  if bu and bu > now then waits[#waits + 1] = {bu - now, redis.call('HGET', h, 'bl')} end
  local m_req = redis.call('ZCARD', m)
  local m_tok = num(h, 'mtok') or 0
  if rpm >= 0 and m_req >= rpm then
    local e = redis.call('ZRANGE', m, m_req - rpm, m_req - rpm, 'WITHSCORES')
    waits[#waits + 1] = {e[2] and (tonumber(e[2]) + MINUTE - now) or math.huge, 'rpm'}
  end
  if tpm >= 0 and m_tok + tokens > tpm then
    local wait = math.huge
    if tokens <= tpm then
      local excess, freed = m_tok + tokens - tpm, 0
      local all = redis.call('ZRANGE', m, 0, -1, 'WITHSCORES')
      for j = 1, #all, 2 do
        freed = freed + tonumber(string.match(all[j], ':(%d+)$'))
        if freed >= excess then wait = tonumber(all[j + 1]) + MINUTE - now; break end
      end
    end
    waits[#waits + 1] = {wait, 'tpm'}
  end
  if rpd >= 0 then
    local d_req = redis.call('ZCARD', d)
    if d_req >= rpd then
      local e = redis.call('ZRANGE', d, d_req - rpd, d_req - rpd, 'WITHSCORES')
      waits[#waits + 1] = {e[2] and (tonumber(e[2]) + DAY - now) or math.huge, 'rpd'}
    end
  end
  local rem, untl = allowance(h, 'ra')
  if rem and rem < 1 then waits[#waits + 1] = {untl - now, redis.call('HGET', h, 'ra_lim')} end
  rem, untl = allowance(h, 'ta')
  if rem and rem < tokens then waits[#waits + 1] = {untl - now, 'tpm'} end
  for _, w in ipairs(waits) do
    if worst == nil or w[1] > worst then worst, worst_limit, worst_key = w[1], w[2], i end
  end
end
if worst ~= nil then
  return {'0', tostring(math.max(0, worst)), worst_limit, tostring(worst_key)}
end
local id = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ttl)
local member = id .. ':' .. tokens
local reply = {'1', tostring(id)}
for i = 1, n do
  local m, d, h = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  redis.call('ZADD', m, now, member)
  incr(h, 'mtok', tokens)
  local in_day = '0'
  if tonumber(ARGV[3 * i + 2]) >= 0 then
    redis.call('ZADD', d, now, tostring(id)); in_day = '1'
    redis.call('PEXPIRE', d, ttl)
  end
  local ra_gen, ta_gen = '', ''
  if allowance(h, 'ra') then
    incr(h, 'ra_rem', -1); ra_gen = redis.call('HGET', h, 'ra_gen') or ''
  end
  if allowance(h, 'ta') then
    incr(h, 'ta_rem', -tokens); ta_gen = redis.call('HGET', h, 'ta_gen') or ''
  end
  redis.call('PEXPIRE', m, ttl)
  redis.call('PEXPIRE', h, ttl)
  reply[#reply + 1] = ra_gen
  reply[#reply + 1] = ta_gen
end
return reply
"""

ADJUST: Final = _COMMON + r"""
-- KEYS: (m, d, h) per limit key; ARGV: scale, id, old tokens, new tokens ('' = cancel),
-- then (ra_gen, ta_gen) per key
local id, old = ARGV[2], tonumber(ARGV[3])
local cancel = ARGV[4] == ''
local new = tonumber(ARGV[4]) or 0
local member = id .. ':' .. old
for i = 1, #KEYS / 3 do
  local m, d, h = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  prune(m, d, h)
  local score = redis.call('ZSCORE', m, member)
  local ra_gen, ta_gen = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local ta_live = ta_gen ~= '' and allowance(h, 'ta') and redis.call('HGET', h, 'ta_gen') == ta_gen
  if cancel then
    if score then
      redis.call('ZREM', m, member)
      incr(h, 'mtok', -old)
    end
    redis.call('ZREM', d, id)
    if ra_gen ~= '' and allowance(h, 'ra') and redis.call('HGET', h, 'ra_gen') == ra_gen then
      incr(h, 'ra_rem', 1)
    end
    if ta_live then incr(h, 'ta_rem', old) end
  else
    if score then
      -- re-stamped now: the provider counted the request somewhere between the permit
      -- and its answer, and the later bound never frees a slot before the provider does
      redis.call('ZREM', m, member)
      redis.call('ZADD', m, now, id .. ':' .. new)
      incr(h, 'mtok', new - old)
      if redis.call('ZSCORE', d, id) then redis.call('ZADD', d, now, id) end
    end
    if ta_live then incr(h, 'ta_rem', old - new) end
  end
end
return 1
"""

RESTRICT: Final = _COMMON + r"""
-- KEYS: h; ARGV: scale, block s, block limit, req remaining, req reset, req limit,
-- tok remaining, tok reset, rpm cap, tpm cap ('' = absent)
local h = KEYS[1]
if ARGV[2] ~= '' then
  local untl = now + tonumber(ARGV[2])
  local bu = num(h, 'bu')
  if bu == nil or untl > bu then redis.call('HSET', h, 'bu', tostring(untl), 'bl', ARGV[3]) end
end
if ARGV[4] ~= '' then
  redis.call('HSET', h, 'ra_rem', ARGV[4], 'ra_until', tostring(now + tonumber(ARGV[5])),
             'ra_lim', ARGV[6])
  incr(h, 'ra_gen', 1)
end
if ARGV[7] ~= '' then
  redis.call('HSET', h, 'ta_rem', ARGV[7], 'ta_until', tostring(now + tonumber(ARGV[8])))
  incr(h, 'ta_gen', 1)
end
for j, field in ipairs({'rpm_cap', 'tpm_cap'}) do
  local cap = tonumber(ARGV[8 + j])
  if cap then
    local have = num(h, field)
    if have == nil or cap < have then redis.call('HSET', h, field, ARGV[8 + j]) end
  end
end
redis.call('PEXPIRE', h, ttl)
return 1
"""

USAGE: Final = _COMMON + r"""
-- KEYS: m, d, h; ARGV: scale, rpm, tpm (configured, -1 = none)
local m, d, h = KEYS[1], KEYS[2], KEYS[3]
prune(m, d, h)
local blocked = 0
local bu = num(h, 'bu')
if bu and bu > now then blocked = bu - now end
for _, p in ipairs({'ra', 'ta'}) do
  local rem, untl = allowance(h, p)
  if rem and rem < 1 and untl - now > blocked then blocked = untl - now end
end
return {tostring(redis.call('ZCARD', m)), tostring(num(h, 'mtok') or 0),
        tostring(redis.call('ZCARD', d)),
        tostring(limit(h, tonumber(ARGV[2]), 'rpm_cap')),
        tostring(limit(h, tonumber(ARGV[3]), 'tpm_cap')), tostring(blocked)}
"""

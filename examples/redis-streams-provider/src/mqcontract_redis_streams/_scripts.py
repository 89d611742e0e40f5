"""The Lua scripts: every operation that changes a queue is one atomic script.

How a held message is represented — the whole trick of this provider:

* A message is *held* while its entry is in the consumer group's pending entries list
  (PEL) with an idle time below ``HOLD`` (the largest visibility timeout, in ms).
* Claiming it for ``vt`` ms sets its idle time to ``HOLD - vt`` (``XCLAIM … IDLE``), so it
  reaches ``HOLD`` exactly when the visibility timeout passes, whatever ``vt`` each
  receive chose, sub-second included.
* ``XAUTOCLAIM … min-idle HOLD`` therefore reclaims exactly the expired entries, scanning
  the PEL in stream order (so a redelivered message keeps its original position) and
  adding one to the entry's delivery count, which is the ``receive_count``.
* Nack sets the idle time to ``HOLD``: reclaimable at once. Ack is ``XACK`` + ``XDEL``.
* Times come from the server (``TIME``), never from a client clock.

Replies: a missing queue is the error reply ``MQC_NO_QUEUE``; everything else is data.
"""

from __future__ import annotations

from mqcontract_redis_streams._keys import GROUP

__all__ = ["CREATE", "DELETE", "NO_QUEUE", "RECEIVE", "SEND", "SETTLE"]

#: The error reply of every script when the queue is not in the registry.
NO_QUEUE = "MQC_NO_QUEUE"

# KEYS of every script: registry, stream, ids, seq, delayed, parked (see ``_keys``).
# ARGV[1] is always the queue name.
_PRELUDE = f"""
local G = '{GROUP}'
local function int(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function now_us()
  local t = redis.call('TIME')
  return int(tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
local function exists()
  return redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1
end
"""

#: -> 1 if created, 0 if it existed. The id counter survives: ids are never reused.
CREATE = (
    _PRELUDE
    + """
if exists() then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5], KEYS[6])
redis.call('XGROUP', 'CREATE', KEYS[2], G, '0', 'MKSTREAM')
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""
)

#: -> 1 if deleted, 0 if missing. Keeps the id counter (see CREATE).
DELETE = (
    _PRELUDE
    + """
local existed = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5], KEYS[6])
return existed
"""
)

#: ARGV: queue, delay_ms, payload... -> the new msg_ids, in order.
SEND = (
    _PRELUDE
    + """
if not exists() then return redis.error_reply('MQC_NO_QUEUE') end
local delay = tonumber(ARGV[2])
local sent_at = now_us()
local due = int(now_ms() + delay)
local ids = {}
for i = 3, #ARGV do
  local id = int(redis.call('INCR', KEYS[4]))
  if delay > 0 then
    redis.call('ZADD', KEYS[5], due, id)
    redis.call('HSET', KEYS[6], 'p:' .. id, ARGV[i], 't:' .. id, sent_at)
  else
    local sid = redis.call('XADD', KEYS[2], '*', 'id', id, 'p', ARGV[i], 't', sent_at)
    redis.call('HSET', KEYS[3], id, sid)
  end
  ids[#ids + 1] = id
end
return ids
"""
)

#: ARGV: queue, limit, vt_ms, hold_ms ->
#: {last stream id, ms until the next delayed message is due or -1,
#:  then per message: msg_id, payload, receive_count, sent_at_us}.
RECEIVE = (
    _PRELUDE
    + """
if not exists() then return redis.error_reply('MQC_NO_QUEUE') end
local limit, vt, hold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()

-- 1. Delayed messages that are due join the stream, earliest due first.
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', int(now), 'WITHSCORES')
local items = {}
for i = 1, #due, 2 do items[#items + 1] = {due[i], tonumber(due[i + 1])} end
table.sort(items, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  if #a[1] ~= #b[1] then return #a[1] < #b[1] end
  return a[1] < b[1]
end)
for _, item in ipairs(items) do
  local id = item[1]
  local parked = redis.call('HMGET', KEYS[6], 'p:' .. id, 't:' .. id)
  if parked[1] then
    local sid = redis.call('XADD', KEYS[2], '*', 'id', id, 'p', parked[1], 't', parked[2])
    redis.call('HSET', KEYS[3], id, sid)
  end
  redis.call('HDEL', KEYS[6], 'p:' .. id, 't:' .. id)
  redis.call('ZREM', KEYS[5], id)
end

-- 2. Released and expired entries, oldest first (they precede every unread entry).
local entries, counts = {}, {}
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[2], G, G, int(hold), cursor,
                       'COUNT', int(limit - #entries))
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    entries[#entries + 1] = e
    counts[#entries] = redis.call('XPENDING', KEYS[2], G, e[1], e[1], 1)[1][4]
  end
until cursor == '0-0' or #entries >= limit

-- 3. Entries never delivered, in stream order.
if #entries < limit then
  local r = redis.call('XREADGROUP', 'GROUP', G, G, 'COUNT', int(limit - #entries),
                       'STREAMS', KEYS[2], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      entries[#entries + 1] = e
      counts[#entries] = 1
    end
  end
end

-- 4. Each claim's deadline: idle = hold - vt reaches hold when vt has passed.
if #entries > 0 then
  local args = {'XCLAIM', KEYS[2], G, G, '0'}
  for _, e in ipairs(entries) do args[#args + 1] = e[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = int(hold - vt)
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end

local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local first_due = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local out = {
  last[1] and last[1][1] or '0-0',
  first_due[2] and int(math.max(tonumber(first_due[2]) - now, 0)) or '-1',
}
for i, e in ipairs(entries) do
  local f = {}
  for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
  out[#out + 1] = f['id']
  out[#out + 1] = f['p']
  out[#out + 1] = int(counts[i])
  out[#out + 1] = f['t']
end
return out
"""
)

#: ARGV: queue, msg_id, hold_ms, mode -> 1 if the message was held (and is now settled),
#: else 0. Modes: ``ack`` (gone), ``nack`` (visible now, counted as a delivery) and
#: ``release`` (visible now, the delivery undone: a pushed message never handed out).
SETTLE = (
    _PRELUDE
    + """
if not exists() then return redis.error_reply('MQC_NO_QUEUE') end
local sid = redis.call('HGET', KEYS[3], ARGV[2])
if not sid then return 0 end
local hold = tonumber(ARGV[3])
local p = redis.call('XPENDING', KEYS[2], G, sid, sid, 1)
if #p == 0 or p[1][3] >= hold then return 0 end
local mode = ARGV[4]
if mode == 'ack' then
  redis.call('XACK', KEYS[2], G, sid)
  redis.call('XDEL', KEYS[2], sid)
  redis.call('HDEL', KEYS[3], ARGV[2])
elseif mode == 'nack' then
  redis.call('XCLAIM', KEYS[2], G, G, '0', sid, 'IDLE', int(hold), 'JUSTID')
else
  redis.call('XCLAIM', KEYS[2], G, G, '0', sid, 'IDLE', int(hold),
             'RETRYCOUNT', int(math.max(p[1][4] - 1, 0)), 'JUSTID')
end
return 1
"""
)

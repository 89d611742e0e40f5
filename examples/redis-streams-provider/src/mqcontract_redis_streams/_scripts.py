"""The Lua scripts: every operation that changes a queue is one atomic script.

How a held message is represented — the whole trick of this provider:

* A message is *held* while its entry is in the consumer group's pending entries list
  (PEL) with an idle time below ``HOLD`` (the largest visibility timeout, in ms). The
  PEL is the authority: ack and nack check it, in the script that acts.
* Claiming it for ``vt`` ms sets its idle time to ``HOLD - vt`` (``XCLAIM … IDLE``), so it
  reaches ``HOLD`` exactly when the visibility timeout passes, whatever ``vt`` each
  receive chose, sub-second included. Nack sets it to ``HOLD``: visible at once.
* Reclaiming is ``XCLAIM`` with min-idle ``HOLD``: Redis itself confirms the claim expired
  (or was released), claims it, and adds one to its delivery count — the
  ``receive_count``. (``XAUTOCLAIM`` with the same min-idle would find them too, but by
  scanning the whole PEL on every receive: 75 ms per receive with 10,000 held.)
* Two sorted sets index the PEL so a receive never scans it: ``held`` (entry id by
  deadline) and ``ready`` (entries visible again, in stream order). Expired entries move
  from one to the other once; a receive takes the oldest ready ones first — they all
  precede every unread entry, so a redelivered message keeps its original position.
  Every pending entry is in exactly one of them; a receive checks that in O(1) and
  rebuilds the index from the PEL if it was lost.
* A claim's token is the entry's delivery count as that claim made it. Every claim adds
  one (a first ``XREADGROUP`` sets 1, a reclaim counts one; the ``XCLAIM … JUSTID`` that
  sets a deadline counts nothing), so the count identifies the latest claim: a settle
  naming a lower count was superseded; the right count past ``HOLD`` idle has lapsed
  (or was nacked). Handing back an untaken pushed message undoes its count, so the next
  claim reuses it, but nobody ever saw the claim handed back.
* Ack is ``XACK`` + ``XDEL``. Times come from the server (``TIME``), never a client clock.

Replies: a missing queue is the error reply ``MQC_NO_QUEUE``; everything else is data.
"""

from __future__ import annotations

from mqcontract_redis_streams._keys import GROUP

__all__ = [
    "CREATE",
    "DELETE",
    "GONE",
    "LAPSED",
    "NOT_HELD",
    "NO_QUEUE",
    "RECEIVE",
    "SEND",
    "SETTLE",
    "SETTLED_NOW",
    "SUPERSEDED",
]

#: The error reply of every script when the queue is not in the registry.
NO_QUEUE = "MQC_NO_QUEUE"

# KEYS of every script: registry, stream, ids, seq, delayed, parked, held, ready (``_keys``).
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
-- Stream ids "ms-seq" padded so that lexical order (of the ready index) is stream order.
local function pad(sid)
  local ms, seq = string.match(sid, '^(%d+)%-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function unpad(member)
  local ms, seq = string.match(member, '^0*(%d-)%-0*(%d-)$')
  if ms == '' then ms = '0' end
  if seq == '' then seq = '0' end
  return ms .. '-' .. seq
end
-- Visible again now (nack, release): out of the held index, into the ready one.
local function make_ready(sid)
  redis.call('ZREM', KEYS[7], sid)
  redis.call('ZADD', KEYS[8], 0, pad(sid))
end
"""

#: -> 1 if created, 0 if it existed. The id counter survives: ids are never reused.
CREATE = (
    _PRELUDE
    + """
if exists() then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
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
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
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

-- 2. The index covers every pending entry (O(1) to check). Should it not — keys lost
--    or edited by hand — it is rebuilt from the group's pending entries list.
local pending = redis.call('XPENDING', KEYS[2], G)[1]
if pending > redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) then
  redis.call('DEL', KEYS[7], KEYS[8])
  local start = '-'
  repeat
    local rows = redis.call('XPENDING', KEYS[2], G, start, '+', 1000)
    for _, r in ipairs(rows) do
      if r[3] >= hold then
        redis.call('ZADD', KEYS[8], 0, pad(r[1]))
      else
        redis.call('ZADD', KEYS[7], int(now + hold - r[3]), r[1])
      end
    end
    if #rows > 0 then start = '(' .. rows[#rows][1] end
  until #rows < 1000
end

-- Claims whose deadline passed join the ready index (once each).
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', int(now))
for _, sid in ipairs(expired) do redis.call('ZADD', KEYS[8], 0, pad(sid)) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', int(now)) end

-- Ready entries, oldest first. XCLAIM with min-idle HOLD claims only what the group
-- confirms is not held, and counts the delivery.
local entries, counts = {}, {}
while #entries < limit do
  local ready = redis.call('ZRANGE', KEYS[8], 0, limit - #entries - 1)
  if #ready == 0 then break end
  local args = {'XCLAIM', KEYS[2], G, G, int(hold)}
  for i, member in ipairs(ready) do args[#args + 1] = unpad(member) end
  local claimed = redis.call(unpack(args))
  redis.call('ZREM', KEYS[8], unpack(ready))
  local got = {}
  for _, e in ipairs(claimed) do
    got[e[1]] = true
    entries[#entries + 1] = e
    counts[#entries] = redis.call('XPENDING', KEYS[2], G, e[1], e[1], 1)[1][4]
  end
  -- The index and the group never disagree (the same scripts change both), but should
  -- they, an entry the group still holds goes back to the held index, not missing.
  for i = 6, #args do
    local p = got[args[i]] or redis.call('XPENDING', KEYS[2], G, args[i], args[i], 1)
    if p ~= true and #p > 0 then
      redis.call('ZADD', KEYS[7], int(now + hold - p[1][3]), args[i])
    end
  end
end

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
  for _, e in ipairs(entries) do
    args[#args + 1] = e[1]
    redis.call('ZADD', KEYS[7], int(now + vt), e[1])
  end
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

#: What SETTLE answers for each claim (``service`` maps the stale ones to a StaleReason).
SETTLED_NOW, LAPSED, SUPERSEDED, GONE, NOT_HELD = 0, 1, 2, 3, 4

#: ARGV: queue, hold_ms, mode, then msg_id and token of each claim -> one code per claim
#: (``SETTLED_NOW`` or why it is stale). A claim is live while its entry is pending, its
#: delivery count is the claim's token and its idle time is below HOLD: checked and acted
#: on in this one script, so nothing can claim the message in between. Modes: ``ack``
#: (gone), ``nack`` (visible now, counted as a delivery) and ``release`` (visible now, the
#: delivery undone: a pushed message never handed out). A stale claim changes nothing.
SETTLE = (
    _PRELUDE
    + f"""
if not exists() then return redis.error_reply('MQC_NO_QUEUE') end
local hold, mode = tonumber(ARGV[2]), ARGV[3]
local function settle(id, token)
  if not token or token < 1 then return {NOT_HELD} end
  local sid = redis.call('HGET', KEYS[3], id)
  if not sid then return {GONE} end
  local p = redis.call('XPENDING', KEYS[2], G, sid, sid, 1)
  if #p == 0 then return {NOT_HELD} end
  local count = p[1][4]
  if count > token then return {SUPERSEDED} end
  if count < token then return {NOT_HELD} end
  if p[1][3] >= hold then return {LAPSED} end
  if mode == 'ack' then
    redis.call('XACK', KEYS[2], G, sid)
    redis.call('XDEL', KEYS[2], sid)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[7], sid)
  elseif mode == 'nack' then
    redis.call('XCLAIM', KEYS[2], G, G, '0', sid, 'IDLE', int(hold), 'JUSTID')
    make_ready(sid)
  else
    redis.call('XCLAIM', KEYS[2], G, G, '0', sid, 'IDLE', int(hold),
               'RETRYCOUNT', int(math.max(count - 1, 0)), 'JUSTID')
    make_ready(sid)
  end
  return {SETTLED_NOW}
end
local out = {{}}
for i = 4, #ARGV - 1, 2 do out[#out + 1] = settle(ARGV[i], tonumber(ARGV[i + 1])) end
return out
"""
)

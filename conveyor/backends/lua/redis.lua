-- The Redis engine's scripts. Each `-- name:` section is one script; `lib` is prepended to all.
--
-- Every key of a queue shares the hash tag {<prefix>:<queue>}, so a script over one queue runs on
-- one Cluster slot. Times are integer microseconds of the server's clock (TIME): a double holds
-- them exactly, and Redis passes Lua numbers to commands with full precision (never tostring()).
--
-- Per queue (KEYS, in this order, KEYS_PER_QUEUE of them):
--   meta      hash: delay, retention (µs), paused (0/1), created (µs), bytes (sum of body sizes)
--   body      hash id -> body            info      hash id -> "<content type>:<timestamp µs>"
--   attempts  hash id -> deliveries      lease     hash id -> token of the live lease
--   dead      hash id -> dead-letter JSON (only messages that were dead-lettered)
--   ready     zset id by visible time (due and delayed messages)
--   inflight  zset id by lease deadline (an expired lease is deliverable again)
--   age       zset id by send time (retention, oldest age)
--   wake      list of wake-up tokens consumers block on (BLPOP)

-- name: lib
local KEYS_PER_QUEUE = 10
-- a send pushes up to this many tokens, so as many blocked consumers wake
local WAKE_TOKENS = 4

local function queue_keys(group)
  local base = (group - 1) * KEYS_PER_QUEUE
  return {
    meta = KEYS[base + 1], body = KEYS[base + 2], info = KEYS[base + 3], attempts = KEYS[base + 4],
    lease = KEYS[base + 5], dead = KEYS[base + 6], ready = KEYS[base + 7], inflight = KEYS[base + 8],
    age = KEYS[base + 9], wake = KEYS[base + 10],
  }
end

local function group_count()
  return #KEYS / KEYS_PER_QUEUE
end

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- an integer as a string; tostring() would round it to 14 digits
local function int(n)
  return string.format('%d', n)
end

local function exists(q)
  return redis.call('EXISTS', q.meta) == 1
end

local function wake(q, events)
  if events > 0 then
    for _ = 1, math.min(events, WAKE_TOKENS) do
      redis.call('LPUSH', q.wake, '1')
    end
    redis.call('LTRIM', q.wake, 0, WAKE_TOKENS - 1)
  end
end

-- Store one message unless its id is stored already, so a repeated write is harmless.
local function insert(q, id, body, info, visible, timestamp, dead)
  if redis.call('HSETNX', q.body, id, body) == 0 then
    return 0
  end
  redis.call('HSET', q.info, id, info)
  if dead ~= '' then
    redis.call('HSET', q.dead, id, dead)
  end
  redis.call('ZADD', q.ready, visible, id)
  redis.call('ZADD', q.age, timestamp, id)
  redis.call('HINCRBY', q.meta, 'bytes', #body)
  return 1
end

local function drop(q, id)
  local size = redis.call('HSTRLEN', q.body, id)
  if redis.call('HDEL', q.body, id) == 0 then
    return false
  end
  redis.call('HDEL', q.info, id)
  redis.call('HDEL', q.attempts, id)
  redis.call('HDEL', q.lease, id)
  redis.call('HDEL', q.dead, id)
  redis.call('ZREM', q.ready, id)
  redis.call('ZREM', q.inflight, id)
  redis.call('ZREM', q.age, id)
  redis.call('HINCRBY', q.meta, 'bytes', -size)
  return true
end

-- True when `id` is leased under `token` and the lease has not expired.
local function is_live(q, id, token, now)
  if redis.call('HGET', q.lease, id) ~= token then
    return false
  end
  local deadline = redis.call('ZSCORE', q.inflight, id)
  return deadline ~= false and tonumber(deadline) > now
end

local function attempts_of(q, id)
  return tonumber(redis.call('HGET', q.attempts, id)) or 0
end

local function timestamp_of(info)
  return tonumber(string.match(info, ':(%d+)$'))
end

-- Up to `limit` unleased messages (delayed ones too, and expired leases), oldest visible first.
local function movable(q, limit, now)
  local ready = redis.call('ZRANGE', q.ready, 0, limit - 1, 'WITHSCORES')
  local expired = redis.call('ZRANGEBYSCORE', q.inflight, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local ids, r, e = {}, 1, 1
  while #ids < limit and (r <= #ready or e <= #expired) do
    if e > #expired or (r <= #ready and tonumber(ready[r + 1]) <= tonumber(expired[e + 1])) then
      ids[#ids + 1] = ready[r]
      r = r + 2
    else
      ids[#ids + 1] = expired[e]
      e = e + 2
    end
  end
  return ids
end

local function dead_letter_json(original_id, source, attempts, err, now)
  return string.format(
    '{"original_id":%s,"source_queue":%s,"attempts":%d,"error":%s,"dead_lettered_at":%d.%06d}',
    cjson.encode(original_id), cjson.encode(source), attempts, cjson.encode(err),
    math.floor(now / 1000000), now % 1000000)
end

-- name: create_queue
-- ARGV: delay µs, retention µs. Returns {created 0/1, delay, retention, paused, created µs}.
local q = queue_keys(1)
if exists(q) then
  local m = redis.call('HMGET', q.meta, 'delay', 'retention', 'paused', 'created')
  return {0, m[1], m[2], m[3], m[4]}
end
local now = int(server_now())
redis.call('HSET', q.meta, 'delay', ARGV[1], 'retention', ARGV[2], 'paused', '0', 'created', now, 'bytes', 0)
return {1, ARGV[1], ARGV[2], '0', now}

-- name: update_queue
-- ARGV: delay µs, retention µs. Returns {delay, retention, paused, created µs}, or {} if missing.
local q = queue_keys(1)
if not exists(q) then
  return {}
end
redis.call('HSET', q.meta, 'delay', ARGV[1], 'retention', ARGV[2])
return redis.call('HMGET', q.meta, 'delay', 'retention', 'paused', 'created')

-- name: set_paused
-- ARGV: 1 to pause, 0 to resume. Returns 0 if the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return 0
end
redis.call('HSET', q.meta, 'paused', ARGV[1])
if ARGV[1] == '0' then
  wake(q, WAKE_TOKENS)
end
return 1

-- name: delete_queue
-- Returns 1 if the queue existed.
local existed = redis.call('EXISTS', queue_keys(1).meta)
redis.call('DEL', unpack(KEYS))
return existed

-- name: forget_queue
-- KEYS: registry, subscriptions. ARGV: queue. Drops the queue's name and its subscriptions.
redis.call('SREM', KEYS[1], ARGV[1])
local suffix = '\n' .. ARGV[1]
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, -#suffix) == suffix then
    redis.call('HDEL', KEYS[2], field)
  end
end
return 1

-- name: add_subscription
-- KEYS: subscriptions. ARGV: "<topic>\n<queue>", types JSON. Keeps the first creation time.
local old = redis.call('HGET', KEYS[1], ARGV[1])
local created = old and string.match(old, '^(%d+)|') or int(server_now())
local value = created .. '|' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], value)
return value

-- name: send
-- KEYS: one group per queue. ARGV: per queue a message count, then per message: id, content type,
-- delay µs ('' for the queue's delivery delay), body, dead-letter JSON ('' for none), timestamp µs
-- ('' for now). Returns 0, or the group number of a missing queue (then nothing was stored).
for g = 1, group_count() do
  if not exists(queue_keys(g)) then
    return g
  end
end
local now = server_now()
local at = 1
for g = 1, group_count() do
  local q = queue_keys(g)
  local count = tonumber(ARGV[at])
  at = at + 1
  local default_delay = nil
  for i = 1, count do
    local id, content_type, delay, body, dead, ts = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
      ARGV[at + 4], ARGV[at + 5]
    at = at + 6
    if delay == '' then
      default_delay = default_delay or tonumber(redis.call('HGET', q.meta, 'delay'))
      delay = default_delay
    else
      delay = tonumber(delay)
    end
    local timestamp = ts == '' and now or tonumber(ts)
    -- one microsecond apart: a batch stays in the order it was sent
    insert(q, id, body, content_type .. ':' .. int(timestamp), now + delay + i - 1, timestamp, dead)
  end
  wake(q, count)
end
return 0

-- name: lease
-- ARGV: limit, visibility timeout µs, token. Returns id, body, info, attempts, dead JSON per message.
local q = queue_keys(1)
if redis.call('HGET', q.meta, 'paused') ~= '0' then
  return {}
end
local now = server_now()
local limit = tonumber(ARGV[1])
-- expired leases rejoin the ready set at the time they became visible
local expired = redis.call('ZRANGEBYSCORE', q.inflight, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #expired, 2 do
  redis.call('ZADD', q.ready, expired[i + 1], expired[i])
  redis.call('ZREM', q.inflight, expired[i])
  redis.call('HDEL', q.lease, expired[i])
end
local deadline = now + tonumber(ARGV[2])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', q.ready, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', q.ready, id)
  redis.call('ZADD', q.inflight, deadline, id)
  redis.call('HSET', q.lease, id, ARGV[3])
  local attempts = redis.call('HINCRBY', q.attempts, id, 1)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', q.body, id)
  out[#out + 1] = redis.call('HGET', q.info, id)
  out[#out + 1] = attempts
  out[#out + 1] = redis.call('HGET', q.dead, id) or ''
end
return out

-- name: extend_leases
-- ARGV: visibility timeout µs, then id, token pairs. Returns how many leases were live.
local q = queue_keys(1)
local now = server_now()
local deadline = now + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV, 2 do
  if is_live(q, ARGV[i], ARGV[i + 1], now) then
    redis.call('ZADD', q.inflight, deadline, ARGV[i])
    renewed = renewed + 1
  end
end
return renewed

-- name: release
-- ARGV: id, token pairs. Returns how many leases were live.
local q = queue_keys(1)
local now = server_now()
local released = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if is_live(q, id, ARGV[i + 1], now) then
    redis.call('ZREM', q.inflight, id)
    redis.call('HDEL', q.lease, id)
    redis.call('HINCRBY', q.attempts, id, -1)
    redis.call('ZADD', q.ready, now, id)
    released = released + 1
  end
end
wake(q, released)
return released

-- name: settle
-- KEYS: the queue, then one group per dead-letter queue on this node. ARGV: source queue name,
-- ack count, (id, token)..., retry count, (id, token, delay µs)..., dead-letter count,
-- (id, token, new id, error, target)... where target is 0 (delete), a group number (move there)
-- or -1 (another Cluster slot: returned for the caller to copy, then `finish_moves`).
-- Returns {missing group or 0, statuses 1/0 per item in order, records of -1 targets}.
for g = 1, group_count() do
  if not exists(queue_keys(g)) then
    return {g, {}, {}}
  end
end
local q = queue_keys(1)
local now = server_now()
local source = ARGV[1]
local at = 2
local status, remote, woken = {}, {}, {}
local count = tonumber(ARGV[at])
at = at + 1
for _ = 1, count do
  local id, token = ARGV[at], ARGV[at + 1]
  at = at + 2
  status[#status + 1] = is_live(q, id, token, now) and drop(q, id) and 1 or 0
end
local retried = 0
count = tonumber(ARGV[at])
at = at + 1
for _ = 1, count do
  local id, token, delay = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 3
  if is_live(q, id, token, now) then
    redis.call('ZREM', q.inflight, id)
    redis.call('HDEL', q.lease, id)
    redis.call('ZADD', q.ready, now + delay, id)
    retried = retried + 1
    status[#status + 1] = 1
  else
    status[#status + 1] = 0
  end
end
wake(q, retried)
count = tonumber(ARGV[at])
at = at + 1
for n = 1, count do
  local id, token, new_id, err, target = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
    tonumber(ARGV[at + 4])
  at = at + 5
  if is_live(q, id, token, now) then
    status[#status + 1] = 1
    if target ~= 0 then
      local body, info = redis.call('HGET', q.body, id), redis.call('HGET', q.info, id)
      local content_type = string.match(info, '^([^:]+):')
      local dead = dead_letter_json(id, source, attempts_of(q, id), err, now)
      if target > 0 then
        drop(q, id)
        insert(queue_keys(target), new_id, body, content_type .. ':' .. int(now), now + n - 1, now, dead)
        woken[target] = (woken[target] or 0) + 1
      else
        remote[#remote + 1] = {new_id, body, content_type, dead}
      end
    else
      drop(q, id)
    end
  else
    status[#status + 1] = 0
  end
end
for g, events in pairs(woken) do
  wake(queue_keys(g), events)
end
return {0, status, remote}

-- name: finish_moves
-- ARGV: id, token pairs. Deletes each message still held under its token (the second half of a
-- copy to another slot); returns 1/0 per pair.
local q = queue_keys(1)
local out = {}
for i = 1, #ARGV, 2 do
  local held = redis.call('HGET', q.lease, ARGV[i]) == ARGV[i + 1]
  out[#out + 1] = held and drop(q, ARGV[i]) and 1 or 0
end
return out

-- name: discard
-- ARGV: ids. Deletes them (undoing a copy whose source was taken back meanwhile).
local q = queue_keys(1)
local dropped = 0
for i = 1, #ARGV do
  if drop(q, ARGV[i]) then
    dropped = dropped + 1
  end
end
return dropped

-- name: move
-- KEYS: source group, destination group (one node). ARGV: limit. Returns how many moved, or -1 /
-- -2 when the source / destination is missing.
local src, dst = queue_keys(1), queue_keys(2)
if not exists(src) then
  return -1
end
if not exists(dst) then
  return -2
end
local now = server_now()
local ids = movable(src, tonumber(ARGV[1]), now)
for i, id in ipairs(ids) do
  local body, info = redis.call('HGET', src.body, id), redis.call('HGET', src.info, id)
  drop(src, id)
  insert(dst, id, body, info, now + i - 1, timestamp_of(info), '')
end
wake(dst, #ids)
return #ids

-- name: claim_for_move
-- KEYS: source group. ARGV: limit, hold µs, token. Leases up to `limit` movable messages to the
-- mover without counting an attempt; returns id, body, info per message ({-1} if missing).
local q = queue_keys(1)
if not exists(q) then
  return {-1}
end
local now = server_now()
local out = {}
for _, id in ipairs(movable(q, tonumber(ARGV[1]), now)) do
  redis.call('ZREM', q.ready, id)
  redis.call('ZADD', q.inflight, now + tonumber(ARGV[2]), id)
  redis.call('HSET', q.lease, id, ARGV[3])
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', q.body, id)
  out[#out + 1] = redis.call('HGET', q.info, id)
end
return out

-- name: purge
-- Returns how many messages were deleted, or -1 if the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return -1
end
local count = redis.call('HLEN', q.body)
redis.call('DEL', q.body, q.info, q.attempts, q.lease, q.dead, q.ready, q.inflight, q.age)
redis.call('HSET', q.meta, 'bytes', 0)
return count

-- name: sweep
-- ARGV: most to delete. Deletes messages sent before now - retention; returns how many.
local q = queue_keys(1)
local retention = tonumber(redis.call('HGET', q.meta, 'retention'))
if not retention then
  return 0
end
local cutoff = server_now() - retention
local ids = redis.call('ZRANGEBYSCORE', q.age, '-inf', '(' .. int(cutoff), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  drop(q, id)
end
return #ids

-- name: stats
-- Returns {paused, bytes, ready, delayed, expired leases, live leases, oldest µs or '', now µs}.
local q = queue_keys(1)
local m = redis.call('HMGET', q.meta, 'paused', 'bytes')
if not m[1] then
  return {}
end
local now = server_now()
local later = '(' .. int(now)
local oldest = redis.call('ZRANGE', q.age, 0, 0, 'WITHSCORES')
return {
  m[1], m[2],
  redis.call('ZCOUNT', q.ready, '-inf', now), redis.call('ZCOUNT', q.ready, later, '+inf'),
  redis.call('ZCOUNT', q.inflight, '-inf', now), redis.call('ZCOUNT', q.inflight, later, '+inf'),
  oldest[2] or '', int(now),
}

-- name: peek
-- ARGV: limit. Returns {1, then per message: id, body, info, attempts, dead JSON, visible µs,
-- leased 0/1}, oldest visible first; {} if the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return {}
end
local now = server_now()
local limit = tonumber(ARGV[1])
local ready = redis.call('ZRANGE', q.ready, 0, limit - 1, 'WITHSCORES')
local leased = redis.call('ZRANGE', q.inflight, 0, limit - 1, 'WITHSCORES')
local out, r, l = {1}, 1, 1
while (#out - 1) / 7 < limit and (r <= #ready or l <= #leased) do
  local id, visible, is_leased
  if l > #leased or (r <= #ready and tonumber(ready[r + 1]) <= tonumber(leased[l + 1])) then
    id, visible, is_leased = ready[r], ready[r + 1], 0
    r = r + 2
  else
    id, visible = leased[l], leased[l + 1]
    is_leased = tonumber(visible) > now and 1 or 0
    l = l + 2
  end
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', q.body, id)
  out[#out + 1] = redis.call('HGET', q.info, id)
  out[#out + 1] = attempts_of(q, id)
  out[#out + 1] = redis.call('HGET', q.dead, id) or ''
  out[#out + 1] = visible
  out[#out + 1] = is_leased
end
return out

-- name: wake_delay
-- Microseconds until the queue's next message becomes deliverable: 0 if one is now, -1 if none
-- is scheduled (or the queue is paused or missing).
local q = queue_keys(1)
if redis.call('HGET', q.meta, 'paused') ~= '0' then
  return -1
end
local due = nil
for _, key in ipairs({q.ready, q.inflight}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] and (due == nil or tonumber(first[2]) < due) then
    due = tonumber(first[2])
  end
end
if due == nil then
  return -1
end
return math.max(0, due - server_now())

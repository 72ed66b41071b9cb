-- The Redis engine's scripts. Each `-- name:` section is one script; `lib` is prepended to all.
--
-- Every key of a queue shares the hash tag {<prefix>:<queue>}, so a script over one queue runs on
-- one Cluster slot. Times are integer microseconds of the server's clock (TIME): a double holds
-- them exactly, and Redis passes Lua numbers to commands with full precision (never tostring()).
--
-- Per queue (KEYS, in this order, KEYS_PER_QUEUE of them):
--   meta      hash: delay, retention (µs), paused (0/1), created (µs), bytes (sum of body sizes),
--             maxmsgs, maxbytes (the backlog limits; '' or absent: no limit), dedup (the dedup
--             window, µs; absent: the default)
--   msgs      hash id -> record "<content type>:<timestamp µs>:<JSON length>:<JSON><body>"; the JSON
--             (length 0: none) holds the dead-letter record's fields and the message's headers
--             under "headers" (records written before headers hold the record only)
--   state     hash id -> "<deliveries>:<body size>:<lost>:<lease token>" (messages leased at
--             least once; `lost`: deliveries in a row without an outcome; a state written before
--             `lost` existed reads as "<deliveries>:<body size>:<lease token>" with lost 0)
--   ready     zset id by visible time (due and delayed messages)
--   inflight  zset id by lease deadline (an expired lease is deliverable again)
--   age       zset id by send time (retention, oldest age; also: which ids are stored)
--   wake      list of wake-up tokens consumers block on (BLPOP)
--   group     hash id -> ordered message group (grouped messages only; absent: none ever sent)
--   held      zset id by visible time: grouped messages waiting behind their group's head (they
--             are in neither `ready` nor `inflight`, so a lease never walks past them)
--
-- Ordered message groups: "{<prefix>:<queue>}:glist:<group>" (same slot) lists a group's ids in
-- send order; its first is the head, the only one in `ready`/`inflight`. When the head goes
-- (acked, dead-lettered, deleted) the next moves from `held` to `ready`
-- (docs/concepts/groups.md).
--
-- A dedup id's claim is a string key beside them, "{<prefix>:<queue>}:dedup:<dedup id>" (same
-- slot), holding "<message id>|<queue created µs>" and expiring with the window: a claim left by
-- a deleted queue of the same name is not the new queue's.
--
-- A partitioned queue (docs/concepts/partitions.md) keeps partition 0 under the queue's tag and
-- partition p >= 1 under "{<prefix>:<queue>#p<p>}", each a full set of the keys above (so each its
-- own Cluster slot), its meta a copy of the queue's settings with its own `bytes`, plus `parts`
-- (the count). The client places messages (conveyor/backends/partitioning.py) and runs one
-- script per partition; a script never spans partitions.
--
-- A lease is live when the state's token matches and the id is in `inflight` with a deadline
-- still ahead. Work on many messages is done with one variadic command per key (HMGET, ZMSCORE,
-- ZADD/ZREM/HDEL with many members), not one command per message: a command call from Lua costs
-- about as much as the work it does.

-- name: lib
local KEYS_PER_QUEUE = 9
-- a send pushes up to this many tokens, so as many blocked consumers wake
local WAKE_TOKENS = 4
-- most arguments handed to one command (Lua's unpack() has a stack limit)
local CHUNK = 2000
-- a queue's dedup window when its meta has none (a queue created before deduplication), µs
local DEFAULT_DEDUP_US = 300000000
-- wake-up tokens this script pushed (settle returns it: a client of a partitioned queue on a
-- Cluster then wakes the consumers waiting on the queue's first partition)
local woken = 0

local function queue_keys(group)
  local base = (group - 1) * KEYS_PER_QUEUE
  return {
    meta = KEYS[base + 1], msgs = KEYS[base + 2], state = KEYS[base + 3], ready = KEYS[base + 4],
    inflight = KEYS[base + 5], age = KEYS[base + 6], wake = KEYS[base + 7], group = KEYS[base + 8],
    held = KEYS[base + 9],
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

-- `command key args...` in chunks; `step` keeps pairs (score, member) together. Returns the
-- concatenated replies when they are tables.
local function many(command, key, args, step)
  local out = {}
  local size = CHUNK - CHUNK % (step or 1)
  for first = 1, #args, size do
    local reply = redis.call(command, key, unpack(args, first, math.min(first + size - 1, #args)))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do
        out[#out + 1] = value
      end
    end
  end
  return out
end

-- HMGET / ZMSCORE keep a position for every id (false where missing), so no ipairs over replies.
local function many_get(command, key, ids)
  local out = {}
  for first = 1, #ids, CHUNK do
    local last = math.min(first + CHUNK - 1, #ids)
    local reply = redis.call(command, key, unpack(ids, first, last))
    for i = 1, last - first + 1 do
      out[first + i - 1] = reply[i]
    end
  end
  return out
end

-- The list ends holding min(what it held + events, WAKE_TOKENS) tokens, as a push then a trim to
-- WAKE_TOKENS would leave it, with one command when it is full (no consumer waits: a sender's case).
local function wake(q, events)
  if events > 0 then
    woken = woken + events
    local room = WAKE_TOKENS - redis.call('LLEN', q.wake)
    if room > 0 then
      local tokens = {}
      for i = 1, math.min(events, room) do
        tokens[i] = '1'
      end
      redis.call('LPUSH', q.wake, unpack(tokens))
    end
  end
end

-- the list of a group's ids in send order (q.meta ends with 'meta')
local function group_list(q, group)
  return string.sub(q.meta, 1, -5) .. 'glist:' .. group
end

-- whether the queue ever held a grouped message: ungrouped queues skip every group step
local function grouped(q)
  return redis.call('EXISTS', q.group) == 1
end

-- the groups of `ids` (false where none), or nil when the queue has no grouped message
local function groups_of(q, ids)
  if #ids == 0 or not grouped(q) then
    return nil
  end
  return many_get('HMGET', q.group, ids)
end

-- Take `id` out of its group's list; when it was the head, the next becomes deliverable (from
-- `held` to `ready`, at its own visible time). Returns 1 when a next one was made deliverable.
local function leave_group(q, id, group)
  local list = group_list(q, group)
  if redis.call('LINDEX', list, 0) ~= id then
    redis.call('LREM', list, 1, id)
    return 0
  end
  redis.call('LPOP', list)
  local next_id = redis.call('LINDEX', list, 0)
  if not next_id then
    return 0
  end
  local score = redis.call('ZSCORE', q.held, next_id)
  if score then
    redis.call('ZREM', q.held, next_id)
    redis.call('ZADD', q.ready, score, next_id)
  end
  return 1
end

-- Forget the groups of deleted `ids` (their groups from groups_of); returns how many groups
-- moved on to their next message.
local function leave_groups(q, ids, groups)
  if not groups then
    return 0
  end
  local freed, gone = 0, {}
  for i, id in ipairs(ids) do
    if groups[i] then
      freed = freed + leave_group(q, id, groups[i])
      gone[#gone + 1] = id
    end
  end
  many('HDEL', q.group, gone)
  many('ZREM', q.held, gone)
  return freed
end

-- every group list of the queue (to delete them with it)
local function group_lists(q)
  local lists, seen = {}, {}
  for _, group in ipairs(redis.call('HVALS', q.group)) do
    if not seen[group] then
      seen[group] = true
      lists[#lists + 1] = group_list(q, group)
    end
  end
  return lists
end

local function record(content_type, timestamp, dead, body)
  return content_type .. ':' .. int(timestamp) .. ':' .. #dead .. ':' .. dead .. body
end

-- the JSON section of a replayed message: its headers, without the dead-letter record
local function headers_only(section)
  if section == '' then
    return ''
  end
  local headers = cjson.decode(section)['headers']
  if not headers then
    return ''
  end
  return '{"headers":' .. cjson.encode(headers) .. '}'
end

-- the JSON section of a dead letter's copy: the record (JSON text, kept as the core wrote it),
-- the message's headers and over them the record's own (JSON text)
local function dead_letter_section(section, json, trace)
  local headers = {}
  if section ~= '' then
    headers = cjson.decode(section)['headers'] or {}
  end
  for key, value in pairs(cjson.decode(trace)) do
    headers[key] = value
  end
  return string.sub(json, 1, -2) .. ',"headers":' .. cjson.encode(headers) .. '}'
end

-- content type, timestamp, JSON section and body of a stored record
local function unpack_record(rec)
  local content_type, timestamp, length, at = string.match(rec, '^([^:]*):(%d+):(%d+):()')
  length = tonumber(length)
  return content_type, tonumber(timestamp), string.sub(rec, at, at + length - 1), string.sub(rec, at + length)
end

local function body_size(rec)
  local length, at = string.match(rec, '^[^:]*:%d+:(%d+):()')
  return #rec - at + 1 - tonumber(length)
end

-- "<deliveries>:<size>:<lost>:<token>" -> deliveries, size, token, lost (tokens hold no ':')
local function unpack_state(s)
  local attempts, size, lost, token = string.match(s, '^(%d+):(%d+):(%d+):(.*)$')
  if attempts then
    return tonumber(attempts), tonumber(size), token, tonumber(lost)
  end
  attempts, size, token = string.match(s, '^(%d+):(%d+):(.*)$')
  return tonumber(attempts), tonumber(size), token, 0
end

local function state(attempts, size, token, lost)
  return attempts .. ':' .. size .. ':' .. (lost or 0) .. ':' .. token
end

-- Store messages {id, record, visible, timestamp, size, group or nil} whose ids are not stored
-- already, so a repeated write is harmless. A grouped message joins its group's end: deliverable
-- (`ready`) when it is the head, else `held`. Returns how many were stored.
local function insert_many(q, items)
  if #items == 0 then
    return 0
  end
  local ids = {}
  for i, item in ipairs(items) do
    ids[i] = item[1]
  end
  local stored = many_get('ZMSCORE', q.age, ids)
  local seen, fields, ready, age, bytes, count = {}, {}, {}, {}, 0, 0
  for i, item in ipairs(items) do
    local id = item[1]
    if not stored[i] and not seen[id] then
      seen[id] = true
      count = count + 1
      fields[#fields + 1] = id
      fields[#fields + 1] = item[2]
      age[#age + 1] = item[4]
      age[#age + 1] = id
      bytes = bytes + item[5]
      local group = item[6]
      if group and group ~= '' then
        redis.call('HSET', q.group, id, group)
        if redis.call('RPUSH', group_list(q, group), id) > 1 then
          redis.call('ZADD', q.held, item[3], id)
        else
          ready[#ready + 1] = item[3]
          ready[#ready + 1] = id
        end
      else
        ready[#ready + 1] = item[3]
        ready[#ready + 1] = id
      end
    end
  end
  if count == 0 then
    return 0
  end
  many('HSET', q.msgs, fields, 2)
  many('ZADD', q.ready, ready, 2)
  many('ZADD', q.age, age, 2)
  redis.call('HINCRBY', q.meta, 'bytes', bytes)
  return count
end

-- Delete messages wherever they are (a group's next message becomes deliverable, waking
-- consumers). `recs` (their records, from HMGET) may be given when the caller read them already.
-- Returns a table id -> true of those that were stored.
local function drop_many(q, ids, recs)
  if #ids == 0 then
    return {}
  end
  recs = recs or many_get('HMGET', q.msgs, ids)
  local groups = groups_of(q, ids)
  local gone, dropped, bytes = {}, {}, 0
  for i, id in ipairs(ids) do
    if recs[i] and not dropped[id] then
      dropped[id] = true
      gone[#gone + 1] = id
      bytes = bytes + body_size(recs[i])
    end
  end
  if #gone > 0 then
    many('HDEL', q.msgs, gone)
    many('HDEL', q.state, gone)
    many('ZREM', q.ready, gone)
    many('ZREM', q.inflight, gone)
    many('ZREM', q.age, gone)
    redis.call('HINCRBY', q.meta, 'bytes', -bytes)
    if groups then
      local kept = {}
      for i, id in ipairs(ids) do
        kept[i] = recs[i] and groups[i]
      end
      wake(q, leave_groups(q, ids, kept))
    end
  end
  return dropped
end

-- For each (id, token) pair at ARGV[first], ARGV[first + stride], ...: its state string when the
-- lease is live (token matches, deadline ahead), else false. One HMGET and one ZMSCORE in all.
local function live_states(q, ids, tokens, now)
  local states = many_get('HMGET', q.state, ids)
  local deadlines = many_get('ZMSCORE', q.inflight, ids)
  local out = {}
  for i = 1, #ids do
    local s, live = states[i], false
    if s and deadlines[i] and tonumber(deadlines[i]) > now then
      local _, _, token = unpack_state(s)
      if token == tokens[i] then
        live = s
      end
    end
    out[i] = live
  end
  return out
end

-- Up to `limit` unleased messages (delayed ones too, expired leases, and those held behind
-- their group's head), oldest visible first.
local function movable(q, limit, now)
  local candidates = {}
  local function add(reply)
    for i = 1, #reply, 2 do
      candidates[#candidates + 1] = {reply[i], tonumber(reply[i + 1]), #candidates}
    end
  end
  add(redis.call('ZRANGE', q.ready, 0, limit - 1, 'WITHSCORES'))
  add(redis.call('ZRANGEBYSCORE', q.inflight, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit))
  add(redis.call('ZRANGE', q.held, 0, limit - 1, 'WITHSCORES'))
  table.sort(candidates, function(a, b)
    if a[2] ~= b[2] then
      return a[2] < b[2]
    end
    return a[3] < b[3]
  end)
  local ids = {}
  for i = 1, math.min(limit, #candidates) do
    ids[i] = candidates[i][1]
  end
  return ids
end

-- name: create_queue
-- ARGV: delay µs, retention µs, max messages, max bytes ('' for no limit), dedup window µs, pull
-- consumer (JSON, '' for none), partitions; for a partition p >= 1, also the queue's created µs
-- and paused (0/1), which it copies.
-- Returns {created 0/1, delay, retention, paused, created µs, max messages, max bytes, dedup window µs,
-- pull consumer, partitions (absent: 1)}.
local q = queue_keys(1)
if exists(q) then
  local m = redis.call('HMGET', q.meta, 'delay', 'retention', 'paused', 'created', 'maxmsgs', 'maxbytes', 'dedup',
    'pull', 'parts')
  if not ARGV[8] or m[4] == ARGV[8] then
    return {0, m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9]}
  end
  -- a partition of a deleted queue of this name (a send made it again while the delete ran):
  -- none of it is the new queue's
  local lists = group_lists(q)
  if #lists > 0 then
    many('DEL', lists[1], lists, 1)
  end
  redis.call('DEL', q.meta, q.msgs, q.state, q.ready, q.inflight, q.age, q.group, q.held)
end
local now = ARGV[8] or int(server_now())
local paused = ARGV[9] or '0'
redis.call('HSET', q.meta, 'delay', ARGV[1], 'retention', ARGV[2], 'paused', paused, 'created', now, 'bytes', 0,
  'maxmsgs', ARGV[3], 'maxbytes', ARGV[4], 'dedup', ARGV[5], 'pull', ARGV[6], 'parts', ARGV[7])
return {1, ARGV[1], ARGV[2], paused, now, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}

-- name: update_queue
-- ARGV: as create_queue's (the partition count, fixed at creation, is not changed).
-- Returns {delay, retention, paused, created µs, max messages, max bytes, dedup window µs, pull
-- consumer, partitions}, or {} if missing.
local q = queue_keys(1)
if not exists(q) then
  return {}
end
redis.call('HSET', q.meta, 'delay', ARGV[1], 'retention', ARGV[2], 'maxmsgs', ARGV[3], 'maxbytes', ARGV[4],
  'dedup', ARGV[5], 'pull', ARGV[6])
return redis.call('HMGET', q.meta, 'delay', 'retention', 'paused', 'created', 'maxmsgs', 'maxbytes', 'dedup', 'pull',
  'parts')

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
local lists = group_lists(queue_keys(1))
if #lists > 0 then
  many('DEL', lists[1], lists, 1)
end
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
-- KEYS: one group per queue (or partition). ARGV: per queue the partition count the client placed
-- its messages for, whether the client checked a partitioned queue's backlog limits (1/0), a
-- message count, then per message two arguments: its
-- id, and "<delay µs>:<timestamp µs>:<content type>:<dead-letter JSON length>:<JSON><body>" (an
-- empty delay means the queue's delivery delay, an empty timestamp now, length 0 no dead letter);
-- then a count of grouped messages and per grouped message two arguments: its index in the
-- group, its ordered message group; then a count of dedup ids and per dedup id two arguments: the
-- message's index in the group, the dedup id. Returns {the group number of a missing queue}; or, for a bounded queue the messages
-- it would store do not fit in, {minus its group number, limit name, what it holds, what the send
-- adds, the limit}; or {minus its group number, 'partitions', the queue's partition count, 0, 0}
-- when the client placed for another count; or {minus its group number, 'unchecked', 0, 0, 0}
-- for a bounded partitioned queue the client did not check (its limits are the whole queue's,
-- which no partition's script sees); in each case nothing was stored. Or {0, then per message not stored for its
-- dedup id: group, index, the id of the message holding it}. Every check comes before the first
-- write (a script's writes are not undone by its return); a deduplicated message takes no room.
-- The common send in fewer steps (the general code below stores it alike): one message with
-- neither group nor dedup id, into an existing queue of one partition without backlog limits.
-- Returns nil when the send is not that case, or the queue is not such a queue.
local function send_lone()
  if #KEYS ~= KEYS_PER_QUEUE or #ARGV ~= 7 or ARGV[3] ~= '1' or ARGV[6] ~= '0' or ARGV[7] ~= '0' then
    return nil
  end
  local q = queue_keys(1)
  local created, queue_delay, most_messages, most_bytes, parts =
    unpack(redis.call('HMGET', q.meta, 'created', 'delay', 'maxmsgs', 'maxbytes', 'parts'))
  if not created or (most_messages or '') ~= '' or (most_bytes or '') ~= '' or (tonumber(parts) or 1) ~= 1
      or ARGV[1] ~= '1' then
    return nil
  end
  local id, packed = ARGV[4], ARGV[5]
  local delay, ts, content_type, dead_length, rest = string.match(packed, '^(%d*):(%d*):([^:]*):(%d+):()')
  local now = server_now()
  local timestamp = ts == '' and now or tonumber(ts)
  -- NX: an id is stored once (a repeated send adds nothing), as insert_many's ZMSCORE check
  if redis.call('ZADD', q.age, 'NX', timestamp, id) == 1 then
    local tail = string.sub(packed, rest - #dead_length - 1)
    redis.call('HSET', q.msgs, id, content_type .. ':' .. int(timestamp) .. ':' .. tail)
    redis.call('ZADD', q.ready, now + tonumber(delay == '' and queue_delay or delay), id)
    redis.call('HINCRBY', q.meta, 'bytes', #packed - rest + 1 - tonumber(dead_length))
  end
  wake(q, 1)
  return {0}
end
local lone = send_lone()
if lone then
  return lone
end
-- each queue's settings in one read (created: absent when the queue is missing)
local metas = {}
for g = 1, group_count() do
  local meta = redis.call('HMGET', queue_keys(g).meta, 'created', 'delay', 'maxmsgs', 'maxbytes', 'dedup', 'parts')
  if not meta[1] then
    return {g}
  end
  metas[g] = meta
end
local now = server_now()
local reply = {0}
local at = 1
local groups = {}
for g = 1, group_count() do
  local q = queue_keys(g)
  local created, queue_delay, most_messages, most_bytes, dedup, parts_text = unpack(metas[g])
  local placed_for, checked, count = tonumber(ARGV[at]), ARGV[at + 1] == '1', tonumber(ARGV[at + 2])
  at = at + 3
  local parts = tonumber(parts_text) or 1
  if parts ~= placed_for then
    return {-g, 'partitions', parts, 0, 0}
  end
  local items, adding = {}, 0
  for i = 1, count do
    local id, packed = ARGV[at], ARGV[at + 1]
    at = at + 2
    local delay, ts, content_type, dead_length, rest = string.match(packed, '^(%d*):(%d*):([^:]*):(%d+):()')
    -- from the length on, the packed message is what a stored record holds after its timestamp
    local tail = string.sub(packed, rest - #dead_length - 1)
    local size = #packed - rest + 1 - tonumber(dead_length)
    adding = adding + size
    if delay == '' then
      delay = tonumber(queue_delay)
    else
      delay = tonumber(delay)
    end
    local timestamp = ts == '' and now or tonumber(ts)
    -- one microsecond apart: a batch stays in the order it was sent
    items[i] = {id, content_type .. ':' .. int(timestamp) .. ':' .. tail, now + delay + i - 1, timestamp, size}
  end
  local grouped_count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, grouped_count do
    items[tonumber(ARGV[at])][6] = ARGV[at + 1]
    at = at + 2
  end
  local claims = tonumber(ARGV[at])
  at = at + 1
  local claiming, ms = {}, 0
  if claims > 0 then
    local window = tonumber(dedup or DEFAULT_DEDUP_US)
    if window > 0 then
      local prefix = string.sub(q.meta, 1, -5) .. 'dedup:'  -- q.meta ends with 'meta'
      ms = math.max(1, math.floor(window / 1000))
      local pending = {}  -- claims this send makes: a later message of it naming one is deduplicated
      for c = 1, claims do
        local index, key = tonumber(ARGV[at]), prefix .. ARGV[at + 1]
        at = at + 2
        local id = items[index][1]
        local holder = pending[key]
        if not holder then
          local current = redis.call('GET', key)
          if current then
            local held_by, since = string.match(current, '^(.*)|([^|]*)$')
            if since == created then  -- else left by a deleted queue of this name: claimed again
              holder = held_by
            end
          end
        end
        if not holder then
          pending[key] = id
          claiming[#claiming + 1] = {key, id .. '|' .. created}
        elseif holder ~= id then
          adding = adding - items[index][5]
          items[index] = false
          reply[#reply + 1] = g
          reply[#reply + 1] = index
          reply[#reply + 1] = holder
        end
      end
      local kept = {}
      for i = 1, count do
        if items[i] then
          kept[#kept + 1] = items[i]
        end
      end
      items = kept
    else
      at = at + 2 * claims
    end
  end
  -- a bounded queue: what it holds now plus what this send stores must stay within its limits
  local storing = #items
  if parts > 1 and not checked and ((most_messages or '') ~= '' or (most_bytes or '') ~= '') then
    return {-g, 'unchecked', 0, 0, 0}
  end
  if storing > 0 and most_messages and most_messages ~= '' then
    local held = redis.call('ZCARD', q.age)
    if held + storing > tonumber(most_messages) then
      return {-g, 'max_backlog_messages', held, storing, most_messages}
    end
  end
  if storing > 0 and most_bytes and most_bytes ~= '' then
    local held = tonumber(redis.call('HGET', q.meta, 'bytes') or '0')
    if held + adding > tonumber(most_bytes) then
      return {-g, 'max_backlog_bytes', held, adding, most_bytes}
    end
  end
  groups[g] = {q, items, count, claiming, ms}
end
for g = 1, group_count() do
  local q, items, count, claiming, ms = groups[g][1], groups[g][2], groups[g][3], groups[g][4], groups[g][5]
  for _, claim in ipairs(claiming) do
    redis.call('SET', claim[1], claim[2], 'PX', ms)
  end
  insert_many(q, items)
  wake(q, count)
end
return reply

-- name: lease
-- ARGV: limit, visibility timeout µs, token, and optionally a count and a second token: the first
-- that many messages that are not suspects (lost 0) take the second token, when the lease takes
-- at least that many of them (Backend.lease_ahead). Returns id, record, deliveries, lost, group ('' for
-- none) per message.
local q = queue_keys(1)
if redis.call('HGET', q.meta, 'paused') ~= '0' then
  return {}
end
local now = server_now()
local limit = tonumber(ARGV[1])
local token = ARGV[3]
-- expired leases rejoin the ready set at the time they became visible, counted by their kind
-- (conveyor/backends/base.py): a read-ahead one ('r') gives its attempt back, a handed one adds
-- a lost delivery; the token is cleared, so the expiry is counted once
local expired = redis.call('ZRANGEBYSCORE', q.inflight, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
if #expired > 0 then
  local scored, ids = {}, {}
  for i = 1, #expired, 2 do
    scored[#scored + 1] = expired[i + 1]
    scored[#scored + 1] = expired[i]
    ids[#ids + 1] = expired[i]
  end
  local old = many_get('HMGET', q.state, ids)
  local groups = groups_of(q, ids)
  local counted = {}
  for i, id in ipairs(ids) do
    if old[i] then
      local attempts, size, token, lost = unpack_state(old[i])
      if string.sub(token, 1, 1) == 'r' then
        attempts = attempts - 1
      elseif token ~= '' and string.sub(token, 1, 5) ~= 'move-' then
        lost = lost + 1
      end
      counted[#counted + 1] = id
      counted[#counted + 1] = state(attempts, size, '', lost)
    end
  end
  redis.call('ZADD', q.ready, unpack(scored))
  redis.call('ZREM', q.inflight, unpack(ids))
  many('HSET', q.state, counted, 2)
  if groups then
    -- a grouped message that is not its group's head (a cross-slot replay's hold that expired)
    -- waits behind the head again
    for i, id in ipairs(ids) do
      if groups[i] and redis.call('LINDEX', group_list(q, groups[i]), 0) ~= id then
        redis.call('ZREM', q.ready, id)
        redis.call('ZADD', q.held, scored[2 * i - 1], id)
      end
    end
  end
end
local ids = redis.call('ZRANGEBYSCORE', q.ready, '-inf', now, 'LIMIT', 0, limit)
if #ids == 0 then
  return {}
end
local deadline = now + tonumber(ARGV[2])
local scored, fields, out = {}, {}, {}
local states = many_get('HMGET', q.state, ids)
local recs = many_get('HMGET', q.msgs, ids)
local groups = groups_of(q, ids) or {}
local hand = tonumber(ARGV[4] or '0')
if hand > 0 then
  local fresh = 0
  for i = 1, #ids do
    if not states[i] or select(4, unpack_state(states[i])) == 0 then
      fresh = fresh + 1
    end
  end
  if fresh < hand then
    hand = 0
  end
end
for i, id in ipairs(ids) do
  local attempts, size, lost = 0, nil, 0
  if states[i] then
    local _
    attempts, size, _, lost = unpack_state(states[i])
  else
    size = body_size(recs[i])
  end
  attempts = attempts + 1
  local given = token
  if hand > 0 and lost == 0 then
    given = ARGV[5]
    hand = hand - 1
  end
  scored[#scored + 1] = deadline
  scored[#scored + 1] = id
  fields[#fields + 1] = id
  fields[#fields + 1] = state(attempts, size, given, lost)
  out[#out + 1] = id
  out[#out + 1] = recs[i]
  out[#out + 1] = attempts
  out[#out + 1] = lost
  out[#out + 1] = groups[i] or ''
end
many('ZREM', q.ready, ids)
many('ZADD', q.inflight, scored, 2)
many('HSET', q.state, fields, 2)
return out

-- name: extend_leases
-- ARGV: visibility timeout µs, then id, token pairs. Returns how many leases were live.
local q = queue_keys(1)
local now = server_now()
local deadline = now + tonumber(ARGV[1])
local ids, tokens = {}, {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end
local scored, seen = {}, {}
for i, live in ipairs(live_states(q, ids, tokens, now)) do
  if live and not seen[ids[i]] then
    seen[ids[i]] = true
    scored[#scored + 1] = deadline
    scored[#scored + 1] = ids[i]
  end
end
many('ZADD', q.inflight, scored, 2)
return #scored / 2

-- name: begin
-- ARGV: id, token pairs of read-ahead leases handed to a handler: their token's kind becomes
-- 'h'. Returns 1/0 per pair: whether the lease was live.
local q = queue_keys(1)
local now = server_now()
local ids, tokens = {}, {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end
local fields, out, seen = {}, {}, {}
for i, live in ipairs(live_states(q, ids, tokens, now)) do
  if live and not seen[ids[i]] then
    seen[ids[i]] = true
    local attempts, size, token, lost = unpack_state(live)
    fields[#fields + 1] = ids[i]
    fields[#fields + 1] = state(attempts, size, 'h' .. string.sub(token, 2), lost)
    out[i] = 1
  else
    out[i] = 0
  end
end
many('HSET', q.state, fields, 2)
return out

-- name: hand_back
-- ARGV: id, token pairs of leases a partitioned queue's lease ahead took handed in a partition
-- while the lease as a whole fell short: their token's kind becomes 'r' again, as if leased
-- ahead. Returns how many were live.
local q = queue_keys(1)
local ids, tokens = {}, {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end
local fields = {}
for i, live in ipairs(live_states(q, ids, tokens, server_now())) do
  if live then
    local attempts, size, token, lost = unpack_state(live)
    fields[#fields + 1] = ids[i]
    fields[#fields + 1] = state(attempts, size, 'r' .. string.sub(token, 2), lost)
  end
end
many('HSET', q.state, fields, 2)
return #fields / 2

-- name: release
-- ARGV: id, token pairs. Returns how many leases were live.
local q = queue_keys(1)
local now = server_now()
local ids, tokens = {}, {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end
local gone, scored, fields, seen = {}, {}, {}, {}
for i, live in ipairs(live_states(q, ids, tokens, now)) do
  local id = ids[i]
  if live and not seen[id] then
    seen[id] = true
    local attempts, size, token, lost = unpack_state(live)
    gone[#gone + 1] = id
    scored[#scored + 1] = now
    scored[#scored + 1] = id
    fields[#fields + 1] = id
    fields[#fields + 1] = state(attempts - 1, size, '', lost)
  end
end
many('ZREM', q.inflight, gone)
many('ZADD', q.ready, scored, 2)
many('HSET', q.state, fields, 2)
wake(q, #gone)
return #gone

-- name: settle
-- KEYS: the queue, then one group per dead-letter queue on this node. ARGV: ack count,
-- (id, token)..., retry count, (id, token, delay µs)..., dead-letter count,
-- (id, token, new id, dead-letter record JSON, target, its headers JSON)... where target is 0 (delete), a group
-- number (move there) or -1 (another Cluster slot, or a partitioned queue: returned for the
-- caller to copy, then `finish_moves`).
-- Returns {missing group or 0, statuses 1/0 per item in order, records of -1 targets, wake-up
-- tokens pushed}.
for g = 1, group_count() do
  if not exists(queue_keys(g)) then
    return {g, {}, {}}
  end
end
local q = queue_keys(1)
local now = server_now()
-- every item's id and token, in order, so one HMGET and one ZMSCORE check all leases
local ids, tokens, kinds, extra = {}, {}, {}, {}
local at = 1
for kind, width in ipairs({2, 3, 6}) do
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    local n = #ids + 1
    ids[n], tokens[n], kinds[n], extra[n] = ARGV[at], ARGV[at + 1], kind, at
    at = at + width
  end
end
local live = live_states(q, ids, tokens, now)
local status, remote, targets_woken, taken = {}, {}, {}, {}
local acked, ack_bytes, retried, retry_scored, retry_states, dead = {}, 0, {}, {}, {}, {}
for i, id in ipairs(ids) do
  local s = live[i]
  if s and not taken[id] then
    taken[id] = true
    status[i] = 1
    if kinds[i] == 1 then
      local _, size = unpack_state(s)
      acked[#acked + 1] = id
      ack_bytes = ack_bytes + size
    elseif kinds[i] == 2 then
      local attempts, size = unpack_state(s)
      retry_states[#retry_states + 1] = id
      retry_states[#retry_states + 1] = state(attempts, size, '', 0)  -- an outcome: lost is 0 again
      retried[#retried + 1] = id
      retry_scored[#retry_scored + 1] = now + tonumber(ARGV[extra[i] + 2])
      retry_scored[#retry_scored + 1] = id
    else
      dead[#dead + 1] = i
    end
  else
    status[i] = 0
  end
end
if #acked > 0 then
  -- a live lease is in `inflight` only: no need to touch `ready`
  many('HDEL', q.msgs, acked)
  many('HDEL', q.state, acked)
  many('ZREM', q.inflight, acked)
  many('ZREM', q.age, acked)
  redis.call('HINCRBY', q.meta, 'bytes', -ack_bytes)
  wake(q, leave_groups(q, acked, groups_of(q, acked)))
end
if #retried > 0 then
  many('ZREM', q.inflight, retried)
  many('ZADD', q.ready, retry_scored, 2)
  many('HSET', q.state, retry_states, 2)
  wake(q, #retried)
end
-- dead letters are rare: one at a time
for n, i in ipairs(dead) do
  local id, base = ids[i], extra[i]
  local new_id, json, target = ARGV[base + 2], ARGV[base + 3], tonumber(ARGV[base + 4])
  if target ~= 0 then
    local rec = redis.call('HGET', q.msgs, id)
    local content_type, _, section, body = unpack_record(rec)
    json = dead_letter_section(section, json, ARGV[base + 5])
    -- the dead letter keeps its group (a replay puts it back in it)
    local group = grouped(q) and redis.call('HGET', q.group, id) or false
    if target > 0 then
      drop_many(q, {id}, {rec})
      local item = {new_id, record(content_type, now, json, body), now + n - 1, now, #body, group}
      insert_many(queue_keys(target), {item})
      targets_woken[target] = (targets_woken[target] or 0) + 1
    else
      remote[#remote + 1] = {new_id, body, content_type, json, group or ''}
    end
  else
    drop_many(q, {id})
  end
end
for g, events in pairs(targets_woken) do
  wake(queue_keys(g), events)
end
return {0, status, remote, woken}

-- name: finish_moves
-- ARGV: id, token pairs. Deletes each message still held under its token (the second half of a
-- copy to another slot; a hold that expired counts until someone leases the message again);
-- returns 1/0 per pair.
local q = queue_keys(1)
local ids = {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local states = many_get('HMGET', q.state, ids)
local deadlines = many_get('ZMSCORE', q.inflight, ids)
local held = {}
for i, id in ipairs(ids) do
  if states[i] and deadlines[i] then
    local _, _, token = unpack_state(states[i])
    if token == ARGV[2 * i] then
      held[#held + 1] = id
    end
  end
end
local dropped = drop_many(q, held)
local out = {}
for i, id in ipairs(ids) do
  if dropped[id] then
    out[i] = 1
    dropped[id] = nil
  else
    out[i] = 0
  end
end
return out

-- name: discard
-- ARGV: ids. Deletes them (undoing a copy whose source was taken back meanwhile).
local count = 0
for _ in pairs(drop_many(queue_keys(1), ARGV)) do
  count = count + 1
end
return count

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
local recs = many_get('HMGET', src.msgs, ids)
local groups = groups_of(src, ids) or {}
drop_many(src, ids, recs)
local items = {}
for i, id in ipairs(ids) do
  -- a replayed message keeps its id, send time, headers and group, and loses its dead-letter details
  local content_type, timestamp, section, body = unpack_record(recs[i])
  items[i] = {id, record(content_type, timestamp, headers_only(section), body), now + i - 1, timestamp, #body,
    groups[i]}
end
insert_many(dst, items)
wake(dst, #ids)
return #ids

-- name: claim_for_move
-- KEYS: source group. ARGV: limit, hold µs, token. Leases up to `limit` movable messages to the
-- mover without counting a delivery; returns id, record, group ('' for none) per message ({-1}
-- if missing).
local q = queue_keys(1)
if not exists(q) then
  return {-1}
end
local now = server_now()
local ids = movable(q, tonumber(ARGV[1]), now)
if #ids == 0 then
  return {}
end
local states = many_get('HMGET', q.state, ids)
local recs = many_get('HMGET', q.msgs, ids)
local groups = groups_of(q, ids) or {}
local scored, fields, out = {}, {}, {}
for i, id in ipairs(ids) do
  local attempts, size, lost = 0, nil, 0
  if states[i] then
    local _
    attempts, size, _, lost = unpack_state(states[i])
  else
    size = body_size(recs[i])
  end
  scored[#scored + 1] = now + tonumber(ARGV[2])
  scored[#scored + 1] = id
  fields[#fields + 1] = id
  fields[#fields + 1] = state(attempts, size, ARGV[3], lost)
  out[#out + 1] = id
  out[#out + 1] = recs[i]
  out[#out + 1] = groups[i] or ''
end
many('ZREM', q.ready, ids)
many('ZREM', q.held, ids)
many('ZADD', q.inflight, scored, 2)
many('HSET', q.state, fields, 2)
return out

-- name: purge
-- Returns how many messages were deleted, or -1 if the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return -1
end
local count = redis.call('HLEN', q.msgs)
local lists = group_lists(q)
if #lists > 0 then
  many('DEL', lists[1], lists, 1)
end
redis.call('DEL', q.msgs, q.state, q.ready, q.inflight, q.age, q.group, q.held)
redis.call('HSET', q.meta, 'bytes', 0)
return count

-- name: delete_message
-- ARGV: id. Deletes one message unless a live lease holds it. Returns 1 deleted, 0 no such
-- message, 2 under a live lease (nothing changed), -1 the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return -1
end
local deadline = redis.call('ZSCORE', q.inflight, ARGV[1])
if deadline and tonumber(deadline) > server_now() then
  return 2
end
if drop_many(q, {ARGV[1]})[ARGV[1]] then
  return 1
end
return 0

-- name: sweep
-- ARGV: most to delete. Deletes messages sent before now - retention; returns how many.
local q = queue_keys(1)
local retention = tonumber(redis.call('HGET', q.meta, 'retention'))
if not retention then
  return 0
end
local cutoff = server_now() - retention
local ids = redis.call('ZRANGEBYSCORE', q.age, '-inf', '(' .. int(cutoff), 'LIMIT', 0, tonumber(ARGV[1]))
drop_many(q, ids)
return #ids

-- name: stats
-- Returns {paused, bytes, ready, delayed, expired leases, live leases, oldest µs or '', now µs,
-- held ready, held delayed} (held: waiting behind their group's head).
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
  redis.call('ZCOUNT', q.held, '-inf', now), redis.call('ZCOUNT', q.held, later, '+inf'),
}

-- name: peek
-- ARGV: limit. Returns {1, then per message: id, record, deliveries, visible µs, leased 0/1,
-- group ('' for none)}, oldest visible first; {} if the queue is missing.
local q = queue_keys(1)
if not exists(q) then
  return {}
end
local now = server_now()
local limit = tonumber(ARGV[1])
-- ready and held messages, then leases, merged by visible time (a held message is shown where
-- its own visible time puts it)
local candidates = {}
for kind, key in ipairs({q.ready, q.held, q.inflight}) do
  local reply = redis.call('ZRANGE', key, 0, limit - 1, 'WITHSCORES')
  for i = 1, #reply, 2 do
    candidates[#candidates + 1] = {reply[i], reply[i + 1], kind == 3, #candidates}
  end
end
table.sort(candidates, function(a, b)
  local x, y = tonumber(a[2]), tonumber(b[2])
  if x ~= y then
    return x < y
  end
  return a[4] < b[4]
end)
local ids, visible, is_leased = {}, {}, {}
for n = 1, math.min(limit, #candidates) do
  local c = candidates[n]
  ids[n], visible[n] = c[1], c[2]
  is_leased[n] = (c[3] and tonumber(c[2]) > now) and 1 or 0
end
local out = {1}
if #ids == 0 then
  return out
end
local recs = many_get('HMGET', q.msgs, ids)
local states = many_get('HMGET', q.state, ids)
local groups = groups_of(q, ids) or {}
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = recs[i]
  out[#out + 1] = states[i] and unpack_state(states[i]) or 0
  out[#out + 1] = visible[i]
  out[#out + 1] = is_leased[i]
  out[#out + 1] = groups[i] or ''
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

-- name: take_tokens
-- A shared rate limit's token bucket (KEYS: its hash; fields tokens, at µs): refill at ARGV[2] a
-- second up to ARGV[3], take up to ARGV[1]. Returns {taken, seconds until one more is due}.
-- The bucket expires once it would be full again anyway.
local now = server_now()
local wanted, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000000 * rate)
local taken = math.min(wanted, math.floor(tokens))
tokens = tokens - taken
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', int(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local due = 0
if taken == 0 then
  due = (1 - tokens) / rate
end
return {taken, string.format('%.17g', due)}

-- name: give_back_tokens
-- KEYS: the bucket. ARGV: tokens to return, the bucket's size.
local held = redis.call('HGET', KEYS[1], 'tokens')
if held then
  local tokens = math.min(tonumber(ARGV[2]), tonumber(held) + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens))
end
return 1

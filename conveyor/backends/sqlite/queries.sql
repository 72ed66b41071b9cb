-- The SQLite engine's statements. Times are seconds since the epoch (REAL), from the app's clock.
-- A message is deliverable when visible_at <= now; a lease pushes visible_at to the lease's
-- deadline, so an expired lease needs no sweep: the message is simply visible again.

-- name: schema_v1
CREATE TABLE IF NOT EXISTS conveyor_queues (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    delivery_delay REAL NOT NULL,
    retention_seconds REAL NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conveyor_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    dead_letter TEXT
);
-- leasing walks this index from its start: cost stays flat however long the backlog
CREATE INDEX IF NOT EXISTS conveyor_messages_ready ON conveyor_messages (queue_id, visible_at);
-- retention sweeps and the oldest message's age
CREATE INDEX IF NOT EXISTS conveyor_messages_age ON conveyor_messages (queue_id, enqueued_at);
-- durable topic subscriptions: types is a JSON array of message types, NULL for every type
CREATE TABLE IF NOT EXISTS conveyor_subscriptions (
    topic TEXT NOT NULL,
    queue TEXT NOT NULL,
    types TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (topic, queue)
);

-- name: schema_v2
-- v2: `lost` counts a message's deliveries in a row that ended without an outcome (a lease of a
-- handed kind expired), a lease token's first character being its kind (backends/base.py)
ALTER TABLE conveyor_messages ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
-- bounded backlog (NULL: no limit)
ALTER TABLE conveyor_queues ADD COLUMN max_backlog_messages INTEGER;
ALTER TABLE conveyor_queues ADD COLUMN max_backlog_bytes INTEGER

-- name: schema_v3
-- Deduplication (v3): a queue's dedup window, and each dedup id's first message until the
-- window ends. A claim past its end is taken over by the next send naming it, or swept.
ALTER TABLE conveyor_queues ADD COLUMN dedup_window REAL NOT NULL DEFAULT 300;
CREATE TABLE IF NOT EXISTS conveyor_dedup (
    queue_id INTEGER NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conveyor_dedup_expiry ON conveyor_dedup (expires_at)

-- name: schema_v4
-- Headers (v4): a message's headers as compact JSON text, NULL when it has none
ALTER TABLE conveyor_messages ADD COLUMN headers TEXT

-- name: schema_v5
-- v5: a queue's HTTP pull consumer settings, as JSON (types.PullConsumer.to_dict), NULL for none
ALTER TABLE conveyor_queues ADD COLUMN pull_consumer TEXT;
-- worker heartbeats (`conveyor workers`): info is types.WorkerInfo.to_dict as JSON
CREATE TABLE IF NOT EXISTS conveyor_workers (
    id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL,
    info TEXT NOT NULL
)

-- name: schema_v6
-- Ordered message groups (v6): a grouped message is deliverable only as its group's head, the
-- group's message with the lowest seq in its queue (docs/concepts/groups.md). The index is
-- partial: ungrouped messages (NULL) pay nothing for it.
ALTER TABLE conveyor_messages ADD COLUMN group_id TEXT;
CREATE INDEX IF NOT EXISTS conveyor_messages_group ON conveyor_messages (queue_id, group_id, seq)
WHERE group_id IS NOT NULL;
-- a queue's partition count, fixed at creation
ALTER TABLE conveyor_queues ADD COLUMN partitions INTEGER NOT NULL DEFAULT 1

-- name: schema_v7
-- v7: no age index. It cost every send a fourth b-tree write (a page more in the WAL per commit)
-- for the retention sweep alone, which now walks the id index instead (see sweep below).
DROP INDEX IF EXISTS conveyor_messages_age

-- name: record_worker
INSERT INTO conveyor_workers (id, seen_at, info) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, info = excluded.info

-- name: delete_old_workers
DELETE FROM conveyor_workers WHERE seen_at < ?

-- name: list_workers
SELECT info FROM conveyor_workers WHERE seen_at >= ? ORDER BY id

-- name: forget_worker
DELETE FROM conveyor_workers WHERE id = ?

-- name: queue_by_name
SELECT id, name, delivery_delay, retention_seconds, paused, created_at, max_backlog_messages, max_backlog_bytes,
    dedup_window, pull_consumer, partitions
FROM conveyor_queues WHERE name = ?

-- name: list_queues
SELECT id, name, delivery_delay, retention_seconds, paused, created_at, max_backlog_messages, max_backlog_bytes,
    dedup_window, pull_consumer, partitions
FROM conveyor_queues ORDER BY name

-- name: shortest_retention
SELECT min(retention_seconds) FROM conveyor_queues

-- name: insert_queue
INSERT INTO conveyor_queues
    (name, delivery_delay, retention_seconds, paused, created_at, max_backlog_messages, max_backlog_bytes,
     dedup_window, pull_consumer, partitions)
VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)

-- name: update_queue
UPDATE conveyor_queues
SET delivery_delay = ?, retention_seconds = ?, max_backlog_messages = ?, max_backlog_bytes = ?,
    dedup_window = ?, pull_consumer = ?
WHERE name = ?

-- name: backlog
-- what a bounded queue holds, counted inside the send's write transaction (bytes: a table scan)
SELECT count(*), coalesce(sum(length(body)), 0) FROM conveyor_messages WHERE queue_id = ?

-- name: backlog_count
-- the same without the bytes, for a queue bounded by count only: the ready index alone
SELECT count(*), 0 FROM conveyor_messages WHERE queue_id = ?

-- Claims a dedup id for a message unless a live claim holds it: RETURNING names the message
-- that now holds it (none: a live claim of another message does, see dedup_holder).
-- name: dedup_claim
INSERT INTO conveyor_dedup (queue_id, dedup_id, message_id, expires_at)
VALUES (:queue_id, :dedup_id, :message_id, :now + :window)
ON CONFLICT (queue_id, dedup_id) DO UPDATE
SET message_id = excluded.message_id, expires_at = excluded.expires_at
WHERE conveyor_dedup.expires_at <= :now OR conveyor_dedup.message_id = excluded.message_id
RETURNING message_id

-- name: dedup_holder
SELECT message_id FROM conveyor_dedup WHERE queue_id = :queue_id AND dedup_id = :dedup_id

-- name: delete_queue_dedup
DELETE FROM conveyor_dedup WHERE queue_id = ?

-- name: sweep_dedup
DELETE FROM conveyor_dedup WHERE expires_at <= ?

-- name: set_paused
UPDATE conveyor_queues SET paused = ? WHERE name = ?

-- name: delete_queue_messages
DELETE FROM conveyor_messages WHERE queue_id = ?

-- name: delete_queue
DELETE FROM conveyor_queues WHERE id = ?

-- name: delete_queue_subscriptions
DELETE FROM conveyor_subscriptions WHERE queue = ?

-- name: upsert_subscription
INSERT INTO conveyor_subscriptions (topic, queue, types, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (topic, queue) DO UPDATE SET types = excluded.types
RETURNING topic, queue, types, created_at

-- name: delete_subscription
DELETE FROM conveyor_subscriptions WHERE topic = ? AND queue = ?

-- name: list_subscriptions
SELECT topic, queue, types, created_at FROM conveyor_subscriptions
WHERE ? IS NULL OR topic = ? ORDER BY topic, queue

-- An id is stored once: a send repeated after an unconfirmed write changes nothing.
-- name: insert_message
INSERT INTO conveyor_messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter, headers, group_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING

-- A lone send's insert, reading its queue in the same statement (one statement less): only into
-- a queue without bounds (no backlog to count first); inserts nothing for a missing or bounded
-- queue or an id stored already, which the caller then sends the usual way.
-- name: insert_into_unbounded
INSERT INTO conveyor_messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter, headers, group_id)
SELECT ?1, id, ?2, ?3, ?4, ?4 + coalesce(?5, delivery_delay), ?6, ?7, ?8 FROM conveyor_queues
WHERE name = ?9 AND max_backlog_messages IS NULL AND max_backlog_bytes IS NULL
ON CONFLICT (id) DO NOTHING

-- A lease reads its rows first, oldest visible first, with the counts the lease leaves them
-- (`lease` below: a picked row that still has a token had a lease that expired; a read-ahead
-- one ('r') gives its attempt back, a handed one adds a lost delivery; 'move-' holds are
-- Redis's only), then updates exactly those rows, in the same write transaction. Not an UPDATE
-- ... RETURNING: RETURNING buffers every row before handing it over (measured: the pick and a
-- plain UPDATE cost the writer thread about 0.7 us a message less) and in no defined order.
-- name: lease_pick
-- a paused or missing queue matches no queue_id, so leases nothing; a grouped message is picked
-- only as its group's head (no older message of its group is left: acked or dead-lettered), so a
-- group has one message out at a time and a retried or expired head keeps its place.
-- The last column is NULL for a plain row (no token, no dead-letter record, no lost delivery: a
-- backlog's usual row), else [lost, dead_letter] as JSON: each column costs the writer thread
-- (measured: these two in one 0.15 us a message less).
SELECT seq, id, body, content_type, enqueued_at,
    attempts + 1 - (lease_token IS NOT NULL AND substr(lease_token, 1, 1) = 'r'),
    headers, group_id,
    CASE WHEN lease_token IS NULL AND dead_letter IS NULL AND lost = 0 THEN NULL
    ELSE json_array(lost + (lease_token IS NOT NULL AND substr(lease_token, 1, 1) <> 'r'), dead_letter) END
FROM conveyor_messages m
WHERE queue_id = (SELECT id FROM conveyor_queues WHERE name = ? AND paused = 0)
  AND visible_at <= ?
  AND (group_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM conveyor_messages g
      WHERE g.queue_id = m.queue_id AND g.group_id = m.group_id AND g.seq < m.seq))
ORDER BY visible_at, seq LIMIT ?

-- SET reads the row's values from before the update (the counts as lease_pick read them).
-- The rows are named by a JSON array of rowids (:seqs), or, when they are every rowid from :lo
-- to :hi, by that range (backend.py `_by_range`: a range walk, no JSON to parse nor a search of
-- the table per rowid; measured 0.2 us a message less for a lease, as much for an ack).
-- name: lease
UPDATE conveyor_messages
SET attempts = attempts + 1 - (lease_token IS NOT NULL AND substr(lease_token, 1, 1) = 'r'),
    lost = lost + (lease_token IS NOT NULL AND substr(lease_token, 1, 1) <> 'r'),
    lease_token = :token, visible_at = :deadline
WHERE seq IN (SELECT value FROM json_each(:seqs))

-- name: lease_fresh
-- lease, for rows lease_pick read without a token (a backlog's usual rows): no counts to work out
-- (measured 0.2 us a message less)
UPDATE conveyor_messages SET attempts = attempts + 1, lease_token = :token, visible_at = :deadline
WHERE seq IN (SELECT value FROM json_each(:seqs))

-- name: lease_handing
-- lease, with the rows named by the second list handed (the first token) and the rest ahead
UPDATE conveyor_messages
SET attempts = attempts + 1 - (lease_token IS NOT NULL AND substr(lease_token, 1, 1) = 'r'),
    lost = lost + (lease_token IS NOT NULL AND substr(lease_token, 1, 1) <> 'r'),
    lease_token = CASE WHEN seq IN (SELECT value FROM json_each(:handed)) THEN :handed_token ELSE :token END,
    visible_at = :deadline
WHERE seq IN (SELECT value FROM json_each(:seqs))

-- name: begin
-- One statement per token (the leases of one lease call share it), as for the settles.
UPDATE conveyor_messages SET lease_token = 'h' || substr(lease_token, 2)
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now
RETURNING seq

-- name: begin_all
-- begin, for when every lease is live (its count of changed rows says so): no row returned
UPDATE conveyor_messages SET lease_token = 'h' || substr(lease_token, 2)
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now

-- Leases name their row (seq, the rowid): no search of the id index. Rowids can be reused after a
-- delete; the lease token, unique per delivery, is what proves the lease is live.

-- name: extend_lease
UPDATE conveyor_messages SET visible_at = :deadline
WHERE seq = :seq AND queue_id = :queue_id AND lease_token = :token AND visible_at > :now

-- name: release
UPDATE conveyor_messages SET visible_at = :now, lease_token = NULL, attempts = attempts - 1
WHERE seq = :seq AND queue_id = :queue_id AND lease_token = :token AND visible_at > :now

-- Settling takes every lease of one delivery (one token) in one statement: :seqs is a JSON array
-- of rowids; the live leases are those the conditions match, the others are stale. The `+` keeps
-- the planner on the rowid rather than scanning the queue's in-flight range.

-- name: settle_queue
-- A settle's queue: its id, and whether it holds grouped messages (an ack then reads whether a
-- group's head went; the partial group index answers without a scan)
SELECT id, EXISTS (SELECT 1 FROM conveyor_messages m WHERE m.queue_id = q.id AND m.group_id IS NOT NULL)
FROM conveyor_queues q WHERE name = ?

-- An ack or a retry usually just runs: its count of changed rows equal to the leases it names
-- says they were all live. When it is not (some were stale), the settle is rolled back and run
-- again counting its live leases first in one row (settle_live; settle_live_seqs names them),
-- then changing exactly those rows: the same conditions, in the same write transaction. An ack
-- on a queue holding grouped messages always counts first: a group's head gone makes its next
-- message deliverable, which wakes waiters.
-- name: settle_live
SELECT count(*), max(group_id IS NOT NULL) FROM conveyor_messages
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now

-- name: settle_live_seqs
SELECT seq FROM conveyor_messages
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now

-- name: ack
DELETE FROM conveyor_messages
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now

-- name: retry
UPDATE conveyor_messages SET visible_at = :now + :delay, lease_token = NULL, lost = 0
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now

-- name: take_dead
DELETE FROM conveyor_messages
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND +queue_id = :queue_id AND lease_token = :token AND +visible_at > :now
RETURNING seq, body, content_type, headers, group_id

-- name: stats
SELECT
    coalesce(sum(visible_at <= :now), 0),
    coalesce(sum(visible_at > :now AND lease_token IS NULL), 0),
    coalesce(sum(visible_at > :now AND lease_token IS NOT NULL), 0),
    min(enqueued_at),
    coalesce(sum(length(body)), 0)
FROM conveyor_messages WHERE queue_id = :queue_id

-- name: peek
SELECT id, body, content_type, enqueued_at, attempts, visible_at, lease_token, dead_letter, headers, group_id
FROM conveyor_messages WHERE queue_id = ? ORDER BY visible_at, seq LIMIT ?

-- One message by id, unless a live lease holds it; RETURNING names it when it went.
-- name: delete_message
DELETE FROM conveyor_messages
WHERE id = :id AND queue_id = :queue_id AND (lease_token IS NULL OR visible_at <= :now)
RETURNING seq, group_id

-- name: message_leased
SELECT 1 FROM conveyor_messages WHERE id = :id AND queue_id = :queue_id

-- A moved message takes a new seq past every other (the rowid; no lease names it): it joins its
-- group's end in the destination, as a new send would.
-- name: move
UPDATE conveyor_messages
SET queue_id = :destination, attempts = 0, lost = 0, visible_at = :now, lease_token = NULL,
    dead_letter = NULL, seq = seq + (SELECT max(seq) FROM conveyor_messages)
WHERE seq IN (
    SELECT seq FROM conveyor_messages
    WHERE queue_id = :source AND (lease_token IS NULL OR visible_at <= :now)
    ORDER BY visible_at, seq LIMIT :limit
)

-- Messages past their queue's retention, every queue at once. An id starts with the time it was
-- made in milliseconds (12 hex digits, core/ids.py), before its send's write took `now`: every
-- message sent before the earliest queue's cutoff has an id below :id_bound, so the sweep walks
-- the id index over old messages only ('g', above every id, when the clock is not the system's).
-- name: sweep
DELETE FROM conveyor_messages
WHERE id < :id_bound
  AND enqueued_at < :now - (SELECT q.retention_seconds FROM conveyor_queues q WHERE q.id = queue_id)

-- when the next message is due: a grouped one only as its group's head (as lease_pick)
-- name: wake_state
SELECT q.paused, (
    SELECT min(visible_at) FROM conveyor_messages m
    WHERE m.queue_id = q.id AND (m.group_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM conveyor_messages g
        WHERE g.queue_id = m.queue_id AND g.group_id = m.group_id AND g.seq < m.seq)))
FROM conveyor_queues q WHERE q.name = ?

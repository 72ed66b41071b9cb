-- The PostgreSQL engine's statements. {schema} is replaced by the quoted schema name; %(name)b are
-- psycopg parameters, sent in binary (bodies and arrays need no escaping). Every time comes from
-- the server: statement_timestamp() for sends (inside a caller's long transaction that is the
-- send, not the transaction's start), now() elsewhere.
-- A message is deliverable when visible_at <= now(); a lease pushes visible_at to its deadline, so
-- an expired lease needs no sweep. Acked and dead-lettered rows are deleted, never flagged.
-- Statements that write to a queue lock its row FOR KEY SHARE once (not once per message, as a
-- foreign key would), so a concurrent delete_queue cannot leave orphaned messages behind.

-- name: schema_v1
CREATE TABLE {schema}.queues (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    delivery_delay double precision NOT NULL,
    retention_seconds double precision NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Hot churn table: every message is inserted, updated once per delivery and deleted. fillfactor
-- leaves room on each page for the lease's new row version; autovacuum runs after ~1% of rows are
-- dead instead of 20%, so the ready index's left edge stays short.
CREATE TABLE {schema}.messages (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text COLLATE "C" PRIMARY KEY,  -- byte order: cheaper comparisons than a locale's
    queue_id bigint NOT NULL,
    body bytea NOT NULL,
    content_type text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    visible_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    lease_token text,
    dead_letter jsonb
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
-- leasing walks this index from its start: cost stays flat however long the backlog
CREATE INDEX messages_ready ON {schema}.messages (queue_id, visible_at, seq);
-- retention sweeps and the oldest message's age
CREATE INDEX messages_age ON {schema}.messages (queue_id, enqueued_at);
-- durable topic subscriptions: types NULL means every type
CREATE TABLE {schema}.subscriptions (
    topic text NOT NULL,
    queue text NOT NULL,
    types text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, queue)
);
CREATE INDEX subscriptions_queue ON {schema}.subscriptions (queue)

-- name: schema_v2
-- v2: `lost` counts a message's deliveries in a row that ended without an outcome (a lease of a
-- handed kind expired), a lease token's first character being its kind (backends/base.py)
ALTER TABLE {schema}.messages ADD COLUMN lost integer NOT NULL DEFAULT 0;
-- bounded backlog (NULL: no limit)
ALTER TABLE {schema}.queues ADD COLUMN max_backlog_messages bigint, ADD COLUMN max_backlog_bytes bigint;
-- shared rate limits (max_rate_scope="global"): one token bucket per queue; `taken` is what the
-- last take got (what take_tokens returns)
CREATE TABLE {schema}.rate_buckets (
    name text PRIMARY KEY,
    tokens double precision NOT NULL,
    taken integer NOT NULL,
    updated_at timestamptz NOT NULL
)

-- name: schema_v3
-- Deduplication (v3): a queue's dedup window, and each dedup id's first message until the
-- window ends. A claim past its end is taken over by the next send naming it, or swept.
ALTER TABLE {schema}.queues ADD COLUMN dedup_window double precision NOT NULL DEFAULT 300;
CREATE TABLE {schema}.dedup (
    queue_id bigint NOT NULL,
    dedup_id text COLLATE "C" NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX dedup_expiry ON {schema}.dedup (expires_at)

-- name: schema_v4
-- Headers (v4): a message's headers, NULL when it has none (adding a NULL column rewrites nothing)
ALTER TABLE {schema}.messages ADD COLUMN headers jsonb

-- name: schema_v5
-- v5: a queue's HTTP pull consumer settings, as JSON text (types.PullConsumer.to_dict), NULL for none
ALTER TABLE {schema}.queues ADD COLUMN pull_consumer text;
-- worker heartbeats (`conveyor workers`): info is types.WorkerInfo.to_dict as JSON
CREATE TABLE {schema}.workers (
    id text PRIMARY KEY,
    seen_at double precision NOT NULL,
    info text NOT NULL
)

-- name: record_worker
WITH old AS (DELETE FROM {schema}.workers WHERE seen_at < %(oldest)b AND id <> %(id)b)
INSERT INTO {schema}.workers (id, seen_at, info) VALUES (%(id)b, %(seen_at)b, %(info)b)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, info = excluded.info

-- name: list_workers
SELECT info FROM {schema}.workers WHERE seen_at >= %(since)b ORDER BY id

-- name: forget_worker
DELETE FROM {schema}.workers WHERE id = %(id)b

-- name: queue_by_name
SELECT name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8,
       max_backlog_messages, max_backlog_bytes, dedup_window, pull_consumer
FROM {schema}.queues WHERE name = %(name)b

-- name: list_queues
SELECT name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8,
       max_backlog_messages, max_backlog_bytes, dedup_window, pull_consumer
FROM {schema}.queues ORDER BY name COLLATE "C"

-- name: insert_queue
INSERT INTO {schema}.queues
    (name, delivery_delay, retention_seconds, max_backlog_messages, max_backlog_bytes, dedup_window,
     pull_consumer)
VALUES (%(name)b, %(delivery_delay)b, %(retention_seconds)b, %(max_backlog_messages)b, %(max_backlog_bytes)b,
        %(dedup_window)b, %(pull_consumer)b)
ON CONFLICT (name) DO NOTHING
RETURNING name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8,
       max_backlog_messages, max_backlog_bytes, dedup_window, pull_consumer

-- name: update_queue
UPDATE {schema}.queues SET delivery_delay = %(delivery_delay)b, retention_seconds = %(retention_seconds)b,
    max_backlog_messages = %(max_backlog_messages)b, max_backlog_bytes = %(max_backlog_bytes)b,
    dedup_window = %(dedup_window)b, pull_consumer = %(pull_consumer)b
WHERE name = %(name)b
RETURNING name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8,
       max_backlog_messages, max_backlog_bytes, dedup_window, pull_consumer

-- name: set_paused
WITH updated AS (
    UPDATE {schema}.queues SET paused = %(paused)b WHERE name = %(name)b RETURNING name, paused
)
SELECT count(*), count(pg_notify(%(channel)b, name)) FILTER (WHERE NOT paused) FROM updated

-- name: lock_queue_for_delete
SELECT id FROM {schema}.queues WHERE name = %(name)b FOR UPDATE

-- name: delete_queue
-- runs after lock_queue_for_delete, in a fresh snapshot that sees every send that held the queue
WITH gone AS (
    DELETE FROM {schema}.messages WHERE queue_id = %(id)b
), claims AS (
    DELETE FROM {schema}.dedup WHERE queue_id = %(id)b
), subscriptions AS (
    DELETE FROM {schema}.subscriptions WHERE queue = %(name)b
)
DELETE FROM {schema}.queues WHERE id = %(id)b

-- name: upsert_subscription
INSERT INTO {schema}.subscriptions (topic, queue, types) VALUES (%(topic)b, %(queue)b, %(types)b::text[])
ON CONFLICT (topic, queue) DO UPDATE SET types = excluded.types
RETURNING topic, queue, types, extract(epoch FROM created_at)::float8

-- name: delete_subscription
DELETE FROM {schema}.subscriptions WHERE topic = %(topic)b AND queue = %(queue)b

-- name: list_subscriptions
SELECT topic, queue, types, extract(epoch FROM created_at)::float8 FROM {schema}.subscriptions
WHERE %(topic)b::text IS NULL OR topic = %(topic)b::text
ORDER BY topic COLLATE "C", queue COLLATE "C"

-- name: send
-- All or nothing: when a named queue is missing nothing is inserted and `found` says which exist.
-- A bounded queue (one with a backlog limit) is written only with %(checked)b, after
-- `lock_bounded` in the same transaction (`backlog` then counts what it holds with this send);
-- otherwise nothing is inserted and `bounded` says so.
-- Returns (ok, found, notified, positions, ids, bounded, inserted queue ids, inserted sizes):
-- positions are the 1-based positions of the messages stored under another message's id (their
-- dedup id's first message), ids those ids; the last two give each row this statement inserted.
WITH targets AS (
    SELECT id, name, delivery_delay, dedup_window,
           max_backlog_messages IS NOT NULL OR max_backlog_bytes IS NOT NULL AS bounded
    FROM {schema}.queues
    WHERE name = ANY(%(queue_names)b::text[]) FOR KEY SHARE
), complete AS (
    SELECT count(*) = cardinality(%(queue_names)b::text[])
           AND (%(checked)b OR NOT coalesce(bool_or(bounded), false)) AS ok
    FROM targets
), incoming AS (
    SELECT * FROM unnest(%(ids)b::text[], %(queues)b::text[], %(bodies)b::bytea[],
                         %(content_types)b::text[], %(delays)b::float8[], %(dead_letters)b::text[],
                         %(dedup_ids)b::text[], %(headers)b::text[]) WITH ORDINALITY
         AS m(id, queue, body, content_type, delay, dead_letter, dedup_id, headers, position)
), claimed AS (
    -- The first message naming a dedup id claims it unless a live claim of another message
    -- holds it. DO UPDATE, not DO NOTHING: it waits for a concurrent claim to commit and then
    -- RETURNING names the holder, which a plain read in this statement's snapshot would miss.
    INSERT INTO {schema}.dedup AS d (queue_id, dedup_id, message_id, expires_at)
    SELECT DISTINCT ON (t.id, m.dedup_id) t.id, m.dedup_id, m.id,
           statement_timestamp() + make_interval(secs => t.dedup_window)
    FROM incoming m JOIN targets t ON t.name = m.queue
    WHERE m.dedup_id IS NOT NULL AND t.dedup_window > 0 AND (SELECT ok FROM complete)
    ORDER BY t.id, m.dedup_id, m.position
    ON CONFLICT (queue_id, dedup_id) DO UPDATE SET
        message_id = CASE WHEN d.expires_at <= statement_timestamp() OR d.message_id = excluded.message_id
                          THEN excluded.message_id ELSE d.message_id END,
        expires_at = CASE WHEN d.expires_at <= statement_timestamp() OR d.message_id = excluded.message_id
                          THEN excluded.expires_at ELSE d.expires_at END
    RETURNING d.queue_id, d.dedup_id, d.message_id
), resolved AS (
    SELECT m.*, t.id AS queue_id, t.delivery_delay, coalesce(c.message_id, m.id) AS stored_as
    FROM incoming m JOIN targets t ON t.name = m.queue
    LEFT JOIN claimed c ON c.queue_id = t.id AND c.dedup_id = m.dedup_id
), inserted AS (
    INSERT INTO {schema}.messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter,
                                   headers)
    SELECT r.id, r.queue_id, r.body, r.content_type, statement_timestamp(),
           statement_timestamp() + make_interval(secs => coalesce(r.delay, r.delivery_delay)),
           r.dead_letter::jsonb, r.headers::jsonb
    FROM resolved r
    WHERE (SELECT ok FROM complete) AND r.stored_as = r.id
    -- rows take their seq in the order they were sent: a join may hand them over in any order
    ORDER BY r.position
    -- an id is stored once: a send repeated after a lost reply changes nothing
    ON CONFLICT (id) DO NOTHING
    RETURNING queue_id, octet_length(body) AS size
)
SELECT (SELECT ok FROM complete), array_agg(name),
       count(pg_notify(%(channel)b, name)) FILTER (WHERE (SELECT ok FROM complete)),
       (SELECT array_agg(position::int4 ORDER BY position) FROM resolved WHERE stored_as <> id),
       (SELECT array_agg(stored_as ORDER BY position) FROM resolved WHERE stored_as <> id),
       coalesce(bool_or(bounded), false),
       (SELECT array_agg(queue_id) FROM inserted),
       (SELECT array_agg(size) FROM inserted)
FROM targets

-- name: sweep_dedup
DELETE FROM {schema}.dedup WHERE expires_at <= now()

-- name: lock_bounded
-- The bounded queues of a send, locked against each other's senders until the transaction ends
-- (FOR NO KEY UPDATE: other writers' FOR KEY SHARE goes on), in one order so senders cannot deadlock.
SELECT id, name, max_backlog_messages, max_backlog_bytes FROM {schema}.queues
WHERE name = ANY(%(queue_names)b::text[])
  AND (max_backlog_messages IS NOT NULL OR max_backlog_bytes IS NOT NULL)
ORDER BY id FOR NO KEY UPDATE

-- name: backlog
-- What locked queues hold: a statement after `lock_bounded` and the send, so its snapshot sees
-- every send committed by the senders that held the lock before, and this one's rows.
-- (bytes only for the queues bounded by bytes: summing them reads every row)
SELECT queue_id, count(*),
       CASE WHEN queue_id = ANY(%(by_bytes)b::bigint[]) THEN coalesce(sum(octet_length(body)), 0) ELSE 0 END::bigint
FROM {schema}.messages
WHERE queue_id = ANY(%(ids)b::bigint[]) GROUP BY queue_id

-- Leases, their renewals and releases commit without waiting for the WAL flush
-- (`synchronous_commit` off for that transaction only, set where the queue is looked up): a crash
-- can only forget the latest of them, and those messages come back with that attempt uncounted,
-- which at-least-once allows. Sends and settles stay fully durable.

-- name: lease
WITH source AS (
    SELECT id FROM {schema}.queues
    WHERE name = %(queue)b AND NOT paused AND set_config('synchronous_commit', 'off', true) = 'off'
), picked AS MATERIALIZED (
    -- the row versions locked here stay put until this statement commits: the update finds
    -- them by their ctid, with no second walk of the id index
    SELECT m.ctid, m.visible_at, m.seq FROM {schema}.messages m
    WHERE m.queue_id = (SELECT id FROM source) AND m.visible_at <= now()
    ORDER BY m.visible_at, m.seq
    LIMIT %(limit)b
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE {schema}.messages m
    -- a row that still has a token had a lease that expired: a read-ahead one ('r') gives its
    -- attempt back, a handed one adds a lost delivery (SET reads the values from before)
    SET attempts = m.attempts + 1 - (m.lease_token IS NOT NULL AND left(m.lease_token, 1) = 'r')::int,
        lost = m.lost + (m.lease_token IS NOT NULL AND left(m.lease_token, 1) <> 'r')::int,
        lease_token = %(token)b,
        visible_at = now() + make_interval(secs => %(visibility_timeout)b)
    FROM picked WHERE m.ctid = picked.ctid
    RETURNING picked.visible_at AS was_visible, m.seq, m.id, m.body, m.content_type,
              extract(epoch FROM m.enqueued_at)::float8 AS enqueued_at, m.attempts, m.dead_letter, m.lost,
              m.headers
)
-- RETURNING hands rows over in join order: the batch keeps the picked order, oldest visible first
SELECT seq, id, body, content_type, enqueued_at, attempts, dead_letter, lost, headers FROM leased
ORDER BY was_visible, seq

-- name: lease_ahead
-- lease, ahead ('r' token) except the first %(hand)b rows that are not suspects (lost 0 after this
-- lease), handed (the 'h' token), when the lease takes at least that many of them
WITH source AS (
    SELECT id FROM {schema}.queues
    WHERE name = %(queue)b AND NOT paused AND set_config('synchronous_commit', 'off', true) = 'off'
), picked AS MATERIALIZED (
    SELECT m.ctid, m.visible_at, m.seq,
           m.lost + (m.lease_token IS NOT NULL AND left(m.lease_token, 1) <> 'r')::int AS lost_after
    FROM {schema}.messages m
    WHERE m.queue_id = (SELECT id FROM source) AND m.visible_at <= now()
    ORDER BY m.visible_at, m.seq
    LIMIT %(limit)b
    FOR UPDATE SKIP LOCKED
), ranked AS MATERIALIZED (
    SELECT ctid, visible_at, seq, lost_after = 0
           AND count(*) FILTER (WHERE lost_after = 0) OVER (ORDER BY visible_at, seq) <= %(hand)b
           AND count(*) FILTER (WHERE lost_after = 0) OVER () >= %(hand)b AS handed
    FROM picked
), leased AS (
    UPDATE {schema}.messages m
    SET attempts = m.attempts + 1 - (m.lease_token IS NOT NULL AND left(m.lease_token, 1) = 'r')::int,
        lost = m.lost + (m.lease_token IS NOT NULL AND left(m.lease_token, 1) <> 'r')::int,
        lease_token = CASE WHEN ranked.handed THEN %(handed_token)b ELSE %(token)b END,
        visible_at = now() + make_interval(secs => %(visibility_timeout)b)
    FROM ranked WHERE m.ctid = ranked.ctid
    RETURNING ranked.visible_at AS was_visible, m.seq, m.id, m.body, m.content_type,
              extract(epoch FROM m.enqueued_at)::float8 AS enqueued_at, m.attempts, m.dead_letter, m.lost,
              m.lease_token, m.headers
)
SELECT id, body, content_type, enqueued_at, attempts, dead_letter, lost, lease_token, headers FROM leased
ORDER BY was_visible, seq

-- Statements on leases look each message up by id: `queue_id + 0` keeps the planner off the ready
-- index, where a stale estimate of the in-flight range could make it read that whole range.

-- name: extend_leases
UPDATE {schema}.messages m SET visible_at = now() + make_interval(secs => %(visibility_timeout)b)
FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS l(id, token)
WHERE m.id = l.id AND m.lease_token = l.token AND m.visible_at > now()
  AND m.queue_id + 0 = (
      SELECT id FROM {schema}.queues
      WHERE name = %(queue)b AND set_config('synchronous_commit', 'off', true) = 'off'
  )

-- name: begin
-- read-ahead leases handed to a handler: the token's kind becomes 'h'; returns the positions
-- (from 1) of the live ones
UPDATE {schema}.messages m SET lease_token = 'h' || substr(m.lease_token, 2)
FROM unnest(%(ids)b::text[], %(tokens)b::text[]) WITH ORDINALITY AS l(id, token, n)
WHERE m.id = l.id AND m.lease_token = l.token AND m.visible_at > now()
  AND m.queue_id + 0 = (
      SELECT id FROM {schema}.queues
      WHERE name = %(queue)b AND set_config('synchronous_commit', 'off', true) = 'off'
  )
RETURNING l.n

-- name: release
WITH released AS (
    UPDATE {schema}.messages m SET visible_at = now(), lease_token = NULL, attempts = m.attempts - 1
    FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS l(id, token)
    WHERE m.id = l.id AND m.lease_token = l.token AND m.visible_at > now()
      AND m.queue_id + 0 = (
          SELECT id FROM {schema}.queues
          WHERE name = %(queue)b AND set_config('synchronous_commit', 'off', true) = 'off'
      )
    RETURNING 1
), counted AS (
    SELECT count(*) AS released FROM released
)
SELECT released, (SELECT count(pg_notify(%(channel)b, %(queue)b::text)) WHERE released > 0) FROM counted

-- name: settle
-- One batch's outcomes in one statement. Nothing changes unless the queue and every dead-letter
-- queue exist; each CTE returns the positions (from 1, per kind) of the items it settled, the
-- others are stale. Dead letters arrive with their record (built by the core) as JSON text, and
-- the headers naming it, added over the message's own.
WITH source AS (
    SELECT id FROM {schema}.queues WHERE name = %(queue)b
), targets AS (
    SELECT id, name FROM {schema}.queues WHERE name = ANY(%(dead_letter_queues)b::text[]) FOR KEY SHARE
), complete AS (
    SELECT (SELECT count(*) FROM source) = 1
       AND (SELECT count(*) FROM targets) = cardinality(%(dead_letter_queues)b::text[]) AS ok
), acked AS (
    DELETE FROM {schema}.messages m
    USING unnest(%(ack_ids)b::text[], %(ack_tokens)b::text[]) WITH ORDINALITY AS a(id, token, n)
    WHERE (SELECT ok FROM complete) AND m.id = a.id AND m.lease_token = a.token
      AND m.queue_id + 0 = (SELECT id FROM source) AND m.visible_at > now()
    RETURNING a.n
), retried AS (
    UPDATE {schema}.messages m
    SET visible_at = now() + make_interval(secs => r.delay), lease_token = NULL, lost = 0
    FROM unnest(%(retry_ids)b::text[], %(retry_tokens)b::text[], %(retry_delays)b::float8[])
         WITH ORDINALITY AS r(id, token, delay, n)
    WHERE (SELECT ok FROM complete) AND m.id = r.id AND m.lease_token = r.token
      AND m.queue_id + 0 = (SELECT id FROM source) AND m.visible_at > now()
    RETURNING r.n
), dead AS (
    DELETE FROM {schema}.messages m
    USING unnest(%(dead_ids)b::text[], %(dead_tokens)b::text[], %(dead_new_ids)b::text[],
                 %(dead_records)b::text[], %(dead_queues)b::text[], %(dead_headers)b::text[])
          WITH ORDINALITY AS d(id, token, new_id, record, target, trace, n)
    WHERE (SELECT ok FROM complete) AND m.id = d.id AND m.lease_token = d.token
      AND m.queue_id + 0 = (SELECT id FROM source) AND m.visible_at > now()
    RETURNING d.n, m.body, m.content_type, d.new_id, d.record, d.target,
              coalesce(m.headers, '{{}}'::jsonb) || d.trace::jsonb AS headers
), moved AS (
    INSERT INTO {schema}.messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter,
                                   headers)
    SELECT dead.new_id, t.id, dead.body, dead.content_type, now(), now(), dead.record::jsonb, dead.headers
    FROM dead JOIN targets t ON t.name = dead.target
    RETURNING queue_id
), woken AS (
    SELECT %(queue)b::text AS name WHERE EXISTS (SELECT FROM retried)
    UNION
    SELECT t.name FROM targets t WHERE t.id IN (SELECT queue_id FROM moved)
)
SELECT (SELECT ok FROM complete),
       (SELECT array_agg(name) FROM targets),
       (SELECT array_agg(n) FROM acked),
       (SELECT array_agg(n) FROM retried),
       (SELECT array_agg(n) FROM dead),
       (SELECT count(pg_notify(%(channel)b, name)) FROM woken)

-- name: stats
SELECT q.paused,
       count(m.id) FILTER (WHERE m.visible_at <= now()),
       count(m.id) FILTER (WHERE m.visible_at > now() AND m.lease_token IS NULL),
       count(m.id) FILTER (WHERE m.visible_at > now() AND m.lease_token IS NOT NULL),
       greatest(0, extract(epoch FROM now() - min(m.enqueued_at)))::float8,
       coalesce(sum(octet_length(m.body)), 0)::bigint
FROM {schema}.queues q LEFT JOIN {schema}.messages m ON m.queue_id = q.id
WHERE q.name = %(queue)b
GROUP BY q.id

-- name: peek
SELECT m.id, m.body, m.content_type, extract(epoch FROM m.enqueued_at)::float8, m.attempts,
       extract(epoch FROM m.visible_at)::float8, m.lease_token IS NOT NULL AND m.visible_at > now(),
       m.dead_letter, m.headers
FROM {schema}.messages m
WHERE m.queue_id = (SELECT id FROM {schema}.queues WHERE name = %(queue)b)
ORDER BY m.visible_at, m.seq
LIMIT %(limit)b

-- name: purge
WITH source AS (
    SELECT id FROM {schema}.queues WHERE name = %(queue)b
), purged AS (
    DELETE FROM {schema}.messages WHERE queue_id = (SELECT id FROM source) RETURNING 1
)
SELECT (SELECT count(*) FROM source), (SELECT count(*) FROM purged)

-- Deleting one message by id: its row is locked first (a lease running meanwhile has committed
-- when the lock is granted, and the row is read as it is then), then deleted unless a live lease
-- holds it. Returns whether the message is under a live lease; no row: no such message.
-- name: lock_message
SELECT m.lease_token IS NOT NULL AND m.visible_at > now() FROM {schema}.messages m
WHERE m.id = %(id)b AND m.queue_id = (SELECT id FROM {schema}.queues WHERE name = %(queue)b)
FOR UPDATE

-- name: delete_message
DELETE FROM {schema}.messages WHERE id = %(id)b

-- name: move
WITH source AS (
    SELECT id FROM {schema}.queues WHERE name = %(source)b
), destination AS (
    SELECT id FROM {schema}.queues WHERE name = %(destination)b FOR KEY SHARE
), picked AS (
    SELECT m.id FROM {schema}.messages m
    WHERE m.queue_id = (SELECT id FROM source) AND (m.lease_token IS NULL OR m.visible_at <= now())
      AND EXISTS (SELECT FROM destination)
    ORDER BY m.visible_at, m.seq
    LIMIT %(limit)b
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE {schema}.messages m
    SET queue_id = (SELECT id FROM destination), attempts = 0, lost = 0, visible_at = now(), lease_token = NULL,
        dead_letter = NULL
    FROM picked WHERE m.id = picked.id
    RETURNING 1
), counted AS (
    SELECT count(*) AS moved FROM moved
)
SELECT (SELECT count(*) FROM source), (SELECT count(*) FROM destination), moved,
       (SELECT count(pg_notify(%(channel)b, %(destination)b::text)) WHERE moved > 0)
FROM counted

-- name: sweep
-- Walks each queue's age index up to its own cutoff; the LIMIT keeps that a per-queue index scan
-- (a plain join would read the whole table) and bounds the work of one statement.
DELETE FROM {schema}.messages m WHERE m.id = ANY(ARRAY(
    SELECT expired.id FROM {schema}.queues q CROSS JOIN LATERAL (
        SELECT x.id FROM {schema}.messages x
        WHERE x.queue_id = q.id AND x.enqueued_at < now() - make_interval(secs => q.retention_seconds)
        LIMIT %(limit)b
    ) expired
))

-- name: wake_state
-- seconds until the next message comes due (a delayed one, a retry, an expiring lease)
SELECT q.paused,
       extract(epoch FROM (SELECT min(m.visible_at) FROM {schema}.messages m WHERE m.queue_id = q.id)
                          - clock_timestamp())::float8
FROM {schema}.queues q WHERE q.name = %(queue)b

-- name: take_tokens
-- Refill the queue's bucket at %(rate)b a second (server time) up to %(burst)b and take up to
-- %(wanted)b whole tokens, in one atomic upsert; a new bucket starts full.
INSERT INTO {schema}.rate_buckets AS b (name, tokens, taken, updated_at)
VALUES (%(name)b, %(burst)b::float8 - least(%(wanted)b::float8, floor(%(burst)b::float8)),
        least(%(wanted)b::float8, floor(%(burst)b::float8))::integer, now())
ON CONFLICT (name) DO UPDATE SET
    taken = least(%(wanted)b::float8, floor(least(%(burst)b::float8,
        b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * %(rate)b::float8)))::integer,
    tokens = least(%(burst)b::float8, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * %(rate)b::float8)
        - least(%(wanted)b::float8, floor(least(%(burst)b::float8,
            b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * %(rate)b::float8))),
    updated_at = now()
RETURNING taken, tokens

-- name: give_back_tokens
UPDATE {schema}.rate_buckets SET tokens = least(%(burst)b::float8, tokens + %(count)b::float8)
WHERE name = %(name)b

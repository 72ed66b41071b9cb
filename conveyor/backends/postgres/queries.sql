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
ALTER TABLE {schema}.messages ADD COLUMN lost integer NOT NULL DEFAULT 0

-- name: queue_by_name
SELECT name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8
FROM {schema}.queues WHERE name = %(name)b

-- name: list_queues
SELECT name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8
FROM {schema}.queues ORDER BY name COLLATE "C"

-- name: insert_queue
INSERT INTO {schema}.queues (name, delivery_delay, retention_seconds)
VALUES (%(name)b, %(delivery_delay)b, %(retention_seconds)b)
ON CONFLICT (name) DO NOTHING
RETURNING name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8

-- name: update_queue
UPDATE {schema}.queues SET delivery_delay = %(delivery_delay)b, retention_seconds = %(retention_seconds)b
WHERE name = %(name)b
RETURNING name, delivery_delay, retention_seconds, paused, extract(epoch FROM created_at)::float8

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
WITH targets AS (
    SELECT id, name, delivery_delay FROM {schema}.queues
    WHERE name = ANY(%(queue_names)b::text[]) FOR KEY SHARE
), complete AS (
    SELECT count(*) = cardinality(%(queue_names)b::text[]) AS ok FROM targets
), inserted AS (
    INSERT INTO {schema}.messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter)
    SELECT m.id, t.id, m.body, m.content_type, statement_timestamp(),
           statement_timestamp() + make_interval(secs => coalesce(m.delay, t.delivery_delay)),
           m.dead_letter::jsonb
    FROM unnest(%(ids)b::text[], %(queues)b::text[], %(bodies)b::bytea[], %(content_types)b::text[],
                %(delays)b::float8[], %(dead_letters)b::text[]) WITH ORDINALITY
         AS m(id, queue, body, content_type, delay, dead_letter, position)
    JOIN targets t ON t.name = m.queue
    WHERE (SELECT ok FROM complete)
    -- rows take their seq in the order they were sent: a join may hand them over in any order
    ORDER BY m.position
)
SELECT (SELECT ok FROM complete), array_agg(name),
       count(pg_notify(%(channel)b, name)) FILTER (WHERE (SELECT ok FROM complete))
FROM targets

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
              extract(epoch FROM m.enqueued_at)::float8 AS enqueued_at, m.attempts, m.dead_letter, m.lost
)
-- RETURNING hands rows over in join order: the batch keeps the picked order, oldest visible first
SELECT seq, id, body, content_type, enqueued_at, attempts, dead_letter, lost FROM leased
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
-- others are stale. Dead letters arrive with their record (built by the core) as JSON text.
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
                 %(dead_records)b::text[], %(dead_queues)b::text[])
          WITH ORDINALITY AS d(id, token, new_id, record, target, n)
    WHERE (SELECT ok FROM complete) AND m.id = d.id AND m.lease_token = d.token
      AND m.queue_id + 0 = (SELECT id FROM source) AND m.visible_at > now()
    RETURNING d.n, m.body, m.content_type, d.new_id, d.record, d.target
), moved AS (
    INSERT INTO {schema}.messages (id, queue_id, body, content_type, enqueued_at, visible_at, dead_letter)
    SELECT dead.new_id, t.id, dead.body, dead.content_type, now(), now(), dead.record::jsonb
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
       m.dead_letter
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

WITH upsert_user AS (
    INSERT INTO users (id, email, name) VALUES ($1, nullif($2, ''), nullif($3, ''))
    ON CONFLICT (id) DO UPDATE
       SET email = coalesce(EXCLUDED.email, users.email),
           name = coalesce(EXCLUDED.name, users.name),
           updated_at = now()
     WHERE (EXCLUDED.email IS NOT NULL AND EXCLUDED.email IS DISTINCT FROM users.email)
        OR (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM users.name)
)
, serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext($1::text))), claim AS (
    INSERT INTO idempotency_keys (user_id, key, task_id, request_hash)
    SELECT $1, $11, $12, $13 FROM serialize
     WHERE (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = $1 LIMIT $10) AS mine) < $10
    ON CONFLICT (user_id, key) DO UPDATE
       SET task_id = EXCLUDED.task_id, request_hash = EXCLUDED.request_hash, created_at = now()
     WHERE idempotency_keys.created_at < now() - interval '24 hours'
    RETURNING task_id
), t AS (
INSERT INTO tasks (id, user_id, title, description, completed, priority, due_date, tags)
SELECT task_id, $1, $4, $5, $6, $7, $8, $9 FROM claim
RETURNING id, title, description, completed, priority, due_date, tags, created_at, updated_at, version
), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - 1000)
    RETURNING last, swept_through, 1 AS taken
), trim AS (
    DELETE FROM task_changes WHERE user_id = $1 AND position <= (SELECT swept_through FROM pos)
), c AS (
    INSERT INTO task_changes (user_id, position, event, id, title, description, completed, priority, due_date, tags, created_at, updated_at, version)
    SELECT $1, pos.last, 'task.created', id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t, pos
)
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t;

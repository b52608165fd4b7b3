WITH upsert_user AS (
    INSERT INTO users (id, email, name) VALUES ($1, nullif($2, ''), nullif($3, ''))
    ON CONFLICT (id) DO UPDATE
       SET email = coalesce(EXCLUDED.email, users.email),
           name = coalesce(EXCLUDED.name, users.name),
           updated_at = now()
     WHERE (EXCLUDED.email IS NOT NULL AND EXCLUDED.email IS DISTINCT FROM users.email)
        OR (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM users.name)
)
, serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext($1::text))), t AS (
UPDATE tasks SET
    completed  = coalesce($5::boolean, NOT completed),
    updated_at = now(),
    version    = version + 1
  FROM serialize
WHERE id = $4 AND user_id = $1 AND ($6::bigint[] IS NULL OR version = ANY ($6))
RETURNING id, title, description, completed, priority, due_date, tags, created_at, updated_at, version
), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - 1000)
    RETURNING last, swept_through, 1 AS taken
), trim AS (
    DELETE FROM task_changes WHERE user_id = $1 AND position <= (SELECT swept_through FROM pos)
), prior AS (
    DELETE FROM task_changes
     WHERE id IN (SELECT id FROM t) AND user_id = $1 AND event IN ('task.created', 'task.updated')
), c AS (
    INSERT INTO task_changes (user_id, position, event, id, title, description, completed, priority, due_date, tags, created_at, updated_at, version)
    SELECT $1, pos.last, 'task.updated', id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t, pos
)
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t;

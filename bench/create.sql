\set u random(1, 1000)
WITH upsert_user AS (
    INSERT INTO users (id, email, name) VALUES (:u, nullif('', ''), nullif('', ''))
    ON CONFLICT (id) DO UPDATE
       SET email = coalesce(EXCLUDED.email, users.email),
           name = coalesce(EXCLUDED.name, users.name),
           updated_at = now()
     WHERE (EXCLUDED.email IS NOT NULL AND EXCLUDED.email IS DISTINCT FROM users.email)
        OR (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM users.name)
)
, serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext(:u::text))), t AS (
INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags)
SELECT :u, 'bench task', NULL, false, 'high', NULL, '{load}' FROM serialize
 WHERE (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = :u LIMIT 10000) AS mine) < 10000
RETURNING id, title, description, completed, priority, due_date, tags, created_at, updated_at, version
), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT :u, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - 1000)
    RETURNING last, swept_through, 1 AS taken
), trim AS (
    DELETE FROM task_changes WHERE user_id = :u AND position <= (SELECT swept_through FROM pos)
), c AS (
    INSERT INTO task_changes (user_id, position, event, id, title, description, completed, priority, due_date, tags, created_at, updated_at, version)
    SELECT :u, pos.last, 'task.created', id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t, pos
)
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t;

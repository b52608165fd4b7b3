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
)
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t;

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
INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags)
SELECT $1, $4, $5, $6, $7, $8, $9 FROM serialize
 WHERE (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = $1 LIMIT $10) AS mine) < $10
RETURNING id, title, description, completed, priority, due_date, tags, created_at, updated_at, version
)
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM t

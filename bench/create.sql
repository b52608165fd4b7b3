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
INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags)
VALUES (:u, 'bench task', NULL, false, 'high', NULL, '{load}')
RETURNING id, title, description, completed, priority, due_date, tags, created_at, updated_at, version;

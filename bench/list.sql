\set u random(1, 1000)
\set lim 21
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE user_id = :u
ORDER BY created_at DESC, id DESC
LIMIT :lim;

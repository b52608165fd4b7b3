SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE user_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2;

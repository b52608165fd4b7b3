SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE id = $1 AND user_id = $2;

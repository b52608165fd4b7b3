SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE user_id = $1
  AND (title ILIKE $2 OR description ILIKE $3)
  AND priority = $4
  AND tags @> $5
  AND due_date < $6
  AND NOT completed AND due_date < now()
  AND ((CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END), id) < ($7::text::integer, $8::uuid)
ORDER BY (CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END) DESC, id DESC
LIMIT $9;

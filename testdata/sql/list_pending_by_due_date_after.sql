SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE user_id = $1
  AND completed = $2
  AND (coalesce(due_date, 'infinity'::timestamptz), id) > ($3::text::timestamptz, $4::uuid)
ORDER BY coalesce(due_date, 'infinity'::timestamptz) ASC, id ASC
LIMIT $5;

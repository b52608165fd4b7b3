SELECT u.email, u.name, u.created_at, s.total, s.completed, s.overdue
  FROM (SELECT count(*),
       count(*) FILTER (WHERE completed),
       count(*) FILTER (WHERE NOT completed AND due_date < now())
  FROM tasks WHERE user_id = $1) AS s (total, completed, overdue)
  LEFT JOIN users u ON u.id = $1;

SELECT count(*),
       count(*) FILTER (WHERE completed),
       count(*) FILTER (WHERE NOT completed AND due_date < now())
  FROM tasks WHERE user_id = $1;

SELECT b.last, b.swept_through, coalesce(s.position, 0), coalesce(s.event, ''), coalesce(s.pending, 0),
       coalesce(s.ids::text[], '{}'), coalesce(s.id::text, ''), coalesce(s.title, ''), s.description,
       coalesce(s.completed, false), coalesce(s.priority, ''), s.due_date, coalesce(s.tags, '{}'),
       coalesce(s.created_at, s.changed_at, 'epoch'), coalesce(s.updated_at, s.changed_at, 'epoch'), coalesce(s.version, 0)
  FROM (SELECT coalesce(max(last), 0) AS last, coalesce(max(swept_through), 0) AS swept_through
          FROM change_positions WHERE user_id = $1) AS b
  LEFT JOIN LATERAL (
       SELECT *, sum(size) OVER (ORDER BY position) - size AS before, count(*) OVER () AS pending
         FROM (SELECT *, 300 + coalesce(octet_length(title), 0) + coalesce(octet_length(description), 0)
                          + coalesce(octet_length(array_to_string(tags, '')), 0) + 20 * coalesce(cardinality(tags), 0)
                          + 39 * coalesce(cardinality(ids), 0) AS size
                 FROM task_changes WHERE user_id = $1 AND position > $2 ORDER BY position LIMIT $3) AS page
       ) AS s ON s.before < $4
 ORDER BY s.position;

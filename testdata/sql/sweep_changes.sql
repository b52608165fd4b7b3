WITH swept AS (
    DELETE FROM task_changes WHERE (user_id, position) IN (
        SELECT user_id, position FROM task_changes
         WHERE changed_at < now() - make_interval(secs => $2)
           AND pg_try_advisory_xact_lock(1952543595, hashtext(user_id))
         ORDER BY changed_at LIMIT $1)
    RETURNING user_id, position
), horizon AS (
    UPDATE change_positions AS p SET swept_through = greatest(p.swept_through, s.top)
      FROM (SELECT user_id, max(position) AS top FROM swept GROUP BY user_id) AS s
     WHERE p.user_id = s.user_id
)
SELECT count(*) FROM swept;

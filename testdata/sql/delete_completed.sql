WITH serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext($1::text))), deleted AS (
    DELETE FROM tasks USING serialize WHERE user_id = $1 AND completed RETURNING user_id, id
), parts AS (
    SELECT part, array_agg(id ORDER BY id) AS ids
      FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / $2 AS part FROM deleted) AS numbered
     GROUP BY part
), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, count(*) FROM parts HAVING count(*) > 0
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + EXCLUDED.last, swept_through = greatest(p.swept_through, p.last + EXCLUDED.last - 1000)
    RETURNING last, swept_through, (SELECT count(*) FROM parts) AS taken
), trim AS (
    DELETE FROM task_changes
     WHERE user_id = $1 AND position > (SELECT swept_through - taken FROM pos) AND position <= (SELECT swept_through FROM pos)
       AND NOT (event IN ('task.created', 'task.updated') AND id IN (SELECT id FROM deleted))
), c AS (
    INSERT INTO task_changes (user_id, position, event, ids)
    SELECT $1, pos.last - pos.taken + 1 + part, 'tasks.deleted', ids FROM parts, pos
), forget AS (
    UPDATE idempotency_keys SET request_hash = NULL
     WHERE (user_id, task_id) IN (SELECT user_id, id FROM deleted) AND request_hash IS NOT NULL
)
SELECT count(*) FROM deleted, (SELECT taskapi_forget_task_changes($1, ARRAY(SELECT id FROM deleted))) AS scrub;

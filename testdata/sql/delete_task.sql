WITH serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext($1::text))), deleted AS (
    DELETE FROM tasks USING serialize WHERE id = $2 AND user_id = $1 AND ($3::bigint[] IS NULL OR version = ANY ($3)) RETURNING user_id, id
), t AS (SELECT 1 FROM deleted), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - 1000)
    RETURNING last, swept_through, 1 AS taken
), trim AS (
    DELETE FROM task_changes
     WHERE user_id = $1 AND position > (SELECT swept_through - taken FROM pos) AND position <= (SELECT swept_through FROM pos)
       AND NOT (event IN ('task.created', 'task.updated') AND id IN (SELECT id FROM deleted))
), c AS (
    INSERT INTO task_changes (user_id, position, event, id) SELECT $1, pos.last, 'task.deleted', id FROM deleted, pos
), forget AS (
    UPDATE idempotency_keys SET request_hash = NULL
     WHERE (user_id, task_id) IN (SELECT user_id, id FROM deleted) AND request_hash IS NOT NULL
)
SELECT count(*) FROM deleted, (SELECT taskapi_forget_task_changes($1, ARRAY(SELECT id FROM deleted))) AS scrub;

WITH serialize AS (SELECT pg_advisory_xact_lock(1952543595, hashtext($1::text))), gone AS (
    DELETE FROM users USING serialize WHERE id = $1 RETURNING id
), t AS (SELECT 1 FROM gone), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - 1000)
    RETURNING last, swept_through, 1 AS taken
), c AS (
    INSERT INTO task_changes (user_id, position, event) SELECT $1, pos.last, 'account.deleted' FROM pos
)
SELECT count(taskapi_forget_user_changes(id)) FROM gone;

WITH swept AS (
    DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '24 hours' LIMIT $1))
    RETURNING 1
)
SELECT count(*) FROM swept;

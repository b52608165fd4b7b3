SELECT task_id, request_hash, created_at FROM idempotency_keys
 WHERE user_id = $1 AND key = $2 AND created_at >= now() - interval '24 hours';

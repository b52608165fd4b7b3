SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
       coalesce(array_agg(user_id), '{}'), coalesce(array_agg(top::text), '{}')
  FROM (SELECT user_id, max(position) AS top FROM task_changes
         WHERE txid >= $1::text::xid8 AND user_id = ANY ($2::text[]) GROUP BY user_id) AS changed;

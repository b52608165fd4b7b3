SELECT coalesce(max(last), 0), coalesce(max(swept_through), 0), pg_snapshot_xmin(pg_current_snapshot())::text
  FROM change_positions WHERE user_id = $1;

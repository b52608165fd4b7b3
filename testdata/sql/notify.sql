SELECT count(pg_notify('taskapi_changes', p)) FROM unnest($1::text[]) AS p;

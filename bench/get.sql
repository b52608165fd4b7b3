\set u random(1, 1000)
\set n random(1, 100)
\set m :u * 1000 + :n
SELECT id, title, description, completed, priority, due_date, tags, created_at, updated_at, version FROM tasks WHERE id = ('00000000-0000-4000-8000-' || lpad(:m::text, 12, '0'))::uuid AND user_id = :u;

-- taskapi schema. Applied at every boot, inside one transaction that holds an
-- advisory lock, so it must be idempotent: every statement is IF NOT EXISTS,
-- CREATE OR REPLACE, or ADD COLUMN IF NOT EXISTS. Tables are created in the
-- first schema of the search_path (public by default), never a named one.
--
-- To change the schema in a later release, append statements that upgrade a
-- database made by an earlier one in place (ALTER TABLE ... ADD COLUMN IF NOT
-- EXISTS ..., CREATE INDEX IF NOT EXISTS ...); never edit a CREATE TABLE
-- below, since it does nothing to a table that already exists.

-- users mirrors the identity provider's users: id is the token's user id
-- (Better Auth ids are opaque strings, not UUIDs). Rows are created and kept
-- current from token claims by the statements that write tasks.
CREATE TABLE IF NOT EXISTS users (
    id         text        PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
    email      text,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- taskapi_tags_valid mirrors the API's rule for one tag: 1 to 50 characters.
-- A CHECK constraint cannot hold a subquery, so the rule lives in a function.
CREATE OR REPLACE FUNCTION taskapi_tags_valid(tags text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT coalesce(bool_and(t IS NOT NULL AND char_length(t) BETWEEN 1 AND 50), true) FROM unnest(tags) AS t $$;

-- tasks belong to exactly one user; deleting the user deletes their tasks.
-- The CHECK constraints mirror the API's validation, so no path can store
-- what the API would refuse.
CREATE TABLE IF NOT EXISTS tasks (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description text        CHECK (char_length(description) <= 1000),
    completed   boolean     NOT NULL DEFAULT false,
    priority    text        NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high')),
    due_date    timestamptz,
    tags        text[]      NOT NULL DEFAULT '{}'
                            CHECK (cardinality(tags) <= 20 AND taskapi_tags_valid(tags)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every list query is for one user; the default order is newest first.
-- The other orders sort one user's rows, found through the same prefix.
CREATE INDEX IF NOT EXISTS tasks_user_created_idx ON tasks (user_id, created_at, id);

-- Upgrades: everything below was added after the tables above were first
-- created, and brings an existing database up to date in place.

-- version counts the changes to a task; it is the task's ETag.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;

-- One index per sort order, each led by user_id, so that every page of every
-- list is one index range scan. Tasks without a due date sort last in both
-- directions, hence one index per direction for due_date.
CREATE INDEX IF NOT EXISTS tasks_user_updated_idx ON tasks (user_id, updated_at, id);
CREATE INDEX IF NOT EXISTS tasks_user_title_idx ON tasks (user_id, title, id);
CREATE INDEX IF NOT EXISTS tasks_user_due_asc_idx ON tasks (user_id, (coalesce(due_date, 'infinity'::timestamptz)), id);
CREATE INDEX IF NOT EXISTS tasks_user_due_desc_idx ON tasks (user_id, (coalesce(due_date, '-infinity'::timestamptz)), id);
CREATE INDEX IF NOT EXISTS tasks_user_priority_idx ON tasks (user_id, (CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END), id);

-- idempotency_keys remembers each create made with an Idempotency-Key for
-- 24 hours: the request (normalized, to compare a retry with) and the task it
-- made. The task's created_at is the row's created_at: both are the time of
-- the one transaction that wrote them.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    task_id    uuid        NOT NULL,
    request    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- server_keys holds secrets shared by every instance, made on first boot:
-- "cursor" signs the list cursors, so that a cursor from one instance works
-- on all of them and across restarts.
CREATE TABLE IF NOT EXISTS server_keys (
    name text  PRIMARY KEY,
    key  bytea NOT NULL
);

-- due_date holds instants of the years 1 to 9999 in UTC, which PostgreSQL,
-- RFC 3339 and JSON all spell the same, mirroring the API's rule. NOT VALID:
-- the check applies to every write from now on, without a scan of the rows
-- an earlier release stored.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'tasks'::regclass AND conname = 'tasks_due_date_range') THEN
        ALTER TABLE tasks ADD CONSTRAINT tasks_due_date_range
            CHECK (due_date >= '0001-01-01 00:00:00+00' AND due_date < '10000-01-01 00:00:00+00') NOT VALID;
    END IF;
END
$$;

-- Idempotency keys keep a hash of their request, never its text, and lose
-- even that when their task is deleted. The request column of earlier
-- releases is no longer written; rows that still hold one expire within a
-- day. The indexes serve the sweep of expired keys and the deletes.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS request_hash bytea;
ALTER TABLE idempotency_keys ALTER COLUMN request DROP NOT NULL;
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_task_idx ON idempotency_keys (task_id);

-- The tag filter (tags @> ...) and the search read the user's own rows
-- through the user's indexes: the task quota bounds how many there are. A
-- GIN index on tags, kept by earlier releases, spanned every user: a generic
-- plan could read all users' tasks with a common tag to find one user's, and
-- every write paid to keep it.
DROP INDEX IF EXISTS tasks_tags_idx;

-- task_changes is the history of every user's changes, for live updates
-- (GET /api/{user_id}/events) and polling (GET /api/{user_id}/changes). Each
-- row is written by the statement that makes the change, which also sends
-- pg_notify('taskapi_changes', '<user_id>:<position>'). A task event keeps the
-- task as the change left it (the task columns), a deletion its id or ids.
-- Positions come from one sequence, so they only increase; the writes of one
-- user are serialized (see serializeUserCTE), so that they also commit in the
-- order of their positions. There is no foreign key to users: account.deleted
-- outlives the account. Rows older than the retention are swept (sweepChanges),
-- and task_changes_horizon remembers the highest position swept, so that a
-- client asking for older ones is told to reload.
CREATE SEQUENCE IF NOT EXISTS task_changes_position_seq;
CREATE TABLE IF NOT EXISTS task_changes (
    position    bigint      PRIMARY KEY DEFAULT nextval('task_changes_position_seq'),
    user_id     text        NOT NULL,
    event       text        NOT NULL CHECK (event IN ('task.created', 'task.updated', 'task.deleted', 'tasks.deleted', 'account.deleted')),
    id          uuid,
    ids         uuid[],
    title       text,
    description text,
    completed   boolean,
    priority    text,
    due_date    timestamptz,
    tags        text[],
    created_at  timestamptz,
    updated_at  timestamptz,
    version     bigint,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE task_changes_position_seq OWNED BY task_changes.position;
CREATE INDEX IF NOT EXISTS task_changes_user_idx ON task_changes (user_id, position);
CREATE INDEX IF NOT EXISTS task_changes_changed_idx ON task_changes (changed_at);
CREATE TABLE IF NOT EXISTS task_changes_horizon (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    swept_through bigint  NOT NULL
);

-- The earlier changes of a deleted task are deleted with it (they hold its
-- content); this index finds them.
CREATE INDEX IF NOT EXISTS task_changes_task_idx ON task_changes (id);

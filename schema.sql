-- taskapi schema: the tables of users, tasks, idempotency keys, server keys
-- and the history of changes, the indexes every list reads through, and
-- the upgrades from earlier releases. The statements that use them are in
-- store.go, list.go, changes.go and idempotency.go, and written out whole in
-- testdata/sql. Applied at every boot, inside one transaction that holds an
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
-- 24 hours: a hash of the request, to compare a retry with (request_hash,
-- added below: the request column of the first release is no longer
-- written), and the task it made. The task's created_at is the row's
-- created_at: both are the time of the one transaction that wrote them.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    task_id    uuid        NOT NULL,
    request    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- server_keys holds secrets shared by every instance, made on first boot:
-- "cursor" encrypts the list cursors and "events" signs the stream tickets,
-- so that one made by one instance works on all of them and across restarts.
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
-- row is written by the statement that makes the change. A task event keeps
-- the task as the change left it (the task columns), a deletion its id or
-- ids. Positions are each user's own: 1, 2, 3... counted in change_positions
-- under the user's advisory lock (see serializeUserCTE), so that one user's
-- changes also commit in the order of their positions, and a position says
-- nothing of anyone else's writes. txid is the writing transaction's id: the
-- safety net (pollChangedSQL) asks which users changed since a transaction
-- id, which, unlike a position, is safe in any commit order across users.
-- There is no foreign key to users: account.deleted outlives the account.
-- A history is bounded (changes.go): a write deletes the earlier changes of
-- its task, a user keeps only their last historyPositions positions, and
-- rows older than the retention are swept; change_positions.swept_through
-- is how far back a user's history is gone, so that a client asking for
-- older positions is told to reload.
CREATE TABLE IF NOT EXISTS task_changes (
    user_id     text        NOT NULL,
    position    bigint      NOT NULL,
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
    changed_at  timestamptz NOT NULL DEFAULT now(),
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (user_id, position)
);
CREATE INDEX IF NOT EXISTS task_changes_changed_idx ON task_changes (changed_at);
-- Earlier releases kept task_changes_horizon: the highest position swept, of
-- every user. It is read once, by the upgrade below.
CREATE TABLE IF NOT EXISTS task_changes_horizon (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    swept_through bigint  NOT NULL
);

-- The earlier changes of a deleted task are deleted with it (they hold its
-- content); this index finds them.
CREATE INDEX IF NOT EXISTS task_changes_task_idx ON task_changes (id);

-- schema_digest is the SHA-256 of the schema.sql last applied in full. A
-- boot whose schema.sql has that digest applies nothing: ALTER TABLE and
-- CREATE INDEX lock their table even when they find nothing to do (ALTER
-- TABLE against every read and write, CREATE INDEX against writes) until
-- the transaction ends, so that each instance of a rolling restart stalled
-- the others' requests and could deadlock with their writes. Delete the row
-- to have the next boot apply the schema again, e.g. after dropping an
-- index by hand.
CREATE TABLE IF NOT EXISTS schema_digest (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    digest bytea   NOT NULL
);

-- change_positions holds each user's latest position (last) and how far
-- back their history is gone (swept_through): a position below it, or above
-- last, cannot be resumed from. It has no foreign key to users, so that
-- erasing an account never takes a user id's positions back to 0: a client
-- that still holds one then gets reload, never a wrong resume.
CREATE TABLE IF NOT EXISTS change_positions (
    user_id       text   PRIMARY KEY,
    last          bigint NOT NULL,
    swept_through bigint NOT NULL DEFAULT 0
);

-- Upgrade from positions taken from one sequence for every user: the rows
-- keep their positions, and each user's counter starts at the highest
-- position of theirs, or the old global horizon, whichever is higher, with
-- the horizon as their swept_through. A client's position from before the
-- upgrade therefore resumes as it did, or gets reload if it was older than
-- the horizon. The sequence no longer numbers changes once this has run
-- (the column has no default), but it stays, so that instances of that
-- release still running during a rolling deploy read its last value and
-- answer reload where they cannot resume, not a 500; and if one boots
-- again, its own schema finds everything it creates already there. The
-- next release may drop it.
ALTER TABLE task_changes ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
DO $$
DECLARE
    horizon bigint;
BEGIN
    IF EXISTS (SELECT FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                WHERE d.adrelid = 'task_changes'::regclass AND a.attname = 'position') THEN
        horizon := coalesce((SELECT swept_through FROM task_changes_horizon), 0);
        INSERT INTO change_positions (user_id, last, swept_through)
        SELECT user_id, greatest(max(position), horizon), horizon FROM task_changes GROUP BY user_id
        UNION ALL
        SELECT id, horizon, horizon FROM users u
         WHERE horizon > 0 AND NOT EXISTS (SELECT FROM task_changes c WHERE c.user_id = u.id)
        ON CONFLICT (user_id) DO NOTHING;
        ALTER TABLE task_changes ALTER COLUMN position DROP DEFAULT;
        ALTER TABLE task_changes DROP CONSTRAINT task_changes_pkey;
        ALTER TABLE task_changes ADD PRIMARY KEY (user_id, position);
        DROP INDEX IF EXISTS task_changes_user_idx;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS task_changes_txid_idx ON task_changes (txid);

-- During a rolling deploy from a release with one position sequence, its
-- instances still insert changes without a position: this trigger gives
-- such a change the user's next one, so that their writes keep working
-- until they are replaced. This release's statements always give the
-- position, and the trigger's WHEN skips them without calling it.
CREATE OR REPLACE FUNCTION taskapi_position_for_earlier_release() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO change_positions AS p (user_id, last) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET last = p.last + 1
    RETURNING last INTO NEW.position;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER task_changes_position_for_earlier_release
    BEFORE INSERT ON task_changes FOR EACH ROW WHEN (NEW.position IS NULL)
    EXECUTE FUNCTION taskapi_position_for_earlier_release();

-- taskapi_forget_task_changes deletes the user $1's changes that hold the
-- content of the tasks $2, and taskapi_forget_user_changes all of the user
-- $1's but account.deleted. The statements that delete tasks or an account
-- call them once they hold the user's lock: being VOLATILE, each DELETE in
-- them reads a snapshot taken when it starts, which holds every change
-- committed while the statement waited for the lock. A DELETE in the
-- statement itself would read the statement's snapshot, taken before that
-- wait, and keep the content of a write that committed meanwhile.
CREATE OR REPLACE FUNCTION taskapi_forget_task_changes(text, uuid[]) RETURNS bigint
LANGUAGE sql VOLATILE
AS $$ WITH gone AS (
          DELETE FROM task_changes
           WHERE user_id = $1 AND id = ANY ($2) AND event IN ('task.created', 'task.updated') RETURNING 1)
      SELECT count(*) FROM gone $$;
CREATE OR REPLACE FUNCTION taskapi_forget_user_changes(text) RETURNS bigint
LANGUAGE sql VOLATILE
AS $$ WITH gone AS (DELETE FROM task_changes WHERE user_id = $1 AND event <> 'account.deleted' RETURNING 1)
      SELECT count(*) FROM gone $$;

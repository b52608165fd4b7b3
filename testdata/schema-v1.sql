-- The schema as taskapi first shipped it (before task versions, idempotency keys,
-- server keys and the per-sort indexes), with data written through it. The
-- upgrade test loads this into an empty schema and boots the current schema on top.

CREATE TABLE IF NOT EXISTS users (
    id         text        PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
    email      text,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION taskapi_tags_valid(tags text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT coalesce(bool_and(t IS NOT NULL AND char_length(t) BETWEEN 1 AND 50), true) FROM unnest(tags) AS t $$;

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

CREATE INDEX IF NOT EXISTS tasks_user_created_idx ON tasks (user_id, created_at, id);

INSERT INTO users (id, email, name, created_at, updated_at) VALUES
    ('4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF', 'ada@example.com', 'Ada', '2026-11-01T09:00:00Z', '2026-11-01T09:00:00Z'),
    ('other-user', NULL, NULL, '2026-11-02T09:00:00Z', '2026-11-02T09:00:00Z');
INSERT INTO tasks (id, user_id, title, description, completed, priority, due_date, tags, created_at, updated_at) VALUES
    ('6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1', '4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF', 'Written before the upgrade', 'keep me',
     false, 'high', '2026-12-24T18:00:00Z', '{home,gifts}', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z'),
    ('7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d', '4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF', 'Done already', NULL,
     true, 'low', NULL, '{}', '2026-11-01T11:00:00Z', '2026-11-03T11:00:00Z'),
    ('8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e', 'other-user', 'Not Ada''s', NULL,
     false, 'medium', NULL, '{}', '2026-11-02T10:00:00Z', '2026-11-02T10:00:00Z');

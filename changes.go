// This file is the history of changes: the statement fragments with which
// every write records its change and notifies the listeners, and the Store
// methods that read and sweep the history. Their JSON is in encode.go.

package main

import (
	"context"
	"database/sql"
	"time"
)

// changesChannel is the channel every write notifies, with the payload
// "<user_id>:<position>": small, far below pg_notify's 8000 bytes whatever
// the task. Listeners read the change itself from task_changes.
const changesChannel = "taskapi_changes"

// serializeLockSpace is the first key of the advisory locks that serialize
// each user's writes (the second is a hash of the user id).
const serializeLockSpace = "1952543595"

// serializeUserCTE takes a transaction-scoped advisory lock for the user $1
// before the statement touches any row: every write CTE reads "serialize"
// first. A user's writes then take their positions in task_changes one after
// the other and commit in that order, so that a reader who has seen position
// p of a user will never see a smaller one of that user commit later. Two
// users whose ids hash alike merely wait for each other.
const serializeUserCTE = `serialize AS (SELECT pg_advisory_xact_lock(` + serializeLockSpace + `, hashtext($1::text)))`

// notifyCTE sends the notification of every change recorded by the CTE c
// (which returns user_id and position). pg_notify is only sent at commit. A
// CTE that is not data-modifying runs only when read, so the statement's
// final SELECT reads n.
const notifyCTE = `, n AS (SELECT pg_notify('` + changesChannel + `', user_id || ':' || position) FROM c)`

// recordCreatedCTE and recordUpdatedCTE record the task that the CTE t
// returns (taskColumns) as a change of the user $1, and notify it.
const (
	recordCreatedCTE = `, c AS (
    INSERT INTO task_changes (user_id, event, ` + taskColumns + `)
    SELECT $1, 'task.created', ` + taskColumns + ` FROM t RETURNING user_id, position
)` + notifyCTE
	recordUpdatedCTE = `, c AS (
    INSERT INTO task_changes (user_id, event, ` + taskColumns + `)
    SELECT $1, 'task.updated', ` + taskColumns + ` FROM t RETURNING user_id, position
)` + notifyCTE
)

// returnTaskSQL ends a statement that writes one task (t) and records it:
// it returns the task once the notification has been sent.
const returnTaskSQL = `
SELECT ` + taskColumns + ` FROM t, (SELECT count(*) FROM n) AS notified`

// changesSQL reads a page of the user $1's history after position $2: at
// most $3 changes, and no more than fit in $4 bytes (see changeSizeSQL),
// but always the first. Each row also says how many changes the page had
// before the byte limit cut it (pending, at most $3). The task columns of a
// deletion are NULL; coalesce lets taskScanner read them.
const changesSQL = `SELECT position, event, pending, coalesce(ids::text[], '{}'),
       coalesce(id::text, ''), coalesce(title, ''), description, coalesce(completed, false), coalesce(priority, ''), due_date,
       coalesce(tags, '{}'), coalesce(created_at, changed_at), coalesce(updated_at, changed_at), coalesce(version, 0)
  FROM (SELECT *, sum(size) OVER (ORDER BY position) - size AS before, count(*) OVER () AS pending
          FROM (SELECT *, ` + changeSizeSQL + ` AS size
                  FROM task_changes WHERE user_id = $1 AND position > $2 ORDER BY position LIMIT $3) AS page
       ) AS sized
 WHERE before < $4 ORDER BY position`

// changeSizeSQL is what a change holds in memory once read, in bytes: its
// text, an id of a bulk delete as the 39 bytes of its JSON, and 300 for the
// rest. A page's JSON is about as large; only text made of characters
// that JSON escapes (<, >, &, controls) grows, up to six times.
const changeSizeSQL = `300 + coalesce(octet_length(title), 0) + coalesce(octet_length(description), 0)
                          + coalesce(octet_length(array_to_string(tags, '')), 0) + 20 * coalesce(cardinality(tags), 0)
                          + 39 * coalesce(cardinality(ids), 0)`

// changePageBytes bounds a page of history that a stream or a poll reads
// at once (changesSQL), so that what a stream holds while a slow client
// reads it is bounded in bytes whatever the changes, not only in rows.
const changePageBytes = 64 << 10

// changesAnswerBytes bounds an answer of GET /api/{user_id}/changes in bytes,
// as its limit parameter bounds it in changes.
const changesAnswerBytes = 256 << 10

// maxBulkDeleteIDs is the most ids one tasks.deleted change holds: a bulk
// delete of more tasks records several, so that no one change is larger
// than about 10 KB of JSON (a user may have TASK_QUOTA tasks to delete).
const maxBulkDeleteIDs = 250

// changesBoundsSQL reads what bounds a resumable position: the highest
// position swept, and the highest ever taken, for every user.
const changesBoundsSQL = `SELECT coalesce((SELECT swept_through FROM task_changes_horizon), 0),
       (SELECT last_value FROM task_changes_position_seq)`

// lastPositionSQL reads the user's latest position: where a new stream starts.
const lastPositionSQL = `SELECT coalesce(max(position), 0) FROM task_changes WHERE user_id = $1`

// sweepChangesSQL deletes up to $1 changes older than $2 seconds, of every
// user, and records the highest position deleted.
const sweepChangesSQL = `WITH swept AS (
    DELETE FROM task_changes WHERE position = ANY (ARRAY(
        SELECT position FROM task_changes WHERE changed_at < now() - make_interval(secs => $2) ORDER BY position LIMIT $1))
    RETURNING position
), horizon AS (
    INSERT INTO task_changes_horizon (one, swept_through) SELECT true, max(position) FROM swept HAVING count(*) > 0
    ON CONFLICT (one) DO UPDATE SET swept_through = greatest(task_changes_horizon.swept_through, EXCLUDED.swept_through)
)
SELECT count(*) FROM swept`

// Change events.
const (
	eventTaskCreated    = "task.created"
	eventTaskUpdated    = "task.updated"
	eventTaskDeleted    = "task.deleted"
	eventTasksDeleted   = "tasks.deleted"
	eventAccountDeleted = "account.deleted"
)

// Change is one entry of a user's history: the task as a create or update
// left it, the id of a deleted task, or the ids of the completed tasks
// deleted at once.
type Change struct {
	Position int64
	Event    string
	Task     Task     // task.created, task.updated
	ID       string   // task.deleted
	IDs      []string // tasks.deleted
}

// changePage is a page of a user's history, oldest first.
type changePage struct {
	Changes []Change
	// Pending is how many changes followed the position asked for, up to
	// the page's row limit, before its byte limit cut the page.
	Pending int
	// More is true when changes may follow the page: it was cut by its
	// byte limit, or filled its row limit.
	More bool
}

// Changes returns a page of the user's changes after position since, in
// order, of at most limit changes and about maxBytes (changesSQL). reload
// is true when since cannot be resumed from: changes after it may have been
// swept, or it is not a position this database gave out.
func (s *Store) Changes(ctx context.Context, userID string, since int64, limit, maxBytes int) (page changePage, reload bool, err error) {
	err = s.db.withConn(ctx, func(c stmtConn) error {
		var swept, last int64
		if err := c.QueryRow(changesBoundsSQL).Scan(&swept, &last); err != nil {
			return err
		}
		if reload = since < swept || since > last; reload {
			return nil
		}
		page, err = readChanges(c, userID, since, limit, maxBytes)
		return err
	})
	if err != nil {
		return changePage{}, false, dbError("read changes", err)
	}
	return page, reload, nil
}

// ChangesAfter returns a page of the user's changes after position since,
// as Changes does, without checking that since can be resumed from.
func (s *Store) ChangesAfter(ctx context.Context, userID string, since int64, limit, maxBytes int) (page changePage, err error) {
	err = s.db.withConn(ctx, func(c stmtConn) error {
		page, err = readChanges(c, userID, since, limit, maxBytes)
		return err
	})
	if err != nil {
		return changePage{}, dbError("read changes", err)
	}
	return page, nil
}

// readChanges reads a page of the user's changes after since.
func readChanges(c stmtConn, userID string, since int64, limit, maxBytes int) (changePage, error) {
	rows, err := c.Query(changesSQL, userID, since, limit, maxBytes)
	if err != nil {
		return changePage{}, err
	}
	defer rows.Close()
	ts := newTaskScanner(userID)
	page := changePage{Changes: []Change{}}
	for rows.Next() {
		var (
			c   Change
			ids textArray
		)
		task, err := ts.scan(changeRow{rows, []any{&c.Position, &c.Event, &page.Pending, &ids}})
		if err != nil {
			return changePage{}, err
		}
		switch c.Event {
		case eventTaskCreated, eventTaskUpdated:
			c.Task = task
		case eventTaskDeleted:
			c.ID = task.ID
		case eventTasksDeleted:
			c.IDs = ids
		}
		page.Changes = append(page.Changes, c)
	}
	if err := rows.Err(); err != nil {
		return changePage{}, err
	}
	page.More = page.Pending == limit || len(page.Changes) < page.Pending
	return page, nil
}

// changeRow reads a row of changesSQL: the change's own columns into
// extra, then the task columns into what taskScanner gives.
type changeRow struct {
	rows  *sql.Rows
	extra []any
}

func (r changeRow) Scan(dest ...any) error {
	return r.rows.Scan(append(r.extra, dest...)...)
}

// Resumable reports whether a stream of the user can resume after position
// since: reload is true when it cannot, as Changes says it.
func (s *Store) Resumable(ctx context.Context, userID string, since int64) (reload bool, err error) {
	err = s.db.withConn(ctx, func(c stmtConn) error {
		var swept, last int64
		if err := c.QueryRow(changesBoundsSQL).Scan(&swept, &last); err != nil {
			return err
		}
		reload = since < swept || since > last
		return nil
	})
	if err != nil {
		return false, dbError("read changes", err)
	}
	return reload, nil
}

// LastPosition returns the user's latest position, or 0.
func (s *Store) LastPosition(ctx context.Context, userID string) (int64, error) {
	var p int64
	err := s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(lastPositionSQL, userID).Scan(&p)
	})
	if err != nil {
		return 0, dbError("read last position", err)
	}
	return p, nil
}

// SweepChanges deletes the changes older than retention, of every user,
// and says how many it deleted.
func (s *Store) SweepChanges(ctx context.Context, retention time.Duration) (int64, error) {
	return s.deleteInBatches(ctx, "sweep changes", sweepChangesSQL, retention.Seconds())
}

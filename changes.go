// This file is the history of changes: the statement fragments with which
// every write records its change and takes its position, and the Store
// methods that read and sweep the history and tell other instances of
// changes. Their JSON is in encode.go; the hub that wakes streams is in
// hub.go.

package main

import (
	"context"
	"database/sql"
	"strconv"
	"time"
)

// changesChannel is the channel on which each instance's listener tells the
// others which users changed (hub.go): "<instance id>\n<user id>\n...".
// Listeners read the changes themselves from task_changes.
const changesChannel = "taskapi_changes"

// serializeLockSpace is the first key of the advisory locks that serialize
// each user's writes (the second is a hash of the user id).
const serializeLockSpace = "1952543595"

// serializeUserCTE takes a transaction-scoped advisory lock for the user $1
// before the statement touches any row: every write CTE reads "serialize"
// first. A user's writes then take their positions in change_positions one
// after the other and commit in that order, so that a reader who has seen
// position p of a user will never see a smaller one of that user commit
// later. Two users whose ids hash alike merely wait for each other.
const serializeUserCTE = `serialize AS (SELECT pg_advisory_xact_lock(` + serializeLockSpace + `, hashtext($1::text)))`

// historyPositions is how many of a user's latest positions their history
// keeps: a write that takes position p deletes the user's change at
// p - historyPositions, if any, and a client further behind than that gets
// reload. With the earlier changes of a task deleted by each write of it,
// a user's history holds at most historyPositions rows, and in practice
// one for each task changed lately.
const historyPositions = "1000"

// takePositionCTE takes the user $1's next position for the change of the
// CTE t, if t returns a row (pos.last), and moves their horizon up to keep
// historyPositions positions (pos.swept_through). ON CONFLICT DO UPDATE
// updates the latest row whatever the statement's snapshot, and the user's
// lock is held: positions are taken one at a time, with no gap and no
// repeat.
const takePositionCTE = `, pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, 1 FROM t
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + 1, swept_through = greatest(p.swept_through, p.last + 1 - ` + historyPositions + `)
    RETURNING last, swept_through, 1 AS taken
)`

// trimCTE deletes the changes at or below the horizon pos moved up: the one
// the move passed, and any the sweep or an earlier release left there.
const trimCTE = `, trim AS (
    DELETE FROM task_changes WHERE user_id = $1 AND position <= (SELECT swept_through FROM pos)
)`

// recordCreatedCTE and recordUpdatedCTE record the task that the CTE t
// returns (taskColumns) as a change of the user $1, at the position pos
// took. An update deletes the earlier changes of its task (prior): the
// latest holds the task as it is, and a client that resumes from before
// them hears only of it, as task.updated.
const (
	recordCreatedCTE = takePositionCTE + trimCTE + `, c AS (
    INSERT INTO task_changes (user_id, position, event, ` + taskColumns + `)
    SELECT $1, pos.last, 'task.created', ` + taskColumns + ` FROM t, pos
)`
	recordUpdatedCTE = takePositionCTE + trimCTE + `, prior AS (
    DELETE FROM task_changes
     WHERE id IN (SELECT id FROM t) AND user_id = $1 AND event IN ('task.created', 'task.updated')
), c AS (
    INSERT INTO task_changes (user_id, position, event, ` + taskColumns + `)
    SELECT $1, pos.last, 'task.updated', ` + taskColumns + ` FROM t, pos
)`
)

// returnTaskSQL ends a statement that writes one task (t) and records it.
// A data-modifying CTE runs whether it is read or not.
const returnTaskSQL = `
SELECT ` + taskColumns + ` FROM t`

// changesSQL reads a page of the user $1's history after position $2: at
// most $3 changes, and no more than fit in $4 bytes (see changeSizeSQL),
// but always the first. Each row also says how many changes the page had
// before the byte limit cut it (pending, at most $3), and every row, or the
// one row of an empty page (position 0), leads with the user's bounds: their
// last position and how far back their history is gone. Bounds and page
// come from one snapshot, so that a page read after a position that is
// still within the bounds holds every change after it. The task columns of
// a deletion are NULL; coalesce lets taskScanner read them.
const changesSQL = `SELECT b.last, b.swept_through, coalesce(s.position, 0), coalesce(s.event, ''), coalesce(s.pending, 0),
       coalesce(s.ids::text[], '{}'), coalesce(s.id::text, ''), coalesce(s.title, ''), s.description,
       coalesce(s.completed, false), coalesce(s.priority, ''), s.due_date, coalesce(s.tags, '{}'),
       coalesce(s.created_at, s.changed_at, 'epoch'), coalesce(s.updated_at, s.changed_at, 'epoch'), coalesce(s.version, 0)
  FROM (SELECT coalesce(max(last), 0) AS last, coalesce(max(swept_through), 0) AS swept_through
          FROM change_positions WHERE user_id = $1) AS b
  LEFT JOIN LATERAL (
       SELECT *, sum(size) OVER (ORDER BY position) - size AS before, count(*) OVER () AS pending
         FROM (SELECT *, ` + changeSizeSQL + ` AS size
                 FROM task_changes WHERE user_id = $1 AND position > $2 ORDER BY position LIMIT $3) AS page
       ) AS s ON s.before < $4
 ORDER BY s.position`

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

// changeBoundsSQL reads the user $1's bounds: their last position, and how
// far back their history is gone (a user who never wrote has 0 and 0), and
// the lowest id of a transaction not yet finished in the same snapshot: a
// change the bounds do not count has a transaction id at or above it.
const changeBoundsSQL = `SELECT coalesce(max(last), 0), coalesce(max(swept_through), 0), pg_snapshot_xmin(pg_current_snapshot())::text
  FROM change_positions WHERE user_id = $1`

// sweepChangesSQL deletes up to $1 changes older than $2 seconds, of every
// user, and moves each user's horizon up to the highest position of theirs
// it deleted. It skips, until its next run, the users whose lock a write
// holds (serializeUserCTE): a write takes that lock before the rows the
// sweep would lock, and the other way round the two would deadlock.
const sweepChangesSQL = `WITH swept AS (
    DELETE FROM task_changes WHERE (user_id, position) IN (
        SELECT user_id, position FROM task_changes
         WHERE changed_at < now() - make_interval(secs => $2)
           AND pg_try_advisory_xact_lock(` + serializeLockSpace + `, hashtext(user_id))
         ORDER BY changed_at LIMIT $1)
    RETURNING user_id, position
), horizon AS (
    UPDATE change_positions AS p SET swept_through = greatest(p.swept_through, s.top)
      FROM (SELECT user_id, max(position) AS top FROM swept GROUP BY user_id) AS s
     WHERE p.user_id = s.user_id
)
SELECT count(*) FROM swept`

// notifySQL tells the instances that LISTEN which users changed: one
// notification for each payload of $1, sent when its transaction commits.
// It runs on the listener's connection (hub.go), outside every write.
const notifySQL = `SELECT count(pg_notify('` + changesChannel + `', p)) FROM unnest($1::text[]) AS p`

// pollChangedSQL is the safety net's one statement: which of the users $2
// have a change written by a transaction whose id is $1 or higher, with the
// highest position of each, and the lowest id of a transaction not yet
// finished in this statement's snapshot, from which the next poll asks. Every transaction below it has committed
// or aborted, and what committed is in the snapshot: a change that commits
// after the poll, whatever its position or the order of commits across
// users, has a transaction id at or above it, and the next poll finds it.
const pollChangedSQL = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
       coalesce(array_agg(user_id), '{}'), coalesce(array_agg(top::text), '{}')
  FROM (SELECT user_id, max(position) AS top FROM task_changes
         WHERE txid >= $1::text::xid8 AND user_id = ANY ($2::text[]) GROUP BY user_id) AS changed`

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
	// Last and Swept are the user's bounds when the page was read: their
	// last position, and how far back their history is gone. A page after
	// a position below Swept may lack changes.
	Last, Swept int64
	// frames are the changes as server-sent events, made once by the hub
	// for every stream that shares the page.
	frames [][]byte
}

// resumable reports whether a client that has seen every change through
// position since may go on from there: its position is neither older than
// the user's history nor newer than their last.
func (p changePage) resumable(since int64) bool { return since >= p.Swept && since <= p.Last }

// Changes returns a page of the user's changes after position since, in
// order, of at most limit changes and about maxBytes (changesSQL). reload
// is true when since cannot be resumed from: changes after it may have been
// swept, or it is not a position of the user's; page.Last is then where to
// resume from.
func (s *Store) Changes(ctx context.Context, userID string, since int64, limit, maxBytes int) (page changePage, reload bool, err error) {
	page, err = s.ChangesAfter(ctx, userID, since, limit, maxBytes)
	if err != nil {
		return changePage{}, false, err
	}
	if !page.resumable(since) {
		return changePage{Changes: []Change{}, Last: page.Last, Swept: page.Swept}, true, nil
	}
	return page, false, nil
}

// ChangesAfter returns a page of the user's changes after position since,
// as Changes does, with the user's bounds, without checking them.
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
		task, err := ts.scan(changeRow{rows, []any{&page.Last, &page.Swept, &c.Position, &c.Event, &page.Pending, &ids}})
		if err != nil {
			return changePage{}, err
		}
		if c.Position == 0 {
			continue // an empty page's row of bounds
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

// Bounds returns the user's bounds: their last position, and how far back
// their history is gone (see changePage), and xmin, the lowest id of a
// transaction then not yet finished (changeBoundsSQL).
func (s *Store) Bounds(ctx context.Context, userID string) (last, swept int64, xmin uint64, err error) {
	var x string
	err = s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(changeBoundsSQL, userID).Scan(&last, &swept, &x)
	})
	if err == nil {
		xmin, err = strconv.ParseUint(x, 10, 64)
	}
	if err != nil {
		return 0, 0, 0, dbError("read change bounds", err)
	}
	return last, swept, xmin, nil
}

// SweepChanges deletes the changes older than retention, of every user,
// and says how many it deleted.
func (s *Store) SweepChanges(ctx context.Context, retention time.Duration) (int64, error) {
	return s.deleteInBatches(ctx, "sweep changes", sweepChangesSQL, retention.Seconds())
}

// PollChanged returns which of users have a change from a transaction
// whose id is since or higher, with the highest position of each, and the
// watermark to ask from next time (pollChangedSQL).
func (s *Store) PollChanged(ctx context.Context, since string, users []string) (changed map[string]int64, next uint64, err error) {
	var (
		x         string
		ids, tops []string
	)
	err = s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(pollChangedSQL, since, users).Scan(&x, (*textArray)(&ids), (*textArray)(&tops))
	})
	if err == nil {
		next, err = strconv.ParseUint(x, 10, 64)
	}
	changed = make(map[string]int64, len(ids))
	for i := 0; err == nil && i < len(ids) && i < len(tops); i++ {
		changed[ids[i]], err = strconv.ParseInt(tops[i], 10, 64)
	}
	if err != nil {
		return nil, 0, dbError("poll changes", err)
	}
	return changed, next, nil
}

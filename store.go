// This file is the Store: the task and account types, the store's errors
// (and, at the end, which database errors become which of them), and the
// statements that read and write tasks and accounts. Lists are in
// list.go, the history of changes in changes.go, Idempotency-Keys in
// idempotency.go, the pool and the schema in db.go. Every statement is
// written out whole in testdata/sql (TestSQLGolden). Next: schema.sql, the
// tables they read and write.

package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors the store returns. Callers test for them with errors.Is; the
// handlers map each to one HTTP status in writeError.
var (
	// ErrNotFound means no task has that id for that user. Another user's
	// task and a malformed id are the same ErrNotFound, so nobody can probe
	// which ids exist.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable means the database could not be reached or did not
	// answer in time. It is wrapped around the cause, which is logged.
	ErrUnavailable = errors.New("database unavailable")
	// ErrRejected means the database refused a value through a constraint
	// the handlers' validation should already have enforced.
	ErrRejected = errors.New("value rejected by the database")
	// ErrStale means an If-Match precondition failed: the task has changed
	// since the caller read it. The method returns the current task with it.
	ErrStale = errors.New("the task has changed")
	// ErrBadPosition means a list was asked to start after a position that
	// cannot be one of its keys.
	ErrBadPosition = errors.New("not a position in this list")
	// ErrKeyReused means an Idempotency-Key was used before with another
	// request.
	ErrKeyReused = errors.New("idempotency key already used for a different request")
	// ErrKeyTaskDeleted means an Idempotency-Key's task has been deleted
	// since the key created it.
	ErrKeyTaskDeleted = errors.New("the idempotency key's task was deleted")
	// ErrQuota means the user has as many tasks as one user may have.
	ErrQuota = errors.New("task quota reached")
)

// Priorities in ascending order. The API and the schema accept only these.
var priorities = []string{"low", "medium", "high"}

// Task is one to-do item, as stored and as sent to clients.
type Task struct {
	ID          string     `json:"id"`
	UserID      string     `json:"user_id"`
	Title       string     `json:"title"`
	Description *string    `json:"description"`
	Completed   bool       `json:"completed"`
	Priority    string     `json:"priority"`
	DueDate     *time.Time `json:"due_date"`
	Tags        []string   `json:"tags"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	// Version counts the task's changes, starting at 1. The task's ETag is
	// the version in quotes.
	Version int64 `json:"version"`
}

// User is the identity a request acts for, taken from its token. Email and
// Name are empty when the token does not carry them.
type User struct {
	ID    string
	Email string
	Name  string
}

// NewTask holds the validated fields of a task to create. The hash of its
// JSON form is what an idempotency key remembers of the request.
type NewTask struct {
	Title       string     `json:"title"`
	Description *string    `json:"description"`
	Completed   bool       `json:"completed"`
	Priority    string     `json:"priority"`
	DueDate     *time.Time `json:"due_date"`
	Tags        []string   `json:"tags"`
}

// TaskPatch holds the validated fields of a partial update. A nil pointer
// leaves its column as it is. Description and DueDate can also be cleared,
// so each has a Set flag: Set with a nil value stores NULL.
type TaskPatch struct {
	Title          *string
	SetDescription bool
	Description    *string
	Completed      *bool
	Priority       *string
	SetDueDate     bool
	DueDate        *time.Time
	Tags           []string // nil leaves the tags; an empty slice clears them
}

// Stats counts a user's tasks.
type Stats struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Pending   int `json:"pending"`
	Overdue   int `json:"overdue"`
}

// Account is what taskapi knows of a user. CreatedAt is nil until the user's
// first write creates their row.
type Account struct {
	ID        string     `json:"id"`
	Email     *string    `json:"email"`
	Name      *string    `json:"name"`
	CreatedAt *time.Time `json:"created_at"`
	Tasks     Stats      `json:"tasks"`
}

// taskColumns is the select list every task query returns, in the order
// taskScanner reads it.
const taskColumns = `id, title, description, completed, priority, due_date, tags, created_at, updated_at, version`

// upsertUserCTE creates the caller's users row on their first write and keeps
// its email and name current, inside the statement that writes the task: no
// extra round trip, and reads never touch it. It uses $1 (id), $2 (email) and
// $3 (name); empty claims never erase what is known. The row is only rewritten
// when something changed.
const upsertUserCTE = `WITH upsert_user AS (
    INSERT INTO users (id, email, name) VALUES ($1, nullif($2, ''), nullif($3, ''))
    ON CONFLICT (id) DO UPDATE
       SET email = coalesce(EXCLUDED.email, users.email),
           name = coalesce(EXCLUDED.name, users.name),
           updated_at = now()
     WHERE (EXCLUDED.email IS NOT NULL AND EXCLUDED.email IS DISTINCT FROM users.email)
        OR (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM users.name)
)
`

// underQuotaSQL is true while the user ($1) has fewer than $10 tasks. It
// counts at most $10 index entries, so it costs the same for a user far over
// the quota as for one at it.
const underQuotaSQL = `(SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = $1 LIMIT $10) AS mine) < $10`

// createTaskSQL creates a task ($4 to $9) for the user, unless they have
// $10 tasks already: then it returns no row.
const createTaskSQL = upsertUserCTE + ", " + serializeUserCTE + `, t AS (
INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags)
SELECT $1, $4, $5, $6, $7, $8, $9 FROM serialize
 WHERE ` + underQuotaSQL + `
RETURNING ` + taskColumns + `
)` + recordCreatedCTE + returnTaskSQL

const getTaskSQL = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1 AND user_id = $2`

// updateTaskSQL changes only the columns whose parameter is given: coalesce
// keeps a column whose value is NULL, and the two nullable columns carry an
// explicit "set" flag so that NULL can also mean "clear it". $13 holds the
// versions an If-Match header accepts (NULL: any), checked in the same
// statement as the write, so nothing can change in between.
const updateTaskSQL = upsertUserCTE + ", " + serializeUserCTE + `, t AS (
UPDATE tasks SET
    title       = coalesce($5, title),
    description = CASE WHEN $6::boolean THEN $7::text ELSE description END,
    completed   = coalesce($8, completed),
    priority    = coalesce($9, priority),
    due_date    = CASE WHEN $10::boolean THEN $11::timestamptz ELSE due_date END,
    tags        = coalesce($12, tags),
    updated_at  = now(),
    version     = version + 1
  FROM serialize
WHERE id = $4 AND user_id = $1 AND ($13::bigint[] IS NULL OR version = ANY ($13))
RETURNING ` + taskColumns + `
)` + recordUpdatedCTE + returnTaskSQL

// completeTaskSQL sets completed to $5, or toggles it when $5 is NULL.
const completeTaskSQL = upsertUserCTE + ", " + serializeUserCTE + `, t AS (
UPDATE tasks SET
    completed  = coalesce($5::boolean, NOT completed),
    updated_at = now(),
    version    = version + 1
  FROM serialize
WHERE id = $4 AND user_id = $1 AND ($6::bigint[] IS NULL OR version = ANY ($6))
RETURNING ` + taskColumns + `
)` + recordUpdatedCTE + returnTaskSQL

// forgetRequestsCTE clears the request hash of the idempotency keys that
// created the tasks in "deleted", in the statement that deletes them: a key
// keeps nothing of a deleted task, and a retry with it is told the task is
// gone rather than creating it again. It also deletes the earlier changes
// of those tasks from the history, which hold their content: a client that
// resumes from before them hears only that the task was deleted. The
// history is scrubbed by taskapi_forget_task_changes (schema.sql), whose
// snapshot is taken once the user's lock is held, so that a change written
// while this statement waited for the lock is scrubbed too. The statement
// answers the number of tasks deleted.
const forgetRequestsCTE = `, forget AS (
    UPDATE idempotency_keys SET request_hash = NULL
     WHERE (user_id, task_id) IN (SELECT user_id, id FROM deleted) AND request_hash IS NOT NULL
)
SELECT count(*) FROM deleted, (SELECT taskapi_forget_task_changes($1, ARRAY(SELECT id FROM deleted))) AS scrub`

// trimDeletedCTE is trimCTE for a statement that deletes tasks: the
// changes that hold the deleted tasks' content are taskapi_forget_task_changes's
// to delete, and one row must not be deleted twice in one statement.
const trimDeletedCTE = `, trim AS (
    DELETE FROM task_changes
     WHERE user_id = $1 AND position > (SELECT swept_through - taken FROM pos) AND position <= (SELECT swept_through FROM pos)
       AND NOT (event IN ('task.created', 'task.updated') AND id IN (SELECT id FROM deleted))
)`

// deleteTaskSQL deletes the user $1's task $2 if its version is one of $3
// (or $3 is NULL), and records its deletion.
const deleteTaskSQL = `WITH ` + serializeUserCTE + `, deleted AS (
    DELETE FROM tasks USING serialize WHERE id = $2 AND user_id = $1 AND ($3::bigint[] IS NULL OR version = ANY ($3)) RETURNING user_id, id
), t AS (SELECT 1 FROM deleted)` + takePositionCTE + trimDeletedCTE + `, c AS (
    INSERT INTO task_changes (user_id, position, event, id) SELECT $1, pos.last, 'task.deleted', id FROM deleted, pos
)` + forgetRequestsCTE

// deleteCompletedSQL deletes the user $1's completed tasks and records them
// as tasks.deleted changes of at most $2 ids each (maxBulkDeleteIDs), in the
// order of their ids, at positions that follow one another.
const deleteCompletedSQL = `WITH ` + serializeUserCTE + `, deleted AS (
    DELETE FROM tasks USING serialize WHERE user_id = $1 AND completed RETURNING user_id, id
), parts AS (
    SELECT part, array_agg(id ORDER BY id) AS ids
      FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / $2 AS part FROM deleted) AS numbered
     GROUP BY part
), pos AS (
    INSERT INTO change_positions AS p (user_id, last) SELECT $1, count(*) FROM parts HAVING count(*) > 0
    ON CONFLICT (user_id) DO UPDATE
       SET last = p.last + EXCLUDED.last, swept_through = greatest(p.swept_through, p.last + EXCLUDED.last - ` + historyPositions + `)
    RETURNING last, swept_through, (SELECT count(*) FROM parts) AS taken
)` + trimDeletedCTE + `, c AS (
    INSERT INTO task_changes (user_id, position, event, ids)
    SELECT $1, pos.last - pos.taken + 1 + part, 'tasks.deleted', ids FROM parts, pos
)` + forgetRequestsCTE

// statsSQL counts in one pass over the user's tasks.
const statsSQL = `SELECT count(*),
       count(*) FILTER (WHERE completed),
       count(*) FILTER (WHERE NOT completed AND due_date < now())
  FROM tasks WHERE user_id = $1`

// accountSQL reads the user's row, if any, and their counts in one statement.
const accountSQL = `SELECT u.email, u.name, u.created_at, s.total, s.completed, s.overdue
  FROM (` + statsSQL + `) AS s (total, completed, overdue)
  LEFT JOIN users u ON u.id = $1`

// deleteAccountSQL erases the user; their tasks and keys go with them
// (ON DELETE CASCADE), in the statement's one transaction, and so does their
// history of changes (taskapi_forget_user_changes, once the user's lock is
// held), but for one account.deleted, which tells their open streams. Their
// positions are kept (change_positions), so that a later account with the
// same id goes on from there. It answers whether there was an account.
const deleteAccountSQL = `WITH ` + serializeUserCTE + `, gone AS (
    DELETE FROM users USING serialize WHERE id = $1 RETURNING id
), t AS (SELECT 1 FROM gone)` + takePositionCTE + `, c AS (
    INSERT INTO task_changes (user_id, position, event) SELECT $1, pos.last, 'account.deleted' FROM pos
)
SELECT count(taskapi_forget_user_changes(id)) FROM gone`

// Store reads and writes tasks. Every method is scoped by the user it is
// given: a task of another user is indistinguishable from no task at all.
type Store struct {
	// db bounds every statement by the store's timeout, so that a
	// database that stops answering turns into ErrUnavailable instead of a
	// hanging request.
	db *boundedDB
	// taskQuota is the most tasks one user may have.
	taskQuota int
	// changed, when set, is called with the user after each write that
	// recorded a change of theirs has committed: live updates wake the
	// user's streams (see OnChange).
	changed func(userID string)
}

// NewStore returns a Store over db each of whose calls, its wait for a
// pooled connection and its statements, takes at most timeout, and whose
// users may have up to taskQuota tasks each.
func NewStore(db *sql.DB, timeout time.Duration, taskQuota int) *Store {
	return &Store{db: newBoundedDB(db, timeout), taskQuota: taskQuota}
}

// OnChange makes the store call changed with the user after each of their
// writes that recorded a change has committed. It is set once, before the
// store is used: live updates hear of changes from it at once, and from the
// history within the poll interval whatever happens to the call.
func (s *Store) OnChange(changed func(userID string)) { s.changed = changed }

// recorded tells OnChange's function that userID's write committed a change.
func (s *Store) recorded(userID string) {
	if s.changed != nil {
		s.changed(userID)
	}
}

// Stats counts the user's tasks.
func (s *Store) Stats(ctx context.Context, userID string) (Stats, error) {
	var st Stats
	err := s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(statsSQL, userID).Scan(&st.Total, &st.Completed, &st.Overdue)
	})
	if err != nil {
		return Stats{}, dbError("task stats", err)
	}
	st.Pending = st.Total - st.Completed
	return st, nil
}

// GetTask returns the user's task with the given id, or ErrNotFound.
func (s *Store) GetTask(ctx context.Context, userID, id string) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	var t Task
	err := s.db.withConn(ctx, func(c stmtConn) (err error) {
		t, err = newTaskScanner(userID).scan(c.QueryRow(getTaskSQL, id, userID))
		return err
	})
	if err != nil {
		return Task{}, dbError("get task", err)
	}
	return t, nil
}

// CreateTask stores a new task for the user and returns it, or ErrQuota when
// the user has as many tasks as the store allows. The user's row is created
// or refreshed in the same statement.
func (s *Store) CreateTask(ctx context.Context, u User, in NewTask) (Task, error) {
	var t Task
	err := s.db.withConn(ctx, func(c stmtConn) (err error) {
		t, err = newTaskScanner(u.ID).scan(c.QueryRow(createTaskSQL,
			u.ID, u.Email, u.Name,
			in.Title, in.Description, in.Completed, in.Priority, in.DueDate, nonNil(in.Tags), s.taskQuota))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, ErrQuota
	}
	if err != nil {
		return Task{}, dbError("create task", err)
	}
	s.recorded(u.ID)
	return t, nil
}

// deleteInBatches runs query, a DELETE of at most $1 rows that answers how
// many it deleted, with args after $1, until it deletes fewer than a batch:
// no one statement holds its locks for long.
func (s *Store) deleteInBatches(ctx context.Context, op, query string, args ...any) (int64, error) {
	const batch = 10_000
	var total int64
	for {
		var n int64
		err := s.db.withConn(ctx, func(c stmtConn) error {
			return c.QueryRow(query, append([]any{batch}, args...)...).Scan(&n)
		})
		if err != nil {
			return total, dbError(op, err)
		}
		total += n
		if n < batch || ctx.Err() != nil {
			return total, nil
		}
	}
}

// UpdateTask applies p to the user's task with the given id and returns the
// result, or ErrNotFound. updated_at is set and the version goes up even when
// p changes nothing. With ifMatch not nil the task's version must be one of
// it, or nothing changes and the current task comes back with ErrStale.
func (s *Store) UpdateTask(ctx context.Context, u User, id string, p TaskPatch, ifMatch []int64) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	var tags any // a nil []string would still be a typed value; keep it untyped NULL
	if p.Tags != nil {
		tags = p.Tags
	}
	var t Task
	err := s.db.withConn(ctx, func(c stmtConn) (err error) {
		t, err = newTaskScanner(u.ID).scan(c.QueryRow(updateTaskSQL,
			u.ID, u.Email, u.Name, id,
			p.Title, p.SetDescription, p.Description, p.Completed, p.Priority, p.SetDueDate, p.DueDate, tags, versions(ifMatch)))
		return explainMiss(c, u.ID, id, ifMatch, &t, err)
	})
	return s.written(u.ID, "update task", t, err)
}

// SetCompleted sets the completed flag of the user's task to *completed, or
// toggles it when completed is nil, and returns the task or ErrNotFound.
// ifMatch works as for UpdateTask.
func (s *Store) SetCompleted(ctx context.Context, u User, id string, completed *bool, ifMatch []int64) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	var t Task
	err := s.db.withConn(ctx, func(c stmtConn) (err error) {
		t, err = newTaskScanner(u.ID).scan(c.QueryRow(completeTaskSQL, u.ID, u.Email, u.Name, id, completed, versions(ifMatch)))
		return explainMiss(c, u.ID, id, ifMatch, &t, err)
	})
	return s.written(u.ID, "complete task", t, err)
}

// DeleteTask deletes the user's task with the given id, or returns
// ErrNotFound. ifMatch works as for UpdateTask.
func (s *Store) DeleteTask(ctx context.Context, userID, id string, ifMatch []int64) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	var current Task
	err := s.db.withConn(ctx, func(c stmtConn) error {
		var n int64
		if err := c.QueryRow(deleteTaskSQL, userID, id, versions(ifMatch)).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return explainMiss(c, userID, id, ifMatch, &current, sql.ErrNoRows)
		}
		return nil
	})
	return s.written(userID, "delete task", current, err)
}

// explainMiss tells why a conditional write touched no row (err is
// sql.ErrNoRows): with no If-Match there is no such task; with one, the task
// may exist at another version, which costs a second query, on this failure
// path only. Then the task is read into current, and the error is ErrStale.
// Any other err is returned as it is.
func explainMiss(c stmtConn, userID, id string, ifMatch []int64, current *Task, err error) error {
	if !errors.Is(err, sql.ErrNoRows) || ifMatch == nil {
		return err
	}
	t, err := newTaskScanner(userID).scan(c.QueryRow(getTaskSQL, id, userID))
	if err != nil {
		return err
	}
	*current = t
	return ErrStale
}

// written returns the result of a write of userID's: t, and with ErrStale
// the current task t is then; any other error goes through dbError. A write
// without error recorded a change.
func (s *Store) written(userID, op string, t Task, err error) (Task, error) {
	switch {
	case err == nil:
		s.recorded(userID)
		return t, nil
	case errors.Is(err, ErrStale):
		return t, ErrStale
	}
	return Task{}, dbError(op, err)
}

// versions turns an If-Match list into a parameter: NULL when there is none.
func versions(ifMatch []int64) any {
	if ifMatch == nil {
		return nil
	}
	return ifMatch
}

// DeleteCompleted deletes the user's completed tasks and says how many.
func (s *Store) DeleteCompleted(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(deleteCompletedSQL, userID, maxBulkDeleteIDs).Scan(&n)
	})
	if err != nil {
		return 0, dbError("delete completed tasks", err)
	}
	if n > 0 {
		s.recorded(userID)
	}
	return n, nil
}

// Account returns what is known of u: their row, if their first write has
// made it, else the token's claims, and their task counts.
func (s *Store) Account(ctx context.Context, u User) (Account, error) {
	a := Account{ID: u.ID}
	var (
		email, name sql.NullString
		created     sql.NullTime
	)
	err := s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(accountSQL, u.ID).Scan(&email, &name, &created, &a.Tasks.Total, &a.Tasks.Completed, &a.Tasks.Overdue)
	})
	if err != nil {
		return Account{}, dbError("read account", err)
	}
	a.Tasks.Pending = a.Tasks.Total - a.Tasks.Completed
	if created.Valid {
		c := created.Time.UTC()
		a.CreatedAt = &c
	}
	for _, f := range []struct {
		db    sql.NullString
		claim string
		dst   **string
	}{{email, u.Email, &a.Email}, {name, u.Name, &a.Name}} {
		switch {
		case f.db.Valid:
			*f.dst = &f.db.String
		case f.claim != "":
			*f.dst = &f.claim
		}
	}
	return a, nil
}

// DeleteAccount erases the user and everything of theirs.
func (s *Store) DeleteAccount(ctx context.Context, userID string) error {
	var n int64
	err := s.db.withConn(ctx, func(c stmtConn) error {
		return c.QueryRow(deleteAccountSQL, userID).Scan(&n)
	})
	if err != nil {
		return dbError("delete account", err)
	}
	if n > 0 {
		s.recorded(userID)
	}
	return nil
}

// Ping reports whether the database answers within timeout.
func (s *Store) Ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := s.db.pool.PingContext(ctx); err != nil {
		return dbError("ping", err)
	}
	return nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// taskScanner reads rows of taskColumns into tasks of one user. One serves
// every row of a query: the scan destinations are made once per query, not
// once per row.
type taskScanner struct {
	userID      string
	task        Task
	description sql.NullString
	dueDate     sql.NullTime
	dest        []any
}

func newTaskScanner(userID string) *taskScanner {
	s := &taskScanner{userID: userID}
	t := &s.task
	s.dest = []any{&t.ID, &t.Title, &s.description, &t.Completed, &t.Priority,
		&s.dueDate, (*textArray)(&t.Tags), &t.CreatedAt, &t.UpdatedAt, &t.Version}
	return s
}

// scan reads one row. The user id is not a column: every query is scoped
// to the user, so it can only be the one the query was for.
func (s *taskScanner) scan(row interface{ Scan(...any) error }) (Task, error) {
	if err := row.Scan(s.dest...); err != nil {
		return Task{}, err
	}
	t := s.task
	t.UserID = s.userID
	if s.description.Valid {
		d := s.description.String
		t.Description = &d
	}
	if s.dueDate.Valid {
		d := s.dueDate.Time.UTC()
		t.DueDate = &d
	}
	t.CreatedAt = t.CreatedAt.UTC()
	t.UpdatedAt = t.UpdatedAt.UTC()
	return t, nil
}

// nonNil returns s, or an empty slice when s is nil, so that JSON shows [] and
// the database stores '{}' rather than NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// isUUID reports whether s is a UUID in the canonical 8-4-4-4-12 hex form.
// Anything else cannot name a task, so it is answered without a query.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// dbError maps a database error to the store's errors, wrapping it with the
// operation: no row is ErrNotFound; a lost, refused or timed-out connection
// is ErrUnavailable; a violated constraint is ErrRejected.
func dbError(op string, err error) error {
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case isUnavailable(err):
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23514", // check_violation
			"22021", // character_not_in_repertoire (NUL, bad encoding)
			"22001", // string_data_right_truncation
			"22P05": // untranslatable_character
			return fmt.Errorf("%s: %w: %w", op, ErrRejected, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isUnavailable reports whether err means the database cannot serve right
// now, as opposed to a fault in the statement.
func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || // connection exception
			pgErr.Code == "53300" || // too_many_connections
			pgErr.Code == "57P01" || // admin_shutdown
			pgErr.Code == "57P02" || // crash_shutdown
			pgErr.Code == "57P03" || // cannot_connect_now (starting up, waking)
			pgErr.Code == "57014" // query_canceled (statement timeout)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) ||
		errors.As(err, &netErr) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		pgconn.Timeout(err)
}

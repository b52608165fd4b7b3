package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// schemaSQL is the whole database schema, applied at every boot by applySchema.
//
//go:embed schema.sql
var schemaSQL string

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
}

// User is the identity a request acts for, taken from its token. Email and
// Name are empty when the token does not carry them.
type User struct {
	ID    string
	Email string
	Name  string
}

// NewTask holds the validated fields of a task to create.
type NewTask struct {
	Title       string
	Description *string
	Completed   bool
	Priority    string
	DueDate     *time.Time
	Tags        []string
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

// ListOptions selects and orders the tasks a list returns.
type ListOptions struct {
	Completed *bool  // nil: all tasks; true: completed; false: pending
	Sort      string // a key of listOrders
	Desc      bool
}

// taskColumns is the select list every task query returns, in scanTask's
// order. Tags come as JSON because database/sql cannot scan a PostgreSQL
// array into a slice before Go 1.27.
const taskColumns = `id, user_id, title, description, completed, priority, due_date, to_json(tags), created_at, updated_at`

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

const createTaskSQL = upsertUserCTE + `INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags)
VALUES ($1, $4, $5, $6, $7, $8, $9)
RETURNING ` + taskColumns

const getTaskSQL = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1 AND user_id = $2`

// updateTaskSQL changes only the columns whose parameter is given: coalesce
// keeps a column whose value is NULL, and the two nullable columns carry an
// explicit "set" flag so that NULL can also mean "clear it".
const updateTaskSQL = upsertUserCTE + `UPDATE tasks SET
    title       = coalesce($5, title),
    description = CASE WHEN $6::boolean THEN $7::text ELSE description END,
    completed   = coalesce($8, completed),
    priority    = coalesce($9, priority),
    due_date    = CASE WHEN $10::boolean THEN $11::timestamptz ELSE due_date END,
    tags        = coalesce($12, tags),
    updated_at  = now()
WHERE id = $4 AND user_id = $1
RETURNING ` + taskColumns

// completeTaskSQL sets completed to $5, or toggles it when $5 is NULL.
const completeTaskSQL = upsertUserCTE + `UPDATE tasks SET
    completed  = coalesce($5::boolean, NOT completed),
    updated_at = now()
WHERE id = $4 AND user_id = $1
RETURNING ` + taskColumns

const deleteTaskSQL = `DELETE FROM tasks WHERE id = $1 AND user_id = $2`

const listTasksSQL = `SELECT ` + taskColumns + ` FROM tasks
WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2)
ORDER BY `

// priorityRank orders priorities low < medium < high, not alphabetically.
const priorityRank = `array_position(ARRAY['low', 'medium', 'high'], priority)`

// listOrders maps each sort key the API accepts to its ORDER BY clause for
// ascending and descending order. Only these fixed strings ever reach the
// SQL text; ties are broken by id so every order is total and stable. Tasks
// without a due date come last in both directions.
var listOrders = map[string][2]string{
	"created":  {"created_at ASC, id ASC", "created_at DESC, id DESC"},
	"updated":  {"updated_at ASC, id ASC", "updated_at DESC, id DESC"},
	"title":    {"title ASC, id ASC", "title DESC, id DESC"},
	"due_date": {"due_date ASC NULLS LAST, id ASC", "due_date DESC NULLS LAST, id DESC"},
	"priority": {priorityRank + " ASC, id ASC", priorityRank + " DESC, id DESC"},
}

// Store reads and writes tasks. Every method is scoped by the user it is
// given: a task of another user is indistinguishable from no task at all.
type Store struct {
	db *sql.DB
	// timeout bounds every statement, so that a database that stops
	// answering turns into ErrUnavailable instead of a hanging request.
	timeout time.Duration
}

// NewStore returns a Store over db whose statements each run for at most timeout.
func NewStore(db *sql.DB, timeout time.Duration) *Store {
	return &Store{db: db, timeout: timeout}
}

// ListTasks returns the user's tasks that match opts, in its order. It
// returns an empty, non-nil slice when there are none.
func (s *Store) ListTasks(ctx context.Context, userID string, opts ListOptions) ([]Task, error) {
	order, ok := listOrders[opts.Sort]
	if !ok {
		return nil, fmt.Errorf("list tasks: unknown sort %q", opts.Sort)
	}
	clause := order[0]
	if opts.Desc {
		clause = order[1]
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, listTasksSQL+clause, userID, opts.Completed)
	if err != nil {
		return nil, dbError("list tasks", err)
	}
	defer rows.Close()
	tasks := []Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, dbError("list tasks", err)
		}
		tasks = append(tasks, t)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list tasks", err)
	}
	return tasks, nil
}

// GetTask returns the user's task with the given id, or ErrNotFound.
func (s *Store) GetTask(ctx context.Context, userID, id string) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t, err := scanTask(s.db.QueryRowContext(ctx, getTaskSQL, id, userID))
	if err != nil {
		return Task{}, dbError("get task", err)
	}
	return t, nil
}

// CreateTask stores a new task for the user and returns it. The user's row
// is created or refreshed in the same statement.
func (s *Store) CreateTask(ctx context.Context, u User, in NewTask) (Task, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t, err := scanTask(s.db.QueryRowContext(ctx, createTaskSQL,
		u.ID, u.Email, u.Name,
		in.Title, in.Description, in.Completed, in.Priority, in.DueDate, nonNil(in.Tags)))
	if err != nil {
		return Task{}, dbError("create task", err)
	}
	return t, nil
}

// UpdateTask applies p to the user's task with the given id and returns the
// result, or ErrNotFound. updated_at is set even when p changes nothing.
func (s *Store) UpdateTask(ctx context.Context, u User, id string, p TaskPatch) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	var tags any // a nil []string would still be a typed value; keep it untyped NULL
	if p.Tags != nil {
		tags = p.Tags
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t, err := scanTask(s.db.QueryRowContext(ctx, updateTaskSQL,
		u.ID, u.Email, u.Name, id,
		p.Title, p.SetDescription, p.Description, p.Completed, p.Priority, p.SetDueDate, p.DueDate, tags))
	if err != nil {
		return Task{}, dbError("update task", err)
	}
	return t, nil
}

// SetCompleted sets the completed flag of the user's task to *completed, or
// toggles it when completed is nil, and returns the task or ErrNotFound.
func (s *Store) SetCompleted(ctx context.Context, u User, id string, completed *bool) (Task, error) {
	if !isUUID(id) {
		return Task{}, ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t, err := scanTask(s.db.QueryRowContext(ctx, completeTaskSQL, u.ID, u.Email, u.Name, id, completed))
	if err != nil {
		return Task{}, dbError("complete task", err)
	}
	return t, nil
}

// DeleteTask deletes the user's task with the given id, or returns ErrNotFound.
func (s *Store) DeleteTask(ctx context.Context, userID, id string) error {
	if !isUUID(id) {
		return ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := s.db.ExecContext(ctx, deleteTaskSQL, id, userID)
	if err != nil {
		return dbError("delete task", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return dbError("delete task", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Ping reports whether the database answers within timeout.
func (s *Store) Ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		return dbError("ping", err)
	}
	return nil
}

// scanTask reads one row of taskColumns.
func scanTask(row interface{ Scan(...any) error }) (Task, error) {
	var (
		t           Task
		description sql.NullString
		dueDate     sql.NullTime
		tags        []byte
	)
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &description, &t.Completed, &t.Priority,
		&dueDate, &tags, &t.CreatedAt, &t.UpdatedAt)
	if err != nil {
		return Task{}, err
	}
	if description.Valid {
		t.Description = &description.String
	}
	if dueDate.Valid {
		d := dueDate.Time.UTC()
		t.DueDate = &d
	}
	if err := json.Unmarshal(tags, &t.Tags); err != nil {
		return Task{}, fmt.Errorf("decode tags: %w", err)
	}
	t.Tags = nonNil(t.Tags)
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

// dbConfig holds the pool settings for openDB.
type dbConfig struct {
	URL             string
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
	ConnectTimeout  time.Duration // per connection attempt, unless the URL sets connect_timeout
	BootTimeout     time.Duration // how long openDB keeps retrying
}

// openDB opens a pool to the database at cfg.URL and waits until it answers,
// retrying with backoff for up to cfg.BootTimeout: a serverless database may
// be waking up. The URL is any libpq-style URL or DSN, so a Neon URL with
// sslmode=require and channel_binding=require works as it is.
func openDB(ctx context.Context, cfg dbConfig, logger *slog.Logger) (*sql.DB, error) {
	pgCfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		// The parse error can echo the URL, password included: say less.
		return nil, errors.New("DATABASE_URL is not a valid PostgreSQL connection string (postgres://user:password@host:5432/db?sslmode=require)")
	}
	if pgCfg.ConnectTimeout == 0 {
		pgCfg.ConnectTimeout = cfg.ConnectTimeout
	}
	if _, ok := pgCfg.RuntimeParams["application_name"]; !ok {
		pgCfg.RuntimeParams["application_name"] = "taskapi"
	}
	db := stdlib.OpenDB(*pgCfg)
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxIdleConns)
	db.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	db.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)

	deadline := time.Now().Add(cfg.BootTimeout)
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		err = db.PingContext(pingCtx)
		cancel()
		if err == nil {
			return db, nil
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			break
		}
		logger.Warn("database not reachable yet, retrying",
			"host", pgCfg.Host, "attempt", attempt, "retry_in", backoff.String(), "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	db.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("could not reach the database at %s:%d within %s: %w\n"+
		"check that DATABASE_URL names the right host, port, database, user and password, "+
		"that the server is running and reachable from here, and that sslmode suits it",
		pgCfg.Host, pgCfg.Port, cfg.BootTimeout, err)
}

// schemaLockKey is the advisory lock that serializes schema application
// across every taskapi instance sharing a database.
const schemaLockKey = 7_283_424_952_120_117_391

// applySchema applies schema.sql in one transaction that first takes an
// advisory lock, so that instances booting at the same moment apply it one
// after the other and never see a half-made schema. Every statement in it is
// idempotent, so applying it to an up-to-date database changes nothing.
func applySchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLockKey)); err != nil {
		return fmt.Errorf("apply schema: lock: %w", err)
	}
	// With no arguments, pgx sends the text over the simple protocol, which
	// runs several statements at once.
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply schema: commit: %w", err)
	}
	return nil
}

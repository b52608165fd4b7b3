package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestApplySchemaTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	db, url := newTestDB(t) // applied once already
	ctx := context.Background()
	store := NewStore(db, 5*time.Second, testTaskQuota)
	task, err := store.CreateTask(ctx, User{ID: "keep"}, NewTask{Title: "survives", Priority: "medium"})
	if err != nil {
		t.Fatal(err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("second apply: %v, want no error", err)
	}

	// Several instances booting at once, each with its own pool.
	const instances = 4
	var wg sync.WaitGroup
	errs := make([]error, instances)
	for i := range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, err := openDB(ctx, testDBConfig(url), slog.New(slog.DiscardHandler))
			if err != nil {
				errs[i] = err
				return
			}
			defer other.Close()
			errs[i] = applySchema(ctx, other)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %d: %v, want no error", i, err)
		}
	}
	if got, err := store.GetTask(ctx, "keep", task.ID); err != nil || got.Title != "survives" {
		t.Errorf("after re-applying: %+v, %v; want the task \"survives\"", got, err)
	}
}

// TestApplySchemaTakesNoLockWhenCurrent boots on a database whose schema is
// current while another instance's write holds its lock on tasks: the boot
// must neither wait for it nor make the write wait (schema.sql's ALTER
// TABLE would take a lock that conflicts with every statement on tasks).
func TestApplySchemaTakesNoLockWhenCurrent(t *testing.T) {
	t.Parallel()
	db, url := newTestDB(t) // applied once already
	other, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	writing, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writing.Rollback() })
	if _, err := writing.Exec(`LOCK TABLE tasks, idempotency_keys, task_changes IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// Blocked, the boot would wait until the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("apply on a current database while a write holds tasks: %v, want it done without waiting", err)
	}
}

func TestApplySchemaRepairsAndKeepsData(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second, testTaskQuota)
	if _, err := store.CreateTask(ctx, User{ID: "old"}, NewTask{Title: "from before", Priority: "high"}); err != nil {
		t.Fatal(err)
	}
	// A database that lost an index: booting puts it back and keeps the rows,
	// once told to apply the schema again.
	if _, err := db.Exec("DROP INDEX tasks_user_created_idx; DELETE FROM schema_digest"); err != nil {
		t.Fatal(err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("re-apply: %v, want no error", err)
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_user_created_idx' AND schemaname = current_schema()").Scan(&n); err != nil || n != 1 {
		t.Errorf("index after re-apply: %d, %v; want 1", n, err)
	}
	page, err := store.ListTasks(ctx, "old", ListOptions{Sort: SortCreated, Limit: 10})
	tasks := page.Tasks
	if err != nil || len(tasks) != 1 || tasks[0].Title != "from before" || tasks[0].Priority != "high" {
		t.Errorf("after re-apply: %+v, %v; want the one task \"from before\", priority high", tasks, err)
	}
}

// TestServerKeyMadeByAnotherInstance makes the cursor key in a transaction
// that is still open when serverKey runs, as a second instance booting at
// the same moment would: serverKey must wait for it and return that key,
// not fail to find one.
func TestServerKeyMadeByAnotherInstance(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	other, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	theirs := []byte("the other instance's key, 32 b..")
	if _, err := other.ExecContext(ctx, `INSERT INTO server_keys (name, key) VALUES ('cursor', $1)`, theirs); err != nil {
		t.Fatal(err)
	}
	type result struct {
		key []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		key, err := serverKey(ctx, db, "cursor")
		got <- result{key, err}
	}()
	waitForBlocked(t, db, other) // serverKey's insert waits for the open transaction
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || string(r.key) != string(theirs) {
		t.Fatalf("serverKey = %q, %v; want the other instance's key", r.key, r.err)
	}
}

// TestServerStatementTimeout checks that the server itself ends a statement
// past the timeout, without the client closing the connection; and that
// behind a pooler that refuses the start-up parameter, the pool still opens.
func TestServerStatementTimeout(t *testing.T) {
	t.Parallel()
	cfg := testDBConfig(newEmptyTestDB(t))
	cfg.StatementTimeout = 300 * time.Millisecond
	db, err := openDB(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var setting string
	if err := db.QueryRow("SHOW statement_timeout").Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if testPooler {
		// PgBouncer in CI passes on no such parameter: the pool opened without it.
		return
	}
	if setting != "300ms" {
		t.Errorf("statement_timeout = %q, want 300ms", setting)
	}
	_, err = db.Exec("SELECT pg_sleep(5)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("a 5 s statement: %v, want the server's query_canceled (57014)", err)
	}
	if !errors.Is(dbError("sleep", err), ErrUnavailable) {
		t.Errorf("dbError(%v) = %v, want ErrUnavailable", err, dbError("sleep", err))
	}
	if err := db.QueryRow("SELECT 1").Scan(new(int)); err != nil {
		t.Errorf("the connection after the timeout: %v, want it usable", err)
	}
}

func TestDefaultPoolSize(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]int{
		"":                                  localPoolSize, // the development database
		"postgres:///app?host=/tmp/pg":      localPoolSize,
		"postgres://u@localhost:5432/app":   localPoolSize,
		"postgres://u@127.0.0.1/app":        localPoolSize,
		"postgres://u@[::1]:5432/app":       localPoolSize,
		"host=/var/run/postgresql dbname=x": localPoolSize,
		"postgres://u:p@ep-cool-1234-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require": remotePoolSize,
		"postgres://u@10.0.0.5/app":                 remotePoolSize,
		"postgres://u@localhost,db.example.com/app": remotePoolSize, // a fallback across the network
		"not a url ::":                              localPoolSize,  // openDB reports it
	} {
		if got := defaultPoolSize(url); got != want {
			t.Errorf("defaultPoolSize(%q) = %d, want %d", url, got, want)
		}
	}
}

//go:embed testdata/schema-v1.sql
var schemaV1 string

// TestUpgradeFromFirstSchema boots the current schema on a database made
// and filled by the first one: nothing is lost, and the old rows work with
// every new feature.
func TestUpgradeFromFirstSchema(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	if _, err := db.Exec(`DROP TABLE tasks, users, idempotency_keys, server_keys, schema_digest; DROP FUNCTION taskapi_tags_valid`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaV1); err != nil {
		t.Fatalf("load the first schema: %v", err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("upgrade: %v, want no error", err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("upgrade, again: %v, want no error", err)
	}
	e := newTestEnvOn(t, db, nil)
	ada := e.token("4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF")
	tasks := e.do("GET", "/api/me/tasks?sort=title", ada, nil).tasks(t)
	if len(tasks) != 2 || tasks[0].Title != "Done already" || tasks[1].Title != "Written before the upgrade" {
		t.Fatalf("after the upgrade: %+v, want \"Done already\" and \"Written before the upgrade\"", tasks)
	}
	old := tasks[1]
	if old.Version != 1 || old.Description == nil || *old.Description != "keep me" || len(old.Tags) != 2 ||
		old.DueDate == nil || !old.CreatedAt.Equal(time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("an old task after the upgrade: %+v, want version 1, its description, 2 tags, a due date and created_at 2026-11-01T10:00:00Z", old)
	}
	res := e.doWith("PATCH", "/api/me/tasks/"+old.ID, ada, map[string]string{"If-Match": `"1"`}, `{"completed":true}`)
	if res.Status != 200 || res.Header.Get("ETag") != `"2"` {
		t.Errorf("If-Match on an old task: %d, ETag %q; want 200, ETag \"2\"", res.Status, res.Header.Get("ETag"))
	}
	if res := e.doWith("POST", "/api/me/tasks", ada, map[string]string{"Idempotency-Key": "k"}, `{"title":"new"}`); res.Status != 201 {
		t.Errorf("keyed create after the upgrade: %d %s, want 201", res.Status, res.Body)
	}
	if next := nextLink(t, e.do("GET", "/api/me/tasks?limit=1", ada, nil).Header); next == "" {
		t.Error("no next page after the upgrade")
	} else if res := e.do("GET", next, ada, nil); res.Status != 200 {
		t.Errorf("next page: %d, want 200", res.Status)
	}
	if n := countTasksIn(t, e, "other-user"); n != 1 {
		t.Errorf("other-user has %d tasks after the upgrade, want 1", n)
	}
}

// TestSharedDeadlines checks the contexts that end the waits for a pooled
// connection: each ends between the timeout and the timeout plus the slack
// after it was asked for, and asks within the slack share one.
func TestSharedDeadlines(t *testing.T) {
	t.Parallel()
	const timeout = 5 * time.Second
	d := sharedDeadlines{timeout: timeout}
	start := time.Now()
	first := d.context(start)
	seen := map[context.Context]bool{}
	for step := time.Duration(0); step <= 5*deadlineSlack; step += deadlineSlack / 4 {
		now := start.Add(step)
		ctx := d.context(now)
		seen[ctx] = true
		deadline, ok := ctx.Deadline()
		if left := deadline.Sub(now); !ok || left < timeout || left > timeout+deadlineSlack {
			t.Errorf("asked at +%v: the context ends %v later; want between %v and %v", step, left, timeout, timeout+deadlineSlack)
		}
		if step <= deadlineSlack && ctx != first {
			t.Errorf("asked at +%v, within the slack: a new context; want the first one", step)
		}
	}
	if len(seen) < 3 || len(seen) > 6 {
		t.Errorf("%d contexts over %v of asks; want one per %v or so", len(seen), 5*deadlineSlack, deadlineSlack)
	}
}

//go:embed testdata/schema_before_own_positions.sql
var schemaBeforeOwnPositions string

// TestUpgradeToOwnPositions boots the current schema on a database whose
// history took its positions from one sequence for every user: the rows
// keep their positions, each user's counter goes on from their highest, a
// client's old position resumes, or gets reload where it is older than
// what was swept, and a second boot changes nothing.
func TestUpgradeToOwnPositions(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	if _, err := db.Exec(`DROP TABLE tasks, users, idempotency_keys, server_keys, schema_digest, task_changes, task_changes_horizon, change_positions;
		DROP FUNCTION taskapi_tags_valid, taskapi_forget_task_changes, taskapi_forget_user_changes, taskapi_position_for_earlier_release`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaBeforeOwnPositions); err != nil {
		t.Fatalf("load the earlier schema: %v", err)
	}
	// Six changes of a and b, taking turns, the first two swept.
	if _, err := db.Exec(`INSERT INTO users (id) VALUES ('a'), ('b'), ('c');
		INSERT INTO task_changes (user_id, event, id) SELECT CASE WHEN g % 2 = 1 THEN 'a' ELSE 'b' END, 'task.deleted', gen_random_uuid()
		  FROM generate_series(1, 6) AS g;
		DELETE FROM task_changes WHERE position <= 2;
		INSERT INTO task_changes_horizon (swept_through) VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := applySchema(ctx, db); err != nil {
			t.Fatalf("upgrade: %v, want no error", err)
		}
	}
	rows, err := db.Query(`SELECT user_id, last, swept_through FROM change_positions ORDER BY user_id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var user string
		var last, swept int64
		rows.Scan(&user, &last, &swept)
		got = append(got, fmt.Sprintf("%s %d %d", user, last, swept))
	}
	rows.Close()
	if want := "a 5 2,b 6 2,c 2 2"; strings.Join(got, ",") != want {
		t.Errorf("counters after the upgrade: %v, want %s (user, last, swept_through)", got, want)
	}
	var numbered bool
	db.QueryRow(`SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
		AND table_name = 'task_changes' AND column_name = 'position' AND column_default IS NOT NULL)`).Scan(&numbered)
	if numbered {
		t.Error("the position sequence still numbers changes after the upgrade, want each user's counter to")
	}
	// An instance of the earlier release that boots again during the
	// deploy applies its own schema: it finds what it creates there, and
	// this release's next boot changes nothing back.
	if _, err := db.Exec(schemaBeforeOwnPositions); err != nil {
		t.Fatalf("the earlier schema, applied again after the upgrade: %v, want no error", err)
	}
	if _, err := db.Exec(`DELETE FROM schema_digest`); err != nil {
		t.Fatal(err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("this release's schema after the earlier one's again: %v, want no error", err)
	}

	e := newTestEnvOn(t, db, nil)
	a, c := e.token("a"), e.token("c")
	if got := changesOf(t, e, a, "?since=3"); got.Reload || len(got.Changes) != 1 || got.Changes[0].Position != 5 {
		t.Errorf("a from an old position 3: %+v, want its change at 5", got)
	}
	if got := changesOf(t, e, a, "?since=1"); !got.Reload || got.Next != 5 {
		t.Errorf("a from a swept position 1: %+v, want reload at 5", got)
	}
	e.do("POST", "/api/me/tasks", a, `{"title":"after"}`)
	if got := changesOf(t, e, a, "?since=5"); got.Reload || len(got.Changes) != 1 || got.Changes[0].Position != 6 {
		t.Errorf("a's first change after the upgrade: %+v, want it at 6", got)
	}
	if got := changesOf(t, e, c, "?since=0"); !got.Reload || got.Next != 2 {
		t.Errorf("c, whose history was all swept: %+v, want reload at 2", got)
	}
	// An instance of the earlier release, still running during a rolling
	// deploy, inserts a change without a position: it gets a's next one.
	var p int64
	if err := db.QueryRow(`INSERT INTO task_changes (user_id, event, id) VALUES ('a', 'task.deleted', gen_random_uuid()) RETURNING position`).Scan(&p); err != nil || p != 7 {
		t.Errorf("a change inserted as the earlier release does: position %d (%v), want a's next, 7", p, err)
	}
}

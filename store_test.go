package main

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestApplySchemaTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	db, url := newTestDB(t) // applied once already
	ctx := context.Background()
	store := NewStore(db, 5*time.Second)
	task, err := store.CreateTask(ctx, User{ID: "keep"}, NewTask{Title: "survives", Priority: "medium"})
	if err != nil {
		t.Fatal(err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("second apply: %v", err)
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
			t.Errorf("instance %d: %v", i, err)
		}
	}
	if got, err := store.GetTask(ctx, "keep", task.ID); err != nil || got.Title != "survives" {
		t.Errorf("after re-applying: %+v, %v", got, err)
	}
}

func TestApplySchemaRepairsAndKeepsData(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second)
	if _, err := store.CreateTask(ctx, User{ID: "old"}, NewTask{Title: "from before", Priority: "high"}); err != nil {
		t.Fatal(err)
	}
	// A database that lost an index: booting puts it back and keeps the rows.
	if _, err := db.Exec("DROP INDEX tasks_user_created_idx"); err != nil {
		t.Fatal(err)
	}
	if err := applySchema(ctx, db); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_user_created_idx' AND schemaname = current_schema()").Scan(&n); err != nil || n != 1 {
		t.Errorf("index after re-apply: %d, %v", n, err)
	}
	page, err := store.ListTasks(ctx, "old", ListOptions{Sort: SortCreated, Limit: 10})
	tasks := page.Tasks
	if err != nil || len(tasks) != 1 || tasks[0].Title != "from before" || tasks[0].Priority != "high" {
		t.Errorf("after re-apply: %+v, %v", tasks, err)
	}
}

func TestUserRowKeptCurrent(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second)
	user := func() (email, name string, updated time.Time) {
		t.Helper()
		var e, n *string
		if err := db.QueryRow("SELECT email, name, updated_at FROM users WHERE id = 'ada'").Scan(&e, &n, &updated); err != nil {
			t.Fatal(err)
		}
		if e != nil {
			email = *e
		}
		if n != nil {
			name = *n
		}
		return
	}

	task, err := store.CreateTask(ctx, User{ID: "ada", Email: "ada@example.com", Name: "Ada"}, NewTask{Title: "a", Priority: "low"})
	if err != nil {
		t.Fatal(err)
	}
	if email, name, _ := user(); email != "ada@example.com" || name != "Ada" {
		t.Errorf("after first create: %q %q", email, name)
	}
	// A token without profile claims erases nothing and rewrites nothing.
	_, _, before := user()
	if _, err := store.SetCompleted(ctx, User{ID: "ada"}, task.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	if email, name, after := user(); email != "ada@example.com" || name != "Ada" || !after.Equal(before) {
		t.Errorf("after a write without claims: %q %q, updated_at %v → %v", email, name, before, after)
	}
	// A changed email is picked up by the next write.
	if _, err := store.UpdateTask(ctx, User{ID: "ada", Email: "ada@new.example.com"}, task.ID, TaskPatch{}, nil); err != nil {
		t.Fatal(err)
	}
	if email, name, _ := user(); email != "ada@new.example.com" || name != "Ada" {
		t.Errorf("after an email change: %q %q", email, name)
	}
	// Deleting the user deletes their tasks.
	if _, err := db.Exec("DELETE FROM users WHERE id = 'ada'"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetTask(ctx, "ada", task.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("task after its user was deleted: %v, want ErrNotFound", err)
	}
}

// TestConstraintsMirrorValidation writes past the API, straight to the
// database: what the API refuses, the schema refuses too.
func TestConstraintsMirrorValidation(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	if _, err := db.Exec("INSERT INTO users (id) VALUES ('c')"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"empty title", "INSERT INTO tasks (user_id, title) VALUES ('c', '')", nil},
		{"201 character title", "INSERT INTO tasks (user_id, title) VALUES ('c', $1)", []any{strings.Repeat("😀", 201)}},
		{"1001 character description", "INSERT INTO tasks (user_id, title, description) VALUES ('c', 'a', $1)", []any{strings.Repeat("x", 1001)}},
		{"unknown priority", "INSERT INTO tasks (user_id, title, priority) VALUES ('c', 'a', 'urgent')", nil},
		{"21 tags", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{numberedTags(21)}},
		{"empty tag", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{[]string{""}}},
		{"51 character tag", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{[]string{strings.Repeat("t", 51)}}},
		{"NULL tag", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', ARRAY[NULL]::text[])", nil},
		{"unknown user", "INSERT INTO tasks (user_id, title) VALUES ('nobody', 'a')", nil},
		{"256 character user id", "INSERT INTO users (id) VALUES ($1)", []any{strings.Repeat("u", 256)}},
	} {
		if _, err := db.Exec(tc.sql, tc.args...); err == nil {
			t.Errorf("%s: the database accepted it", tc.name)
		}
	}
	// And the limits themselves are accepted.
	if _, err := db.Exec("INSERT INTO tasks (user_id, title, description, tags) VALUES ('c', $1, $2, $3)",
		strings.Repeat("😀", 200), strings.Repeat("x", 1000), numberedTags(20)); err != nil {
		t.Errorf("the limits themselves: %v", err)
	}
}

func TestStoreErrors(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second)
	// A value that validation would have refused maps to ErrRejected, not a bare error.
	_, err := store.CreateTask(ctx, User{ID: "e"}, NewTask{Title: "a\x00b", Priority: "medium"})
	if !errors.Is(err, ErrRejected) {
		t.Errorf("NUL in a title, past validation: %v, want ErrRejected", err)
	}
	_, err = store.CreateTask(ctx, User{ID: "e"}, NewTask{Title: "", Priority: "medium"})
	if !errors.Is(err, ErrRejected) {
		t.Errorf("empty title, past validation: %v, want ErrRejected", err)
	}
	// A statement cut off by its deadline is ErrUnavailable: a 503, not a 500.
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = db.ExecContext(ctx2, "SELECT pg_sleep(1)")
	if err = dbError("sleep", err); !errors.Is(err, ErrUnavailable) {
		t.Errorf("timed-out statement: %v, want ErrUnavailable", err)
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

// TestTextArrayRoundTrip stores arrays of awkward strings in PostgreSQL and
// reads them back through textArray: PostgreSQL quotes and escapes them in
// its text form, and parseTextArray must undo exactly that.
func TestTextArrayRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	pieces := []string{"a", "Z", "0", " ", "\t", "\n", "\r", "\v", "\f", `"`, `\`, "{", "}", ",", "NULL", "null", "é", "😀", "'", "[1:2]=", "\u2028"}
	rng := rand.New(rand.NewPCG(1, 2))
	cases := [][]string{{}, {"a"}, {"NULL"}, {"null"}, {`\`}, {`"`}, {" "}, {"a b", "c,d", "{e}"}}
	for range 300 {
		tags := make([]string, rng.IntN(5))
		for i := range tags {
			for range 1 + rng.IntN(4) {
				tags[i] += pieces[rng.IntN(len(pieces))]
			}
		}
		cases = append(cases, tags)
	}
	for _, want := range cases {
		var got textArray
		if err := db.QueryRow(`SELECT $1::text[]`, want).Scan(&got); err != nil {
			t.Fatalf("%q: %v", want, err)
		}
		if got == nil || !slices.Equal(got, want) {
			t.Fatalf("stored %q, read %q", want, []string(got))
		}
	}
}

// TestParseTextArrayRefuses checks that text which is not a one-dimensional
// array without NULLs is an error, never a guess or a panic.
func TestParseTextArrayRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "{", "}", "a", "{a", "a}", "{a,}", "{,a}", "{a,,b}", `{"a}`, `{"a"b}`, `{a"b}`,
		`{"a\"}`, `{a\b}`, "{{a}}", "{NULL}", "{a,null}", "[0:1]={a,b}", `{"a",}`, "{ }x"} {
		if got, err := parseTextArray(s); err == nil {
			t.Errorf("parseTextArray(%q) = %q, want an error", s, got)
		}
	}
}

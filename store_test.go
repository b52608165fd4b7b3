package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUserRowKeptCurrent(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second, testTaskQuota)
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
		{"title over the limit", "INSERT INTO tasks (user_id, title) VALUES ('c', $1)", []any{strings.Repeat("😀", maxTitle+1)}},
		{"description over the limit", "INSERT INTO tasks (user_id, title, description) VALUES ('c', 'a', $1)", []any{strings.Repeat("x", maxDescription+1)}},
		{"unknown priority", "INSERT INTO tasks (user_id, title, priority) VALUES ('c', 'a', 'urgent')", nil},
		{"tags over the limit", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{numberedTags(maxTags + 1)}},
		{"empty tag", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{[]string{""}}},
		{"tag over the limit", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', $1)", []any{[]string{strings.Repeat("t", maxTag+1)}}},
		{"NULL tag", "INSERT INTO tasks (user_id, title, tags) VALUES ('c', 'a', ARRAY[NULL]::text[])", nil},
		{"unknown user", "INSERT INTO tasks (user_id, title) VALUES ('nobody', 'a')", nil},
		{"user id over the limit", "INSERT INTO users (id) VALUES ($1)", []any{strings.Repeat("u", maxUserID+1)}},
	} {
		if _, err := db.Exec(tc.sql, tc.args...); err == nil {
			t.Errorf("%s: the database accepted it", tc.name)
		}
	}
	// And the limits themselves are accepted.
	if _, err := db.Exec("INSERT INTO tasks (user_id, title, description, tags) VALUES ('c', $1, $2, $3)",
		strings.Repeat("😀", maxTitle), strings.Repeat("x", maxDescription), numberedTags(maxTags)); err != nil {
		t.Errorf("the limits themselves: %v", err)
	}
}

func TestStoreErrors(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second, testTaskQuota)
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

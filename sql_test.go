package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var updateSQL = flag.Bool("update", false, "write testdata/sql/*.sql from the statements the code assembles")

// TestSQLGolden keeps every SQL statement the store sends, as assembled from
// its constants, whole in testdata/sql/NAME.sql, so that a reviewer reads a
// statement in one piece and a change to one shows in the diff there. After
// changing a statement, run
//
//	go test -run TestSQLGolden -update .
//
// and commit the files with the change. The statements that stand whole as
// a literal where they are sent (applySchema, serverKey, the LISTEN
// connection, the development database) are not repeated here.
func TestSQLGolden(t *testing.T) {
	t.Parallel()
	statements := map[string]string{
		// store.go
		"create_task":      createTaskSQL,
		"get_task":         getTaskSQL,
		"update_task":      updateTaskSQL,
		"complete_task":    completeTaskSQL,
		"delete_task":      deleteTaskSQL,
		"delete_completed": deleteCompletedSQL,
		"stats":            statsSQL,
		"account":          accountSQL,
		"delete_account":   deleteAccountSQL,
		// idempotency.go
		"create_task_once": createTaskOnceSQL,
		"idempotency_key":  idempotencyKeySQL,
		"sweep_keys":       sweepKeysSQL,
		// changes.go
		"changes":       changesSQL,
		"change_bounds": changeBoundsSQL,
		"sweep_changes": sweepChangesSQL,
		"notify":        notifySQL,
		"poll_changed":  pollChangedSQL,
	}
	// list.go builds a list's statement per request from its options: a
	// few representative ones.
	no, yes := false, true
	due := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const id = "00000000-0000-4000-8000-000000000001"
	for name, opts := range map[string]ListOptions{
		// GET /api/me/tasks
		"list_default": {Sort: SortCreated, Desc: true, Limit: 20},
		// ?completed=false&sort=due_date&order=asc, a later page
		"list_pending_by_due_date_after": {Completed: &no, Sort: SortDueDate, Limit: 20,
			After: due.Format(time.RFC3339Nano) + "\x00" + id},
		// ?priority=high&tag=work&q=milk&overdue=true&due_before=...&sort=priority&order=desc, a later page
		"list_filtered_by_priority_after": {Sort: SortPriority, Desc: true, Query: "milk", Priority: "high",
			Tags: []string{"work"}, Overdue: &yes, DueBefore: &due, Limit: 50, After: "3\x00" + id},
	} {
		query, _, err := listQuery("u", opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		statements[name] = query
	}

	dir := filepath.Join("testdata", "sql")
	if *updateSQL {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(dir, "*.sql"))
		for _, f := range old {
			os.Remove(f)
		}
	}
	for name, query := range statements {
		file := filepath.Join(dir, name+".sql")
		want := query + ";\n"
		if *updateSQL {
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: %v (go test -run TestSQLGolden -update . writes it)", name, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s differs from the statement the code sends:\n%s\nwant\n%s\n(after a deliberate change: go test -run TestSQLGolden -update .)", file, got, want)
		}
	}
	// A file no statement writes any more is stale.
	files, _ := filepath.Glob(filepath.Join(dir, "*.sql"))
	for _, f := range files {
		if _, ok := statements[filepath.Base(f[:len(f)-len(".sql")])]; !ok {
			t.Errorf("%s: no statement of that name; remove it (or run with -update)", f)
		}
	}
}

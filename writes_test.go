package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAccount(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok, err := mintToken(e.secret, User{ID: "acct", Email: "acct@example.com", Name: "Ann"}, "", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := e.token("bystander")
	e.do("POST", "/api/me/tasks", other, `{"title":"not yours"}`)

	get := func() Account {
		t.Helper()
		res := e.do("GET", "/api/me", tok, nil)
		if res.Status != 200 {
			t.Fatalf("GET /api/me: %d %s, want 200", res.Status, res.Body)
		}
		var a Account
		if err := json.Unmarshal(res.Body, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// Before any write: the token's profile, no row yet, nothing counted.
	a := get()
	if a.ID != "acct" || a.Email == nil || *a.Email != "acct@example.com" || a.CreatedAt != nil || a.Tasks != (Stats{}) {
		t.Errorf("fresh account: %+v, want acct <acct@example.com>, no created_at and nothing counted", a)
	}
	e.do("POST", "/api/me/tasks", tok, `{"title":"one"}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"two","completed":true}`)
	a = get()
	if a.CreatedAt == nil || a.Name == nil || *a.Name != "Ann" || a.Tasks != (Stats{Total: 2, Completed: 1, Pending: 1}) {
		t.Errorf("account after two creates: %+v, want a created_at, the name Ann and 2 tasks, 1 completed", a)
	}

	if res := e.do("DELETE", "/api/me", tok, nil); res.Status != 204 {
		t.Fatalf("DELETE /api/me: %d %s, want 204", res.Status, res.Body)
	}
	for table, column := range map[string]string{"users": "id", "tasks": "user_id", "idempotency_keys": "user_id"} {
		var n int
		if err := e.db.QueryRow("SELECT count(*) FROM " + table + " WHERE " + column + " = 'acct'").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s rows left for the erased user: %d (%v), want 0", table, n, err)
		}
	}
	// The token is still valid: the account starts empty.
	if a := get(); a.CreatedAt != nil || a.Tasks.Total != 0 {
		t.Errorf("after erasure: %+v, want no created_at and no tasks", a)
	}
	if n := countTasks(t, e, tok); n != 0 {
		t.Errorf("after erasure: %d tasks, want 0", n)
	}
	if res := e.do("POST", "/api/me/tasks", tok, `{"title":"fresh start"}`); res.Status != 201 {
		t.Errorf("create after erasure: %d, want 201", res.Status)
	}
	// Nobody else lost anything.
	if n := countTasks(t, e, other); n != 1 {
		t.Errorf("bystander has %d tasks, want 1", n)
	}
	if res := e.do("GET", "/api/me", "", nil); res.Status != 401 {
		t.Errorf("GET /api/me without a token: %d, want 401", res.Status)
	}
}

// TestTaskQuota checks that a user at the quota can create nothing more,
// with or without a key, until they delete a task.
func TestTaskQuota(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	e := newTestEnvOn(t, db, nil)
	e.store.taskQuota = 3
	tok, other := e.token("full"), e.token("other")
	var ids []string
	for i := range 3 {
		res := e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"t%d"}`, i))
		if res.Status != 201 {
			t.Fatalf("create %d: %d, want 201", i, res.Status)
		}
		ids = append(ids, res.task(t).ID)
	}
	for _, key := range []string{"", "k"} {
		res := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": key}, `{"title":"one more"}`)
		if key == "" {
			res = e.do("POST", "/api/me/tasks", tok, `{"title":"one more"}`)
		}
		if res.Status != 409 || !strings.Contains(res.problem(t).Detail, "delete some") {
			t.Errorf("over the quota (key %q): %d %s, want 409", key, res.Status, res.Body)
		}
	}
	if res := e.do("POST", "/api/me/tasks", other, `{"title":"mine"}`); res.Status != 201 {
		t.Errorf("another user: %d, want 201", res.Status)
	}
	// The refused keyed create did not use up its key.
	e.do("DELETE", "/api/me/tasks/"+ids[0], tok, nil)
	if res := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k"}, `{"title":"one more"}`); res.Status != 201 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("after a delete: %d %s, want a new task", res.Status, res.Body)
	}
	if n := countTasks(t, e, tok); n != 3 {
		t.Errorf("%d tasks, want 3", n)
	}
}

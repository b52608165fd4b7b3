package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestETags(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("etag")
	res := e.do("POST", "/api/me/tasks", tok, `{"title":"v1"}`)
	task := res.task(t)
	tag := res.Header.Get("ETag")
	if tag != `"1"` || task.Version != 1 {
		t.Fatalf("new task: ETag %q, version %d; want \"1\", 1", tag, task.Version)
	}
	path := "/api/me/tasks/" + task.ID

	// GET carries the same ETag; If-None-Match with it is 304, with no body.
	if got := e.do("GET", path, tok, nil).Header.Get("ETag"); got != tag {
		t.Errorf("GET ETag = %q, want %q", got, tag)
	}
	for _, inm := range []string{tag, `W/"1"`, `"7", "1"`, "*"} {
		res := e.doWith("GET", path, tok, map[string]string{"If-None-Match": inm}, "")
		if res.Status != http.StatusNotModified || len(res.Body) != 0 || res.Header.Get("ETag") != tag {
			t.Errorf("If-None-Match %s: %d, ETag %q, body %q; want 304", inm, res.Status, res.Header.Get("ETag"), res.Body)
		}
	}
	if res := e.doWith("GET", path, tok, map[string]string{"If-None-Match": `"2"`}, ""); res.Status != 200 {
		t.Errorf("If-None-Match with an old tag: %d, want 200", res.Status)
	}

	// A write with the current ETag succeeds and changes the ETag.
	res = e.doWith("PATCH", path, tok, map[string]string{"If-Match": tag}, `{"title":"v2"}`)
	if res.Status != 200 || res.Header.Get("ETag") != `"2"` || res.task(t).Version != 2 {
		t.Fatalf("If-Match current: %d, ETag %q", res.Status, res.Header.Get("ETag"))
	}
	// The old ETag is now stale: every write is refused with 412 and the
	// current ETag, and nothing changes.
	for _, w := range []struct{ method, path, body string }{
		{"PUT", path, `{"title":"lost"}`},
		{"PATCH", path, `{"title":"lost"}`},
		{"PATCH", path + "/complete", ``},
		{"DELETE", path, ``},
	} {
		res := e.doWith(w.method, w.path, tok, map[string]string{"If-Match": tag}, w.body)
		if res.Status != http.StatusPreconditionFailed || res.Header.Get("ETag") != `"2"` {
			t.Errorf("%s %s with a stale If-Match: %d, ETag %q; want 412 with \"2\"", w.method, w.path, res.Status, res.Header.Get("ETag"))
			continue
		}
		res.problem(t)
	}
	if got := e.do("GET", path, tok, nil).task(t); got.Title != "v2" || got.Completed || got.Version != 2 {
		t.Errorf("after refused writes: %+v", got)
	}
	// Weak tags never match If-Match; unparsable ones are a 400; * and a
	// list holding the current tag pass.
	for _, tc := range []struct {
		ifMatch string
		want    int
	}{
		{`W/"2"`, 412}, {`"abc"`, 412}, {`2`, 400}, {`"1", "2"`, 200}, {`*`, 200},
	} {
		if res := e.doWith("PATCH", path, tok, map[string]string{"If-Match": tc.ifMatch}, `{}`); res.Status != tc.want {
			t.Errorf("If-Match %s: %d, want %d", tc.ifMatch, res.Status, tc.want)
		}
	}
	// Without If-Match the write goes through (the plain contract).
	if res := e.do("PATCH", path, tok, `{"title":"v5"}`); res.Status != 200 || res.Header.Get("ETag") != `"5"` {
		t.Errorf("write without If-Match: %d, ETag %q", res.Status, res.Header.Get("ETag"))
	}
	// A conditional write to a missing task is still 404, not 412.
	if res := e.doWith("PATCH", "/api/me/tasks/00000000-0000-4000-8000-000000000000", tok, map[string]string{"If-Match": `"1"`}, `{}`); res.Status != 404 {
		t.Errorf("If-Match on a missing task: %d, want 404", res.Status)
	}
	res = e.doWith("DELETE", path, tok, map[string]string{"If-Match": `"5"`}, "")
	if res.Status != 204 {
		t.Errorf("DELETE with the current ETag: %d", res.Status)
	}
}

// TestConcurrentIfMatch races writes that all carry the same ETag: exactly
// one may win; the others must get 412.
func TestConcurrentIfMatch(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("racer")
	for round := range 10 {
		task := e.do("POST", "/api/me/tasks", tok, `{"title":"race"}`).task(t)
		const writers = 4
		statuses := make([]int, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"title":"writer %d"}`, i)
				statuses[i] = e.doWith("PUT", "/api/me/tasks/"+task.ID, tok, map[string]string{"If-Match": `"1"`}, body).Status
			}()
		}
		wg.Wait()
		wins := 0
		for _, s := range statuses {
			switch s {
			case 200:
				wins++
			case 412:
			default:
				t.Errorf("round %d: status %d", round, s)
			}
		}
		if wins != 1 {
			t.Errorf("round %d: %d writers won with the same ETag (%v), want exactly 1", round, wins, statuses)
		}
		if got := e.do("GET", "/api/me/tasks/"+task.ID, tok, nil).task(t); got.Version != 2 {
			t.Errorf("round %d: version %d after one successful write, want 2", round, got.Version)
		}
	}
}

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice, bob := e.token("alice"), e.token("bob")
	key := map[string]string{"Idempotency-Key": "create-123"}
	body := `{"title":"pay rent","tags":["home"]}`

	first := e.doWith("POST", "/api/me/tasks", alice, key, body)
	if first.Status != 201 {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	// A retry of the same request: same status, same task, same headers,
	// byte for byte the same body, and nothing created.
	for range 3 {
		retry := e.doWith("POST", "/api/me/tasks", alice, key, body)
		if retry.Status != 201 || string(retry.Body) != string(first.Body) ||
			retry.Header.Get("Location") != first.Header.Get("Location") || retry.Header.Get("ETag") != first.Header.Get("ETag") {
			t.Errorf("retry: %d %s (Location %q), want the original %s", retry.Status, retry.Body, retry.Header.Get("Location"), first.Body)
		}
		if retry.Header.Get("Idempotent-Replayed") != "true" {
			t.Error("retry not marked as replayed")
		}
	}
	// The same request, formatted differently, is the same request.
	if retry := e.doWith("POST", "/api/me/tasks", alice, key, `{ "tags": ["home", "home"], "title": " pay rent " }`); retry.Status != 201 || string(retry.Body) != string(first.Body) {
		t.Errorf("equivalent retry: %d %s", retry.Status, retry.Body)
	}
	if n := countTasks(t, e, alice); n != 1 {
		t.Errorf("%d tasks after retries, want 1", n)
	}
	// The task may change later; a retry still answers as the create did.
	id := first.task(t).ID
	e.do("PATCH", "/api/me/tasks/"+id, alice, `{"title":"renamed"}`)
	if retry := e.doWith("POST", "/api/me/tasks", alice, key, body); string(retry.Body) != string(first.Body) {
		t.Errorf("retry after an edit: %s, want the original %s", retry.Body, first.Body)
	}

	// The same key with a different request is refused and creates nothing.
	res := e.doWith("POST", "/api/me/tasks", alice, key, `{"title":"something else"}`)
	if res.Status != 422 {
		t.Errorf("same key, other body: %d, want 422", res.Status)
	} else if p := res.problem(t); !strings.Contains(p.Detail, "Idempotency-Key") {
		t.Errorf("detail %q", p.Detail)
	}
	// Keys are per user.
	if res := e.doWith("POST", "/api/me/tasks", bob, key, body); res.Status != 201 || res.task(t).ID == id || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("bob with alice's key: %d %s", res.Status, res.Body)
	}
	if n := countTasks(t, e, alice); n != 1 {
		t.Errorf("alice has %d tasks, want 1", n)
	}
	// Bad keys.
	for _, k := range []string{"", strings.Repeat("k", 256), "has space", "tab\tkey", "é"} {
		if res := e.doWith("POST", "/api/me/tasks", alice, map[string]string{"Idempotency-Key": k}, body); res.Status != 400 {
			t.Errorf("Idempotency-Key %q: %d, want 400", k, res.Status)
		}
	}
	// A refused body does not use up the key.
	k2 := map[string]string{"Idempotency-Key": "k2"}
	if res := e.doWith("POST", "/api/me/tasks", alice, k2, `{"title":""}`); res.Status != 422 {
		t.Fatalf("invalid body: %d", res.Status)
	}
	if res := e.doWith("POST", "/api/me/tasks", alice, k2, `{"title":"ok now"}`); res.Status != 201 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("valid body after an invalid one with the same key: %d", res.Status)
	}
}

// TestConcurrentIdempotentCreate races identical creates with one key: one
// task, and every request gets it.
func TestConcurrentIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("burst")
	for round := range 5 {
		const clients = 6
		key := map[string]string{"Idempotency-Key": fmt.Sprintf("round-%d", round)}
		results := make([]response, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = e.doWith("POST", "/api/me/tasks", tok, key, `{"title":"once"}`)
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.Status != 201 || r.task(t).ID != results[0].task(t).ID {
				t.Errorf("round %d client %d: %d %s", round, i, r.Status, r.Body)
			}
		}
		if n := countTasks(t, e, tok); n != round+1 {
			t.Errorf("round %d: %d tasks, want %d", round, n, round+1)
		}
	}
}

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
			t.Fatalf("GET /api/me: %d %s", res.Status, res.Body)
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
		t.Errorf("fresh account: %+v", a)
	}
	e.do("POST", "/api/me/tasks", tok, `{"title":"one"}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"two","completed":true}`)
	a = get()
	if a.CreatedAt == nil || a.Name == nil || *a.Name != "Ann" || a.Tasks != (Stats{Total: 2, Completed: 1, Pending: 1}) {
		t.Errorf("account after two creates: %+v", a)
	}

	if res := e.do("DELETE", "/api/me", tok, nil); res.Status != 204 {
		t.Fatalf("DELETE /api/me: %d %s", res.Status, res.Body)
	}
	for table, column := range map[string]string{"users": "id", "tasks": "user_id", "idempotency_keys": "user_id"} {
		var n int
		if err := e.db.QueryRow("SELECT count(*) FROM " + table + " WHERE " + column + " = 'acct'").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s rows left for the erased user: %d (%v)", table, n, err)
		}
	}
	// The token is still valid: the account starts empty.
	if a := get(); a.CreatedAt != nil || a.Tasks.Total != 0 {
		t.Errorf("after erasure: %+v", a)
	}
	if n := countTasks(t, e, tok); n != 0 {
		t.Errorf("after erasure: %d tasks", n)
	}
	if res := e.do("POST", "/api/me/tasks", tok, `{"title":"fresh start"}`); res.Status != 201 {
		t.Errorf("create after erasure: %d", res.Status)
	}
	// Nobody else lost anything.
	if n := countTasks(t, e, other); n != 1 {
		t.Errorf("bystander has %d tasks, want 1", n)
	}
	if res := e.do("GET", "/api/me", "", nil); res.Status != 401 {
		t.Errorf("GET /api/me without a token: %d", res.Status)
	}
}

func TestIdempotencyKeyExpiry(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice, bob := e.token("alice"), e.token("bob")
	key := map[string]string{"Idempotency-Key": "daily"}
	first := e.doWith("POST", "/api/me/tasks", alice, key, `{"title":"water plants"}`).task(t)
	e.doWith("POST", "/api/me/tasks", bob, map[string]string{"Idempotency-Key": "bobs"}, `{"title":"bob's"}`)
	e.doWith("POST", "/api/me/tasks", alice, map[string]string{"Idempotency-Key": "old-other"}, `{"title":"other"}`)
	// A day passes.
	if _, err := e.db.Exec(`UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'`); err != nil {
		t.Fatal(err)
	}
	// The expired key is claimed afresh: a new task, even with another body.
	res := e.doWith("POST", "/api/me/tasks", alice, key, `{"title":"water plants again"}`)
	if res.Status != 201 || res.task(t).ID == first.ID || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("expired key: %d %s, want a new task", res.Status, res.Body)
	}
	// The sweep deletes every user's expired keys, and only those.
	if n, err := e.store.SweepKeys(context.Background()); err != nil || n != 2 {
		t.Errorf("SweepKeys = %d, %v; want 2 keys swept", n, err)
	}
	var keys []string
	rows, err := e.db.Query(`SELECT user_id || '/' || key FROM idempotency_keys ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if strings.Join(keys, ",") != "alice/daily" {
		t.Errorf("keys left: %v, want alice/daily", keys)
	}
}

// TestIdempotencyKeysKeepNothing checks that a key holds only a hash of its
// request, and nothing once its task is deleted, while a retry still gets
// the original answer.
func TestIdempotencyKeysKeepNothing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("keeper")
	const secret = "my secret diagnosis"
	body := `{"title":"` + secret + `","description":"` + secret + `","completed":true}`
	first := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k1"}, body)
	if first.Status != 201 {
		t.Fatalf("create: %d %s", first.Status, first.Body)
	}
	var stored string
	if err := e.db.QueryRow(`SELECT coalesce(request, '') || encode(coalesce(request_hash, ''), 'escape') FROM idempotency_keys`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "secret") {
		t.Errorf("the key stores the request's text: %q", stored)
	}
	if retry := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k1"}, body); string(retry.Body) != string(first.Body) {
		t.Errorf("retry: %s, want the original %s", retry.Body, first.Body)
	}
	// Deleted, one by one or in bulk: the key keeps nothing, and a retry
	// is told the task is gone instead of creating it again.
	second := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k2"}, body).task(t)
	e.do("DELETE", "/api/me/tasks/"+first.task(t).ID, tok, nil)
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	var hashes int
	if err := e.db.QueryRow(`SELECT count(request_hash) FROM idempotency_keys`).Scan(&hashes); err != nil || hashes != 0 {
		t.Errorf("%d keys still hold a hash after their tasks were deleted (%v)", hashes, err)
	}
	for _, k := range []string{"k1", "k2"} {
		res := e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": k}, body)
		if res.Status != 409 {
			t.Errorf("retry with %s after its task %s was deleted: %d %s, want 409", k, second.ID, res.Status, res.Body)
		}
	}
	if n := countTasks(t, e, tok); n != 0 {
		t.Errorf("%d tasks, want 0", n)
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
			t.Fatalf("create %d: %d", i, res.Status)
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

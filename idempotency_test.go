package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestIdempotentCreate retries a create with its Idempotency-Key: the same
// answer byte for byte and one task. The key with another request is a 422,
// keys are per user, a malformed key is a 400, and a refused body does not
// use up its key.
func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice, bob := e.token("alice"), e.token("bob")
	key := map[string]string{"Idempotency-Key": "create-123"}
	body := `{"title":"pay rent","tags":["home"]}`

	first := e.doWith("POST", "/api/me/tasks", alice, key, body)
	if first.Status != 201 {
		t.Fatalf("first: %d %s, want 201", first.Status, first.Body)
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
		t.Errorf("equivalent retry: %d %s, want 201 with the original %s", retry.Status, retry.Body, first.Body)
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
		t.Errorf("detail %q, want it to name Idempotency-Key", p.Detail)
	}
	// Keys are per user.
	if res := e.doWith("POST", "/api/me/tasks", bob, key, body); res.Status != 201 || res.task(t).ID == id || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("bob with alice's key: %d %s, want 201 with a new task of his own", res.Status, res.Body)
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
		t.Fatalf("invalid body: %d, want 422", res.Status)
	}
	if res := e.doWith("POST", "/api/me/tasks", alice, k2, `{"title":"ok now"}`); res.Status != 201 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("valid body after an invalid one with the same key: %d, want 201, not replayed", res.Status)
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
				t.Errorf("round %d client %d: %d %s, want 201 with task %s", round, i, r.Status, r.Body, results[0].task(t).ID)
			}
		}
		if n := countTasks(t, e, tok); n != round+1 {
			t.Errorf("round %d: %d tasks, want %d", round, n, round+1)
		}
	}
}

// TestIdempotencyKeyExpiry checks that an expired key is claimed afresh,
// and that SweepKeys deletes every user's expired keys and only those.
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
		t.Fatalf("create: %d %s, want 201", first.Status, first.Body)
	}
	var stored string
	if err := e.db.QueryRow(`SELECT coalesce(request, '') || encode(coalesce(request_hash, ''), 'escape') FROM idempotency_keys`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "secret") {
		t.Errorf("the key stores the request's text: %q, want only a hash", stored)
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
		t.Errorf("%d keys still hold a hash after their tasks were deleted (%v), want 0", hashes, err)
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

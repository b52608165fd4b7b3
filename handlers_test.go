package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

func TestTaskLifecycle(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice := e.token("alice")

	// Create with every field.
	res := e.do("POST", "/api/alice/tasks", alice, map[string]any{
		"title":       "  Buy milk  ",
		"description": "two litres",
		"priority":    "high",
		"due_date":    "2026-12-01T10:00:00+02:00",
		"tags":        []string{" shopping", "home", "shopping"},
	})
	if res.Status != http.StatusCreated {
		t.Fatalf("create: status %d, body %s; want 201", res.Status, res.Body)
	}
	created := res.task(t)
	if want := "/api/alice/tasks/" + created.ID; res.Header.Get("Location") != want {
		t.Errorf("Location = %q, want %q", res.Header.Get("Location"), want)
	}
	if !isUUID(created.ID) || created.UserID != "alice" || created.Title != "Buy milk" ||
		created.Description == nil || *created.Description != "two litres" || created.Completed ||
		created.Priority != "high" || !slices.Equal(created.Tags, []string{"shopping", "home"}) {
		t.Errorf("created task = %+v, want alice's \"Buy milk\" as sent, with the tags shopping and home", created)
	}
	if created.DueDate == nil || !created.DueDate.Equal(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("due_date = %v, want 2026-12-01T08:00:00Z", created.DueDate)
	}
	if !strings.Contains(string(res.Body), `"due_date":"2026-12-01T08:00:00Z"`) {
		t.Errorf("due_date not sent in UTC: %s, want \"due_date\":\"2026-12-01T08:00:00Z\"", res.Body)
	}

	// Get, by id and through "me".
	for _, path := range []string{"/api/alice/tasks/" + created.ID, "/api/me/tasks/" + created.ID} {
		res = e.do("GET", path, alice, nil)
		if res.Status != http.StatusOK {
			t.Fatalf("GET %s: status %d, body %s; want 200", path, res.Status, res.Body)
		}
		if got := res.task(t); got.ID != created.ID || got.Title != "Buy milk" {
			t.Errorf("GET %s = %+v, want task %s, \"Buy milk\"", path, got, created.ID)
		}
	}

	// PUT changes only what it names; null clears description.
	res = e.do("PUT", "/api/alice/tasks/"+created.ID, alice, `{"title":"Buy oat milk","description":null}`)
	if res.Status != http.StatusOK {
		t.Fatalf("PUT: status %d, body %s; want 200", res.Status, res.Body)
	}
	updated := res.task(t)
	if updated.Title != "Buy oat milk" || updated.Description != nil || updated.Priority != "high" ||
		!slices.Equal(updated.Tags, []string{"shopping", "home"}) || updated.DueDate == nil {
		t.Errorf("after PUT: %+v, want the title \"Buy oat milk\", no description and the rest unchanged", updated)
	}
	if !updated.UpdatedAt.After(created.UpdatedAt) || !updated.CreatedAt.Equal(created.CreatedAt) {
		t.Errorf("after PUT: created_at %v → %v, updated_at %v → %v; want created_at kept and updated_at later",
			created.CreatedAt, updated.CreatedAt, created.UpdatedAt, updated.UpdatedAt)
	}

	// PATCH clears the due date and the tags.
	res = e.do("PATCH", "/api/me/tasks/"+created.ID, alice, `{"due_date":null,"tags":[],"priority":"low"}`)
	if res.Status != http.StatusOK {
		t.Fatalf("PATCH: status %d, body %s; want 200", res.Status, res.Body)
	}
	if got := res.task(t); got.DueDate != nil || len(got.Tags) != 0 || got.Priority != "low" || got.Title != "Buy oat milk" {
		t.Errorf("after PATCH: %+v, want no due date, no tags, priority low and the title kept", got)
	}
	if !strings.Contains(string(res.Body), `"tags":[]`) {
		t.Errorf("empty tags not sent as []: %s, want \"tags\":[]", res.Body)
	}

	// /complete without a body toggles; with a body it sets, and retrying is safe.
	path := "/api/alice/tasks/" + created.ID + "/complete"
	for i, step := range []struct {
		body any
		want bool
	}{
		{nil, true}, {nil, false}, {`{"completed":true}`, true}, {`{"completed":true}`, true}, {`{"completed":false}`, false},
	} {
		res = e.do("PATCH", path, alice, step.body)
		if res.Status != http.StatusOK {
			t.Fatalf("complete step %d: status %d, body %s; want 200", i, res.Status, res.Body)
		}
		if got := res.task(t).Completed; got != step.want {
			t.Errorf("complete step %d (body %v): completed = %v, want %v", i, step.body, got, step.want)
		}
	}

	// List holds it; delete removes it; it is gone afterwards.
	if tasks := e.do("GET", "/api/alice/tasks", alice, nil).tasks(t); len(tasks) != 1 || tasks[0].ID != created.ID {
		t.Errorf("list = %+v, want the one task", tasks)
	}
	res = e.do("DELETE", "/api/alice/tasks/"+created.ID, alice, nil)
	if res.Status != http.StatusNoContent || len(res.Body) != 0 {
		t.Errorf("DELETE: status %d, body %q; want 204 with no body", res.Status, res.Body)
	}
	if res = e.do("GET", "/api/alice/tasks/"+created.ID, alice, nil); res.Status != http.StatusNotFound {
		t.Errorf("GET after DELETE: status %d, want 404", res.Status)
	}
	if res = e.do("DELETE", "/api/alice/tasks/"+created.ID, alice, nil); res.Status != http.StatusNotFound {
		t.Errorf("second DELETE: status %d, want 404", res.Status)
	}
	if res = e.do("GET", "/api/alice/tasks", alice, nil); string(res.Body) != "[]\n" {
		t.Errorf("empty list body = %q, want []", res.Body)
	}
}

func TestCreateDefaults(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	res := e.do("POST", "/api/me/tasks", e.token("bob"), `{"title":"x"}`)
	if res.Status != http.StatusCreated {
		t.Fatalf("status %d, body %s; want 201", res.Status, res.Body)
	}
	var raw map[string]any
	if err := json.Unmarshal(res.Body, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"title": "x", "description": nil, "completed": false, "priority": "medium", "due_date": nil, "tags": []any{}, "user_id": "bob"}
	for k, v := range want {
		got, ok := raw[k]
		if !ok {
			t.Errorf("member %q missing from %s, want %s", k, res.Body, mustJSON(v))
			continue
		}
		if gj, _ := json.Marshal(got); string(gj) != mustJSON(v) {
			t.Errorf("%s = %s, want %s", k, gj, mustJSON(v))
		}
	}
	for _, k := range []string{"created_at", "updated_at"} {
		s, _ := raw[k].(string)
		if ts, err := time.Parse(time.RFC3339Nano, s); err != nil || !strings.HasSuffix(s, "Z") || time.Since(ts) > time.Minute {
			t.Errorf("%s = %q, want a recent RFC 3339 UTC time", k, s)
		}
	}
}

// TestIsolation checks every route as a second user: nothing of the first
// user's can be seen, changed or deleted, whether the path names the first
// user or the second.
func TestIsolation(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice, mallory := e.token("alice"), e.token("mallory")
	task := e.do("POST", "/api/alice/tasks", alice, `{"title":"secret","description":"private"}`).task(t)

	type call struct {
		method, path string
		body         any
	}
	for _, c := range []call{
		{"GET", "/api/alice/tasks", nil},
		{"POST", "/api/alice/tasks", `{"title":"planted"}`},
		{"GET", "/api/alice/tasks/" + task.ID, nil},
		{"PUT", "/api/alice/tasks/" + task.ID, `{"title":"pwned"}`},
		{"PATCH", "/api/alice/tasks/" + task.ID, `{"title":"pwned"}`},
		{"PATCH", "/api/alice/tasks/" + task.ID + "/complete", nil},
		{"DELETE", "/api/alice/tasks/" + task.ID, nil},
	} {
		if res := e.do(c.method, c.path, mallory, c.body); res.Status != http.StatusForbidden {
			t.Errorf("mallory %s %s: status %d, want 403", c.method, c.path, res.Status)
		} else {
			res.problem(t)
		}
	}
	// Through her own path, alice's task does not exist for mallory.
	for _, c := range []call{
		{"GET", "/api/mallory/tasks/" + task.ID, nil},
		{"PUT", "/api/me/tasks/" + task.ID, `{"title":"pwned"}`},
		{"PATCH", "/api/me/tasks/" + task.ID, `{"title":"pwned"}`},
		{"PATCH", "/api/me/tasks/" + task.ID + "/complete", `{"completed":true}`},
		{"DELETE", "/api/me/tasks/" + task.ID, nil},
	} {
		res := e.do(c.method, c.path, mallory, c.body)
		if res.Status != http.StatusNotFound {
			t.Errorf("mallory %s %s: status %d, want 404", c.method, c.path, res.Status)
			continue
		}
		// Identical to a task that does not exist at all.
		other := e.do(c.method, strings.Replace(c.path, task.ID, "00000000-0000-4000-8000-000000000000", 1), mallory, c.body)
		if res.problem(t).Detail != other.problem(t).Detail || other.Status != 404 {
			t.Errorf("%s %s: another user's task answers %s, a missing one %d %s; want the same 404", c.method, c.path, res.Body, other.Status, other.Body)
		}
	}
	if list := e.do("GET", "/api/me/tasks", mallory, nil).tasks(t); len(list) != 0 {
		t.Errorf("mallory's list = %+v, want empty", list)
	}
	got := e.do("GET", "/api/alice/tasks/"+task.ID, alice, nil).task(t)
	if got.Title != "secret" || got.Completed || !got.UpdatedAt.Equal(task.UpdatedAt) {
		t.Errorf("alice's task changed: %+v, want it as it was", got)
	}
	if list := e.do("GET", "/api/alice/tasks", alice, nil).tasks(t); len(list) != 1 {
		t.Errorf("alice has %d tasks, want 1", len(list))
	}
}

func TestMalformedIDIsNotFound(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("ids")
	missing := e.do("GET", "/api/me/tasks/00000000-0000-4000-8000-000000000001", tok, nil).problem(t).Detail
	for _, id := range []string{"1", "not-a-uuid", "00000000-0000-4000-8000-00000000000g", "00000000-0000-4000-8000-000000000000",
		"%27%20OR%201=1--", strings.Repeat("a", 500)} {
		for _, method := range []string{"GET", "PUT", "PATCH", "DELETE"} {
			var body any
			if method == "PUT" || method == "PATCH" {
				body = `{"title":"x"}`
			}
			res := e.do(method, "/api/me/tasks/"+id, tok, body)
			if res.Status != 404 {
				t.Errorf("%s id %q: status %d, want 404", method, id, res.Status)
				continue
			}
			if p := res.problem(t); p.Detail != missing {
				t.Errorf("%s id %q: detail %q, want %q as for a missing task", method, id, p.Detail, missing)
			}
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		if res := e.do("GET", path, "", nil); res.Status != 200 {
			t.Errorf("GET %s: status %d, body %s; want 200", path, res.Status, res.Body)
		}
	}
	// A database that refuses connections: not ready, but still alive, and
	// requests fail fast with 503.
	cfg, err := pgx.ParseConfig("postgres://taskapi@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	dead := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { dead.Close() })
	srv := httptest.NewServer(newServer(slog.New(slog.DiscardHandler), "test", NewStore(dead, 2*time.Second, testTaskQuota),
		NewVerifier(VerifierConfig{Secret: testSecret}, slog.New(slog.DiscardHandler)), guards{}, newCursorCodec(nil), nil, nil))
	t.Cleanup(srv.Close)
	e.srv = srv
	res := e.do("GET", "/readyz", "", nil)
	if res.Status != 503 {
		t.Errorf("readyz without a database: status %d, want 503", res.Status)
	}
	res.problem(t)
	if res := e.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Errorf("healthz without a database: status %d, want 200", res.Status)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/me/tasks", ""},
		{"POST", "/api/me/tasks", `{"title":"x"}`},
		{"GET", "/api/me/tasks/00000000-0000-4000-8000-000000000000", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		res := e.do(c.method, c.path, e.token("x"), body)
		if res.Status != 503 || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s without a database: status %d, Retry-After %q; want 503 with Retry-After",
				c.method, c.path, res.Status, res.Header.Get("Retry-After"))
		}
	}
}

// TestDropInForExistingFrontends checks what frontends written for other
// backends (FastAPI ones, mostly) send and expect. Their spellings of the
// list parameters are checked in list_test.go (TestListFiltersAndSorting),
// CORS with credentials in middleware_test.go (TestCORSCredentials), and a
// session token sent in place of a JWT in auth_test.go
// (TestSessionTokenInsteadOfJWT).
func TestDropInForExistingFrontends(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("frontend")
	milk := createTask(t, e, tok, `{"title":"buy milk","priority":"low"}`)
	bread := createTask(t, e, tok, `{"title":"bake bread","priority":"high","completed":true}`)
	createTask(t, e, tok, `{"title":"call mum","priority":"medium","due_date":"2030-01-01T00:00:00Z"}`)

	t.Run("an object without completed toggles", func(t *testing.T) {
		path := "/api/me/tasks/" + milk.ID + "/complete"
		for i, want := range []bool{true, false} {
			res := e.do("PATCH", path, tok, `{}`)
			if res.Status != 200 || res.task(t).Completed != want {
				t.Fatalf("toggle %d with {}: %d %s, want 200 with completed %v", i+1, res.Status, res.Body, want)
			}
		}
		if res := e.do("PATCH", path, tok, `{"completed":null}`); res.Status != 422 {
			t.Errorf(`{"completed":null}: %d, want 422`, res.Status)
		}
	})

	t.Run("a list without limit is a full page of 500", func(t *testing.T) {
		many := e.token("many")
		if res := e.do("POST", "/api/me/tasks", many, `{"title":"first"}`); res.Status != 201 {
			t.Fatalf("create: %d, want 201", res.Status)
		}
		if _, err := e.db.Exec(`INSERT INTO tasks (user_id, title) SELECT 'many', 't' || g FROM generate_series(1, 504) g`); err != nil {
			t.Fatal(err)
		}
		res := e.do("GET", "/api/me/tasks", many, nil)
		next := nextLink(t, res.Header)
		if n := len(res.tasks(t)); n != 500 || next == "" {
			t.Fatalf("505 tasks, no limit: %d tasks, Link %q; want 500 and a next page", n, res.Header.Get("Link"))
		}
		if n := len(e.do("GET", next, many, nil).tasks(t)); n != 5 {
			t.Errorf("the next page: %d tasks, want 5", n)
		}
	})

	t.Run("one trailing slash on every API route", func(t *testing.T) {
		// A client that does not follow redirects, so that one is seen.
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		do := func(method, path, body string) response {
			headers := map[string]string{}
			if body != "" {
				headers["Content-Type"] = "application/json"
			}
			return send(t, client, method, e.srv.URL+path, tok, headers, body)
		}
		created := do("POST", "/api/me/tasks/", `{"title":"slash"}`)
		if created.Status != 201 {
			t.Fatalf("POST /api/me/tasks/: %d %s, want 201", created.Status, created.Body)
		}
		id := created.task(t).ID
		covered := map[string]bool{"POST /api/{user_id}/tasks": true}
		for _, c := range []struct {
			route              string // the pattern it reaches
			method, path, body string
			want               int // 0: any answer of the route's own
		}{
			{"GET /api/{user_id}/tasks", "GET", "/api/me/tasks/", "", 200},
			{"GET /api/{user_id}/tasks", "GET", "/api/frontend/tasks/?sort=title", "", 200},
			{"GET /api/{user_id}/tasks/stats", "GET", "/api/me/tasks/stats/", "", 200},
			{"GET /api/{user_id}/tasks/{id}", "GET", "/api/me/tasks/" + id + "/", "", 200},
			{"PUT /api/{user_id}/tasks/{id}", "PUT", "/api/me/tasks/" + id + "/", `{"title":"slashed"}`, 200},
			{"PATCH /api/{user_id}/tasks/{id}", "PATCH", "/api/me/tasks/" + id + "/", `{"priority":"high"}`, 200},
			{"PATCH /api/{user_id}/tasks/{id}/complete", "PATCH", "/api/me/tasks/" + id + "/complete/", "", 200},
			{"GET /api/{user_id}/changes", "GET", "/api/me/changes/", "", 0},
			{"POST /api/{user_id}/events/ticket", "POST", "/api/me/events/ticket/", "", 0},
			// Without live updates the stream answers at once (503).
			{"GET /api/{user_id}/events", "GET", "/api/me/events/", "", 0},
			{"GET /api/me", "GET", "/api/me/", "", 200},
			{"DELETE /api/{user_id}/tasks/{id}", "DELETE", "/api/me/tasks/" + id + "/", "", 204},
			{"DELETE /api/{user_id}/tasks", "DELETE", "/api/me/tasks/?status=completed", "", 200},
			{"DELETE /api/me", "DELETE", "/api/me/", "", 204},
			{"", "GET", "/healthz/", "", 404},
		} {
			res := do(c.method, c.path, c.body)
			switch {
			case res.Status >= 300 && res.Status < 400:
				t.Errorf("%s %s: %d to %q, want no redirect", c.method, c.path, res.Status, res.Header.Get("Location"))
			case c.want != 0 && res.Status != c.want:
				t.Errorf("%s %s: %d, want %d", c.method, c.path, res.Status, c.want)
			case c.want == 0 && (res.Status == 404 || res.Status == 405):
				t.Errorf("%s %s: %d, want the route's own answer", c.method, c.path, res.Status)
			}
			covered[c.route] = true
		}
		for _, r := range routes(testLogger(), "test", e.store, e.verifier, guards{}, newCursorCodec([]byte("k")), nil) {
			if strings.Contains(r.pattern, " /api/") && !covered[r.pattern] {
				t.Errorf("%s: not tried with a trailing slash here, want every API route tried", r.pattern)
			}
		}
	})

	t.Run("every detail is a sentence", func(t *testing.T) {
		path := "/api/me/tasks/" + milk.ID
		for _, c := range []struct{ method, path, token, body string }{
			{"GET", "/api/me/tasks", "", ""},
			{"GET", "/api/me/tasks", "x.y.z", ""},
			{"GET", "/api/someone/tasks", tok, ""},
			{"GET", "/api/me/tasks/00000000-0000-4000-8000-000000000009", tok, ""},
			{"GET", "/api/me/tasks?limit=0", tok, ""},
			{"GET", "/api/me/tasks?cursor=x", tok, ""},
			{"GET", "/api/me/changes?limit=0", tok, ""},
			{"GET", "/api/me/changes?since=x", tok, ""},
			{"GET", "/api/me/changes?until=1", tok, ""},
			{"GET", "/api/me/tasks?sort=created&sort_by=title", tok, ""},
			{"POST", "/api/me/tasks", tok, `{"title":""}`},
			{"POST", "/api/me/tasks", tok, `{"title":`},
			{"POST", "/api/me/tasks", tok, `{"name":"x"}`},
			{"POST", "/api/me/tasks", tok, `[1]`},
			{"PATCH", path, tok, `{"title":"x","tags":[""],"priority":"urgent","completed":3}`},
			{"DELETE", "/api/me/tasks", tok, ""},
			{"GET", "/nowhere", "", ""},
			{"POST", "/healthz", "", ""},
		} {
			var body any
			if c.body != "" {
				body = c.body
			}
			res := e.do(c.method, c.path, c.token, body)
			d := res.problem(t).Detail
			if r, _ := utf8.DecodeRuneInString(d); !unicode.IsUpper(r) || !strings.HasSuffix(d, ".") {
				t.Errorf("%s %s %s: detail %q, want a sentence: a capital first and a full stop last", c.method, c.path, c.body, d)
			}
		}
		if d := e.do("PATCH", "/api/me/tasks/"+bread.ID, tok, `{"title":"","tags":[""]}`).problem(t).Detail; !strings.Contains(d, "title must not be empty") {
			t.Errorf("422 detail %q, want it to say which field is wrong", d)
		}
	})
}

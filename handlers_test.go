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
		t.Fatalf("create: status %d, body %s", res.Status, res.Body)
	}
	created := res.task(t)
	if want := "/api/alice/tasks/" + created.ID; res.Header.Get("Location") != want {
		t.Errorf("Location = %q, want %q", res.Header.Get("Location"), want)
	}
	if !isUUID(created.ID) || created.UserID != "alice" || created.Title != "Buy milk" ||
		created.Description == nil || *created.Description != "two litres" || created.Completed ||
		created.Priority != "high" || !slices.Equal(created.Tags, []string{"shopping", "home"}) {
		t.Errorf("created task = %+v", created)
	}
	if created.DueDate == nil || !created.DueDate.Equal(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("due_date = %v, want 2026-12-01T08:00:00Z", created.DueDate)
	}
	if !strings.Contains(string(res.Body), `"due_date":"2026-12-01T08:00:00Z"`) {
		t.Errorf("due_date not sent in UTC: %s", res.Body)
	}

	// Get, by id and through "me".
	for _, path := range []string{"/api/alice/tasks/" + created.ID, "/api/me/tasks/" + created.ID} {
		res = e.do("GET", path, alice, nil)
		if res.Status != http.StatusOK {
			t.Fatalf("GET %s: status %d, body %s", path, res.Status, res.Body)
		}
		if got := res.task(t); got.ID != created.ID || got.Title != "Buy milk" {
			t.Errorf("GET %s = %+v", path, got)
		}
	}

	// PUT changes only what it names; null clears description.
	res = e.do("PUT", "/api/alice/tasks/"+created.ID, alice, `{"title":"Buy oat milk","description":null}`)
	if res.Status != http.StatusOK {
		t.Fatalf("PUT: status %d, body %s", res.Status, res.Body)
	}
	updated := res.task(t)
	if updated.Title != "Buy oat milk" || updated.Description != nil || updated.Priority != "high" ||
		!slices.Equal(updated.Tags, []string{"shopping", "home"}) || updated.DueDate == nil {
		t.Errorf("after PUT: %+v", updated)
	}
	if !updated.UpdatedAt.After(created.UpdatedAt) || !updated.CreatedAt.Equal(created.CreatedAt) {
		t.Errorf("after PUT: created_at %v → %v, updated_at %v → %v",
			created.CreatedAt, updated.CreatedAt, created.UpdatedAt, updated.UpdatedAt)
	}

	// PATCH clears the due date and the tags.
	res = e.do("PATCH", "/api/me/tasks/"+created.ID, alice, `{"due_date":null,"tags":[],"priority":"low"}`)
	if res.Status != http.StatusOK {
		t.Fatalf("PATCH: status %d, body %s", res.Status, res.Body)
	}
	if got := res.task(t); got.DueDate != nil || len(got.Tags) != 0 || got.Priority != "low" || got.Title != "Buy oat milk" {
		t.Errorf("after PATCH: %+v", got)
	}
	if !strings.Contains(string(res.Body), `"tags":[]`) {
		t.Errorf("empty tags not sent as []: %s", res.Body)
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
			t.Fatalf("complete step %d: status %d, body %s", i, res.Status, res.Body)
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
		t.Errorf("DELETE: status %d, body %q", res.Status, res.Body)
	}
	if res = e.do("GET", "/api/alice/tasks/"+created.ID, alice, nil); res.Status != http.StatusNotFound {
		t.Errorf("GET after DELETE: status %d", res.Status)
	}
	if res = e.do("DELETE", "/api/alice/tasks/"+created.ID, alice, nil); res.Status != http.StatusNotFound {
		t.Errorf("second DELETE: status %d", res.Status)
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
		t.Fatalf("status %d, body %s", res.Status, res.Body)
	}
	var raw map[string]any
	if err := json.Unmarshal(res.Body, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"title": "x", "description": nil, "completed": false, "priority": "medium", "due_date": nil, "tags": []any{}, "user_id": "bob"}
	for k, v := range want {
		got, ok := raw[k]
		if !ok {
			t.Errorf("member %q missing from %s", k, res.Body)
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

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestValidation(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("val")
	emoji := strings.Repeat("😀", 200)
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantFields []string // for 422
	}{
		{"200 emoji title", `{"title":"` + emoji + `"}`, 201, nil},
		{"201 emoji title", `{"title":"` + emoji + `😀"}`, 422, []string{"title"}},
		{"200 chars after trim", `{"title":"  ` + strings.Repeat("a", 200) + `  "}`, 201, nil},
		{"missing title", `{"description":"d"}`, 422, []string{"title"}},
		{"blank title", `{"title":"   "}`, 422, []string{"title"}},
		{"null title", `{"title":null}`, 422, []string{"title"}},
		{"number title", `{"title":5}`, 422, []string{"title"}},
		{"NUL in title", `{"title":"a\u0000b"}`, 422, []string{"title"}},
		{"NUL in description", `{"title":"a","description":"x\u0000"}`, 422, []string{"description"}},
		{"NUL in tag", `{"title":"a","tags":["x\u0000"]}`, 422, []string{"tags[0]"}},
		{"invalid UTF-8 in title", "{\"title\":\"a\xffb\"}", 422, []string{"title"}},
		{"invalid UTF-8 in description", "{\"title\":\"a\",\"description\":\"\xc3\x28\"}", 422, []string{"description"}},
		{"1000 char description", `{"title":"a","description":"` + strings.Repeat("é", 1000) + `"}`, 201, nil},
		{"1001 char description", `{"title":"a","description":"` + strings.Repeat("é", 1001) + `"}`, 422, []string{"description"}},
		{"bad priority", `{"title":"a","priority":"urgent"}`, 422, []string{"priority"}},
		{"bad due date", `{"title":"a","due_date":"tomorrow"}`, 422, []string{"due_date"}},
		{"date without time", `{"title":"a","due_date":"2026-12-01"}`, 422, []string{"due_date"}},
		{"completed as string", `{"title":"a","completed":"yes"}`, 422, []string{"completed"}},
		{"tags not array", `{"title":"a","tags":"x"}`, 422, []string{"tags"}},
		{"empty tag", `{"title":"a","tags":["ok"," "]}`, 422, []string{"tags[1]"}},
		{"51 char tag", `{"title":"a","tags":["` + strings.Repeat("t", 51) + `"]}`, 422, []string{"tags[0]"}},
		{"50 char tag", `{"title":"a","tags":["` + strings.Repeat("t", 50) + `"]}`, 201, nil},
		{"21 tags", `{"title":"a","tags":` + mustJSON(numberedTags(21)) + `}`, 422, []string{"tags"}},
		{"20 tags plus duplicates", `{"title":"a","tags":` + mustJSON(append(numberedTags(20), "t0", "t1")) + `}`, 201, nil},
		{"every field bad", `{"title":"","description":5,"priority":"x","due_date":"x","tags":[""],"completed":null}`, 422,
			[]string{"title", "description", "completed", "priority", "due_date", "tags[0]"}},
		{"malformed JSON", `{"title":`, 400, nil},
		{"not an object", `["title"]`, 400, nil},
		{"empty body", ``, 400, nil},
		{"unknown member", `{"title":"a","colour":"red"}`, 400, nil},
		{"trailing data", `{"title":"a"} {"title":"b"}`, 400, nil},
		{"too large", `{"title":"a","description":"` + strings.Repeat("x", 70<<10) + `"}`, 413, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countTasks(t, e, tok)
			res := e.do("POST", "/api/me/tasks", tok, tt.body)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", res.Status, tt.wantStatus, res.Body)
			}
			after := countTasks(t, e, tok)
			if tt.wantStatus != 201 {
				if after != before {
					t.Errorf("a refused create changed the task count from %d to %d", before, after)
				}
				p := res.problem(t)
				var fields []string
				for _, fe := range p.Errors {
					fields = append(fields, fe.Field)
					if fe.Message == "" {
						t.Errorf("field %s has no message", fe.Field)
					}
				}
				if !slices.Equal(fields, tt.wantFields) {
					t.Errorf("invalid fields = %v, want %v (%s)", fields, tt.wantFields, res.Body)
				}
			} else if after != before+1 {
				t.Errorf("task count %d → %d after a 201", before, after)
			}
		})
	}
}

func numberedTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = "t" + string(rune('0'+i/10)) + string(rune('0'+i%10))
	}
	tags[0], tags[1] = "t0", "t1"
	return tags
}

func countTasks(t *testing.T, e *testEnv, tok string) int {
	t.Helper()
	res := e.do("GET", "/api/me/tasks", tok, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("list: status %d", res.Status)
	}
	return len(res.tasks(t))
}

func TestUpdateValidation(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("upd")
	orig := e.do("POST", "/api/me/tasks", tok, `{"title":"keep","description":"d","tags":["a"]}`).task(t)
	path := "/api/me/tasks/" + orig.ID
	for _, body := range []string{
		`{"title":""}`, `{"title":null}`, `{"priority":null}`, `{"completed":null}`, `{"tags":null}`,
		`{"title":"ok","description":"` + strings.Repeat("x", 1001) + `"}`, // one bad field refuses the whole update
		`{"due_date":"soon"}`, `{"id":"x"}`, `[]`, `{"title":"a\u0000"}`,
	} {
		for _, method := range []string{"PUT", "PATCH"} {
			res := e.do(method, path, tok, body)
			if res.Status != 422 && res.Status != 400 {
				t.Errorf("%s %s: status %d, want 400 or 422", method, body, res.Status)
			}
		}
	}
	got := e.do("GET", path, tok, nil).task(t)
	if got.Title != "keep" || got.Description == nil || *got.Description != "d" || !got.UpdatedAt.Equal(orig.UpdatedAt) {
		t.Errorf("refused updates changed the task: %+v", got)
	}

	for _, body := range []string{`{"completed":"yes"}`, `{}`, `{"done":true}`, `{"completed":null}`} {
		if res := e.do("PATCH", path+"/complete", tok, body); res.Status != 422 && res.Status != 400 {
			t.Errorf("complete %s: status %d, want 400 or 422", body, res.Status)
		}
	}
	if got := e.do("GET", path, tok, nil).task(t); got.Completed {
		t.Error("a refused /complete changed the task")
	}
}

func TestListFiltersAndSorting(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("lister")
	mk := func(body string) Task {
		t.Helper()
		res := e.do("POST", "/api/me/tasks", tok, body)
		if res.Status != 201 {
			t.Fatalf("create %s: %d %s", body, res.Status, res.Body)
		}
		return res.task(t)
	}
	b := mk(`{"title":"banana","priority":"low","due_date":"2026-03-01T00:00:00Z"}`)
	a := mk(`{"title":"apple","priority":"high","completed":true}`)
	c := mk(`{"title":"cherry","priority":"medium","due_date":"2026-01-01T00:00:00Z"}`)
	// Make updated_at differ from created_at order: touch b last.
	e.do("PATCH", "/api/me/tasks/"+b.ID, tok, `{"description":"touched"}`)

	ids := func(query string) []string {
		t.Helper()
		res := e.do("GET", "/api/me/tasks"+query, tok, nil)
		if res.Status != 200 {
			t.Fatalf("list %s: %d %s", query, res.Status, res.Body)
		}
		var out []string
		for _, task := range res.tasks(t) {
			out = append(out, task.Title)
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{c.Title, a.Title, b.Title}}, // newest first
		{"?sort=created&order=asc", []string{b.Title, a.Title, c.Title}},
		{"?sort=updated", []string{b.Title, c.Title, a.Title}},
		{"?sort=title", []string{"apple", "banana", "cherry"}},
		{"?sort=title&order=desc", []string{"cherry", "banana", "apple"}},
		{"?sort=due_date", []string{"cherry", "banana", "apple"}},            // no due date last
		{"?sort=due_date&order=desc", []string{"banana", "cherry", "apple"}}, // still last
		{"?sort=priority", []string{"banana", "cherry", "apple"}},            // low, medium, high
		{"?sort=priority&order=desc", []string{"apple", "cherry", "banana"}},
		{"?status=completed", []string{"apple"}},
		{"?status=pending&sort=title", []string{"banana", "cherry"}},
		{"?status=all&sort=title", []string{"apple", "banana", "cherry"}},
	}
	for _, tt := range tests {
		if got := ids(tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("list %q = %v, want %v", tt.query, got, tt.want)
		}
	}
	for _, q := range []string{"?status=done", "?sort=colour", "?order=up", "?sort="} {
		res := e.do("GET", "/api/me/tasks"+q, tok, nil)
		if q == "?sort=" {
			if res.Status != 200 {
				t.Errorf("list %s: status %d, want 200 (empty means default)", q, res.Status)
			}
			continue
		}
		wantBadParam(t, res, strings.TrimPrefix(q, "?"))
	}
}

// wantBadParam checks that the answer to query (name=value) is a 400 whose
// detail names the parameter.
func wantBadParam(t *testing.T, res response, query string) {
	t.Helper()
	if res.Status != 400 {
		t.Errorf("?%s: status %d, want 400", query, res.Status)
		return
	}
	param, _, _ := strings.Cut(query, "=")
	if p := res.problem(t); !strings.Contains(p.Detail, param) {
		t.Errorf("?%s: detail %q does not name %s", query, p.Detail, param)
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
			t.Errorf("%s %s: another user's task answers %s, a missing one %d %s", c.method, c.path, res.Body, other.Status, other.Body)
		}
	}
	if list := e.do("GET", "/api/me/tasks", mallory, nil).tasks(t); len(list) != 0 {
		t.Errorf("mallory's list = %+v, want empty", list)
	}
	got := e.do("GET", "/api/alice/tasks/"+task.ID, alice, nil).task(t)
	if got.Title != "secret" || got.Completed || !got.UpdatedAt.Equal(task.UpdatedAt) {
		t.Errorf("alice's task changed: %+v", got)
	}
	if list := e.do("GET", "/api/alice/tasks", alice, nil).tasks(t); len(list) != 1 {
		t.Errorf("alice has %d tasks, want 1", len(list))
	}
}

func TestMalformedIDIsNotFound(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("ids")
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
			if p := res.problem(t); p.Detail != "no task with that id" {
				t.Errorf("%s id %q: detail %q", method, id, p.Detail)
			}
		}
	}
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("r")

	res := e.do("GET", "/nope", tok, nil)
	if res.Status != 404 {
		t.Errorf("GET /nope: %d", res.Status)
	}
	res.problem(t)
	// Errors, even the mux's own, carry the same protective headers.
	for _, r := range []response{res, e.do("GET", "/api/me/tasks", "", nil), e.do("POST", "/api/me/tasks", tok, `{`)} {
		if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("X-Request-ID") == "" {
			t.Errorf("a %d lacks Cache-Control, X-Content-Type-Options or X-Request-ID: %v", r.Status, r.Header)
		}
	}

	res = e.do("POST", "/api/me/tasks/00000000-0000-4000-8000-000000000000", tok, `{}`)
	if res.Status != 405 {
		t.Fatalf("POST on a task: status %d, want 405", res.Status)
	}
	res.problem(t)
	allow := res.Header.Get("Allow")
	for _, m := range []string{"GET", "PUT", "PATCH", "DELETE"} {
		if !strings.Contains(allow, m) {
			t.Errorf("Allow = %q, missing %s", allow, m)
		}
	}
	if res := e.do("DELETE", "/healthz", "", nil); res.Status != 405 {
		t.Errorf("DELETE /healthz: %d, want 405", res.Status)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		if res := e.do("GET", path, "", nil); res.Status != 200 {
			t.Errorf("GET %s: status %d, body %s", path, res.Status, res.Body)
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
	srv := httptest.NewServer(newServer(slog.New(slog.DiscardHandler), "test", NewStore(dead, 2*time.Second),
		NewVerifier(VerifierConfig{Secret: testSecret}, slog.New(slog.DiscardHandler)), nil, cursorCodec{}, nil))
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

func TestHeadersAndRequestID(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/me/tasks", nil)
	req.Header.Set("Authorization", "Bearer "+e.token("h"))
	req.Header.Set("X-Request-ID", "client-id-123")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for header, want := range map[string]string{
		"X-Request-ID":           "client-id-123",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Content-Type":           "application/json",
	} {
		if got := resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	// A hostile request id is replaced, and the one given back is logged.
	req.Header.Set("X-Request-ID", "bad id\twith spaces")
	resp, err = e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-ID")
	if id == "" || strings.ContainsAny(id, " \t") {
		t.Errorf("X-Request-ID = %q, want a generated id", id)
	}
	var found bool
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil || entry["msg"] != "request" || entry["request_id"] != id {
			continue
		}
		found = true
		if entry["route"] != "GET /api/{user_id}/tasks" || entry["method"] != "GET" || entry["status"] != 200.0 {
			t.Errorf("request log line = %s", line)
		}
		if _, ok := entry["duration_ms"].(float64); !ok {
			t.Errorf("request log line has no duration: %s", line)
		}
	}
	if !found {
		t.Errorf("no request log line with id %s in:\n%s", id, e.logs.String())
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.srv.URL+"/api/me/tasks", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := preflight("https://app.example.com")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("preflight from the app: %d, allow-origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, h := range []string{"Authorization", "Content-Type", "If-Match"} {
		if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), h) {
			t.Errorf("Access-Control-Allow-Headers = %q, missing %s", resp.Header.Get("Access-Control-Allow-Headers"), h)
		}
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PATCH") {
		t.Errorf("Access-Control-Allow-Methods = %q", resp.Header.Get("Access-Control-Allow-Methods"))
	}
	if resp := preflight("https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin allowed: %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// An actual request from the app can read errors too.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/me/tasks", nil)
	req.Header.Set("Origin", "https://app.example.com")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("401 from the app's origin: allow-origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Location") {
		t.Errorf("Access-Control-Expose-Headers = %q", resp.Header.Get("Access-Control-Expose-Headers"))
	}
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	h := logRequests(recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userFrom(r.Context()) // a route wired without requireUser
	}), logger), logger)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.RequestID == "" || strings.Contains(p.Detail, "requireUser") {
		t.Errorf("500 body = %s (it must carry the request id and reveal nothing)", rec.Body)
	}
	if !strings.Contains(logs.String(), "requireUser") || !strings.Contains(logs.String(), p.RequestID) {
		t.Errorf("the panic was not logged with the request id:\n%s", logs)
	}
}

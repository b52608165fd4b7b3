package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLongQueryString(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	res := e.do("GET", "/api/me/tasks?q="+strings.Repeat("x", 100_000), e.token("q"), nil)
	if res.Status != 400 {
		t.Fatalf("100,000-character query string: %d, want 400", res.Status)
	}
	res.problem(t)
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("r")

	res := e.do("GET", "/nope", tok, nil)
	if res.Status != 404 {
		t.Errorf("GET /nope: %d, want 404", res.Status)
	}
	res.problem(t)
	// Errors, even the mux's own, carry the same protective headers.
	for _, r := range []response{res, e.do("GET", "/api/me/tasks", "", nil), e.do("POST", "/api/me/tasks", tok, `{`)} {
		if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("X-Request-ID") == "" {
			t.Errorf("a %d lacks Cache-Control, X-Content-Type-Options or X-Request-ID: %v; want no-store, nosniff and a request id", r.Status, r.Header)
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
			t.Errorf("Allow = %q, want it to hold %s", allow, m)
		}
	}
	if res := e.do("DELETE", "/healthz", "", nil); res.Status != 405 {
		t.Errorf("DELETE /healthz: %d, want 405", res.Status)
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
			t.Errorf("request log line = %s, want route GET /api/{user_id}/tasks, method GET and status 200", line)
		}
		if _, ok := entry["duration_ms"].(float64); !ok {
			t.Errorf("request log line has no duration: %s, want duration_ms", line)
		}
	}
	if !found {
		t.Errorf("no request log line with id %s, want one, in:\n%s", id, e.logs.String())
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
		t.Errorf("preflight from the app: %d, allow-origin %q; want 204, https://app.example.com", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, h := range []string{"Authorization", "Content-Type", "If-Match", "Last-Event-ID"} {
		if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), h) {
			t.Errorf("Access-Control-Allow-Headers = %q, want it to hold %s", resp.Header.Get("Access-Control-Allow-Headers"), h)
		}
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PATCH") {
		t.Errorf("Access-Control-Allow-Methods = %q, want it to hold PATCH", resp.Header.Get("Access-Control-Allow-Methods"))
	}
	if resp := preflight("https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode != 204 {
		t.Errorf("preflight from another origin: %d, Access-Control-Allow-Origin %q; want 204 without it",
			resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// The browser tells only the page why; taskapi's log says which origin it refused.
	if logs := e.logs.String(); !strings.Contains(logs, `"origin":"https://evil.example.com"`) || strings.Contains(logs, `"origin":"https://app.example.com"`) {
		t.Errorf("log after preflights from the app and from evil.example.com: want a line with origin evil.example.com only:\n%s", logs)
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
		t.Errorf("401 from the app's origin: %d, allow-origin %q; want 401, https://app.example.com", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Location") {
		t.Errorf("Access-Control-Expose-Headers = %q, want it to hold Location", resp.Header.Get("Access-Control-Expose-Headers"))
	}
}

// TestCORSCredentials checks that only an origin listed by name is allowed
// credentials: "*" in the list lets any other origin read the answers, but
// without credentials.
func TestCORSCredentials(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("frontend")
	for _, c := range []struct {
		origins []string
		origin  string
		want    string
	}{
		{[]string{"https://app.example.com"}, "https://app.example.com", "true"},
		{[]string{"*"}, "https://app.example.com", ""},
		{[]string{"*", "https://app.example.com"}, "https://app.example.com", "true"},
		{[]string{"*", "https://app.example.com"}, "https://other.example.com", ""},
		{[]string{"https://app.example.com"}, "https://evil.example.com", ""},
	} {
		srv := httptest.NewServer(newServer(testLogger(), "test", e.store, e.verifier, guards{}, newCursorCodec([]byte("k")), c.origins, nil))
		preflight := send(t, srv.Client(), "OPTIONS", srv.URL+"/api/me/tasks", "",
			map[string]string{"Origin": c.origin, "Access-Control-Request-Method": "POST"}, "")
		get := send(t, srv.Client(), "GET", srv.URL+"/api/me/tasks", tok, map[string]string{"Origin": c.origin}, "")
		srv.Close()
		for name, res := range map[string]response{"preflight": preflight, "GET": get} {
			if got := res.Header.Get("Access-Control-Allow-Credentials"); got != c.want {
				t.Errorf("origins %q, Origin %s, %s: Access-Control-Allow-Credentials %q, want %q", c.origins, c.origin, name, got, c.want)
			}
		}
	}
}

// TestCORSUnset checks that with no CORS_ORIGINS a browser's preflight,
// which then fails, is logged with the origin it came from.
func TestCORSUnset(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	srv := httptest.NewServer(newServer(logger, "test", e.store, e.verifier, guards{}, newCursorCodec([]byte("k")), nil, nil))
	defer srv.Close()
	res := send(t, srv.Client(), "OPTIONS", srv.URL+"/api/me/tasks", "",
		map[string]string{"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}, "")
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight with no CORS_ORIGINS: Access-Control-Allow-Origin %q, want none", res.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(logs.String(), "refused a browser's preflight") || !strings.Contains(logs.String(), `"origin":"http://localhost:3000"`) {
		t.Errorf("log after a preflight from http://localhost:3000 with no CORS_ORIGINS: want a warning naming it:\n%s", logs)
	}
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	h := logRequests(recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userFrom(r.Context()) // a route wired without requireUser
	}), logger), logger, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.RequestID == "" || strings.Contains(p.Detail, "requireUser") {
		t.Errorf("500 body = %s, want a problem that carries the request id and reveals nothing", rec.Body)
	}
	if !strings.Contains(logs.String(), "requireUser") || !strings.Contains(logs.String(), p.RequestID) {
		t.Errorf("the panic was not logged with the request id, want both in the log:\n%s", logs)
	}
}

// TestRequestLogIsBounded checks that the request line logs no unbounded
// text of the client's: a method is any token the client likes.
func TestRequestLogIsBounded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	method := strings.Repeat("M", 4<<10)
	before := len(e.logs.String())
	if res := e.do(method, "/api/me/tasks", e.token("u"), nil); res.Status != 405 {
		t.Errorf("a 4 KiB method: status %d, want 405", res.Status)
	}
	if logged := len(e.logs.String()) - before; logged > 1<<10 {
		t.Errorf("a 4 KiB method logged %d bytes, want under 1 KiB", logged)
	}
}

// TestQueryStringThatDoesNotParse checks that a query string url.Values
// would drop part of (a semicolon, a bad escape) is a 400 on every route
// that reads one, instead of an answer that ignores the filter.
func TestQueryStringThatDoesNotParse(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("qs")
	createTask(t, e, tok, `{"title":"milk","completed":false}`)
	for _, path := range []string{
		"/api/me/tasks?completed=true;",
		"/api/me/tasks?search=milk%ZZ",
		"/api/me/tasks?status=completed;sort=title",
		"/api/me/changes?since=0;limit=1",
		"/api/me/tasks/stats?x=%",
	} {
		res := e.do("GET", path, tok, nil)
		if res.Status != 400 {
			t.Errorf("GET %s: %d %s, want 400", path, res.Status, res.Body)
			continue
		}
		if p := res.problem(t); !strings.Contains(p.Detail, "does not parse") {
			t.Errorf("GET %s: detail %q, want it to say the query string does not parse", path, p.Detail)
		}
	}
	// Nothing was deleted by a bulk delete whose filter did not parse.
	if res := e.do("DELETE", "/api/me/tasks?completed=true;", tok, nil); res.Status != 400 {
		t.Errorf("DELETE /api/me/tasks?completed=true;: %d, want 400", res.Status)
	}
	if n := countTasks(t, e, tok); n != 1 {
		t.Errorf("%d tasks after the refused bulk delete, want 1", n)
	}
}

// TestUncleanPath checks that a path with an empty, "." or ".." segment,
// which the mux would redirect with an HTML body, is a 404 in the problem
// format: a client that sends one has built it wrong (an empty user id).
func TestUncleanPath(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("clean")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/api/me//tasks", "/api//tasks", "/api/me/./tasks", "/api/me/tasks/x/../y"} {
		res := send(t, client, "GET", e.srv.URL+path, tok, nil, "")
		if res.Status != 404 || res.Header.Get("Location") != "" {
			t.Errorf("GET %s: %d Location %q, want 404 with no Location", path, res.Status, res.Header.Get("Location"))
			continue
		}
		res.problem(t)
	}
}

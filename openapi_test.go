package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// loadOpenAPI parses and validates the embedded document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData([]byte(openAPIDocument))
	if err != nil {
		t.Fatalf("openapi.json does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	return doc
}

// TestOpenAPIMatchesRoutes fails when a route of the route table is missing
// from openapi.json, or the document names a route the server lacks.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	var served, documented []string
	for _, r := range routes(slog.New(slog.DiscardHandler), "test", nil, NewVerifier(VerifierConfig{Secret: testSecret}, slog.New(slog.DiscardHandler)), guards{}, newCursorCodec(nil), nil) {
		served = append(served, r.pattern)
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	for _, p := range served {
		if !slices.Contains(documented, p) {
			t.Errorf("route %q is not in openapi.json, want every route there", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(served, p) {
			t.Errorf("openapi.json documents %q, which the server does not serve; want only served routes", p)
		}
	}
}

// exchange is one request and the response the server gave it.
type exchange struct {
	req    *http.Request
	body   []byte // the request body
	status int
	header http.Header
	resp   []byte
}

// recordExchanges wraps h to keep a copy of every request and response.
func recordExchanges(h http.Handler, mu *sync.Mutex, out *[]exchange) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		mu.Lock()
		*out = append(*out, exchange{req: r.Clone(context.Background()), body: body, status: rec.Code, header: rec.Header().Clone(), resp: rec.Body.Bytes()})
		mu.Unlock()
	})
}

// TestResponsesMatchOpenAPI drives every route through success and failure
// and checks each real response against the document's schemas.
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	doc.Servers = nil // match requests on any host
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}

	e := newTestEnv(t, nil)
	var (
		mu        sync.Mutex
		exchanges []exchange
	)
	recorded := httptest.NewServer(recordExchanges(e.srv.Config.Handler, &mu, &exchanges))
	t.Cleanup(recorded.Close)
	e.srv = recorded
	tok, other := e.token("doc"), e.token("other")

	task := e.do("POST", "/api/me/tasks", tok, `{"title":"documented","description":"d","tags":["a"],"due_date":"2026-12-01T00:00:00Z"}`).task(t)
	e.do("POST", "/api/me/tasks", tok, `{"title":"second","completed":true}`)
	e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k1"}, `{"title":"keyed"}`)
	e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k1"}, `{"title":"keyed"}`)
	e.doWith("POST", "/api/me/tasks", tok, map[string]string{"Idempotency-Key": "k1"}, `{"title":"other body"}`)
	path := "/api/me/tasks/" + task.ID
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/me/tasks?limit=1&sort=title&tag=a&status=all", ""},
		{"GET", "/api/me/tasks?limit=0", ""},
		{"GET", "/api/other/tasks", ""},
		{"GET", "/api/me/tasks/stats", ""},
		{"GET", path, ""},
		{"GET", "/api/me/tasks/00000000-0000-4000-8000-000000000000", ""},
		{"PUT", path, `{"title":"renamed","description":null}`},
		{"PATCH", path, `{"priority":"high","due_date":null}`},
		{"PATCH", path, `{"title":""}`},
		{"PATCH", path, `{"title":`},
		{"PATCH", path, `{"title":"` + strings.Repeat("x", 70<<10) + `"}`},
		{"PATCH", path + "/complete", ""},
		{"PATCH", path + "/complete", `{"completed":false}`},
		{"POST", "/api/me/tasks", `{"tags":[""]}`},
		{"DELETE", "/api/me/tasks", ""},
		{"DELETE", "/api/me/tasks?status=completed", ""},
		{"GET", "/api/me", ""},
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/openapi.json", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		e.do(c.method, c.path, tok, body)
	}
	e.doWith("GET", path, tok, map[string]string{"If-None-Match": `"9"`, "Authorization": "Bearer " + tok}, "")
	e.doWith("GET", path, tok, map[string]string{"If-None-Match": "*"}, "")
	e.doWith("PATCH", path, tok, map[string]string{"If-Match": `"1"`}, `{"title":"stale"}`)
	e.doWith("DELETE", path, tok, map[string]string{"If-Match": `"1"`}, "")
	e.do("GET", "/api/me/tasks", "", nil)
	e.do("DELETE", path, tok, nil)
	e.do("DELETE", "/api/me", other, nil)

	seen := map[string]bool{}
	for _, x := range exchanges {
		route, params, err := router.FindRoute(x.req)
		if err != nil {
			t.Errorf("%s %s: no route in openapi.json (%v), want one", x.req.Method, x.req.URL, err)
			continue
		}
		seen[x.req.Method+" "+route.Path+" "+http.StatusText(x.status)] = true
		x.req.Body = io.NopCloser(bytes.NewReader(x.body))
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{
				Request: x.req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
			},
			Status: x.status,
			Header: x.header,
			Body:   io.NopCloser(bytes.NewReader(x.resp)),
			Options: &openapi3filter.Options{
				IncludeResponseStatus: true, // a status the document does not list is an error
			},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s → %d does not match openapi.json: %v\nbody: %s", x.req.Method, x.req.URL, x.status, err, x.resp)
		}
	}
	for _, want := range []string{
		"POST /api/{user_id}/tasks Created", "POST /api/{user_id}/tasks Unprocessable Entity",
		"GET /api/{user_id}/tasks OK", "GET /api/{user_id}/tasks Bad Request", "GET /api/{user_id}/tasks Unauthorized",
		"GET /api/{user_id}/tasks Forbidden", "GET /api/{user_id}/tasks/{id} Not Modified", "GET /api/{user_id}/tasks/{id} Not Found",
		"PATCH /api/{user_id}/tasks/{id} Precondition Failed", "PATCH /api/{user_id}/tasks/{id} Request Entity Too Large",
		"DELETE /api/{user_id}/tasks OK", "DELETE /api/me No Content", "GET /openapi.json OK",
	} {
		if !seen[want] {
			t.Errorf("no exchange checked for %s", want)
		}
	}
}

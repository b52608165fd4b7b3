package main

import (
	"fmt"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

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
					t.Errorf("a refused create changed the task count from %d to %d, want it unchanged", before, after)
				}
				p := res.problem(t)
				var fields []string
				for _, fe := range p.Errors {
					fields = append(fields, fe.Field)
					if fe.Message == "" {
						t.Errorf("field %s has no message, want one", fe.Field)
					}
				}
				if !slices.Equal(fields, tt.wantFields) {
					t.Errorf("invalid fields = %v, want %v (%s)", fields, tt.wantFields, res.Body)
				}
			} else if after != before+1 {
				t.Errorf("task count %d → %d after a 201, want %d", before, after, before+1)
			}
		})
	}
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
		t.Errorf("refused updates changed the task: %+v, want it as it was", got)
	}

	for _, body := range []string{`{"completed":"yes"}`, `{"done":true}`, `{"completed":null}`} {
		if res := e.do("PATCH", path+"/complete", tok, body); res.Status != 422 && res.Status != 400 {
			t.Errorf("complete %s: status %d, want 400 or 422", body, res.Status)
		}
	}
	if got := e.do("GET", path, tok, nil).task(t); got.Completed {
		t.Error("a refused /complete changed the task")
	}
}

// FuzzTaskBody sends arbitrary bodies to create and to update.
func FuzzTaskBody(f *testing.F) {
	for _, seed := range []string{
		`{"title":"a"}`, `{"title":" b ","description":null,"tags":["x","x"],"priority":"low","due_date":"2026-01-01T00:00:00Z","completed":true}`,
		`{"title":"` + strings.Repeat("😀", 200) + `"}`, "{\"title\":\"\xff\"}", `{"title":"a\u0000"}`, `{"tags":[1,2]}`,
		`{"due_date":"2026-13-45T99:99:99Z"}`, `[]`, `null`, `{"title":"a"} x`, `{"title":{"nested":true}}`, ``,
	} {
		f.Add([]byte(seed))
	}
	e := newTestEnv(f, nil)
	tok := e.token("fuzzer")
	victim := e.do("POST", "/api/me/tasks", tok, `{"title":"victim","description":"keep"}`).task(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fe := *e
		fe.t = t
		before := countTasksIn(t, &fe, "fuzzer")
		res := fe.do("POST", "/api/me/tasks", tok, body)
		switch {
		case res.Status >= 500:
			t.Fatalf("create: %d for %q: %s; want below 500", res.Status, body, res.Body)
		case res.Status == 201:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before+1 {
				t.Fatalf("a 201 left %d tasks, want %d", n, before+1)
			}
		default:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before {
				t.Fatalf("a refused create (%d) changed the task count %d → %d, want it unchanged", res.Status, before, n)
			}
		}
		current := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t)
		res = fe.do("PATCH", "/api/me/tasks/"+victim.ID, tok, body)
		switch {
		case res.Status >= 500:
			t.Fatalf("update: %d for %q: %s; want below 500", res.Status, body, res.Body)
		case res.Status != 200:
			if after := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t); after.Version != current.Version {
				t.Fatalf("a refused update (%d) changed the task: version %d, want %d", res.Status, after.Version, current.Version)
			}
		}
	})
}

// FuzzListQuery sends arbitrary query strings, cursors included, to the list.
func FuzzListQuery(f *testing.F) {
	for _, seed := range []string{
		"limit=2&sort=title", "status=pending&sort=due_date&order=desc&tag=a&tag=b&q=%25_", "cursor=abc.def",
		"limit=-1", "due_before=2026-01-01T00:00:00Z&overdue=true", "sort=priority&cursor=" + strings.Repeat("A", 100) + ".AA",
		"q=%00", "tag=&limit=500", "%zz",
	} {
		f.Add(seed)
	}
	e := newTestEnv(f, nil)
	tok := e.token("lister")
	for i := range 5 {
		e.do("POST", "/api/me/tasks", tok, map[string]any{"title": strings.Repeat("t", i+1), "tags": []string{"a"}})
	}
	f.Fuzz(func(t *testing.T, query string) {
		fe := *e
		fe.t = t
		if strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == '#' || r == 0x7f }) {
			return // not a query string a client can send
		}
		res := fe.do("GET", "/api/me/tasks?"+query, tok, nil)
		if res.Status >= 500 {
			t.Fatalf("?%s: %d %s; want below 500", query, res.Status, res.Body)
		}
	})
}

// manyTags returns n distinct tags of three characters, or n empty ones.
func manyTags(n int, empty bool) []string {
	tags := make([]string, n)
	for i := range tags {
		if !empty {
			tags[i] = fmt.Sprintf("%03x", i)
		}
	}
	return tags
}

// TestHugeTagListsAreCheap checks that a body full of tags is refused with
// an answer much smaller than the body, however many of them are bad.
func TestHugeTagListsAreCheap(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("tags")
	for _, c := range []struct {
		name  string
		tags  []string
		count int
	}{
		{"21,000 empty tags", manyTags(21_000, true), 21_000},
		{"3,000 distinct tags", manyTags(3_000, false), 1},
		// Past the limit nothing more is checked: the tags too long after
		// the 21st distinct one are not counted.
		{"21 distinct tags, then 1,100 too long", append(manyTags(21, false), manyLongTags(1_100)...), 1},
	} {
		body := mustJSON(map[string]any{"title": "t", "tags": c.tags})
		if len(body) > maxBodyBytes {
			t.Fatalf("%s: body of %d bytes, want at most %d", c.name, len(body), maxBodyBytes)
		}
		res := e.do("POST", "/api/me/tasks", tok, body)
		p := res.problem(t)
		if res.Status != 422 || len(p.Errors) > maxListedErrors || p.ErrorCount != c.count || len(res.Body) > 4<<10 {
			t.Errorf("%s: %d, %d errors listed of %d, body %d bytes; want 422, at most %d listed of %d, under 4 KiB",
				c.name, res.Status, len(p.Errors), p.ErrorCount, len(res.Body), maxListedErrors, c.count)
		}
	}
	if n := countTasks(t, e, tok); n != 0 {
		t.Errorf("%d tasks made by refused requests, want 0", n)
	}
}

// manyLongTags returns n distinct tags one character over the limit.
func manyLongTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = fmt.Sprintf("%0*d", maxTag+1, i)
	}
	return tags
}

// BenchmarkCleanTags measures the tag check of a 64 KiB body of distinct
// tags: linear, not quadratic, in the number of tags.
func BenchmarkCleanTags(b *testing.B) {
	tags := manyTags(10_800, false)
	for b.Loop() {
		var errs fieldErrors
		cleanTags(tags, &errs)
	}
}

// TestAcceptedInputIsValidEverywhere checks the edges of what a task may
// hold: what is accepted is stored, returned, sorted and paged as sent, and
// what cannot be is refused with 422, never changed or stored as something else.
func TestAcceptedInputIsValidEverywhere(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("edges")
	for _, c := range []struct {
		body      string
		wantTitle string // "" means 422
		wantTags  []string
	}{
		{`{"title":"a\ud800"}`, "", nil},
		{`{"title":"\udc00a"}`, "", nil},
		{`{"title":"x","tags":["\ud83d"]}`, "", nil},
		{`{"title":"x","description":"\ud800\ud800"}`, "", nil},
		{`{"title":"\ud83d\ude00"}`, "😀", []string{}},
		{`{"title":"a\\ud800"}`, `a\ud800`, []string{}}, // an escaped backslash: the text \ud800
		{`{"title":"\u200b"}`, "", nil},
		{`{"title":"\ufeff\u200b\u2060\u200c"}`, "", nil},
		{`{"title":"\u3164"}`, "", nil},
		{`{"title":" \u200b\u0301 "}`, "", nil},
		{`{"title":"\u200bmilk\u200b"}`, "milk", []string{}},
		{`{"title":"x","tags":["\u200b"]}`, "", nil},
		{`{"title":"x","tags":["a","a\u200b","\ufeffa"," a "]}`, "x", []string{"a"}},
		{`{"title":"x","tags":["👩‍💻"]}`, "x", []string{"👩‍💻"}}, // a joiner inside stays
	} {
		res := e.do("POST", "/api/me/tasks", tok, c.body)
		if c.wantTitle == "" {
			if res.Status != 422 {
				t.Errorf("%s: %d %s, want 422", c.body, res.Status, res.Body)
			}
			continue
		}
		if res.Status != 201 {
			t.Errorf("%s: %d %s, want 201", c.body, res.Status, res.Body)
			continue
		}
		got := e.do("GET", res.Header.Get("Location"), tok, nil).task(t)
		if got.Title != c.wantTitle || !slices.Equal(got.Tags, c.wantTags) {
			t.Errorf("%s: stored title %q tags %q, want %q %q", c.body, got.Title, got.Tags, c.wantTitle, c.wantTags)
		}
	}

	dates := e.token("dates")
	for _, due := range []string{"9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "10000-01-01T00:00:00Z", "0000-12-31T23:00:00Z"} {
		for _, key := range []string{"", "k-" + due} {
			res := e.doWith("POST", "/api/me/tasks", dates, map[string]string{"Idempotency-Key": key}, `{"title":"x","due_date":"`+due+`"}`)
			if key == "" {
				res = e.do("POST", "/api/me/tasks", dates, `{"title":"x","due_date":"`+due+`"}`)
			}
			if res.Status != 422 {
				t.Errorf("due_date %s (key %q): %d %s, want 422", due, key, res.Status, res.Body)
			}
		}
		wantBadParam(t, e.do("GET", "/api/me/tasks?due_before="+url.QueryEscape(due), dates, nil), "due_before="+due)
	}
	// The extremes that are accepted come back as sent, and page in both orders.
	for _, due := range []string{"9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z", "2026-06-01T12:00:00Z"} {
		res := e.do("POST", "/api/me/tasks", dates, `{"title":"`+due+`","due_date":"`+due+`"}`)
		if res.Status != 201 || res.task(t).DueDate.Format(time.RFC3339Nano) != due {
			t.Errorf("due_date %s: %d %s, want 201 with the same due_date", due, res.Status, res.Body)
		}
	}
	for _, order := range []string{"asc", "desc"} {
		got, _ := pageAll(t, e, dates, "/api/me/tasks?sort=due_date&limit=1&order="+order)
		if len(got) != 3 {
			t.Errorf("sort=due_date order=%s, one a page: %d tasks, want 3", order, len(got))
		}
	}
	// The database agrees.
	if _, err := e.db.Exec(`INSERT INTO users (id) VALUES ('db') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	for _, due := range []string{"10000-01-01 00:00:00+00", "0001-12-31 23:00:00+00 BC"} {
		if _, err := e.db.Exec(`INSERT INTO tasks (user_id, title, due_date) VALUES ('db', 'x', $1::timestamptz)`, due); err == nil {
			t.Errorf("the database accepted due_date %s, want it refused", due)
		}
	}
}

// failingBody is a request body whose read fails the way a network read
// does, with addresses in its error.
type failingBody struct{}

func (failingBody) Read([]byte) (int, error) {
	return 0, &net.OpError{Op: "read", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 18610}, Err: os.ErrDeadlineExceeded}
}

func (failingBody) Close() error { return nil }

// TestNoNetworkErrorReachesTheClient checks that an error from reading the
// request is answered without its text.
func TestNoNetworkErrorReachesTheClient(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, path := range []string{"/api/me/tasks", "/api/me/tasks/00000000-0000-4000-8000-000000000000/complete"} {
		method := "POST"
		if strings.HasSuffix(path, "complete") {
			method = "PATCH"
		}
		req := httptest.NewRequest(method, path, nil)
		req.Body = failingBody{}
		req.Header.Set("Authorization", "Bearer "+e.token("net"))
		rec := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(rec, req)
		if body := rec.Body.String(); rec.Code != 400 || strings.Contains(body, "127.0.0.1") || strings.Contains(body, "tcp") || strings.Contains(body, "timeout") {
			t.Errorf("%s %s with a failing body: %d %s, want a 400 that quotes no error", method, path, rec.Code, body)
		}
	}
}

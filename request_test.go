package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
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
			t.Fatalf("create: %d for %q: %s", res.Status, body, res.Body)
		case res.Status == 201:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before+1 {
				t.Fatalf("a 201 left %d tasks, want %d", n, before+1)
			}
		default:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before {
				t.Fatalf("a refused create (%d) changed the task count %d → %d", res.Status, before, n)
			}
		}
		current := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t)
		res = fe.do("PATCH", "/api/me/tasks/"+victim.ID, tok, body)
		switch {
		case res.Status >= 500:
			t.Fatalf("update: %d for %q: %s", res.Status, body, res.Body)
		case res.Status != 200:
			if after := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t); after.Version != current.Version {
				t.Fatalf("a refused update (%d) changed the task", res.Status)
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
			t.Fatalf("?%s: %d %s", query, res.Status, res.Body)
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
	} {
		body := mustJSON(map[string]any{"title": "t", "tags": c.tags})
		if len(body) > maxBodyBytes {
			t.Fatalf("%s: body of %d bytes is over the limit", c.name, len(body))
		}
		res := e.do("POST", "/api/me/tasks", tok, body)
		p := res.problem(t)
		if res.Status != 422 || len(p.Errors) > maxListedErrors || p.ErrorCount != c.count || len(res.Body) > 4<<10 {
			t.Errorf("%s: %d, %d errors listed of %d, body %d bytes; want 422, at most %d listed of %d, under 4 KiB",
				c.name, res.Status, len(p.Errors), p.ErrorCount, len(res.Body), maxListedErrors, c.count)
		}
	}
	if n := countTasks(t, e, tok); n != 0 {
		t.Errorf("%d tasks made by refused requests", n)
	}
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

package main

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// TestETags follows a task's ETag through reads and writes: If-None-Match
// gives 304, a stale If-Match refuses every write with 412 and changes
// nothing, weak and unparsable tags are told apart.
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
		t.Fatalf("If-Match current: %d, ETag %q; want 200, ETag \"2\", version 2", res.Status, res.Header.Get("ETag"))
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
		t.Errorf("after refused writes: %+v, want \"v2\", not completed, version 2", got)
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
		t.Errorf("write without If-Match: %d, ETag %q; want 200, ETag \"5\"", res.Status, res.Header.Get("ETag"))
	}
	// A conditional write to a missing task is still 404, not 412.
	if res := e.doWith("PATCH", "/api/me/tasks/00000000-0000-4000-8000-000000000000", tok, map[string]string{"If-Match": `"1"`}, `{}`); res.Status != 404 {
		t.Errorf("If-Match on a missing task: %d, want 404", res.Status)
	}
	res = e.doWith("DELETE", path, tok, map[string]string{"If-Match": `"5"`}, "")
	if res.Status != 204 {
		t.Errorf("DELETE with the current ETag: %d, want 204", res.Status)
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
				t.Errorf("round %d: status %d, want 200 or 412", round, s)
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

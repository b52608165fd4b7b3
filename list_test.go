package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// expectedOrder sorts tasks as the API documents: by the sort key, ties by
// id, tasks without a due date last either way.
func expectedOrder(tasks []Task, sort string, desc bool) []string {
	sorted := slices.Clone(tasks)
	slices.SortStableFunc(sorted, func(a, b Task) int {
		var c int
		switch sort {
		case "created":
			c = a.CreatedAt.Compare(b.CreatedAt)
		case "updated":
			c = a.UpdatedAt.Compare(b.UpdatedAt)
		case "title":
			c = strings.Compare(a.Title, b.Title)
		case "priority":
			c = cmp.Compare(slices.Index(priorities, a.Priority), slices.Index(priorities, b.Priority))
		case "due_date":
			switch {
			case a.DueDate == nil && b.DueDate == nil:
			case a.DueDate == nil:
				return 1 // last, either way
			case b.DueDate == nil:
				return -1
			default:
				c = a.DueDate.Compare(*b.DueDate)
			}
		}
		if c == 0 {
			c = strings.Compare(a.ID, b.ID)
		}
		if desc {
			c = -c
		}
		return c
	})
	ids := make([]string, len(sorted))
	for i, t := range sorted {
		ids[i] = t.ID
	}
	return ids
}

func ids(tasks []Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}

func TestPagingEveryOrder(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("pager")
	all := seedVaried(t, e, tok, 23)

	for key := range sortKeys {
		sort := string(key)
		for _, order := range []string{"asc", "desc"} {
			want := expectedOrder(all, sort, order == "desc")
			got, pages := pageAll(t, e, tok, "/api/me/tasks?limit=4&sort="+sort+"&order="+order)
			if !slices.Equal(ids(got), want) {
				t.Errorf("sort=%s order=%s: paged order differs from the documented one\n got %v\nwant %v", sort, order, ids(got), want)
			}
			if pages != 6 {
				t.Errorf("sort=%s order=%s: %d pages of 4 for 23 tasks, want 6", sort, order, pages)
			}
			// With a filter too: only pending tasks, still complete and in order.
			var pending []Task
			for _, task := range all {
				if !task.Completed {
					pending = append(pending, task)
				}
			}
			got, _ = pageAll(t, e, tok, "/api/me/tasks?limit=3&status=pending&sort="+sort+"&order="+order)
			if !slices.Equal(ids(got), expectedOrder(pending, sort, order == "desc")) {
				t.Errorf("sort=%s order=%s status=pending: paged order differs from the documented one\n got %v\nwant %v", sort, order, ids(got), expectedOrder(pending, sort, order == "desc"))
			}
		}
	}
	// The default is a full page of 500; a full last page has no next link.
	res := e.do("GET", "/api/me/tasks", tok, nil)
	if n := len(res.tasks(t)); n != 23 || res.Header.Get("Link") != "" {
		t.Errorf("default page: %d tasks, Link %q; want 23 tasks and no Link", n, res.Header.Get("Link"))
	}
	res = e.do("GET", "/api/me/tasks?limit=23", tok, nil)
	if res.Header.Get("Link") != "" {
		t.Errorf("limit equal to the count still links a next page: %q, want no Link", res.Header.Get("Link"))
	}
}

func TestPagingWhileTasksChange(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("mover")
	all := seedVaried(t, e, tok, 20)

	for _, sort := range []string{"created", "title", "due_date"} {
		res := e.do("GET", "/api/me/tasks?limit=5&sort="+sort, tok, nil)
		first := res.tasks(t)
		next := nextLink(t, res.Header)
		// Between pages: a task from the first page and one not yet seen are
		// deleted, and new tasks are created.
		seen := map[string]bool{}
		for _, task := range first {
			seen[task.ID] = true
		}
		var unseen string
		for _, id := range expectedOrder(all, sort, sort == "created") {
			if !seen[id] {
				unseen = id
			}
		}
		for _, id := range []string{first[0].ID, unseen} {
			if res := e.do("DELETE", "/api/me/tasks/"+id, tok, nil); res.Status != 204 {
				t.Fatalf("delete: %d, want 204", res.Status)
			}
		}
		for range 3 {
			e.do("POST", "/api/me/tasks", tok, `{"title":"task 3","due_date":"2026-01-03T00:00:00Z"}`)
		}
		rest, _ := pageAll(t, e, tok, next)
		counts := map[string]int{}
		for _, task := range append(first, rest...) {
			counts[task.ID]++
		}
		for id, n := range counts {
			if n > 1 {
				t.Errorf("sort=%s: task %s seen %d times, want once", sort, id, n)
			}
		}
		// Every task that existed throughout was seen.
		for _, task := range all {
			if task.ID != unseen && task.ID != first[0].ID && counts[task.ID] != 1 {
				t.Errorf("sort=%s: task %s (%q) seen %d times, want once", sort, task.ID, task.Title, counts[task.ID])
			}
		}
		if counts[unseen] != 0 {
			t.Errorf("sort=%s: a task deleted before its page was listed is seen %d times, want 0", sort, counts[unseen])
		}
		all = slices.DeleteFunc(all, func(task Task) bool { return task.ID == unseen || task.ID == first[0].ID })
	}
}

// TestListFiltersAndSorting checks every order and every filter of a list,
// under their own names and under the names that frontends written for
// other backends (FastAPI ones, mostly) give them, and that each bad
// parameter is a 400 that names it.
func TestListFiltersAndSorting(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	t.Run("orders and status", func(t *testing.T) {
		tok := e.token("lister")
		b := createTask(t, e, tok, `{"title":"banana","priority":"low","due_date":"2026-03-01T00:00:00Z"}`)
		a := createTask(t, e, tok, `{"title":"apple","priority":"high","completed":true}`)
		c := createTask(t, e, tok, `{"title":"cherry","priority":"medium","due_date":"2026-01-01T00:00:00Z"}`)
		// Make updated_at differ from created_at order: touch b last.
		e.do("PATCH", "/api/me/tasks/"+b.ID, tok, `{"description":"touched"}`)

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
			if got := listTitles(t, e, tok, "/api/me/tasks"+tt.query); !slices.Equal(got, tt.want) {
				t.Errorf("list %q = %v, want %v", tt.query, got, tt.want)
			}
		}
	})
	t.Run("search, priority, tags and dates", func(t *testing.T) {
		tok := e.token("filters")
		now := time.Now().UTC()
		past, future := now.Add(-48*time.Hour).Format(time.RFC3339), now.Add(48*time.Hour).Format(time.RFC3339)
		groceries := createTask(t, e, tok, map[string]any{"title": "Buy MILK", "tags": []string{"home", "shop"}, "priority": "high", "due_date": past})
		discount := createTask(t, e, tok, map[string]any{"title": "Use 50% off coupon", "description": "code a_b", "tags": []string{"shop"}, "due_date": future})
		done := createTask(t, e, tok, map[string]any{"title": "Paid rent", "completed": true, "tags": []string{"home"}, "due_date": past, "priority": "high"})
		plain := createTask(t, e, tok, map[string]any{"title": "Call 50 people", "priority": "low"})

		for _, tc := range []struct {
			query string
			want  []Task
		}{
			{"q=milk", []Task{groceries}},
			{"q=" + url.QueryEscape("50%"), []Task{discount}}, // % is literal, not "50 and anything"
			{"q=50", []Task{plain, discount}},
			{"q=a_b", []Task{discount}}, // _ is literal, and description is searched
			{"q=a%5Fc", nil},
			{"q=" + url.QueryEscape(`\`), nil},
			{"priority=high", []Task{groceries, done}},
			{"priority=high&status=pending", []Task{groceries}},
			{"tag=shop", []Task{groceries, discount}},
			{"tag=shop&tag=home", []Task{groceries}},
			{"tag=nothing", nil},
			{"due_before=" + url.QueryEscape(now.Format(time.RFC3339)), []Task{groceries, done}},
			{"due_after=" + url.QueryEscape(now.Format(time.RFC3339)), []Task{discount}},
			{"due_after=" + url.QueryEscape(discount.DueDate.Format(time.RFC3339)), []Task{discount}}, // inclusive
			{"due_before=" + url.QueryEscape(discount.DueDate.Format(time.RFC3339)) + "&due_after=" + url.QueryEscape(past), []Task{groceries, done}},
			{"overdue=true", []Task{groceries}},
			{"overdue=false", []Task{plain, done, discount}},
			{"overdue=true&tag=home&q=buy&priority=high&status=pending", []Task{groceries}},
		} {
			var want []string
			for _, task := range tc.want {
				want = append(want, task.Title)
			}
			slices.Sort(want)
			if got := listTitles(t, e, tok, "/api/me/tasks?sort=title&"+tc.query); !slices.Equal(got, want) {
				t.Errorf("?%s = %q, want %q", tc.query, got, want)
			}
		}
	})
	t.Run("other spellings, as frontends for other backends send them", func(t *testing.T) {
		tok := e.token("frontend")
		milk := createTask(t, e, tok, `{"title":"buy milk","priority":"low"}`)
		createTask(t, e, tok, `{"title":"bake bread","priority":"high","completed":true}`)
		createTask(t, e, tok, `{"title":"call mum","priority":"medium","due_date":"2030-01-01T00:00:00Z"}`)
		// Milk is completed and reopened, so that it is the last task updated.
		for range 2 {
			if res := e.do("PATCH", "/api/me/tasks/"+milk.ID+"/complete", tok, `{}`); res.Status != 200 {
				t.Fatalf("toggle milk: %d %s, want 200", res.Status, res.Body)
			}
		}
		for _, c := range []struct {
			query string
			want  []string
		}{
			{"search=milk", []string{"buy milk"}},
			{"search=milk&q=milk", []string{"buy milk"}}, // both, in agreement
			{"sort_by=title", []string{"bake bread", "buy milk", "call mum"}},
			{"sort_by=title&sort_order=desc", []string{"call mum", "buy milk", "bake bread"}},
			{"sort=title&order=DESC", []string{"call mum", "buy milk", "bake bread"}},
			{"sort_by=created_at", []string{"call mum", "bake bread", "buy milk"}},
			{"sort_by=created_at&sort_order=asc", []string{"buy milk", "bake bread", "call mum"}},
			{"sort_by=updated_at&sort_order=asc", []string{"bake bread", "call mum", "buy milk"}}, // milk was toggled last
			{"sort_by=priority", []string{"buy milk", "call mum", "bake bread"}},
			{"sort_by=due_date&sort=due_date&limit=1", []string{"call mum"}},                                             // the others tie, without a due date
			{"sort=created&sort_by=created_at&order=ASC&sort_order=asc", []string{"buy milk", "bake bread", "call mum"}}, // two spellings that agree
			{"completed=true", []string{"bake bread"}},
			{"completed=false&sort=title", []string{"buy milk", "call mum"}},
			{"completed=true&status=completed", []string{"bake bread"}},
			{"priority=all&sort=title", []string{"bake bread", "buy milk", "call mum"}},
			{"_=1732780000&_t=x&sort=title", []string{"bake bread", "buy milk", "call mum"}},
		} {
			if got := listTitles(t, e, tok, "/api/me/tasks?"+c.query); !slices.Equal(got, c.want) {
				t.Errorf("?%s = %q, want %q", c.query, got, c.want)
			}
		}
		for _, q := range []string{"completed=yes", "sort_by=colour", "sort_order=up", "search=" + strings.Repeat("s", 201)} {
			wantBadParam(t, e.do("GET", "/api/me/tasks?"+q, tok, nil), q)
		}
		for _, q := range []string{"status=pending&completed=true", "sort=title&sort_by=priority", "q=a&search=b", "order=asc&sort_order=desc"} {
			if res := e.do("GET", "/api/me/tasks?"+q, tok, nil); res.Status != 400 {
				t.Errorf("?%s: %d, want 400 for parameters that disagree", q, res.Status)
			}
		}
		// Any other parameter is refused, naming the ones a list accepts.
		for _, q := range []string{"filter=done", "page=2", "per_page=10", "user_id=x", "=1"} {
			res := e.do("GET", "/api/me/tasks?"+q, tok, nil)
			name, _, _ := strings.Cut(q, "=")
			if res.Status != 400 {
				t.Errorf("?%s: %d, want 400", q, res.Status)
				continue
			}
			if d := res.problem(t).Detail; !strings.Contains(d, `"`+name+`"`) || !strings.Contains(d, "sort (or sort_by)") {
				t.Errorf("?%s: detail %q, want it to name %s and the accepted parameters", q, d, name)
			}
		}
	})
	tok := e.token("params")
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
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "priority=urgent", "tag=", "tag=" + strings.Repeat("t", 51),
		"due_before=tomorrow", "due_after=2026-01-01", "overdue=yes", "q=" + strings.Repeat("q", 201), "q=%00"} {
		wantBadParam(t, e.do("GET", "/api/me/tasks?"+q, tok, nil), q)
	}
}

func TestStatsAndBulkDelete(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok, other := e.token("st"), e.token("other")
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, body := range []string{
		`{"title":"a","completed":true}`, `{"title":"b","completed":true,"due_date":"` + past + `"}`,
		`{"title":"c","due_date":"` + past + `"}`, `{"title":"d"}`, `{"title":"e","due_date":"2999-01-01T00:00:00Z"}`,
	} {
		e.do("POST", "/api/me/tasks", tok, body)
	}
	e.do("POST", "/api/me/tasks", other, `{"title":"theirs","completed":true}`)

	var st Stats
	res := e.do("GET", "/api/me/tasks/stats", tok, nil)
	if err := json.Unmarshal(res.Body, &st); err != nil || res.Status != 200 {
		t.Fatalf("stats: %d %s, want 200 with the stats", res.Status, res.Body)
	}
	if st != (Stats{Total: 5, Completed: 2, Pending: 3, Overdue: 1}) {
		t.Errorf("stats = %+v, want %+v", st, Stats{Total: 5, Completed: 2, Pending: 3, Overdue: 1})
	}

	for _, q := range []string{"", "?status=all", "?status=pending", "?status=completed&status=pending", "?status=completed&q=a", "?status=COMPLETED", "?completed=false", "?_=1", "?status=completed&completed=false"} {
		if res := e.do("DELETE", "/api/me/tasks"+q, tok, nil); res.Status != 400 {
			t.Errorf("DELETE /tasks%s: status %d, want 400", q, res.Status)
		}
	}
	if n := countTasks(t, e, tok); n != 5 {
		t.Fatalf("refused bulk deletes changed the count to %d, want 5", n)
	}
	res = e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	if res.Status != 200 || strings.TrimSpace(string(res.Body)) != `{"deleted":2}` {
		t.Errorf("bulk delete: %d %s, want 200 with {\"deleted\":2}", res.Status, res.Body)
	}
	if n := countTasks(t, e, tok); n != 3 {
		t.Errorf("after bulk delete: %d tasks, want 3", n)
	}
	if n := countTasks(t, e, other); n != 1 {
		t.Errorf("another user has %d tasks, want 1: their completed task was deleted too", n)
	}
	// Other backends' spelling, with a cache buster: nothing left to delete.
	res = e.do("DELETE", "/api/me/tasks?completed=true&_=1732800000", tok, nil)
	if res.Status != 200 || strings.TrimSpace(string(res.Body)) != `{"deleted":0}` {
		t.Errorf("bulk delete as completed=true: %d %s, want 200 with {\"deleted\":0}", res.Status, res.Body)
	}
	if res := e.do("DELETE", "/api/other/tasks?status=completed", tok, nil); res.Status != 403 {
		t.Errorf("bulk delete on another user's path: %d, want 403", res.Status)
	}
}

// TestListLimitBelowOne checks that ListTasks refuses a Limit below 1, a
// bug in the caller, with an error rather than a panic.
func TestListLimitBelowOne(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	store := NewStore(db, 5*time.Second, testTaskQuota)
	for _, title := range []string{"a", "b"} {
		if _, err := store.CreateTask(ctx, User{ID: "u"}, NewTask{Title: title, Priority: "medium"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []int{0, -1} {
		page, err := store.ListTasks(ctx, "u", ListOptions{Sort: SortCreated, Limit: limit})
		if err == nil || errors.Is(err, ErrBadPosition) {
			t.Errorf("ListTasks(Limit: %d) = %d tasks, %v; want an error other than ErrBadPosition", limit, len(page.Tasks), err)
		}
	}
}

// TestListPlansUseIndexes checks, with EXPLAIN, that every list statement is
// an index scan that needs no sort, for a user with thousands of tasks among
// many more.
func TestListPlansUseIndexes(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	ctx := context.Background()
	for _, stmt := range []string{
		`INSERT INTO users (id) SELECT 'u' || g FROM generate_series(1, 200) g`,
		`INSERT INTO tasks (user_id, title, priority, due_date, completed, tags)
		 SELECT 'u' || (g % 200 + 1), 'task ' || (g % 97), (ARRAY['low','medium','high'])[g % 3 + 1],
		        CASE WHEN g % 5 = 0 THEN NULL ELSE now() + (g % 365) * interval '1 day' END, g % 4 = 0,
		        ARRAY['work', 't' || (g % 7)]
		   FROM generate_series(1, 40000) g`,
		`INSERT INTO tasks (user_id, title, priority, due_date, tags)
		 SELECT 'u7', 'mine ' || (g % 89), (ARRAY['low','medium','high'])[g % 3 + 1],
		        CASE WHEN g % 5 = 0 THEN NULL ELSE now() + (g % 365) * interval '1 day' END,
		        ARRAY['work', 't' || (g % 7)]
		   FROM generate_series(1, 5000) g`,
		`ANALYZE tasks`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	pending := false
	for sort := range sortKeys {
		for _, desc := range []bool{false, true} {
			for _, page := range []bool{false, true} {
				// The filters a user can make slow: a tag every user has, a
				// tag none has, a search; each must still read only the
				// user's own rows, through the user's index.
				for _, filter := range []string{"", "status", "tag", "no such tag", "search"} {
					opts := ListOptions{Sort: sort, Desc: desc, Limit: 100}
					if page {
						first := Task{ID: "00000000-0000-4000-8000-000000000000", CreatedAt: time.Now(), UpdatedAt: time.Now(), Title: "mine 50", Priority: "medium"}
						opts.After = positionOf(sort, desc, first)
					}
					switch filter {
					case "status":
						opts.Completed = &pending
					case "tag":
						opts.Tags = []string{"work"}
					case "no such tag":
						opts.Tags = []string{"nomatch"}
					case "search":
						opts.Query = "nomatch"
					}
					explainList(t, db, opts, filter)
				}
			}
		}
	}
}

// explainList fails the test unless the list statement for opts is an index
// scan that needs no sort (with a filter that can match few rows: a scan
// bounded to the user's rows through the user's index), both as planned for its arguments and as the
// generic plan PostgreSQL caches for a prepared statement after a few runs.
func explainList(t *testing.T, db *sql.DB, opts ListOptions, filter string) {
	t.Helper()
	query, args, err := listQuery("u7", opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	literals := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			literals[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		case []string:
			quoted := make([]string, len(v))
			for j, s := range v {
				quoted[j] = "'" + strings.ReplaceAll(s, "'", "''") + "'"
			}
			literals[i] = "ARRAY[" + strings.Join(quoted, ", ") + "]::text[]"
		default:
			literals[i] = fmt.Sprint(v)
		}
	}
	name := fmt.Sprintf("sort=%s desc=%v page=%v filter=%q", opts.Sort, opts.Desc, opts.After != "", filter)
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		// One transaction, so that it holds one session even behind a pooler.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{"SET LOCAL plan_cache_mode = " + mode, "PREPARE list AS " + query} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				t.Fatalf("%s: %s: %v", name, stmt, err)
			}
		}
		rows, err := tx.QueryContext(ctx, "EXPLAIN EXECUTE list("+strings.Join(literals, ", ")+")")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			rows.Scan(&line)
			plan = append(plan, line)
		}
		rows.Close()
		if _, err := tx.ExecContext(ctx, "DEALLOCATE list"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		switch filter {
		case "", "status":
			if !strings.Contains(text, "Index Scan") || strings.Contains(text, "Sort") || strings.Contains(text, "Seq Scan") {
				t.Errorf("%s, %s: want an index scan without a sort, got the plan:\n%s", name, mode, text)
			}
		default:
			// A filter that matches few rows may be read and sorted whole,
			// as long as what is read is the user's rows only.
			bounded := strings.Contains(text, "Index Cond:")
			for _, line := range plan {
				if strings.Contains(line, "Index Cond:") && !strings.Contains(line, "(user_id = ") {
					bounded = false // an index read across users
				}
			}
			if strings.Contains(text, "Seq Scan") || !bounded {
				t.Errorf("%s, %s: want a read of the user's rows only, through the user's index, got the plan:\n%s", name, mode, text)
			}
		}
	}
}

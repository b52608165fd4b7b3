package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeletedTaskLeavesNoHistory checks that the history keeps nothing of a
// deleted task but the fact of its deletion, deleted alone or in bulk.
func TestDeletedTaskLeavesNoHistory(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("forgetful")
	one := e.do("POST", "/api/me/tasks", tok, `{"title":"secret one"}`).task(t)
	e.do("PATCH", "/api/me/tasks/"+one.ID, tok, `{"description":"secret details"}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"secret two","completed":true}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"kept"}`)
	e.do("DELETE", "/api/me/tasks/"+one.ID, tok, nil)
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	rows, err := e.db.Query(`SELECT event, coalesce(title, '') || coalesce(description, '') FROM task_changes WHERE user_id = 'forgetful' ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var events []string
	for rows.Next() {
		var event, text string
		rows.Scan(&event, &text)
		if strings.Contains(text, "secret") {
			t.Errorf("the history still holds a deleted task: %s %q, want nothing of it", event, text)
		}
		events = append(events, event)
	}
	if want := "task.created,task.deleted,tasks.deleted"; strings.Join(events, ",") != want {
		t.Errorf("history %v, want %s", events, want)
	}
}

// changesAnswer is an answer of GET /api/{user_id}/changes.
type changesAnswer struct {
	Changes []struct {
		Position int64  `json:"position"`
		Event    string `json:"event"`
	} `json:"changes"`
	Next   int64 `json:"next"`
	Reload bool  `json:"reload"`
}

// changesOf reads GET /api/me/changes with the query q.
func changesOf(t *testing.T, e *testEnv, tok, q string) changesAnswer {
	t.Helper()
	res := e.do("GET", "/api/me/changes"+q, tok, nil)
	var a changesAnswer
	if err := json.Unmarshal(res.Body, &a); err != nil || res.Status != 200 {
		t.Fatalf("changes%s: %d %s, want 200", q, res.Status, res.Body)
	}
	return a
}

// TestPositionsAreEachUsers has two users write at once: each one's
// positions are 1, 2, 3... of their own, and no position of theirs, nor
// any answer to one, says anything of the other's writes.
func TestPositionsAreEachUsers(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	a, b := e.token("pos-a"), e.token("pos-b")
	var wg sync.WaitGroup
	for _, tok := range []string{a, b, b} {
		wg.Go(func() {
			for i := range 20 {
				e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"t %d"}`, i))
			}
		})
	}
	wg.Wait()
	for user, want := range map[string]int{a: 20, b: 40} {
		got := changesOf(t, e, user, "?limit=500")
		for i, c := range got.Changes {
			if c.Position != int64(i+1) {
				t.Fatalf("change %d at position %d, want %d: positions 1, 2, 3...", i, c.Position, i+1)
			}
		}
		if len(got.Changes) != want || got.Next != int64(want) {
			t.Errorf("%d changes, next %d; want %d and %d", len(got.Changes), got.Next, want, want)
		}
	}
	// A probe past one's own last position learns one's own last
	// position, whatever the other user writes.
	for _, since := range []string{"21", "41", "1000000"} {
		got := changesOf(t, e, a, "?since="+since)
		if !got.Reload || got.Next != 20 || len(got.Changes) != 0 {
			t.Errorf("since=%s above a's last position: %+v, want reload at a's own 20", since, got)
		}
	}
	e.do("POST", "/api/me/tasks", b, `{"title":"b again"}`)
	if got := changesOf(t, e, a, "?since=20"); got.Reload || got.Next != 20 || len(got.Changes) != 0 {
		t.Errorf("a, caught up, after b writes: %+v, want nothing, next 20", got)
	}
}

// TestDeletesRacingWritersLeaveNoContent deletes tasks while other clients
// patch them, and erases accounts while other clients create tasks in
// them: afterwards, no change of the history holds the content of a task
// that no longer exists.
func TestDeletesRacingWritersLeaveNoContent(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("racer")
	var ids []string
	for i := range 30 {
		ids = append(ids, e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"doomed %d"}`, i)).task(t).ID)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e.do("PATCH", "/api/me/tasks/"+ids[(i*7+w)%len(ids)], tok, fmt.Sprintf(`{"title":"secret %d %d"}`, w, i))
			}
		})
	}
	for _, id := range ids {
		time.Sleep(5 * time.Millisecond)
		e.do("DELETE", "/api/me/tasks/"+id, tok, nil)
	}
	close(stop)
	wg.Wait()

	erased := e.token("erased")
	stop = make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e.do("POST", "/api/me/tasks", erased, fmt.Sprintf(`{"title":"secret %d %d"}`, w, i))
			}
		})
	}
	for range 20 {
		time.Sleep(10 * time.Millisecond)
		if res := e.do("DELETE", "/api/me", erased, nil); res.Status != 204 {
			t.Errorf("DELETE /api/me: %d, want 204", res.Status)
		}
	}
	close(stop)
	wg.Wait()
	e.do("DELETE", "/api/me", erased, nil)

	var kept int
	err := e.db.QueryRow(`SELECT count(*) FROM task_changes c
		 WHERE c.event IN ('task.created', 'task.updated')
		   AND NOT EXISTS (SELECT FROM tasks WHERE tasks.id = c.id)`).Scan(&kept)
	if err != nil {
		t.Fatal(err)
	}
	if kept != 0 {
		t.Errorf("%d changes hold the content of deleted tasks, want none", kept)
	}
}

// TestIdleClientAfterSweep sweeps an idle user's whole history: a client
// with an old position gets reload once, with a position it then resumes
// from, and no reload after it.
func TestIdleClientAfterSweep(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("idle")
	for i := range 3 {
		e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"old %d"}`, i))
	}
	time.Sleep(10 * time.Millisecond)
	if n, err := e.store.SweepChanges(context.Background(), time.Millisecond); err != nil || n != 3 {
		t.Fatalf("sweep: %d, %v; want the 3 changes swept", n, err)
	}
	for _, q := range []string{"", "?since=0", "?since=1"} {
		if got := changesOf(t, e.testEnv, tok, q); !got.Reload || got.Next != 3 {
			t.Errorf("changes%s after the sweep: %+v, want reload with next 3", q, got)
		}
	}
	if got := changesOf(t, e.testEnv, tok, "?since=3"); got.Reload || got.Next != 3 {
		t.Errorf("changes?since=3 after the sweep: %+v, want no reload, next 3", got)
	}
	s := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": "1"})
	ev := s.next()
	if ev.Event != "reload" || ev.ID != 3 {
		t.Fatalf("a stream from position 1 after the sweep: %+v, want reload at id 3", ev)
	}
	s.waitEnded(5 * time.Second)
	r := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": strconv.FormatInt(ev.ID, 10)})
	r.quiet(500 * time.Millisecond) // no reload: the client stops reconnecting
	id := e.do("POST", "/api/me/tasks", tok, `{"title":"new"}`).task(t).ID
	if ev := r.next(); !strings.Contains(ev.Data, id) || ev.ID != 4 {
		t.Errorf("after resuming: %+v, want the creation of %s at id 4", ev, id)
	}
}

// TestHistoryBounded writes more changes than a user's history keeps, at
// the rate limit and faster: one task patched again and again leaves one
// change, the history never holds more than historyPositions, and a
// stream further behind than that gets reload with a position it can
// resume from.
func TestHistoryBounded(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("busy")
	bound, _ := strconv.Atoi(historyPositions)
	u := User{ID: "busy"}
	task, err := e.store.CreateTask(context.Background(), u, NewTask{Title: "patched", Priority: "low"})
	if err != nil {
		t.Fatal(err)
	}
	title := "again"
	for range 300 {
		if _, err := e.store.UpdateTask(context.Background(), u, task.ID, TaskPatch{Title: &title}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	e.db.QueryRow(`SELECT count(*) FROM task_changes WHERE user_id = 'busy'`).Scan(&rows)
	if rows != 1 {
		t.Errorf("a task created and patched 300 times: %d changes kept, want 1", rows)
	}
	behind := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": "1"})
	if ev := behind.next(); ev.Event != "task.updated" || ev.ID != 301 {
		t.Errorf("a stream from position 1: %+v, want the task's latest change at 301", ev)
	}
	behind.close()

	for i := range bound + 200 {
		if _, err := e.store.CreateTask(context.Background(), u, NewTask{Title: fmt.Sprint("t ", i), Priority: "low"}); err != nil {
			t.Fatal(err)
		}
	}
	var last, swept int64
	e.db.QueryRow(`SELECT count(*) FROM task_changes WHERE user_id = 'busy'`).Scan(&rows)
	e.db.QueryRow(`SELECT last, swept_through FROM change_positions WHERE user_id = 'busy'`).Scan(&last, &swept)
	if rows > bound || swept != last-int64(bound) {
		t.Errorf("after %d writes: %d changes kept, horizon %d of %d; want at most %d kept, horizon at %d", last, rows, swept, last, bound, last-int64(bound))
	}
	old := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": "301"})
	if ev := old.next(); ev.Event != "reload" || ev.ID != last {
		t.Errorf("a stream from below the horizon: %+v, want reload at id %d", ev, last)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestEventsStreamAndResume follows one user's stream through every kind
// of change, each event's data byte for byte what the REST API answered,
// then resumes a closed stream with Last-Event-ID: exactly the missed
// changes, in order, then live ones. The polling route gives the same history.
func TestEventsStreamAndResume(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("streamer")
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	if n := e.hub.count("streamer"); n != 1 {
		t.Errorf("hub counts %d streams, want 1", n)
	}

	created := e.do("POST", "/api/me/tasks", tok, `{"title":"one","tags":["a"],"description":"<b>&"}`)
	ev := s.next()
	if ev.Event != "task.created" || ev.Data != strings.TrimSuffix(string(created.Body), "\n") || ev.ID <= 0 {
		t.Errorf("create: event %+v, want task.created with the REST answer %s and an id above 0", ev, created.Body)
	}
	id := created.task(t).ID
	updated := e.do("PATCH", "/api/me/tasks/"+id, tok, `{"title":"uno"}`)
	if ev2 := s.next(); ev2.Event != "task.updated" || ev2.Data != strings.TrimSuffix(string(updated.Body), "\n") || ev2.ID <= ev.ID {
		t.Errorf("update: event %+v, want task.updated after id %d with the REST answer %s", ev2, ev.ID, updated.Body)
	}
	completed := e.do("PATCH", "/api/me/tasks/"+id+"/complete", tok, nil)
	if ev := s.next(); ev.Event != "task.updated" || ev.Data != strings.TrimSuffix(string(completed.Body), "\n") {
		t.Errorf("complete: event %+v, want task.updated with the REST answer %s", ev, completed.Body)
	}
	other := e.do("POST", "/api/me/tasks", tok, `{"title":"two"}`).task(t)
	s.next()
	e.do("DELETE", "/api/me/tasks/"+other.ID, tok, nil)
	if ev := s.next(); ev.Event != "task.deleted" || ev.Data != `{"id":"`+other.ID+`"}` {
		t.Errorf("delete: event %+v, want task.deleted of %s", ev, other.ID)
	}
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	last := s.next()
	if last.Event != "tasks.deleted" || last.Data != `{"ids":["`+id+`"]}` {
		t.Errorf("bulk delete: event %+v, want tasks.deleted of [%s]", last, id)
	}
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil) // deletes nothing: no event
	s.quiet(300 * time.Millisecond)
	s.close()

	// Missed while away.
	var missed []string
	for i := range 3 {
		missed = append(missed, e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"missed %d"}`, i)).task(t).ID)
	}
	r := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": strconv.FormatInt(last.ID, 10)})
	prev := last.ID
	for i, want := range missed {
		ev := r.next()
		var task Task
		json.Unmarshal([]byte(ev.Data), &task)
		if ev.Event != "task.created" || task.ID != want || ev.ID <= prev {
			t.Errorf("replayed event %d: %+v, want task.created of %s after id %d", i, ev, want, prev)
		}
		prev = ev.ID
	}
	live := e.do("POST", "/api/me/tasks", tok, `{"title":"live"}`).task(t)
	if ev := r.next(); !strings.Contains(ev.Data, live.ID) || ev.ID <= prev {
		t.Errorf("live after replay: %+v, want task %s after id %d", ev, live.ID, prev)
	}
	r.quiet(300 * time.Millisecond)

	// ?since= does the same as Last-Event-ID.
	q := openStream(t, e.srv.URL, "/api/me/events?since="+strconv.FormatInt(prev, 10), tok, nil)
	if ev := q.next(); !strings.Contains(ev.Data, live.ID) {
		t.Errorf("?since=: %+v, want task %s", ev, live.ID)
	}

	// The polling route.
	res := e.do("GET", "/api/me/changes?since="+strconv.FormatInt(last.ID, 10)+"&limit=2", tok, nil)
	var page struct {
		Changes []struct {
			Position int64  `json:"position"`
			Event    string `json:"event"`
			Task     *Task  `json:"task"`
		} `json:"changes"`
		Next   int64 `json:"next"`
		Reload bool  `json:"reload"`
	}
	if err := json.Unmarshal(res.Body, &page); err != nil || res.Status != 200 {
		t.Fatalf("changes: %d %s, want 200 with a page of changes", res.Status, res.Body)
	}
	if len(page.Changes) != 2 || page.Changes[0].Task == nil || page.Changes[0].Task.ID != missed[0] ||
		page.Changes[1].Task.ID != missed[1] || page.Next != page.Changes[1].Position {
		t.Errorf("changes page: %s, want the missed tasks %v and next at the second one's position", res.Body, missed)
	}
	if res := e.do("GET", "/api/me/changes?since=abc", tok, nil); res.Status != 400 {
		t.Errorf("since=abc: %d, want 400", res.Status)
	}

	// A position older than the window: reload, with the id to resume from.
	if _, err := e.db.Exec(`UPDATE change_positions SET swept_through = $1 WHERE user_id = 'streamer'`, last.ID); err != nil {
		t.Fatal(err)
	}
	old := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": "1"})
	if ev := old.next(); ev.Event != "reload" || ev.ID != latestPosition(t, e, "streamer") {
		t.Errorf("resume from a swept position: %+v, want reload at the latest position", ev)
	}
	old.waitEnded(5 * time.Second)
	if res := e.do("GET", "/api/me/changes?since=1", tok, nil); !strings.Contains(string(res.Body), `"reload":true`) {
		t.Errorf("changes from a swept position: %s, want \"reload\":true", res.Body)
	}
}

// latestPosition returns the user's latest position, read from the database.
func latestPosition(t *testing.T, e *liveEnv, userID string) int64 {
	t.Helper()
	var p int64
	if err := e.db.QueryRow(`SELECT last FROM change_positions WHERE user_id = $1`, userID).Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEventsAccountDeleted ends the stream with account.deleted.
func TestEventsAccountDeleted(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("leaving")
	e.do("POST", "/api/me/tasks", tok, `{"title":"x"}`)
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	e.do("DELETE", "/api/me", tok, nil)
	if ev := s.next(); ev.Event != "account.deleted" {
		t.Errorf("after DELETE /api/me: %+v, want account.deleted", ev)
	}
	s.waitEnded(5 * time.Second)
	var n int
	e.db.QueryRow(`SELECT count(*) FROM task_changes WHERE user_id = 'leaving' AND event <> 'account.deleted'`).Scan(&n)
	if n != 0 {
		t.Errorf("%d changes of a deleted account are kept, want 0", n)
	}
}

// TestEventsCapsAndOverflow refuses streams past the caps with 429, and
// sends reload to, then closes, a stream that falls more than Buffer changes
// behind, while another user's stream goes on.
func TestEventsCapsAndOverflow(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	cfg.PerUser, cfg.MaxStreams, cfg.Buffer = 2, 3, 5
	e := newLiveEnv(t, cfg)
	a, b := e.token("capped"), e.token("bystander")
	sa := openStream(t, e.srv.URL, "/api/me/events", a, nil)
	openStream(t, e.srv.URL, "/api/me/events", a, nil)
	if _, status := dialStream(t, e.srv.URL, "/api/me/events", a, nil); status != 429 {
		t.Errorf("third stream of a user: %d, want 429", status)
	}
	sb := openStream(t, e.srv.URL, "/api/me/events", b, nil)
	if _, status := dialStream(t, e.srv.URL, "/api/me/events", b, nil); status != 429 {
		t.Errorf("a stream past the instance's cap: %d, want 429", status)
	}

	// Ten changes of "capped" in one transaction: they arrive at once.
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := tx.Exec(createTaskSQL, "capped", "", "", fmt.Sprint("bulk ", i), nil, false, "low", nil, []string{}, testTaskQuota); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if ev := sa.next(); ev.Event != "reload" || ev.ID == 0 {
		t.Errorf("a stream 10 changes behind with a buffer of 5: %+v, want reload with an id", ev)
	}
	sa.waitEnded(5 * time.Second)
	e.do("POST", "/api/me/tasks", b, `{"title":"unaffected"}`)
	if ev := sb.next(); ev.Event != "task.created" {
		t.Errorf("the other user's stream: %+v, want task.created", ev)
	}
}

// TestEventsSurviveServerTimeouts keeps a stream open for longer than the
// server's ReadTimeout and WriteTimeout: each write has its own deadline.
func TestEventsSurviveServerTimeouts(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	strict := httptest.NewUnstartedServer(e.srv.Config.Handler)
	strict.Config.ReadTimeout, strict.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	strict.Start()
	t.Cleanup(strict.Close)
	t.Cleanup(e.hub.close)
	tok := e.token("patient")
	s := openStream(t, strict.URL, "/api/me/events", tok, nil)
	// Past four times the server's timeouts, the stream still gets its
	// heartbeats: one written after that time is the proof.
	time.Sleep(1200 * time.Millisecond)
	for len(s.pings) > 0 {
		<-s.pings
	}
	select {
	case <-s.pings:
	case <-s.ended:
		t.Fatal("the stream ended after the server's timeouts, want it open")
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat within 5 s once the server's timeouts had passed, want one every 200 ms")
	}
	e.do("POST", "/api/me/tasks", tok, `{"title":"late"}`)
	if ev := s.next(); ev.Event != "task.created" {
		t.Errorf("after the server's timeouts: %+v, want task.created", ev)
	}
}

// TestEventsIsolation runs random writes of several users against two
// streams each: every stream gets exactly its user's changes, in order.
func TestEventsIsolation(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	users := []string{"iso-a", "iso-b", "iso-c", "iso-d"}
	streams := map[string][]*sseStream{}
	tokens := map[string]string{}
	for _, u := range users {
		tokens[u] = e.token(u)
		streams[u] = []*sseStream{
			openStream(t, e.srv.URL, "/api/me/events", tokens[u], nil),
			openStream(t, e.srv.URL, "/api/"+u+"/events", tokens[u], nil),
		}
	}
	want := map[string][]string{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range 15 {
				u := users[r.IntN(len(users))]
				task := e.do("POST", "/api/me/tasks", tokens[u], fmt.Sprintf(`{"title":"%s %d"}`, u, r.IntN(1000))).task(t)
				mu.Lock()
				want[u] = append(want[u], "created "+task.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, u := range users {
		for i, s := range streams[u] {
			got := map[string]bool{}
			var prev int64
			for range want[u] {
				ev := s.next()
				var task Task
				if err := json.Unmarshal([]byte(ev.Data), &task); err != nil || task.UserID != u || ev.ID <= prev {
					t.Fatalf("stream %d of %s got %+v, want a task of %s after id %d", i, u, ev, u, prev)
				}
				prev = ev.ID
				got["created "+task.ID] = true
			}
			for _, w := range want[u] {
				if !got[w] {
					t.Errorf("stream %d of %s lacks %s, want every change of its user", i, u, w)
				}
			}
			s.quiet(100 * time.Millisecond)
		}
	}
	// The polling route shows no one else's changes either.
	res := e.do("GET", "/api/me/changes?limit=500", tokens["iso-a"], nil)
	for _, u := range users[1:] {
		if strings.Contains(string(res.Body), u) {
			t.Errorf("iso-a's changes mention %s, want none of another user's", u)
		}
	}
}

// TestEventsAcrossInstances runs two taskapi processes on one database: a
// write through A reaches a stream on B, and a ticket from A opens a stream
// on B. B ends its streams at once on SIGTERM.
func TestEventsAcrossInstances(t *testing.T) {
	t.Parallel()
	dbURL := newEmptyTestDB(t)
	start := func() (*exec.Cmd, string) {
		cmd, addr := startProcess(t, dbURL, "SHUTDOWN_DRAIN=0s", "SHUTDOWN_TIMEOUT=10s", "EVENTS_HEARTBEAT=1s")
		return cmd, "http://" + addr
	}
	_, a := start()
	cmdB, b := start()
	tok := mintTestToken(t, "roamer")

	s := openStream(t, b, "/api/me/events", tok, nil)
	created := send(t, http.DefaultClient, "POST", a+"/api/me/tasks", tok, nil, `{"title":"from A"}`)
	if ev := s.next(); ev.Event != "task.created" || ev.Data != strings.TrimSuffix(string(created.Body), "\n") {
		t.Errorf("on B, after a create on A: %+v, want task.created with A's answer %s", ev, created.Body)
	}
	select {
	case <-s.pings:
	case <-time.After(3 * time.Second):
		t.Error("no heartbeat within 3 s")
	}

	res := send(t, http.DefaultClient, "POST", a+"/api/me/events/ticket", tok, nil, "")
	var tk struct{ Ticket string }
	json.Unmarshal(res.Body, &tk)
	viaTicket := openStream(t, b, "/api/roamer/events?ticket="+tk.Ticket, "", nil)
	send(t, http.DefaultClient, "POST", a+"/api/me/tasks", tok, nil, `{"title":"again"}`)
	if ev := viaTicket.next(); ev.Event != "task.created" {
		t.Errorf("ticket from A on B: %+v, want task.created", ev)
	}
	s.next()

	// The streams end at SIGTERM, not at the end of the drain or the
	// shutdown timeout (10 s).
	cmdB.Process.Signal(syscall.SIGTERM)
	s.waitEnded(5 * time.Second)
	viaTicket.waitEnded(5 * time.Second)
}

// TestEventsClientLeaves checks that a stream whose client closes the
// connection gives its place back at once, not at its next heartbeat: a
// user who reloads a page a few times must not be held to
// EVENTS_MAX_PER_USER by streams nobody reads.
func TestEventsClientLeaves(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	cfg.Heartbeat, cfg.PerUser = time.Hour, 2
	e := newLiveEnv(t, cfg)
	tok := e.token("reloader")
	for range 5 {
		s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
		s.close()
		// With an hour's heartbeat, waitFor's bound of seconds is proof
		// enough that the place came back at once.
		waitFor(t, func() bool { return e.hub.count("reloader") == 0 })
	}
}

// TestEventsClientStopsReading checks that a client that stops reading
// its stream is let go once a write has waited EVENTS_WRITE_TIMEOUT, and
// never holds up another user's stream meanwhile.
func TestEventsClientStopsReading(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	cfg.Buffer = 10_000 // the write timeout, not the buffer, ends the stream
	e := newLiveEnv(t, cfg)
	tok, other := e.token("stalled"), e.token("bystander")

	// A client with a small receive window that sends its request and
	// never reads.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).SetReadBuffer(2048)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	waitFor(t, func() bool { return e.hub.count("stalled") == 1 })
	watcher := openStream(t, e.srv.URL, "/api/me/events", other, nil)

	// Writes go on until the stream is let go: its socket's buffers fill
	// after some tens of events, and the next write then waits for the
	// write timeout. How many creates fit in that time depends on the
	// machine, so the test bounds the wait in time, not in creates.
	long := strings.Repeat("x", maxDescription)
	deadline := time.Now().Add(15 * cfg.WriteTimeout)
	for i := 0; e.hub.count("stalled") == 1; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d events over %v, and the stream of a client that reads none is still open; want it ended after its write timeout (%v)",
				i, 15*cfg.WriteTimeout, cfg.WriteTimeout)
		}
		if res := e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"unread %d","description":"%s"}`, i, long)); res.Status != 201 {
			t.Fatalf("create %d: %d %s, want 201", i, res.Status, res.Body)
		}
		if i%100 == 0 { // meanwhile another user's stream is served at once
			id := e.do("POST", "/api/me/tasks", other, `{"title":"seen"}`).task(t).ID
			if ev := watcher.next(); !strings.Contains(ev.Data, id) {
				t.Fatalf("the bystander's stream: %+v, want the creation of %s", ev, id)
			}
		}
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testEventsConfig is the hub configuration of the tests, with a short
// heartbeat.
func testEventsConfig() eventsConfig {
	return eventsConfig{Heartbeat: 200 * time.Millisecond, PerUser: 10, MaxStreams: 100, Buffer: 64,
		WriteTimeout: 2 * time.Second, Retention: 24 * time.Hour}
}

// liveEnv is a running API with live updates over a test database.
type liveEnv struct {
	*testEnv
	hub       *eventHub
	listenApp string // the application_name of the hub's LISTEN connection
}

// newLiveEnv starts the API with a hub listening on the test database.
func newLiveEnv(t *testing.T, cfg eventsConfig) *liveEnv {
	t.Helper()
	db, url := newTestDB(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := NewStore(db, 5*time.Second, testTaskQuota)
	verifier := NewVerifier(VerifierConfig{Secret: testSecret}, logger)
	hub := newEventHub(cfg, newTicketCodec([]byte("test events key")))
	app := "listen_" + strings.ToLower(rand.Text())[:12]
	if err := hub.listen(context.Background(), withParam(testListenURL(url), "application_name", app), logger); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newServer(logger, "test", store, verifier, guards{}, newCursorCodec([]byte("k")), nil, hub))
	t.Cleanup(srv.Close)
	t.Cleanup(hub.close) // runs first: streams end, so that srv.Close does not wait for them
	return &liveEnv{testEnv: &testEnv{t: t, srv: srv, db: db, store: store, verifier: verifier, logs: logs, secret: testSecret},
		hub: hub, listenApp: app}
}

// sseEvent is one server-sent event as a client reads it.
type sseEvent struct {
	ID    int64
	Event string
	Data  string
}

// sseStream reads the events of one stream in the background.
type sseStream struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
	pings  chan struct{}
	ended  chan struct{} // closed when the server ends the stream
	err    error         // why reading ended, nil for a proper end; set before ended is closed
}

// openStream opens GET path with the token (if any) and headers, and
// fails the test unless it is a 200 event stream.
func openStream(t testing.TB, base, path, token string, headers map[string]string) *sseStream {
	t.Helper()
	resp, status := dialStream(t, base, path, token, headers)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET %s: Cache-Control %q, want no-store", path, cc)
	}
	if resp.Header.Get("X-Request-ID") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: the headers every answer has are missing: %v", path, resp.Header)
	}
	if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Errorf("GET %s: Transfer-Encoding %v, want chunked", path, resp.TransferEncoding)
	}
	s := &sseStream{t: t, resp: resp, events: make(chan sseEvent, 10_000), pings: make(chan struct{}, 10_000), ended: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(resp.Body)
		defer func() { s.err = sc.Err() }()
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case line == ": ping":
				s.pings <- struct{}{}
			case strings.HasPrefix(line, "id: "):
				ev.ID, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.Data = line[6:]
			}
		}
	}()
	return s
}

// dialStream sends the request of a stream and returns the response, whose
// body is left open, and its status.
func dialStream(t testing.TB, base, path, token string, headers map[string]string) (*http.Response, int) {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	}
	return resp, resp.StatusCode
}

// next returns the next event, failing the test after a wait.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-s.ended:
		select {
		case ev := <-s.events:
			return ev
		default:
		}
		s.t.Fatal("the stream ended while an event was expected")
	case <-time.After(15 * time.Second):
		s.t.Fatal("no event within 15 s")
	}
	return sseEvent{}
}

// quiet fails the test if an event arrives within d.
func (s *sseStream) quiet(d time.Duration) {
	s.t.Helper()
	select {
	case ev := <-s.events:
		s.t.Errorf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

// close ends the stream from the client's side.
func (s *sseStream) close() { s.resp.Body.Close() }

// waitEnded fails the test unless the server ends the stream within d.
func (s *sseStream) waitEnded(d time.Duration) {
	s.t.Helper()
	select {
	case <-s.ended:
		if s.err != nil {
			s.t.Errorf("the stream ended without its last chunk: %v", s.err)
		}
	case <-time.After(d):
		s.t.Fatalf("the stream was still open after %v", d)
	}
}

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
		t.Errorf("create: event %+v; REST answered %s", ev, created.Body)
	}
	id := created.task(t).ID
	updated := e.do("PATCH", "/api/me/tasks/"+id, tok, `{"title":"uno"}`)
	if ev2 := s.next(); ev2.Event != "task.updated" || ev2.Data != strings.TrimSuffix(string(updated.Body), "\n") || ev2.ID <= ev.ID {
		t.Errorf("update: event %+v after id %d; REST answered %s", ev2, ev.ID, updated.Body)
	}
	completed := e.do("PATCH", "/api/me/tasks/"+id+"/complete", tok, nil)
	if ev := s.next(); ev.Event != "task.updated" || ev.Data != strings.TrimSuffix(string(completed.Body), "\n") {
		t.Errorf("complete: event %+v", ev)
	}
	other := e.do("POST", "/api/me/tasks", tok, `{"title":"two"}`).task(t)
	s.next()
	e.do("DELETE", "/api/me/tasks/"+other.ID, tok, nil)
	if ev := s.next(); ev.Event != "task.deleted" || ev.Data != `{"id":"`+other.ID+`"}` {
		t.Errorf("delete: event %+v", ev)
	}
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	last := s.next()
	if last.Event != "tasks.deleted" || last.Data != `{"ids":["`+id+`"]}` {
		t.Errorf("bulk delete: event %+v", last)
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
		t.Errorf("live after replay: %+v", ev)
	}
	r.quiet(300 * time.Millisecond)

	// ?since= does the same as Last-Event-ID.
	q := openStream(t, e.srv.URL, "/api/me/events?since="+strconv.FormatInt(prev, 10), tok, nil)
	if ev := q.next(); !strings.Contains(ev.Data, live.ID) {
		t.Errorf("?since=: %+v", ev)
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
		t.Fatalf("changes: %d %s", res.Status, res.Body)
	}
	if len(page.Changes) != 2 || page.Changes[0].Task == nil || page.Changes[0].Task.ID != missed[0] ||
		page.Changes[1].Task.ID != missed[1] || page.Next != page.Changes[1].Position {
		t.Errorf("changes page: %s", res.Body)
	}
	if res := e.do("GET", "/api/me/changes?since=abc", tok, nil); res.Status != 400 {
		t.Errorf("since=abc: %d", res.Status)
	}

	// A position older than the window: reload, with the id to resume from.
	if _, err := e.db.Exec(`INSERT INTO task_changes_horizon (swept_through) VALUES ($1)`, last.ID); err != nil {
		t.Fatal(err)
	}
	old := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": "1"})
	if ev := old.next(); ev.Event != "reload" || ev.ID != latestPosition(t, e, "streamer") {
		t.Errorf("resume from a swept position: %+v", ev)
	}
	old.waitEnded(5 * time.Second)
	if res := e.do("GET", "/api/me/changes?since=1", tok, nil); !strings.Contains(string(res.Body), `"reload":true`) {
		t.Errorf("changes from a swept position: %s", res.Body)
	}
}

// latestPosition returns the user's latest position, read from the database.
func latestPosition(t *testing.T, e *liveEnv, userID string) int64 {
	t.Helper()
	var p int64
	if err := e.db.QueryRow(`SELECT max(position) FROM task_changes WHERE user_id = $1`, userID).Scan(&p); err != nil {
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
		t.Errorf("after DELETE /api/me: %+v", ev)
	}
	s.waitEnded(5 * time.Second)
	var n int
	e.db.QueryRow(`SELECT count(*) FROM task_changes WHERE user_id = 'leaving' AND event <> 'account.deleted'`).Scan(&n)
	if n != 0 {
		t.Errorf("%d changes of a deleted account are kept", n)
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
		t.Errorf("the other user's stream: %+v", ev)
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
	time.Sleep(1200 * time.Millisecond)
	if len(s.pings) < 3 {
		t.Errorf("%d heartbeats in 1.2 s, want one every 200 ms", len(s.pings))
	}
	e.do("POST", "/api/me/tasks", tok, `{"title":"late"}`)
	if ev := s.next(); ev.Event != "task.created" {
		t.Errorf("after the server's timeouts: %+v", ev)
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
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
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
					t.Fatalf("stream %d of %s got %+v", i, u, ev)
				}
				prev = ev.ID
				got["created "+task.ID] = true
			}
			for _, w := range want[u] {
				if !got[w] {
					t.Errorf("stream %d of %s lacks %s", i, u, w)
				}
			}
			s.quiet(100 * time.Millisecond)
		}
	}
	// The polling route shows no one else's changes either.
	res := e.do("GET", "/api/me/changes?limit=500", tokens["iso-a"], nil)
	for _, u := range users[1:] {
		if strings.Contains(string(res.Body), u) {
			t.Errorf("iso-a's changes mention %s", u)
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
		t.Errorf("on B, after a create on A: %+v", ev)
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
		t.Errorf("ticket from A on B: %+v", ev)
	}
	s.next()

	began := time.Now()
	cmdB.Process.Signal(syscall.SIGTERM)
	s.waitEnded(5 * time.Second)
	viaTicket.waitEnded(5 * time.Second)
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("streams ended %v after SIGTERM", d)
	}
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
	for i := range 5 {
		s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
		s.close()
		began := time.Now()
		waitFor(t, func() bool { return e.hub.count("reloader") == 0 })
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("stream %d: its place was given back %v after the client left", i, d)
		}
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

	long := strings.Repeat("x", maxDescription)
	for i := 0; e.hub.count("stalled") == 1; i++ {
		if i == 2000 {
			t.Fatal("2,000 events, and the stream of a client that reads none is still open")
		}
		if res := e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"unread %d","description":"%s"}`, i, long)); res.Status != 201 {
			t.Fatalf("create %d: %d %s", i, res.Status, res.Body)
		}
		if i%100 == 0 { // meanwhile another user's stream is served at once
			id := e.do("POST", "/api/me/tasks", other, `{"title":"seen"}`).task(t).ID
			if ev := watcher.next(); !strings.Contains(ev.Data, id) {
				t.Fatalf("the bystander's stream: %+v", ev)
			}
		}
	}
}

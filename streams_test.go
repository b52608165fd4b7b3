package main

// The tests of this file hold what an event stream may cost an instance,
// whatever its client does: send junk, read slowly, never read, ask with
// HEAD or HTTP/1.0, hold an expiring token, or stay while the instance
// shuts down.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawStream opens GET path (HTTP/1.1 unless proto says otherwise) on a
// connection of its own, which the caller reads and closes.
func rawStream(t *testing.T, base, path, proto, token string) net.Conn {
	t.Helper()
	return rawRequest(t, base, "GET "+path+" "+proto, token, "")
}

// rawRequest sends the request line, the token and the extra header lines
// (each ending in CRLF) on a connection of its own, which the caller reads
// and closes; it is closed when the test ends.
func rawRequest(t *testing.T, base, line, token, extra string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "%s\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n", line, token, extra)
	return conn
}

// seedChanges records n task.created changes of userID, each with a
// description of 1,000 characters, straight into the history, at the
// user's next n positions.
func seedChanges(t *testing.T, e *liveEnv, userID string, n int) {
	t.Helper()
	_, err := e.db.Exec(`WITH pos AS (
		INSERT INTO change_positions AS p (user_id, last) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET last = p.last + EXCLUDED.last RETURNING last)
		INSERT INTO task_changes (user_id, position, event, id, title, description, completed, priority, tags, created_at, updated_at, version)
		SELECT $1, pos.last - $2 + g, 'task.created', gen_random_uuid(), 'task ' || g, repeat('x', 1000), false, 'medium', '{}', now(), now(), 1
		  FROM pos, generate_series(1, $2) AS g`, userID, n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestEventsClientBytesEndStream checks that a client that sends anything
// on an open stream ends it: a stream's client has nothing more to say, and
// reading what it sends would cost the instance CPU for nothing.
func TestEventsClientBytesEndStream(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	conn := rawStream(t, e.srv.URL, "/api/me/events", "HTTP/1.1", e.token("chatty"))
	waitFor(t, func() bool { return e.hub.count("chatty") == 1 })
	if _, err := conn.Write([]byte(strings.Repeat("junk", 1000))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.hub.count("chatty") == 0 })
}

// slowReader reads conn at about rate bytes a second, counting the events
// it reads, until the connection ends; done is closed then.
type slowReader struct {
	mu     sync.Mutex
	events int
	done   chan struct{}
}

func readSlowly(conn net.Conn, rate int) *slowReader {
	r := &slowReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, rate/50)
		var carry string
		for {
			n, err := conn.Read(buf)
			text := carry + string(buf[:n])
			r.mu.Lock()
			r.events += strings.Count(text, "event: task.created")
			r.mu.Unlock()
			carry = text[max(0, len(text)-32):]
			if err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // the client's pace
		}
	}()
	return r
}

func (r *slowReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events
}

// TestEventsReplayEndsInTime checks that a stream replaying a long history
// to a slow client stops between two events once its token expires, or the
// instance shuts down, instead of going on until the replay is done.
func TestEventsReplayEndsInTime(t *testing.T) {
	t.Parallel()
	const changes = 2000 // about 2.5 MB: some 25 s at the client's 100 KB/s
	cfg := testEventsConfig()
	cfg.WriteTimeout = time.Minute // the client reads, if slowly
	cfg.Heartbeat = time.Hour

	t.Run("token expires", func(t *testing.T) {
		t.Parallel()
		e := newLiveEnv(t, cfg)
		seedChanges(t, e, "expiring", changes)
		tok, err := mintToken(testSecret, User{ID: "expiring"}, "", "", 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		r := readSlowly(rawStream(t, e.srv.URL, "/api/me/events?since=0", "HTTP/1.1", tok), 100<<10)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("the stream of a 3 s token still replays after 20 s (%d events read); want it ended at the token's expiry", r.count())
		}
		if n := r.count(); n >= changes {
			t.Errorf("the whole history of %d changes was replayed in %v after the token expired, want the replay cut at expiry", n, time.Since(began))
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		e := newLiveEnv(t, cfg)
		seedChanges(t, e, "staying", changes)
		r := readSlowly(rawStream(t, e.srv.URL, "/api/me/events?since=0", "HTTP/1.1", e.token("staying")), 100<<10)
		waitFor(t, func() bool { return r.count() > 0 })
		closed := make(chan struct{})
		go func() { e.hub.closeAndWait(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("closeAndWait has waited 20 s for a stream replaying to a slow client (%d events read); want it ended at once", r.count())
		}
		<-r.done
		if n := r.count(); n >= changes {
			t.Errorf("the whole history of %d changes was replayed after the hub closed, want the replay cut", n)
		}
	})
}

// TestEventsHead checks that HEAD on the stream route answers the headers
// alone and holds nothing: no place in the hub, and the connection serves
// the client's next request.
func TestEventsHead(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	conn := rawRequest(t, e.srv.URL, "HEAD /api/me/events HTTP/1.1", e.token("header"), "")
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatalf("HEAD /api/me/events: %v, want an answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD /api/me/events: %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if n := e.hub.count(""); n != 0 {
		t.Errorf("a HEAD holds %d places in the hub, want 0", n)
	}
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the request after a HEAD on the same connection: %v, want an answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz after a HEAD: %d, want 200", resp.StatusCode)
	}
}

// TestEventsParameters checks that the stream refuses parameters it does
// not know, as /changes does, instead of starting from now, and that a
// token accepted within the clock leeway, but expired, is a 401, not a
// stream that ends at once.
func TestEventsParameters(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("params")
	// A token that expires soon: a stream opened by mistake ends, and its
	// status is reported, instead of the test waiting for the token's hour.
	short, err := mintToken(testSecret, User{ID: "params"}, "", "", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"last_event_id=5", "since=0&limit=5", "sinse=3"} {
		res := e.do("GET", "/api/me/events?"+q, short, nil)
		wantBadParam(t, res, q[strings.LastIndex(q, "&")+1:])
	}
	expired, err := mintToken(testSecret, User{ID: "params"}, "", "", -5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res := e.do("GET", "/tasks", expired, nil); res.Status != 404 {
		t.Fatalf("GET /tasks: %d", res.Status)
	}
	if res := e.do("GET", "/api/me/tasks", expired, nil); res.Status != 200 {
		t.Fatalf("GET /api/me/tasks with a token 5 s past exp: %d, want 200 (within the clock leeway)", res.Status)
	}
	res := e.do("GET", "/api/me/events", expired, nil)
	if res.Status != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("GET /api/me/events with a token 5 s past exp: %d %q, want 401 invalid_token", res.Status, res.Header.Get("WWW-Authenticate"))
	}
	// The stream then resumes where EventSource polyfills say.
	first := createTask(t, e.testEnv, tok, `{"title":"first"}`)
	createTask(t, e.testEnv, tok, `{"title":"second"}`)
	s := openStream(t, e.srv.URL, "/api/me/events?since=0", tok, nil)
	ev := s.next()
	s.close()
	s = openStream(t, e.srv.URL, fmt.Sprintf("/api/me/events?since=0&lastEventId=%d", ev.ID), tok, nil)
	if ev := s.next(); !strings.Contains(ev.Data, `"second"`) || strings.Contains(ev.Data, first.ID) {
		t.Errorf("resumed with lastEventId: %+v, want the second task's creation", ev)
	}
}

// TestEventsHTTP10 checks that an HTTP/1.0 stream is taken over from
// net/http like any other, its body the events until the connection closes.
func TestEventsHTTP10(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hijacked := 0
	e := newLiveEnvWith(t, testEventsConfig(), liveOptions{server: func(s *httptest.Server) {
		s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
			if state == http.StateHijacked {
				mu.Lock()
				hijacked++
				mu.Unlock()
			}
		}
	}})
	tok := e.token("old")
	conn := rawStream(t, e.srv.URL, "/api/me/events", "HTTP/1.0", tok)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil || status != "HTTP/1.0 200 OK\r\n" {
		t.Fatalf("status line %q (%v), want HTTP/1.0 200 OK", status, err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return hijacked == 1 })
	id := createTask(t, e.testEnv, tok, `{"title":"over 1.0"}`).ID
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the HTTP/1.0 stream: %v, want the creation of %s", err, id)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, id) {
			break
		}
	}
}

// panicOnMessage is a log handler that panics on one message.
type panicOnMessage struct {
	slog.Handler
	msg string
}

func (h panicOnMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		panic("log handler: " + h.msg)
	}
	return h.Handler.Handle(ctx, r)
}

func (h panicOnMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return panicOnMessage{h.Handler.WithAttrs(as), h.msg}
}

func (h panicOnMessage) WithGroup(name string) slog.Handler {
	return panicOnMessage{h.Handler.WithGroup(name), h.msg}
}

// TestEventsStreamPanic checks that a panic in a stream's goroutine, which
// runs outside net/http and recoverPanics, is logged and ends that stream
// alone; without recovery it would end the process, and this test binary.
func TestEventsStreamPanic(t *testing.T) {
	t.Parallel()
	e := newLiveEnvWith(t, testEventsConfig(), liveOptions{handler: func(h slog.Handler) slog.Handler {
		return panicOnMessage{h, "event stream ended"}
	}})
	s := openStream(t, e.srv.URL, "/api/me/events", e.token("panicky"), nil)
	s.close()
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "event stream panicked") })
	waitFor(t, func() bool { return e.hub.count("") == 0 })
	if res := e.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Errorf("GET /healthz after a stream panicked: %d, want 200", res.Status)
	}
}

// TestHubCloseWaitsForOpeningStream checks that closeAndWait waits for a
// stream that has subscribed but not yet taken its connection over, and
// that no stream subscribes once the hub is closed.
func TestHubCloseWaitsForOpeningStream(t *testing.T) {
	t.Parallel()
	hub := newEventHub(testEventsConfig(), nil)
	sub, err := hub.subscribe("opening")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { hub.closeAndWait(); close(closed) }()
	<-hub.ctx.Done()
	select {
	case <-closed:
		t.Fatal("closeAndWait returned while a stream was still subscribed, want it to wait")
	default:
	}
	if _, err := hub.subscribe("late"); err != errHubClosed {
		t.Fatalf("subscribe after close: %v, want errHubClosed", err)
	}
	hub.unsubscribe("opening", sub)
	<-closed
}

// TestChangePagesBoundedInBytes checks that a page of history is bounded in
// bytes as well as in changes, for streams and for /changes, and that a
// bulk delete records its ids in changes of at most maxBulkDeleteIDs.
func TestChangePagesBoundedInBytes(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	seedChanges(t, e, "big", 300)
	page, err := e.store.ChangesAfter(context.Background(), "big", 0, replayPage, changePageBytes)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, c := range page.Changes[:len(page.Changes)-1] {
		size += 300 + len(c.Task.Title) + len(*c.Task.Description)
	}
	if size >= changePageBytes || !page.More || page.Pending != 300 {
		t.Errorf("a page of 300 changes of 1 KB: %d changes, %d bytes before the last, more %v, pending %d; want under %d bytes, more, 300 pending",
			len(page.Changes), size, page.More, page.Pending, changePageBytes)
	}

	tok := e.token("big")
	res := e.do("GET", "/api/me/changes?since=0&limit=500", tok, nil)
	if res.Status != 200 || len(res.Body) > changesAnswerBytes+2<<10 {
		t.Errorf("/changes?limit=500 over 300 changes of 1 KB: %d, %d bytes; want 200 and about %d bytes at most", res.Status, len(res.Body), changesAnswerBytes)
	}

	const tasks = 2*maxBulkDeleteIDs + 10
	_, err = e.db.Exec(`WITH u AS (INSERT INTO users (id) VALUES ('bulk'))
		INSERT INTO tasks (user_id, title, completed) SELECT 'bulk', 'done ' || g, true FROM generate_series(1, $1) g`, tasks)
	if err != nil {
		t.Fatal(err)
	}
	s := openStream(t, e.srv.URL, "/api/me/events", e.token("bulk"), nil)
	if res := e.do("DELETE", "/api/me/tasks?completed=true", e.token("bulk"), nil); res.Status != 200 && res.Status != 204 {
		t.Fatalf("bulk delete: %d %s", res.Status, res.Body)
	}
	deleted := 0
	for deleted < tasks {
		ev := s.next()
		n := strings.Count(ev.Data, `"`) / 2
		if ev.Event != "tasks.deleted" || n-1 > maxBulkDeleteIDs {
			t.Fatalf("bulk delete of %d tasks: event %s of %d ids, want tasks.deleted of at most %d", tasks, ev.Event, n-1, maxBulkDeleteIDs)
		}
		deleted += n - 1 // the quotes of "ids" are one pair
	}
	if deleted != tasks {
		t.Errorf("bulk delete of %d tasks: events name %d, want all", tasks, deleted)
	}
}

// TestStreamsLeaveRoomForRequests checks that streams cannot take every
// connection of an instance: past three in four of HTTP_MAX_CONNS a stream
// is refused, and health checks and requests are still answered.
func TestStreamsLeaveRoomForRequests(t *testing.T) {
	t.Parallel()
	_, url := newTestDB(t)
	addr, _, _, _ := startRun(t, map[string]string{
		"DATABASE_URL": url, "BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1",
		"HTTP_MAX_CONNS": "8", "EVENTS_MAX_STREAMS": "100", "EVENTS_MAX_PER_USER": "100", "RATE_LIMIT": "0",
	})
	tok, err := mintToken(testSecret, User{ID: "hoarder"}, "", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opened := 0
	for {
		conn := rawStream(t, "http://"+addr, "/api/me/events", "HTTP/1.1", tok)
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		status, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatalf("stream %d: %v, want an answer: streams took every connection", opened+1, err)
		}
		if strings.Contains(status, " 429 ") {
			break
		}
		if !strings.Contains(status, " 200 ") {
			t.Fatalf("stream %d: %q, want 200 or 429", opened+1, status)
		}
		opened++
		if opened > 8 {
			t.Fatal("more streams than connections, want some connections kept for requests")
		}
	}
	if want := maxStreamsFor(8); opened != want {
		t.Errorf("%d streams opened under HTTP_MAX_CONNS=8, want %d", opened, want)
	}
	client := &http.Client{Timeout: 15 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s with %d streams open: %v, want an answer", path, opened, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s with %d streams open: %d, want 200", path, opened, resp.StatusCode)
		}
	}
}

// TestPageBudget checks that the streams of an instance hold at most
// maxPagesInFlight pages of history at once: a stream past it waits for a
// page to be given back, or gives up at its expiry.
func TestPageBudget(t *testing.T) {
	t.Parallel()
	hub := newEventHub(testEventsConfig(), nil)
	for i := range maxPagesInFlight {
		if !hub.takePage(context.Background(), time.Now().Add(time.Hour)) {
			t.Fatalf("page %d of %d refused, want it taken", i+1, maxPagesInFlight)
		}
	}
	if hub.takePage(context.Background(), time.Now().Add(100*time.Millisecond)) {
		t.Fatalf("page %d taken, want a wait until the expiry and a refusal", maxPagesInFlight+1)
	}
	got := make(chan bool)
	go func() { got <- hub.takePage(context.Background(), time.Now().Add(time.Hour)) }()
	hub.givePage()
	if !<-got {
		t.Error("a waiting stream did not get the page given back, want it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- hub.takePage(ctx, time.Now().Add(time.Hour)) }()
	cancel()
	if <-got {
		t.Error("a stream whose client left got a page, want a refusal")
	}
}

// TestSweepRacingWritesNeverDeadlocks races the sweep of the history
// against writes that trim the same users' history: the sweep skips users
// whose lock a write holds, so no write fails with a deadlock (a 500).
func TestSweepRacingWritesNeverDeadlocks(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t, func(c *dbConfig) { c.MaxOpenConns, c.MaxIdleConns = 12, 12 })
	store := NewStore(db, 10*time.Second, testTaskQuota)
	ctx := context.Background()
	type userTask struct {
		u  User
		id string
	}
	var tasks []userTask
	for i := range 10 {
		u := User{ID: fmt.Sprintf("racer%d", i)}
		for range 10 {
			task, err := store.CreateTask(ctx, u, NewTask{Title: "t", Priority: "low"})
			if err != nil {
				t.Fatal(err)
			}
			tasks = append(tasks, userTask{u, task.ID})
		}
	}
	var (
		mu     sync.Mutex
		errs   []error
		wg     sync.WaitGroup
		writes int
	)
	failed := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	until := time.Now().Add(3 * time.Second) // a time of racing, on any machine
	for g := range 4 {
		wg.Go(func() {
			title := "patched"
			for i := g; time.Now().Before(until); i += 7 {
				x := tasks[i%len(tasks)]
				if _, err := store.UpdateTask(ctx, x.u, x.id, TaskPatch{Title: &title}, nil); err != nil {
					failed(err)
				}
				mu.Lock()
				writes++
				mu.Unlock()
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(until) {
				if _, err := store.SweepChanges(ctx, time.Millisecond); err != nil {
					failed(err)
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d of %d writes and the sweeps racing them failed, want none; the first: %v", len(errs), writes, errs[0])
	}
}

// TestReloadHasAnID checks that a reload always carries an id, 0 for a
// user with no history: EventSource keeps the last id it saw, and without
// one the client would resume from its stale position again and again.
func TestReloadHasAnID(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	conn := rawRequest(t, e.srv.URL, "GET /api/me/events HTTP/1.1", e.token("fresh"), "Last-Event-ID: 5\r\n")
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(conn)
	var prev string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no reload before %v, want one for a position the user never had", err)
		}
		if strings.HasPrefix(line, "event: reload") {
			if prev != "id: 0\n" {
				t.Errorf("reload after %q, want it after \"id: 0\"", prev)
			}
			return
		}
		prev = line
	}
}

// TestPollIgnoresWhatItSawWhileATransactionIsOpen checks that while a
// transaction anywhere on the database holds the poll's watermark back, so
// that each poll sees the same changes again, the poll wakes no stream for
// changes it already saw: it costs one statement an interval, not a history
// read per user too.
func TestPollIgnoresWhatItSawWhileATransactionIsOpen(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	cfg.PollInterval, cfg.PollFallback = 100*time.Millisecond, 100*time.Millisecond
	e := newLiveEnv(t, cfg)
	tok := e.token("pinned")
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var xid string
	if err := tx.QueryRow(`SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil { // idle in transaction, with an id
		t.Fatal(err)
	}
	createTask(t, e.testEnv, tok, `{"title":"one write"}`)
	s.next()
	// Polls go on, each seeing the write again; after the first of them
	// that saw it, none reads the history.
	polls := e.hub.polls.Load()
	waitFor(t, func() bool { return e.hub.polls.Load() >= polls+2 })
	reads, polls := e.hub.reads.Load(), e.hub.polls.Load()
	waitFor(t, func() bool { return e.hub.polls.Load() >= polls+5 })
	if n := e.hub.reads.Load() - reads; n != 0 {
		t.Errorf("%d history reads in 5 polls after the one write, with transaction %s open; want none", n, xid)
	}
}

// TestIdleStreamIsOneGoroutine checks that an open stream that waits costs
// one goroutine: it waits in a read of its connection, and nothing else
// waits for it (no goroutine watching for the client to leave, and none of
// net/http's). At 10,000 streams a second goroutine's stack was a third of
// the instance's memory. The test is not parallel, so that the goroutines
// it counts are its own.
func TestIdleStreamIsOneGoroutine(t *testing.T) {
	const streams = 50
	e := newLiveEnv(t, testEventsConfig())
	// streamGoroutines counts the goroutines running code of the stream
	// route or the HTTP server.
	streamGoroutines := func() int {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		count := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "/events.go:") || strings.Contains(g, "net/http.(*conn).serve") {
				count++
			}
		}
		return count
	}
	before := streamGoroutines()
	for i := range streams {
		rawStream(t, e.srv.URL, "/api/me/events", "HTTP/1.1", e.token(fmt.Sprintf("idle-%d", i)))
	}
	waitFor(t, func() bool { return e.hub.count("") == streams })
	// A stream counts from subscribe, before net/http's goroutine returns:
	// wait for the goroutines to settle at what they cost.
	want := before + streams
	got := streamGoroutines()
	for deadline := time.Now().Add(10 * time.Second); got > want && time.Now().Before(deadline); got = streamGoroutines() {
		time.Sleep(10 * time.Millisecond)
	}
	if got > want {
		t.Fatalf("%d goroutines of streams and connections for %d idle streams, want one a stream", got-before, streams)
	}
}

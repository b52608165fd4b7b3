package main

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEventsListenerRestored terminates the LISTEN connection's backend of
// an instance while another instance writes: /readyz stays 200 meanwhile,
// the listener comes back by itself, and the stream has every change, in
// order, once.
func TestEventsListenerRestored(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	writer := e.peer(t, testEventsConfig(), liveOptions{})
	tok := e.token("resilient")
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)

	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			task := writer.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"w%d"}`, i)).task(t)
			mu.Lock()
			ids = append(ids, task.ID)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	})
	written := func() int { mu.Lock(); defer mu.Unlock(); return len(ids) }
	waitFor(t, func() bool { return written() >= 5 }) // some changes before the drop
	var killed int
	if err := e.db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, e.listenApp).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listener backends (%v), want 1", killed, err)
	}
	if res := e.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("readyz with the listener down: %d, want 200", res.Status)
	}
	// Changes go on across the outage, and after the listener is back.
	before := written()
	waitFor(t, func() bool { return e.hub.listening.Load() && written() >= before+5 })
	close(stop)
	wg.Wait()

	var prev int64
	for i, want := range ids {
		ev := s.next()
		if !strings.Contains(ev.Data, want) || ev.ID != prev+1 {
			t.Fatalf("event %d: %+v, want task %s at id %d", i, ev, want, prev+1)
		}
		prev = ev.ID
	}
	s.quiet(300 * time.Millisecond)
	if e.hub.heardFrom.Load() == 0 {
		t.Error("no notification from the writing instance was heard, want its changes told")
	}
	if !strings.Contains(e.logs.String(), "LISTEN connection dropped") {
		t.Errorf("the drop was not logged:\n%s", e.logs)
	}
}

// TestEventsReadyzWhileListenerDown: /readyz stays 200 while the hub does
// not listen: the safety net still brings every change.
func TestEventsReadyzWhileListenerDown(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	e.hub.listening.Store(false)
	if res := e.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("readyz with the listener down: %d, want 200", res.Status)
	}
}

// TestEventsStreamsShareReads checks that the streams of one user, woken by
// the same notification, share one read of the history, and that sharing
// loses nothing: each of five streams gets every one of a run of creates,
// in order, once. Each create waits for every stream to have seen the one
// before, so that unshared, each would cost five reads.
func TestEventsStreamsShareReads(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("sharer")
	const streams, creates = 5, 30
	var ss []*sseStream
	for range streams {
		ss = append(ss, openStream(t, e.srv.URL, "/api/me/events", tok, nil))
	}
	before := e.hub.reads.Load()
	for i := range creates {
		id := e.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"shared %d"}`, i)).task(t).ID
		for n, s := range ss {
			if ev := s.next(); ev.Event != "task.created" || !strings.Contains(ev.Data, id) {
				t.Fatalf("stream %d, event %d: %+v, want the creation of %s", n, i, ev, id)
			}
		}
	}
	for _, s := range ss {
		s.quiet(100 * time.Millisecond)
	}
	reads := e.hub.reads.Load() - before
	t.Logf("%d streams, %d creates: %d history reads", streams, creates, reads)
	if reads > 2*creates {
		t.Errorf("%d history reads for %d creates seen by %d streams, want at most %d: the streams do not share them", reads, creates, streams, 2*creates)
	}
}

// noListener is where a hub is told to LISTEN when a test wants it not to:
// nothing answers there.
const noListener = "postgres://taskapi@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"

// TestEventsPollSkipsNothing holds one write's transaction open while
// another user's later writes commit, on an instance that hears of changes
// from its poll alone: the poll wakes the later writes' streams, and still
// wakes the first one's once its transaction commits, although it commits
// after changes the poll has already reported.
func TestEventsPollSkipsNothing(t *testing.T) {
	t.Parallel()
	e := newLiveEnvWith(t, testEventsConfig(), liveOptions{listenURL: noListener, unlistened: true})
	slow := openStream(t, e.srv.URL, "/api/me/events", e.token("slow"), nil)
	fast := openStream(t, e.srv.URL, "/api/me/events", e.token("fast"), nil)
	create := func(q interface {
		Exec(string, ...any) (sql.Result, error)
	}, user, title string) {
		t.Helper()
		if _, err := q.Exec(createTaskSQL, user, "", "", title, nil, false, "low", nil, []string{}, testTaskQuota); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	create(tx, "slow", "held open") // written outside the store: no wake-up but the poll's
	for i := range 3 {
		create(e.db, "fast", fmt.Sprint("later ", i))
		if ev := fast.next(); ev.Event != "task.created" || ev.ID != int64(i+1) {
			t.Fatalf("fast's change %d: %+v, want task.created at id %d", i, ev, i+1)
		}
	}
	before := e.hub.polls.Load()
	waitFor(t, func() bool { return e.hub.polls.Load() >= before+2 }) // polls past the later writes
	slow.quiet(100 * time.Millisecond)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if ev := slow.next(); ev.Event != "task.created" || ev.ID != 1 || !strings.Contains(ev.Data, "held open") {
		t.Errorf("after the held transaction commits: %+v, want its task.created at id 1", ev)
	}
}

// TestEventsWithoutListener runs two instances that cannot LISTEN (a
// pooled URL alone, or a listener URL that is down): each warns once, with
// the fix, stays ready, and a write on one reaches a stream on the other
// through the poll. The poll is one statement per interval, whatever the
// number of streams.
func TestEventsWithoutListener(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	e := newLiveEnvWith(t, cfg, liveOptions{listenURL: noListener, unlistened: true})
	writer := e.peer(t, cfg, liveOptions{listenURL: noListener, unlistened: true})
	tok := e.token("unlistened")
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	for i := range 20 { // streams of other users: the poll stays one statement
		openStream(t, e.srv.URL, "/api/me/events", e.token(fmt.Sprint("other-", i)), nil)
	}
	if res := e.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("readyz without a listener: %d, want 200", res.Status)
	}
	before := e.hub.polls.Load()
	began := time.Now()
	var delays []time.Duration
	for i := range 5 {
		sent := time.Now()
		id := writer.do("POST", "/api/me/tasks", tok, fmt.Sprintf(`{"title":"polled %d"}`, i)).task(t).ID
		if ev := s.next(); !strings.Contains(ev.Data, id) || ev.ID != int64(i+1) {
			t.Fatalf("on the other instance: %+v, want the creation of %s at id %d", ev, id, i+1)
		}
		delays = append(delays, time.Since(sent))
	}
	polls, took := e.hub.polls.Load()-before, time.Since(began)
	t.Logf("delays from a write to its event on the other instance: %v; %d polls in %v", delays, polls, took)
	if limit := int64(took/cfg.PollFallback) + 2; polls > limit {
		t.Errorf("%d polls in %v with 21 streams open, want at most %d: one per interval", polls, took, limit)
	}
	for _, env := range []*liveEnv{e, writer} {
		if n := strings.Count(env.logs.String(), `"msg":"live updates: cannot LISTEN`); n != 1 {
			t.Errorf("the warning that the hub cannot LISTEN was logged %d times, want once", n)
		}
		if !strings.Contains(env.logs.String(), "DATABASE_LISTEN_URL") {
			t.Error("the warning does not say to set DATABASE_LISTEN_URL")
		}
	}
}

// TestNotifyPayloads checks that the payloads of notifications stay under
// pg_notify's limit and name every user once, after the instance.
func TestNotifyPayloads(t *testing.T) {
	t.Parallel()
	var users []string
	for i := range 100 {
		users = append(users, fmt.Sprintf("%03d-%s", i, strings.Repeat("u", 250)))
	}
	payloads := notifyPayloads("inst", users)
	var got []string
	for _, p := range payloads {
		if len(p) > maxNotifyPayload {
			t.Errorf("a payload of %d bytes, want at most %d", len(p), maxNotifyPayload)
		}
		lines := strings.Split(p, "\n")
		if lines[0] != "inst" {
			t.Errorf("a payload begins with %q, want the instance", lines[0])
		}
		got = append(got, lines[1:]...)
	}
	if strings.Join(got, ",") != strings.Join(users, ",") {
		t.Errorf("the payloads name %d users, want the %d given, in order", len(got), len(users))
	}
}

// TestEventsStreamLifetime ends a stream after EVENTS_MAX_LIFETIME: cleanly,
// with its last chunk, and a client that resumes with Last-Event-ID gets
// the changes made in between, none lost.
func TestEventsStreamLifetime(t *testing.T) {
	t.Parallel()
	cfg := testEventsConfig()
	cfg.MaxLifetime = time.Second
	e := newLiveEnv(t, cfg)
	tok := e.token("mortal")
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	e.do("POST", "/api/me/tasks", tok, `{"title":"before"}`)
	last := s.next()
	began := time.Now()
	s.waitEnded(3 * time.Second)
	if d := time.Since(began); d > 1500*time.Millisecond {
		t.Errorf("the stream ended %v after its first event, want within its lifetime of 1 s (±10%%)", d)
	}
	id := e.do("POST", "/api/me/tasks", tok, `{"title":"in between"}`).task(t).ID
	r := openStream(t, e.srv.URL, "/api/me/events", tok, map[string]string{"Last-Event-ID": strconv.FormatInt(last.ID, 10)})
	if ev := r.next(); !strings.Contains(ev.Data, id) || ev.ID != last.ID+1 {
		t.Errorf("resumed: %+v, want the creation of %s at id %d", ev, id, last.ID+1)
	}
}

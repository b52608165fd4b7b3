package main

import (
	"fmt"
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
	time.Sleep(300 * time.Millisecond)
	var killed int
	if err := e.db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, e.listenApp).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listener backends (%v), want 1", killed, err)
	}
	if res := e.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("readyz with the listener down: %d, want 200", res.Status)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	waitFor(t, e.hub.listening.Load)

	var prev int64
	for i, want := range ids {
		ev := s.next()
		if !strings.Contains(ev.Data, want) || ev.ID != prev+1 {
			t.Fatalf("event %d: %+v, want task %s at id %d", i, ev, want, prev+1)
		}
		prev = ev.ID
	}
	s.quiet(300 * time.Millisecond)
	if !strings.Contains(e.logs.String(), "LISTEN connection dropped") {
		t.Error("the drop was not logged")
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

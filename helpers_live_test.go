// This file is the tests' kit for live updates: a running API with its
// hub over a test database, and the event streams its clients read.

package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testEventsConfig is the hub configuration of the tests, with a short
// heartbeat.
func testEventsConfig() eventsConfig {
	return eventsConfig{Heartbeat: 200 * time.Millisecond, PerUser: 10, MaxStreams: 100, Buffer: 64,
		WriteTimeout: 2 * time.Second, Retention: 24 * time.Hour,
		PollInterval: 2 * time.Second, PollFallback: 500 * time.Millisecond, MaxLifetime: 30 * time.Minute}
}

// liveEnv is a running API with live updates over a test database.
type liveEnv struct {
	*testEnv
	hub       *eventHub
	listenApp string // the application_name of the hub's LISTEN connection
	url       string // the test database's
}

// liveOptions change what newLiveEnvWith starts.
type liveOptions struct {
	// handler wraps the log handler, when set.
	handler func(slog.Handler) slog.Handler
	// server is called with the server before it starts, when set.
	server func(*httptest.Server)
	// listenURL is where the hub LISTENs, when set; by default the test
	// database, directly.
	listenURL string
	// unlistened: do not wait for the hub to listen.
	unlistened bool
}

// newLiveEnv starts the API with a hub listening on the test database.
func newLiveEnv(t *testing.T, cfg eventsConfig) *liveEnv {
	t.Helper()
	return newLiveEnvWith(t, cfg, liveOptions{})
}

// newLiveEnvWith is newLiveEnv with options.
func newLiveEnvWith(t *testing.T, cfg eventsConfig, opts liveOptions) *liveEnv {
	t.Helper()
	db, url := newTestDB(t)
	return startLiveEnv(t, db, url, cfg, opts)
}

// startLiveEnv starts the API with a hub over the database db at url.
func startLiveEnv(t *testing.T, db *sql.DB, url string, cfg eventsConfig, opts liveOptions) *liveEnv {
	t.Helper()
	logs := &syncBuffer{}
	var handler slog.Handler = slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	if opts.handler != nil {
		handler = opts.handler(handler)
	}
	logger := slog.New(handler)
	store := NewStore(db, 5*time.Second, testTaskQuota)
	verifier := NewVerifier(VerifierConfig{Secret: testSecret}, logger)
	hub := newEventHub(cfg, store)
	store.OnChange(hub.changed)
	app := "listen_" + strings.ToLower(rand.Text())[:12]
	listenURL := cmp.Or(opts.listenURL, testListenURL(url))
	if err := hub.start(context.Background(), withParam(listenURL, "application_name", app), logger); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(newServer(logger, "test", store, verifier, guards{}, newCursorCodec([]byte("k")), nil,
		&liveUpdates{hub: hub, tickets: newTicketCodec([]byte("test events key"))}))
	if opts.server != nil {
		opts.server(srv)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(hub.close) // runs first: streams end, so that srv.Close does not wait for them
	if !opts.unlistened {
		waitFor(t, hub.listening.Load)
	}
	return &liveEnv{testEnv: &testEnv{t: t, srv: srv, db: db, store: store, verifier: verifier, logs: logs, secret: testSecret},
		hub: hub, listenApp: app, url: url}
}

// peer starts a second instance of the API, with its own hub and pool,
// over e's database: what another taskapi process would be.
func (e *liveEnv) peer(t *testing.T, cfg eventsConfig, opts liveOptions) *liveEnv {
	t.Helper()
	db, err := openDB(context.Background(), testDBConfig(e.url), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return startLiveEnv(t, db, e.url, cfg, opts)
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
		t.Fatalf("GET %s: status %d, want 200", path, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("GET %s: Content-Type %q, want text/event-stream", path, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET %s: Cache-Control %q, want no-store", path, cc)
	}
	if resp.Header.Get("X-Request-ID") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: the headers every answer has are missing: %v; want an X-Request-ID and X-Content-Type-Options: nosniff", path, resp.Header)
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
	resp, err := http.DefaultClient.Do(newRequest(t, "GET", base+path, token, headers, ""))
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
			s.t.Errorf("the stream ended without its last chunk: %v, want a clean end", s.err)
		}
	case <-time.After(d):
		s.t.Fatalf("the stream was still open after %v, want it ended", d)
	}
}

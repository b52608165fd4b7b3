// This file is the event hub: the streams open on this instance, by user,
// the one LISTEN connection that tells each instance of every change, and
// the history reads that the streams of one user share.
//
// Every write records its change in task_changes and notifies
// "<user_id>:<position>" in the same statement (changes.go). Each instance
// LISTENs on one connection; a notification wakes the streams of that user
// on this instance, and they read what they have not sent yet from the
// history (events.go).

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// eventsConfig bounds the event streams.
type eventsConfig struct {
	Heartbeat    time.Duration // a ": ping" comment at least this often
	PerUser      int           // most streams one user may have open on an instance
	MaxStreams   int           // most streams open on an instance
	Buffer       int           // most changes a stream may fall behind before it gets reload
	WriteTimeout time.Duration // longest one write to a stream may take
	Retention    time.Duration // how long changes are kept
}

// errTooManyStreams is a stream past EVENTS_MAX_PER_USER or EVENTS_MAX_STREAMS.
var errTooManyStreams = errors.New("too many event streams")

// errHubClosed is a stream that would open while the instance shuts down.
var errHubClosed = errors.New("live updates are closed")

// maxPagesInFlight is the most pages of history the streams of an instance
// hold at once, each at most changePageBytes and one change: about 20 MB in
// all, whatever the number of streams and however slowly their clients
// read. A stream waits for room before it reads a page.
const maxPagesInFlight = 256

// eventHub knows the open streams of this instance, by user, and wakes
// those of a user when the listener hears of a change of theirs. A wake-up
// never blocks: each stream has room for one pending wake-up, which stands
// for any number of changes. It is safe for concurrent use.
type eventHub struct {
	cfg     eventsConfig
	tickets ticketCodec

	mu     sync.Mutex
	users  map[string]*userStreams
	total  int
	closed bool // set by close: no stream subscribes after it

	// running counts the subscribed streams, from subscribe to
	// unsubscribe: closeAndWait waits for them. Add is only called under
	// mu while not closed, so that none comes after the Wait.
	running   sync.WaitGroup
	pages     chan struct{} // one for each page of history a stream holds
	reads     atomic.Int64  // history reads made for woken streams
	listening atomic.Bool   // the LISTEN connection is up
	refused   atomic.Uint64 // streams refused by subscribe, for /metrics
	stats     streamMetrics // what the streams did, for /metrics
	done      chan struct{} // closed by close: every stream ends
	closeOnce sync.Once
}

// subscription is one open stream's place in the hub.
type subscription struct {
	wake chan struct{} // capacity 1
}

// userStreams is one user's streams on this instance, and the history read
// they share.
type userStreams struct {
	subs map[*subscription]struct{}
	// heard counts the notifications heard for the user (and reconnects of
	// the listener): a read is shared only by streams that ask for it
	// before the next one.
	heard uint64
	read  *sharedRead // the latest read, perhaps still running
}

// sharedRead is one read of a user's history, made once for every stream of
// the user that asks for the same changes.
type sharedRead struct {
	heard uint64
	after int64
	limit int
	done  chan struct{} // closed when page and err are set
	page  changePage    // shared: read only
	err   error
}

// newEventHub returns a hub with no streams, not yet listening (see listen).
func newEventHub(cfg eventsConfig, tickets ticketCodec) *eventHub {
	return &eventHub{cfg: cfg, tickets: tickets, users: map[string]*userStreams{},
		pages: make(chan struct{}, maxPagesInFlight), done: make(chan struct{})}
}

// subscribe registers a stream of userID, or returns errTooManyStreams, or
// errHubClosed once the hub is closed. A stream subscribes before it reads
// the history, so that no change can fall between the two, and it is
// counted from then on, so that closeAndWait waits for it whatever it is
// doing.
func (h *eventHub) subscribe(userID string) (*subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errHubClosed
	}
	us := h.users[userID]
	if h.total >= h.cfg.MaxStreams || us != nil && len(us.subs) >= h.cfg.PerUser {
		h.refused.Add(1)
		return nil, errTooManyStreams
	}
	if us == nil {
		us = &userStreams{subs: map[*subscription]struct{}{}}
		h.users[userID] = us
	}
	s := &subscription{wake: make(chan struct{}, 1)}
	us.subs[s] = struct{}{}
	h.total++
	h.running.Add(1)
	return s, nil
}

// unsubscribe removes a stream registered by subscribe.
func (h *eventHub) unsubscribe(userID string, s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	us := h.users[userID]
	if us == nil {
		return
	}
	if _, ok := us.subs[s]; !ok {
		return
	}
	delete(us.subs, s)
	if len(us.subs) == 0 {
		delete(h.users, userID)
	}
	h.total--
	h.running.Done()
}

// count returns the number of open streams, of userID or, for "", of all.
func (h *eventHub) count(userID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if userID == "" {
		return h.total
	}
	if us := h.users[userID]; us != nil {
		return len(us.subs)
	}
	return 0
}

// wakeUser wakes every stream of userID on this instance.
func (h *eventHub) wakeUser(userID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if us := h.users[userID]; us != nil {
		us.wake()
	}
}

// wakeAll wakes every stream, so that each catches up from the history:
// after the listener reconnects, changes may have gone unheard.
func (h *eventHub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, us := range h.users {
		us.wake()
	}
}

// wake wakes every stream of the user, after a change their shared reads
// may not hold. The hub's lock is held.
func (us *userStreams) wake() {
	us.heard++
	for s := range us.subs {
		s.poke()
	}
}

// changesAfter returns a page of userID's changes after position after, of
// at most limit changes and changePageBytes, as Store.ChangesAfter does;
// the caller is a subscribed stream, and must not change the page. The
// streams of a user woken by one notification ask for the same changes at
// about the same time, and share one read: a change costs one query per
// instance, not one per stream. A read is shared only until the next
// notification for the user, so it holds every change the streams sharing
// it have heard of.
func (h *eventHub) changesAfter(ctx context.Context, store *Store, userID string, after int64, limit int) (changePage, error) {
	h.mu.Lock()
	us := h.users[userID] // there while the caller is subscribed
	rd := us.read
	if rd == nil || rd.heard != us.heard || rd.after != after || rd.limit != limit {
		rd = &sharedRead{heard: us.heard, after: after, limit: limit, done: make(chan struct{})}
		us.read = rd
		h.mu.Unlock()
		h.reads.Add(1)
		// The read serves other streams too: it does not end when this
		// stream's client leaves.
		rd.page, rd.err = store.ChangesAfter(context.WithoutCancel(ctx), userID, after, limit, changePageBytes)
		close(rd.done)
	} else {
		h.mu.Unlock()
	}
	select {
	case <-rd.done:
		return rd.page, rd.err
	case <-ctx.Done():
		return changePage{}, ctx.Err()
	}
}

// takePage waits for room for one more page of history in the instance's
// budget (maxPagesInFlight), until ctx ends, the hub closes, or until; it
// reports whether it got it. givePage gives the room back.
func (h *eventHub) takePage(ctx context.Context, until time.Time) bool {
	select {
	case h.pages <- struct{}{}:
		return true
	default:
	}
	expiry := time.NewTimer(time.Until(until))
	defer expiry.Stop()
	select {
	case h.pages <- struct{}{}:
		return true
	case <-ctx.Done():
	case <-h.done:
	case <-expiry.C:
	}
	return false
}

// givePage gives back the room takePage took.
func (h *eventHub) givePage() { <-h.pages }

// poke leaves a wake-up unless one is pending already.
func (s *subscription) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close ends every stream and the listener, at shutdown: streams would
// otherwise hold their connections until the shutdown timeout. Clients
// reconnect, with Last-Event-ID, to another instance.
func (h *eventHub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.closeOnce.Do(func() { close(h.done) })
}

// closeAndWait closes the hub and waits for every stream to end, those
// still opening too: each ends within one write once the hub is closed.
func (h *eventHub) closeAndWait() {
	h.close()
	h.running.Wait()
}

// ready reports whether the listener is up; /readyz answers 503 when not.
func (h *eventHub) ready() bool { return h.listening.Load() }

// listen opens the LISTEN connection at url, checks that notifications
// arrive on it, and keeps it up in the background until close: a dropped
// connection is reopened with backoff, and every stream then catches up from
// the history. A pooler in transaction mode cannot LISTEN; listen says so
// instead of starting a hub that would never hear anything.
func (h *eventHub) listen(ctx context.Context, url string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return errors.New("DATABASE_LISTEN_URL is not a valid PostgreSQL connection string")
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "taskapi-listen"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	conn, err := listenConn(ctx, cfg, true)
	if err != nil {
		return fmt.Errorf("live updates: LISTEN on DATABASE_LISTEN_URL (default DATABASE_URL) at %s failed: %w\n"+
			"a pooler in transaction mode (PgBouncer, Neon's -pooler host) cannot LISTEN: "+
			"set DATABASE_LISTEN_URL to a direct connection to the database", cfg.Host, err)
	}
	h.listening.Store(true)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-h.done
		cancel()
	}()
	go h.receive(ctx, cfg, conn, logger)
	return nil
}

// listenConn connects and LISTENs. With probe, it then sends a notification
// from a second connection and waits for it, as the hub's own writes will
// send them: a pooler in transaction mode loses it.
func listenConn(ctx context.Context, cfg *pgx.ConnConfig, probe bool) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	if probe {
		// The payload names no user: no stream wakes for it.
		notifier, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			conn.Close(ctx)
			return nil, err
		}
		_, err = notifier.Exec(ctx, "SELECT pg_notify($1, ':0')", changesChannel)
		notifier.Close(ctx)
		if err != nil {
			conn.Close(ctx)
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := conn.WaitForNotification(wctx); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("no notification arrived after LISTEN: %w", err)
		}
	}
	return conn, nil
}

// receive wakes the streams of each notification's user until ctx ends,
// reconnecting when the connection drops.
func (h *eventHub) receive(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn, logger *slog.Logger) {
	defer h.listening.Store(false)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err == nil {
			if userID, _, ok := cutLast(n.Payload, ":"); ok && userID != "" {
				h.wakeUser(userID)
			}
			continue
		}
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return
		}
		h.listening.Store(false)
		logger.Warn("live updates: the LISTEN connection dropped; reconnecting", "err", err)
		backoff := 100 * time.Millisecond
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if conn, err = listenConn(ctx, cfg, false); err == nil {
				break
			}
			logger.Warn("live updates: LISTEN failed; retrying", "retry_in", backoff.String(), "err", err)
			backoff = min(backoff*2, 5*time.Second)
		}
		h.listening.Store(true)
		logger.Info("live updates: listening again; every stream catches up")
		h.wakeAll()
	}
}

// listenerReadiness answers /readyz with 503 while the hub's listener is
// down: streams on this instance would hear of no change.
func listenerReadiness(live *eventHub, logger *slog.Logger, next http.Handler) http.Handler {
	if live == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !live.ready() {
			writeError(w, r, logger, fmt.Errorf("%w: the LISTEN connection is down", ErrUnavailable))
			return
		}
		next.ServeHTTP(w, r)
	})
}

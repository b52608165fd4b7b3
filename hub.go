// This file is the event hub: the streams open on this instance, by user,
// and the history reads that the streams of one user share. How the hub
// hears of changes, summed up below, is in listen.go.
//
// A write records its change in task_changes in its own statement, and
// notifies no one there: pg_notify in a write would make every notifying
// commit in the database wait in one line (changes.go). Once the write has
// committed, the store calls changed (Store.OnChange): the hub wakes this
// instance's streams of the user at once, and tells the other instances,
// in one pg_notify of every user changed since its last send, one at a
// time, on the connection on which it LISTENs: a connection of its own, so
// that a notification never waits for the pool behind the requests. A
// notification wakes the streams of its users on every other instance.
// Notifications are hints: each instance also polls the
// history, in one statement whatever the number of streams, for which of
// the users with streams here changed (pollChangedSQL), every
// EVENTS_POLL_INTERVAL, more often while it does not listen. A woken stream
// reads what it has not sent yet from the history (events.go), so that a
// hint lost, late or repeated costs at most a delay or a read.

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// eventsConfig bounds the event streams.
type eventsConfig struct {
	Heartbeat    time.Duration // a ": ping" comment at least this often
	PerUser      int           // most streams one user may have open on an instance
	MaxStreams   int           // most streams open on an instance
	Buffer       int           // most changes a stream may fall behind before it gets reload
	WriteTimeout time.Duration // longest one write to a stream may take
	Retention    time.Duration // how long changes are kept
	// PollInterval is how often the hub asks the history which users with
	// streams here changed, while it listens; PollFallback while it does
	// not, when the poll is all it hears from other instances.
	PollInterval, PollFallback time.Duration
	// MaxLifetime is about how long a stream stays open (±10%): it then
	// ends, and its client reconnects with Last-Event-ID.
	MaxLifetime time.Duration
}

// errTooManyStreams is a stream past EVENTS_MAX_PER_USER or EVENTS_MAX_STREAMS.
var errTooManyStreams = errors.New("too many event streams")

// errHubClosed is a stream that would open while the instance shuts down.
var errHubClosed = errors.New("live updates are closed")

// maxPagesInFlight is the most pages of history the streams of an instance
// hold at once, each at most changePageBytes and one change, and its events
// made from it: about 40 MB in all, whatever the number of streams and
// however slowly their clients read. A stream waits for room before it
// reads a page.
const maxPagesInFlight = 256

// Listener timing.
const (
	// listenPing is how long the listener waits for a notification before
	// it pings its connection: a connection that a proxy or a scaled-down
	// database dropped without a word is found within it.
	listenPing = 30 * time.Second
	// listenMaxBackoff is the longest wait between two tries to LISTEN.
	listenMaxBackoff = 30 * time.Second
	// maxNotifyPayload bounds a notification's payload, below pg_notify's
	// 8000 bytes.
	maxNotifyPayload = 7900
)

// eventHub knows the open streams of this instance, by user, and wakes
// those of a user when it hears of a change of theirs. A wake-up never
// blocks: each stream has room for one pending wake-up, which stands for
// any number of changes. It is safe for concurrent use.
type eventHub struct {
	cfg      eventsConfig
	store    *Store
	instance string // names this instance's notifications, which it ignores

	mu     sync.Mutex
	users  map[string]*userStreams
	total  int
	closed bool // set by close: no stream subscribes after it
	// pending holds the users changed here and not yet told to other
	// instances, while the hub listens; notify is poked when it gains one.
	pending map[string]struct{}
	notify  chan struct{}
	// watermark is the transaction id from which the next poll asks (0:
	// none, while no stream is open). joined is the lowest watermark of a
	// stream that started while a poll ran (0: none): the poll's own may be
	// past changes of users it did not ask about.
	watermark, joined uint64
	polling           bool

	// running counts the subscribed streams, from subscribe to
	// unsubscribe: closeAndWait waits for them. Add is only called under
	// mu while not closed, so that none comes after the Wait.
	running   sync.WaitGroup
	pages     chan struct{} // one for each page of history a stream holds
	reads     atomic.Int64  // history reads made for woken streams
	polls     atomic.Int64  // polls of the history made
	heardFrom atomic.Int64  // notifications heard from other instances
	listening atomic.Bool   // the LISTEN connection is up
	refused   atomic.Uint64 // streams refused by subscribe, for /metrics
	stats     streamMetrics // what the streams did, for /metrics
	// ctx ends with close: every stream ends, and what they read with it.
	ctx    context.Context
	cancel context.CancelFunc
}

// subscription is one open stream's place in the hub. The stream waits in
// a read of its client's connection (stream.run), which poke interrupts.
type subscription struct {
	woken atomic.Bool // set by poke, taken by the stream
	conn  net.Conn    // the client's connection, from attach; under the hub's lock
}

// userStreams is one user's streams on this instance, and the history read
// they share.
type userStreams struct {
	subs map[*subscription]struct{}
	// heard counts the wake-ups of the user: a read is shared only by
	// streams that ask for it before the next one.
	heard uint64
	read  *sharedRead // the latest read, perhaps still running
	// polled is the highest position of the user the poll has seen: a
	// poll wakes the user's streams only past it. The poll's watermark
	// stays below any transaction still open on the database, so it sees
	// the same changes again while one is.
	polled int64
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

// newEventHub returns a hub with no streams over store's history, not yet
// hearing of changes (see start). The caller wires store's OnChange to the
// hub's changed.
func newEventHub(cfg eventsConfig, store *Store) *eventHub {
	ctx, cancel := context.WithCancel(context.Background())
	return &eventHub{cfg: cfg, store: store, instance: strings.ToLower(rand.Text()[:16]),
		users: map[string]*userStreams{}, pending: map[string]struct{}{}, notify: make(chan struct{}, 1),
		pages: make(chan struct{}, maxPagesInFlight), ctx: ctx, cancel: cancel}
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
	s := &subscription{}
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
		if len(h.users) == 0 {
			h.watermark = 0 // an idle instance polls nothing
		}
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
// at most limit changes and changePageBytes, with the user's bounds, as
// Store.ChangesAfter does, and each change as an event ready to send
// (page.frames); the caller is a subscribed stream, and must not change the
// page. The streams of a user woken at once ask for the same changes at
// about the same time, and share one read: a change costs one query, and
// one encoding, per instance, not one per stream. A read is shared only
// until the next wake-up of the user, so it holds every change the streams
// sharing it were woken for.
func (h *eventHub) changesAfter(ctx context.Context, userID string, after int64, limit int) (changePage, error) {
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
		rd.page, rd.err = h.store.ChangesAfter(context.WithoutCancel(ctx), userID, after, limit, changePageBytes)
		if rd.err == nil {
			rd.page.frames = make([][]byte, len(rd.page.Changes))
			for i := range rd.page.Changes {
				rd.page.frames[i] = appendChangeEvent(nil, &rd.page.Changes[i])
			}
		}
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

// begin reads where a new stream of userID starts: the user's bounds (see
// changePage). A subscribed stream calls it before it reads anything
// else, and the safety net asks about the user's changes from then on.
func (h *eventHub) begin(ctx context.Context, userID string) (last, swept int64, err error) {
	last, swept, xmin, err := h.store.Bounds(ctx, userID)
	if err != nil {
		return 0, 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watermark == 0 || xmin < h.watermark {
		h.watermark = xmin
	}
	if h.polling && (h.joined == 0 || xmin < h.joined) {
		h.joined = xmin
	}
	return last, swept, nil
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
	case <-h.ctx.Done():
	case <-expiry.C:
	}
	return false
}

// givePage gives back the room takePage took.
func (h *eventHub) givePage() { <-h.pages }

// attach gives s the connection its stream waits on, so that poke can
// interrupt the wait.
func (h *eventHub) attach(s *subscription, conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.conn = conn
}

// poke leaves a wake-up, which stands for any number of them, and
// interrupts the stream's wait by moving its read deadline to the past.
// The hub's lock is held.
func (s *subscription) poke() {
	s.woken.Store(true)
	if s.conn != nil {
		s.conn.SetReadDeadline(longAgo)
	}
}

// longAgo is a deadline that has passed.
var longAgo = time.Unix(1, 0)

// close ends every stream and the listener, at shutdown: streams would
// otherwise hold their connections until the shutdown timeout. Clients
// reconnect, with Last-Event-ID, to another instance.
func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.cancel()
	for _, us := range h.users {
		for s := range us.subs {
			s.poke()
		}
	}
}

// closeAndWait closes the hub and waits for every stream to end, those
// still opening too: each ends within one write once the hub is closed.
func (h *eventHub) closeAndWait() {
	h.close()
	h.running.Wait()
}

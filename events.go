// This file is live sync: the event stream of a user's changes
// (GET /api/{user_id}/events, server-sent events), its polling twin
// (GET /api/{user_id}/changes), the hub that wakes each instance's streams,
// and the one LISTEN connection that feeds it.
//
// Every write records its change in task_changes and notifies
// "<user_id>:<position>" in the same statement (changes.go). Each instance
// LISTENs on one connection; a notification wakes the streams of that user
// on this instance, and each stream reads what it has not sent yet from the
// history, after the last position it sent. A stream therefore never skips
// or repeats a change, whether it resumes with Last-Event-ID, was woken by a
// notification, or catches up after the listener reconnected.

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
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

// eventHub knows the open streams of this instance, by user, and wakes
// those of a user when the listener hears of a change of theirs. A wake-up
// never blocks: each stream has room for one pending wake-up, which stands
// for any number of changes. It is safe for concurrent use.
type eventHub struct {
	cfg     eventsConfig
	tickets ticketCodec

	mu      sync.Mutex
	streams map[string]map[*subscription]struct{}
	total   int

	listening atomic.Bool   // the LISTEN connection is up
	done      chan struct{} // closed by close: every stream ends
	closeOnce sync.Once
}

// subscription is one open stream's place in the hub.
type subscription struct {
	wake chan struct{} // capacity 1
}

// newEventHub returns a hub with no streams, not yet listening (see listen).
func newEventHub(cfg eventsConfig, tickets ticketCodec) *eventHub {
	return &eventHub{cfg: cfg, tickets: tickets, streams: map[string]map[*subscription]struct{}{}, done: make(chan struct{})}
}

// subscribe registers a stream of userID, or returns errTooManyStreams. A
// stream subscribes before it reads the history, so that no change can fall
// between the two.
func (h *eventHub) subscribe(userID string) (*subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total >= h.cfg.MaxStreams || len(h.streams[userID]) >= h.cfg.PerUser {
		return nil, errTooManyStreams
	}
	s := &subscription{wake: make(chan struct{}, 1)}
	if h.streams[userID] == nil {
		h.streams[userID] = map[*subscription]struct{}{}
	}
	h.streams[userID][s] = struct{}{}
	h.total++
	return s, nil
}

// unsubscribe removes a stream registered by subscribe.
func (h *eventHub) unsubscribe(userID string, s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.streams[userID][s]; !ok {
		return
	}
	delete(h.streams[userID], s)
	if len(h.streams[userID]) == 0 {
		delete(h.streams, userID)
	}
	h.total--
}

// count returns the number of open streams, of userID or, for "", of all.
func (h *eventHub) count(userID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if userID == "" {
		return h.total
	}
	return len(h.streams[userID])
}

// wakeUser wakes every stream of userID on this instance.
func (h *eventHub) wakeUser(userID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.streams[userID] {
		s.poke()
	}
}

// wakeAll wakes every stream, so that each catches up from the history:
// after the listener reconnects, changes may have gone unheard.
func (h *eventHub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, streams := range h.streams {
		for s := range streams {
			s.poke()
		}
	}
}

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
	h.closeOnce.Do(func() { close(h.done) })
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

// replayPage is how many changes a stream or a poll reads at once.
const replayPage = 500

// handleEvents answers GET /api/{user_id}/events with the caller's changes
// as server-sent events, until the token (or ticket) expires, the client
// leaves, or the instance shuts down. With Last-Event-ID (or ?since=) it
// first replays every change after that position; without, it starts from
// now. A position too old to resume from gets a reload event, as does a
// stream that falls more than EVENTS_BUFFER changes behind, which then ends.
func handleEvents(logger *slog.Logger, store *Store, live *eventHub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if live == nil {
			writeError(w, r, logger, fmt.Errorf("%w: live updates are not running", ErrUnavailable))
			return
		}
		u := userFrom(r.Context())
		since, resume, err := parseSince(r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		sub, err := live.subscribe(u.ID)
		if err != nil {
			writeError(w, r, logger, &rateLimitedError{retryAfter: time.Second})
			return
		}
		defer live.unsubscribe(u.ID, sub)

		// The first read comes before the headers, so that a database
		// that does not answer is a 503, not an empty stream.
		var (
			backlog []Change
			reload  bool
			last    int64
		)
		if resume {
			backlog, reload, err = store.Changes(r.Context(), u.ID, since, replayPage)
			last = since
		} else {
			last, err = store.LastPosition(r.Context(), u.ID)
		}
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{}) // the server's ReadTimeout would end the stream
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
		w.WriteHeader(http.StatusOK)
		out := &sseWriter{w: w, rc: rc, timeout: live.cfg.WriteTimeout}
		if out.comment("connected") != nil {
			return
		}
		sendReload := func() {
			p, err := store.LastPosition(r.Context(), u.ID)
			if err != nil {
				p = 0
			}
			out.event(p, "reload", []byte("{}"))
		}
		if reload {
			sendReload()
			return
		}
		// send writes changes and says whether the stream goes on.
		send := func(changes []Change) bool {
			for i := range changes {
				c := &changes[i]
				if c.Position <= last {
					continue
				}
				if out.event(c.Position, c.Event, appendEventData(nil, c)) != nil {
					return false
				}
				last = c.Position
				if c.Event == eventAccountDeleted {
					return false
				}
			}
			return true
		}
		for len(backlog) > 0 {
			if !send(backlog) {
				return
			}
			if len(backlog) < replayPage {
				break
			}
			if backlog, err = store.changesAfter(r.Context(), u.ID, last, replayPage); err != nil {
				logger.Warn("live updates: replay", "request_id", requestIDFrom(r.Context()), "err", err)
				return
			}
		}

		heartbeat := time.NewTicker(live.cfg.Heartbeat)
		defer heartbeat.Stop()
		expiry := time.NewTimer(time.Until(streamUntil(r.Context())))
		defer expiry.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-live.done:
				return
			case <-expiry.C:
				return // the client reconnects, with a new token, and Last-Event-ID
			case <-heartbeat.C:
				if out.comment("ping") != nil {
					return
				}
			case <-sub.wake:
				changes, err := store.changesAfter(r.Context(), u.ID, last, live.cfg.Buffer+1)
				if err != nil {
					logger.Warn("live updates: catch up", "request_id", requestIDFrom(r.Context()), "err", err)
					return // the client reconnects with Last-Event-ID
				}
				if len(changes) > live.cfg.Buffer {
					sendReload()
					return
				}
				if !send(changes) {
					return
				}
			}
		}
	})
}

// sseWriter writes server-sent events, each flushed at once and within its
// own write deadline: the server's WriteTimeout would end a healthy stream,
// and a client that stops reading is let go after timeout.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

// event writes one event: id (unless 0), event and data, which is JSON
// without newlines.
func (s *sseWriter) event(id int64, event string, data []byte) error {
	b := s.buf[:0]
	if id > 0 {
		b = append(b, "id: "...)
		b = strconv.AppendInt(b, id, 10)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	b = append(b, "\n\n"...)
	s.buf = b
	return s.write(b)
}

// comment writes a comment line, which clients ignore: a heartbeat.
func (s *sseWriter) comment(text string) error {
	return s.write([]byte(": " + text + "\n\n"))
}

func (s *sseWriter) write(b []byte) error {
	s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// parseSince reads where a stream resumes: the Last-Event-ID header, which
// an EventSource sends when it reconnects, or else ?since=. resume is false
// when neither is given.
func parseSince(r *http.Request) (since int64, resume bool, err error) {
	v, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, name = r.URL.Query().Get("since"), "since"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false, badRequest("%s must be a position: a whole number of at least 0, from an event's id.", name)
	}
	return n, true, nil
}

// handleChanges answers GET /api/{user_id}/changes?since=&limit= with the
// caller's changes after since (default 0), oldest first, at most limit
// (1 to maxLimit, default 100): {"changes": [...], "next": position}. A client polls
// again with since=next. A position too old to resume from gets
// {"changes": [], "next": <latest>, "reload": true}: refetch the list, then
// poll from next.
func handleChanges(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := userFrom(r.Context())
		q := r.URL.Query()
		for name := range q {
			if name != "since" && name != "limit" && !strings.HasPrefix(name, "_") {
				writeError(w, r, logger, badRequest("Unknown parameter %q; the accepted ones are since and limit.", truncate(name, 50)))
				return
			}
		}
		since, _, err := parseSince(r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		limit := 100
		if v := q.Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxLimit {
				writeError(w, r, logger, badRequest("limit must be a whole number from 1 to %d.", maxLimit))
				return
			}
		}
		changes, reload, err := store.Changes(r.Context(), u.ID, since, limit)
		next := since
		if err == nil && reload {
			next, err = store.LastPosition(r.Context(), u.ID)
		}
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if len(changes) > 0 {
			next = changes[len(changes)-1].Position
		}
		bufs.write(w, http.StatusOK, func(b []byte) []byte {
			b = append(b, `{"changes":[`...)
			for i := range changes {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendChange(b, &changes[i])
			}
			b = append(b, `],"next":`...)
			b = strconv.AppendInt(b, next, 10)
			if reload {
				b = append(b, `,"reload":true`...)
			}
			return append(b, '}')
		})
	})
}

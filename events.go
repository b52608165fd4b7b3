// This file is live sync's HTTP side: the event stream of a user's changes
// (GET /api/{user_id}/events, server-sent events) and its polling twin
// (GET /api/{user_id}/changes). The hub that wakes the streams is in hub.go.
//
// A stream reads what it has not sent yet from the history, after the last
// position it sent, whenever the hub wakes it. It therefore never skips or
// repeats a change, whether it resumes with Last-Event-ID, was woken by a
// notification, or catches up after the listener reconnected.

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// replayPage is how many changes a stream or a poll reads at once.
const replayPage = 500

// handleEvents answers GET /api/{user_id}/events with the caller's changes
// as server-sent events, until the token (or ticket) expires, the client
// leaves, or the instance shuts down. With Last-Event-ID (or ?since=) it
// first replays every change after that position; without, it starts from
// now. A position too old to resume from gets a reload event, as does a
// stream that falls more than EVENTS_BUFFER changes behind, which then ends.
//
// Once the headers are sent, the stream takes the connection over from
// net/http (see hijackStream) and goes on in a goroutine of its own, so that
// an open stream, which mostly waits, costs little memory.
func handleEvents(logger *slog.Logger, store *Store, live *eventHub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if live == nil {
			writeError(w, r, logger, fmt.Errorf("%w: live updates are not running", ErrUnavailable))
			return
		}
		u := userFrom(r.Context())
		if name, ok := unknownParam(r.URL.Query(), isEventsParam); ok {
			writeError(w, r, logger, badRequest("Unknown parameter %q; the accepted ones are since (or lastEventId) and ticket.", truncate(name, 50)))
			return
		}
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
		st := &stream{logger: logger, store: store, live: live, userID: u.ID, sub: sub,
			requestID: requestIDFrom(r.Context()), until: streamUntil(r.Context())}

		// The first read comes before the headers, so that a database
		// that does not answer is a 503, not an empty stream.
		if resume {
			st.backlog, st.reload, err = store.Changes(r.Context(), u.ID, since, replayPage)
			st.last = since
		} else {
			st.last, err = store.LastPosition(r.Context(), u.ID)
		}
		if err != nil {
			live.unsubscribe(u.ID, sub)
			writeError(w, r, logger, err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
		if out, ctx, ok := hijackStream(w, r, live); ok {
			live.running.Add(1)
			go func() {
				defer live.running.Done()
				st.run(ctx, out)
			}()
			return
		}
		// The connection cannot be taken over (HTTP/2, HTTP/1.0): the
		// stream runs in the handler, through net/http.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{}) // the server's ReadTimeout would end the stream
		w.WriteHeader(http.StatusOK)
		st.run(r.Context(), &sseWriter{w: w, rc: rc, timeout: live.cfg.WriteTimeout, bufs: live.bufs})
	})
}

// stream is one open event stream: whose, where it is, and what it has yet
// to send before it goes live.
type stream struct {
	logger    *slog.Logger
	store     *Store
	live      *eventHub
	userID    string
	sub       *subscription
	requestID string
	until     time.Time // when the token or ticket's authorization ends

	sent    int      // events sent
	last    int64    // the position of the last change sent (or skipped)
	backlog []Change // changes to replay first
	reload  bool     // the position asked for is too old: send reload and end
}

// run sends the stream's events until ctx ends (the client left), the
// authorization expires, the hub closes, or the stream ends itself; then it
// unsubscribes, closes out, and logs the stream's end (the request's line
// was logged when it began).
func (st *stream) run(ctx context.Context, out *sseWriter) {
	began := time.Now()
	defer func() {
		st.live.unsubscribe(st.userID, st.sub)
		out.close()
		st.logger.LogAttrs(ctx, slog.LevelInfo, "event stream ended",
			slog.Float64("duration_s", time.Since(began).Round(time.Millisecond).Seconds()),
			slog.Int("events", st.sent),
			slog.String("request_id", st.requestID),
		)
	}()
	if out.comment("connected") != nil {
		return
	}
	if st.reload {
		st.sendReload(ctx, out)
		return
	}
	backlog := st.backlog
	st.backlog = nil
	for len(backlog) > 0 {
		if !st.send(out, backlog) {
			return
		}
		if len(backlog) < replayPage {
			break
		}
		var err error
		if backlog, err = st.store.ChangesAfter(ctx, st.userID, st.last, replayPage); err != nil {
			st.logger.Warn("live updates: replay", "request_id", st.requestID, "err", err)
			return
		}
	}

	heartbeat := time.NewTicker(st.live.cfg.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(time.Until(st.until))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.live.done:
			return
		case <-expiry.C:
			return // the client reconnects, with a new token, and Last-Event-ID
		case <-heartbeat.C:
			if out.comment("ping") != nil {
				return
			}
		case <-st.sub.wake:
			changes, err := st.live.changesAfter(ctx, st.store, st.userID, st.last, st.live.cfg.Buffer+1)
			if err != nil {
				if ctx.Err() == nil {
					st.logger.Warn("live updates: catch up", "request_id", st.requestID, "err", err)
				}
				return // the client reconnects with Last-Event-ID
			}
			if len(changes) > st.live.cfg.Buffer {
				st.sendReload(ctx, out)
				return
			}
			if !st.send(out, changes) {
				return
			}
		}
	}
}

// send writes the changes after the last one sent, and says whether the
// stream goes on.
func (st *stream) send(out *sseWriter, changes []Change) bool {
	for i := range changes {
		c := &changes[i]
		if c.Position <= st.last {
			continue
		}
		if out.change(c) != nil {
			return false
		}
		st.sent++
		st.last = c.Position
		if c.Event == eventAccountDeleted {
			return false
		}
	}
	return true
}

// sendReload tells the client to fetch its list again and resume from the
// latest position.
func (st *stream) sendReload(ctx context.Context, out *sseWriter) {
	p, err := st.store.LastPosition(ctx, st.userID)
	if err != nil {
		p = 0
	}
	out.event(p, "reload", func(b []byte) []byte { return append(b, "{}"...) })
}

// hijackStream takes the connection of an event stream over from net/http
// and sends the response's status and headers on it, chunked as net/http
// would send them. net/http keeps, for each connection it serves, buffers
// of several kilobytes, a goroutine that reads ahead, and the handler's
// goroutine, deep in the middleware: most of an idle stream's memory. A
// taken-over stream has a goroutine that writes, with a shallow stack, one
// that waits for the client to leave, and borrows a buffer for each write.
// The returned context ends when the client closes the connection. ok is
// false when the connection cannot be taken over; then nothing was written.
func hijackStream(w http.ResponseWriter, r *http.Request, live *eventHub) (out *sseWriter, ctx context.Context, ok bool) {
	if !r.ProtoAtLeast(1, 1) || r.Method != http.MethodGet {
		return nil, nil, false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, false
	}
	// The kernel would let up to megabytes queue for a client that stops
	// reading before a write waits: a small send buffer lets such a
	// client go after a few events and the write timeout.
	if c, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		c.SetWriteBuffer(streamSendBuffer)
	}
	out = &sseWriter{conn: conn, timeout: live.cfg.WriteTimeout, bufs: live.bufs}
	h := w.Header()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Connection", "close") // the stream's end is the connection's
	buf := live.bufs.get()
	*buf = append(*buf, "HTTP/1.1 200 OK\r\n"...)
	*buf = appendHeader(*buf, h)
	*buf = append(*buf, "\r\n"...)
	out.send(*buf)
	live.bufs.put(buf)
	// The request has been read: anything more from the client, or its
	// end, means it is gone.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	go func() {
		defer cancel()
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	return out, ctx, true
}

// appendHeader appends h in wire format, each line ending in CRLF.
func appendHeader(b []byte, h http.Header) []byte {
	for name, values := range h {
		for _, v := range values {
			b = append(b, name...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

// sseWriter writes server-sent events, each sent at once and within its
// own write deadline, so that a client that stops reading is let go after
// timeout. It writes chunks on a taken-over connection, or else through
// net/http's response writer.
type sseWriter struct {
	conn    net.Conn // the connection, taken over; nil when w is used
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	bufs    *bodyBuffers
	failed  error // the first write error: the stream is over
}

// change writes one change as an event.
func (s *sseWriter) change(c *Change) error {
	return s.event(c.Position, c.Event, func(b []byte) []byte { return appendEventData(b, c) })
}

// event writes one event: id (unless 0), event and the data that data
// appends, which is JSON without newlines.
func (s *sseWriter) event(id int64, event string, data func([]byte) []byte) error {
	return s.frame(func(b []byte) []byte {
		if id > 0 {
			b = append(b, "id: "...)
			b = strconv.AppendInt(b, id, 10)
			b = append(b, '\n')
		}
		b = append(b, "event: "...)
		b = append(b, event...)
		b = append(b, "\ndata: "...)
		b = data(b)
		return append(b, "\n\n"...)
	})
}

// comment writes a comment line, which clients ignore: a heartbeat.
func (s *sseWriter) comment(text string) error {
	return s.frame(func(b []byte) []byte {
		b = append(b, ": "...)
		b = append(b, text...)
		return append(b, "\n\n"...)
	})
}

// streamSendBuffer is the kernel's send buffer for a stream's connection.
const streamSendBuffer = 32 << 10

// chunkHead is room for a chunk's size in hex and CRLF, before its data.
const chunkHead = 10

// frame writes what fill appends in one write: on a taken-over connection
// as one chunk (size in hex, CRLF, data, CRLF).
func (s *sseWriter) frame(fill func([]byte) []byte) error {
	if s.failed != nil {
		return s.failed
	}
	buf := s.bufs.get()
	defer s.bufs.put(buf)
	if s.conn == nil {
		*buf = fill(*buf)
		b := *buf
		s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
		if _, err := s.w.Write(b); err != nil {
			s.failed = err
			return err
		}
		s.failed = s.rc.Flush()
		return s.failed
	}
	*buf = fill(append(*buf, make([]byte, chunkHead)...))
	b := *buf
	size := len(b) - chunkHead
	head := strconv.AppendInt(b[:0:0], int64(size), 16)
	head = append(head, "\r\n"...)
	start := chunkHead - len(head)
	copy(b[start:], head)
	*buf = append(b, "\r\n"...)
	return s.send((*buf)[start:])
}

// send writes b on the taken-over connection within the write timeout.
func (s *sseWriter) send(b []byte) error {
	if s.failed != nil {
		return s.failed
	}
	s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	_, s.failed = s.conn.Write(b)
	return s.failed
}

// close ends the stream: on a taken-over connection, with the last chunk,
// and then closes the connection.
func (s *sseWriter) close() {
	if s.conn == nil {
		return
	}
	s.send([]byte("0\r\n\r\n"))
	s.conn.Close()
}

// isEventsParam reports whether name is a parameter of the event stream:
// since, lastEventId (where EventSource polyfills put Last-Event-ID), or
// ticket (ticket.go).
func isEventsParam(name string) bool {
	return name == "since" || name == "lastEventId" || name == "ticket"
}

// parseSince reads where a stream resumes: the Last-Event-ID header, which
// an EventSource sends when it reconnects, or else ?lastEventId=, where
// polyfills send it, or else ?since=. resume is false when none is given.
func parseSince(r *http.Request) (since int64, resume bool, err error) {
	q := r.URL.Query()
	v, name := r.Header.Get("Last-Event-ID"), "The Last-Event-ID header"
	if v == "" {
		v, name = q.Get("lastEventId"), "The lastEventId parameter"
	}
	if v == "" {
		v, name = q.Get("since"), "The since parameter"
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
// caller's changes after since (default 0), oldest first, at most limit (1
// to maxLimit, default defaultChangesLimit): {"changes": [...], "next":
// position}. A client polls again with since=next. A position too old to
// resume from gets {"changes": [], "next": <latest>, "reload": true}:
// refetch the list, then poll from next.
func handleChanges(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := userFrom(r.Context())
		q := r.URL.Query()
		if name, ok := unknownParam(q, func(name string) bool { return name == "since" || name == "limit" }); ok {
			writeError(w, r, logger, badRequest("Unknown parameter %q; the accepted ones are since and limit.", truncate(name, 50)))
			return
		}
		since, _, err := parseSince(r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		limit, err := parseLimit(q, defaultChangesLimit)
		if err != nil {
			writeError(w, r, logger, err)
			return
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
		bufs.write(w, http.StatusOK, func(b []byte) []byte { return appendChanges(b, changes, next, reload) })
	})
}

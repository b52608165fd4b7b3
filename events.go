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
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// replayPage is the most changes a stream reads at once; a page is also
// bounded in bytes (changePageBytes).
const replayPage = 500

// handleEvents answers GET /api/{user_id}/events with the caller's changes
// as server-sent events, until the token (or ticket) expires, the client
// leaves or sends anything, or the instance shuts down. With Last-Event-ID
// (or ?since=) it first replays every change after that position; without,
// it starts from now. A position too old to resume from gets a reload
// event, as does a stream that falls more than EVENTS_BUFFER changes
// behind, which then ends. HEAD gets the headers alone, and holds nothing.
//
// Once the headers are sent, the stream takes the connection over from
// net/http (see hijackStream) and goes on in a goroutine of its own, so that
// an open stream, which mostly waits, costs little memory.
func handleEvents(logger *slog.Logger, live *eventHub) http.Handler {
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
		// A token accepted within the clock leeway has expired all the
		// same: a stream would end at once, and the client would retry
		// with it at once.
		until := streamUntil(r.Context())
		if !until.After(time.Now()) {
			writeError(w, r, logger, fmt.Errorf("%w: %w", errInvalidToken, errNoStreamWindow))
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		sub, err := live.subscribe(u.ID)
		switch {
		case errors.Is(err, errHubClosed):
			writeError(w, r, logger, fmt.Errorf("%w: the instance is shutting down", ErrUnavailable))
			return
		case err != nil:
			writeError(w, r, logger, &rateLimitedError{retryAfter: time.Second})
			return
		}
		// A stream ends after about EVENTS_MAX_LIFETIME, whatever its
		// authorization: its client reconnects with Last-Event-ID, is
		// authorized again, and the reconnections of a deploy spread out.
		if end := time.Now().Add(jittered(live.cfg.MaxLifetime)); end.Before(until) {
			until = end
		}
		st := &stream{logger: logger, live: live, userID: u.ID, sub: sub,
			requestID: requestIDFrom(r.Context()), until: until, resume: resume}

		// Where the stream starts is read before the headers, so that a
		// database that does not answer is a 503, not an empty stream.
		last, swept, err := live.begin(r.Context(), u.ID)
		if err != nil {
			live.unsubscribe(u.ID, sub)
			writeError(w, r, logger, err)
			return
		}
		st.last, st.latest = last, last
		if resume {
			st.last = since
			st.reload = since < swept || since > last
		}
		out, spoke, err := hijackStream(w, r, live.cfg.WriteTimeout)
		if err != nil {
			live.unsubscribe(u.ID, sub)
			writeError(w, r, logger, err)
			return
		}
		st.spoke = spoke
		live.attach(sub, out.conn)
		go func() {
			// A panic here is outside net/http's and recoverPanics' reach:
			// it would end the process.
			defer func() {
				if v := recover(); v != nil {
					logger.Error("event stream panicked", "request_id", st.requestID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				}
			}()
			st.run(out)
		}()
	})
}

// stream is one open event stream: whose, where it is, and until when.
type stream struct {
	logger    *slog.Logger
	live      *eventHub
	userID    string
	sub       *subscription
	requestID string
	until     time.Time // when the token or ticket's authorization ends

	sent   int   // events sent
	last   int64 // the position of the last change sent (or skipped)
	latest int64 // the user's last position when last read: where a reload resumes
	resume bool  // replay the changes after last first
	reload bool  // the position asked for cannot be resumed from: send reload and end
	spoke  bool  // the client sent more than its request: the stream ends at once

	end streamEnd // why it ended, for /metrics: endClient unless set
}

// run sends the stream's events until the client leaves or sends
// anything, the authorization expires, the hub closes, or the stream ends
// itself; then it closes out, logs the stream's end (the request's line was
// logged when it began), and unsubscribes: the hub counts the stream until
// its connection is closed.
//
// A stream is one goroutine, and between events it waits in a read of its
// client's connection. A client of a stream has nothing more to say, so
// the read returns only when the client leaves or speaks, either of which
// ends the stream, or at the read's deadline: the next heartbeat, the end
// of the authorization, or at once when the hub pokes the stream
// (subscription.poke moves the deadline to the past). No other goroutine,
// timer or channel waits for the stream: an idle stream costs its
// connection, a small stack and a few hundred bytes.
func (st *stream) run(out *sseWriter) {
	defer st.live.unsubscribe(st.userID, st.sub)
	defer out.close()
	ctx := st.live.ctx
	began := time.Now()
	defer func() {
		st.live.stats.ended[st.end].Add(1)
		st.logger.LogAttrs(ctx, slog.LevelInfo, "event stream ended",
			slog.Float64("duration_s", time.Since(began).Round(time.Millisecond).Seconds()),
			slog.Int("events", st.sent),
			slog.String("request_id", st.requestID),
		)
	}()
	if out.comment("connected") != nil || st.spoke {
		return
	}
	if st.reload {
		st.end = endReload
		st.sendReload(out)
		return
	}
	if st.resume && !st.catchUp(ctx, out, false) {
		return
	}

	beat := time.Now().Add(st.live.cfg.Heartbeat)
	var b [1]byte
	for {
		// poke sets woken before it moves the deadline: a wake-up taken
		// here came before the deadline set here, and one that comes
		// after moves it again.
		wait := beat
		if st.until.Before(wait) {
			wait = st.until
		}
		out.conn.SetReadDeadline(wait)
		woken := st.sub.woken.Swap(false)
		if !woken {
			if _, err := out.conn.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
				return // the client left, or spoke
			}
			woken = st.sub.woken.Swap(false)
		}
		if st.over() {
			return
		}
		if woken && !st.catchUp(ctx, out, true) {
			return
		}
		if now := time.Now(); !now.Before(beat) {
			if out.comment("ping") != nil {
				return
			}
			beat = now.Add(st.live.cfg.Heartbeat)
		}
	}
}

// catchUp sends the changes after the last one sent, a page at a time: a
// page is read once the one before it is written, and only with room in
// the instance's page budget (eventHub.takePage), so that what a stream
// holds for a slow client is one page, and what all streams hold is
// bounded too. A stream whose last position the history no longer holds
// (it fell more than historyPositions behind, or the changes after it were
// swept) gets reload, as does one woken by a change (live) that finds
// itself more than EVENTS_BUFFER changes behind. It reports whether the
// stream goes on.
func (st *stream) catchUp(ctx context.Context, out *sseWriter, live bool) bool {
	limit := replayPage
	if live {
		limit = st.live.cfg.Buffer + 1
	}
	for {
		if !st.live.takePage(ctx, st.until) {
			return false
		}
		page, err := st.live.changesAfter(ctx, st.userID, st.last, limit)
		if err != nil {
			st.live.givePage()
			if ctx.Err() == nil {
				st.end = endError
				st.logger.Warn("live updates: catch up", "request_id", st.requestID, "err", err)
			}
			return false // the client reconnects with Last-Event-ID
		}
		st.latest = page.Last
		if !page.resumable(st.last) || live && page.Pending > st.live.cfg.Buffer {
			st.live.givePage()
			st.end = endReload
			st.sendReload(out)
			return false
		}
		if live {
			st.live.stats.observeLag(page.Changes)
		}
		ok := st.send(ctx, out, page)
		st.live.givePage()
		if !ok || !page.More {
			return ok
		}
	}
}

// send writes the changes of page after the last one sent, and says
// whether the stream goes on. Between two events it checks that the stream
// may go on: a long replay must not outlive the token, the client or the
// instance.
func (st *stream) send(ctx context.Context, out *sseWriter, page changePage) bool {
	for i := range page.Changes {
		c := &page.Changes[i]
		if c.Position <= st.last {
			continue
		}
		if st.over() || out.encoded(page.frames[i]) != nil {
			return false
		}
		st.sent++
		st.live.stats.sent.Add(1)
		st.last = c.Position
		if c.Event == eventAccountDeleted {
			st.end = endAccount
			return false
		}
	}
	return true
}

// over reports whether the stream must end: the authorization expired, or
// the instance is shutting down. A client that left is found by the next
// write, which fails.
func (st *stream) over() bool {
	select {
	case <-st.live.ctx.Done():
		st.end = endShutdown
		return true
	default:
	}
	if !time.Now().Before(st.until) {
		st.end = endExpired
		return true
	}
	return false
}

// sendReload tells the client to fetch its list again and resume from the
// user's latest position known, which is never older than their history:
// a client that does so resumes from then on.
func (st *stream) sendReload(out *sseWriter) {
	out.event(st.latest, "reload", func(b []byte) []byte { return append(b, "{}"...) })
}

// jittered returns d give or take up to 10%, at random, so that streams
// opened together do not all end together.
func jittered(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// hijackStream takes the connection of an event stream over from net/http
// and sends the response's status and headers on it: chunked for HTTP/1.1,
// as net/http would send them, and until the connection closes for
// HTTP/1.0. net/http keeps, for each connection it serves, buffers of
// several kilobytes, a goroutine that reads ahead, and the handler's
// goroutine, deep in the middleware: most of an idle stream's memory. A
// taken-over stream is one goroutine with a shallow stack (stream.run),
// which borrows a buffer for each write. spoke reports that the client sent
// more than its request already: a client of a stream has nothing more to
// say, and a pipelined request would never be answered.
func hijackStream(w http.ResponseWriter, r *http.Request, writeTimeout time.Duration) (out *sseWriter, spoke bool, err error) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false, fmt.Errorf("take the stream's connection over: %w", err)
	}
	// The kernel would let up to megabytes queue for a client that stops
	// reading before a write waits: a small send buffer lets such a
	// client go after a few events and the write timeout. A client whose
	// network is gone acknowledges nothing, and heartbeats would sit in
	// even a small buffer for the kernel's 15 minutes of retransmissions:
	// the user timeout closes the connection once sent data has gone
	// unacknowledged for the write timeout.
	if c, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		c.SetWriteBuffer(streamSendBuffer)
	}
	setUserTimeout(conn, writeTimeout)
	chunked := r.ProtoAtLeast(1, 1)
	out = &sseWriter{conn: conn, chunked: chunked, timeout: writeTimeout}
	h := w.Header()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Connection", "close") // the stream's end is the connection's
	b := make([]byte, 0, 512)
	if chunked {
		h.Set("Transfer-Encoding", "chunked")
		b = append(b, "HTTP/1.1 200 OK\r\n"...)
	} else {
		b = append(b, "HTTP/1.0 200 OK\r\n"...)
	}
	b = appendHeader(b, h)
	b = append(b, "\r\n"...)
	out.send(b)
	return out, rw.Reader.Buffered() > 0, nil
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

// sseWriter writes server-sent events on a taken-over connection, each sent
// at once and within its own write deadline, so that a client that stops
// reading is let go after timeout. Each event is a chunk when chunked
// (HTTP/1.1); for HTTP/1.0 the body is the bytes until the connection
// closes.
type sseWriter struct {
	conn    net.Conn
	chunked bool
	timeout time.Duration
	buf     []byte // the frame being written; kept only while small
	failed  error  // the first write error: the stream is over
}

// encoded writes an event made by appendChangeEvent.
func (s *sseWriter) encoded(event []byte) error {
	return s.frame(func(b []byte) []byte { return append(b, event...) })
}

// event writes one event: id (unless 0), event and the data that data
// appends, which is JSON without newlines.
func (s *sseWriter) event(id int64, event string, data func([]byte) []byte) error {
	return s.frame(func(b []byte) []byte { return appendEvent(b, id, event, data) })
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

// keptFrameBuffer is the largest frame buffer a stream keeps between
// writes; a larger one (a bulk delete's event) is let go once written.
const keptFrameBuffer = 4 << 10

// chunkHead is room for a chunk's size in hex and CRLF, before its data.
const chunkHead = 10

// frame writes what fill appends in one write: when chunked, as one chunk
// (size in hex, CRLF, data, CRLF).
func (s *sseWriter) frame(fill func([]byte) []byte) error {
	if s.failed != nil {
		return s.failed
	}
	if !s.chunked {
		s.buf = fill(s.buf[:0])
		err := s.send(s.buf)
		s.trim()
		return err
	}
	b := fill(append(s.buf[:0], make([]byte, chunkHead)...))
	size := len(b) - chunkHead
	head := strconv.AppendInt(b[:0:0], int64(size), 16)
	head = append(head, "\r\n"...)
	start := chunkHead - len(head)
	copy(b[start:], head)
	s.buf = append(b, "\r\n"...)
	err := s.send(s.buf[start:])
	s.trim()
	return err
}

// trim lets go of a frame buffer grown large.
func (s *sseWriter) trim() {
	if cap(s.buf) > keptFrameBuffer {
		s.buf = nil
	}
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

// close ends the stream: when chunked, with the last chunk; then it closes
// the connection.
func (s *sseWriter) close() {
	if s.chunked {
		s.send([]byte("0\r\n\r\n"))
	}
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
// to maxLimit, default defaultChangesLimit) and about changesAnswerBytes:
// {"changes": [...], "next": position}. A client polls again with
// since=next. A position too old to
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
		page, reload, err := store.Changes(r.Context(), u.ID, since, limit, changesAnswerBytes)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		next := since
		if reload {
			next = page.Last
		}
		changes := page.Changes
		if len(changes) > 0 {
			next = changes[len(changes)-1].Position
		}
		bufs.write(w, http.StatusOK, func(b []byte) []byte { return appendChanges(b, changes, next, reload) })
	})
}

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
	"fmt"
	"log/slog"
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
				changes, err := live.changesAfter(r.Context(), store, u.ID, last, live.cfg.Buffer+1)
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

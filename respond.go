// This file writes responses: JSON bodies with their headers, and
// problem details for errors, through the one mapping from an error to an
// HTTP status.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// writeJSON writes v as JSON with the given status. It marshals first, so
// that a failure can still become an error response, then sets the headers,
// then the status, then the body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a programming error (an unmarshalable type) gets here.
		panic(fmt.Sprintf("writeJSON: %v", err))
	}
	writeBody(w, status, append(body, '\n'))
}

// writeBody writes a JSON body with the given status. It sets
// Content-Length, so that a body larger than net/http's buffer is not sent
// chunked.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeTask writes a task with its ETag.
func writeTask(w http.ResponseWriter, bufs *bodyBuffers, status int, t Task) {
	w.Header().Set("ETag", etag(t))
	bufs.write(w, status, func(b []byte) []byte { return appendTask(b, &t) })
}

// writeTasks writes a page of tasks as a JSON array.
func writeTasks(w http.ResponseWriter, bufs *bodyBuffers, tasks []Task) {
	bufs.write(w, http.StatusOK, func(b []byte) []byte { return appendTasks(b, tasks) })
}

// bodyBuffers holds the buffers the task encoder writes response bodies
// into, so that a busy server does not make a new one for every response:
// against a new buffer each time, a list of 20 is 11% faster and allocates
// 23% less (BenchmarkRoutes). One serves a whole server (routes makes it).
type bodyBuffers struct {
	pool sync.Pool
}

func newBodyBuffers() *bodyBuffers {
	b := &bodyBuffers{}
	b.pool.New = func() any { buf := make([]byte, 0, 8<<10); return &buf }
	return b
}

// write writes the JSON that encode appends to a pooled buffer. A buffer
// that a very large response grew is not kept: one big page must not hold
// its memory for ever.
func (b *bodyBuffers) write(w http.ResponseWriter, status int, encode func([]byte) []byte) {
	buf := b.get()
	*buf = append(encode(*buf), '\n')
	writeBody(w, status, *buf)
	b.put(buf)
}

// get returns an empty buffer from the pool.
func (b *bodyBuffers) get() *[]byte {
	buf := b.pool.Get().(*[]byte)
	*buf = (*buf)[:0]
	return buf
}

// put gives a buffer from get back, unless it grew too large to keep.
func (b *bodyBuffers) put(buf *[]byte) {
	if cap(*buf) <= 64<<10 {
		b.pool.Put(buf)
	}
}

// problem is an RFC 9457 problem details object, the body of every error.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []fieldError `json:"errors,omitempty"`
	// ErrorCount counts every invalid field, of which Errors lists at most
	// maxListedErrors.
	ErrorCount int `json:"error_count,omitempty"`
}

// answer is how taskapi responds to an error: the problem it sends, the
// headers that go with it, and what it logs.
type answer struct {
	status     int
	detail     string
	fields     *fieldErrors  // for 422: the bad fields
	challenge  string        // WWW-Authenticate, for 401
	retryAfter time.Duration // Retry-After, for 429 and 503
	logLevel   slog.Level    // the level of logMessage
	logMessage string        // when not "", the error is logged with this message
}

// Challenges of the 401 answers (RFC 6750, section 3).
const (
	challengeToken   = `Bearer realm="taskapi"`
	challengeInvalid = `Bearer realm="taskapi", error="invalid_token"`
)

// errorAnswers maps each error that taskapi expects to its answer; the
// first whose error errors.Is matches wins. It is a table, never changed.
var errorAnswers = []struct {
	err error
	answer
}{
	{errMissingToken, answer{status: 401, detail: "Send the JWT from your sign-in in the Authorization header: Authorization: Bearer <token>.",
		challenge: challengeToken}},
	{errNotJWT, answer{status: 401, detail: "The bearer token is not a JWT. Send the JWT that Better Auth issues " +
		"(GET /api/auth/token, or the set-auth-jwt response header), not the session token from its cookie.",
		challenge: challengeInvalid, logLevel: slog.LevelInfo, logMessage: "token rejected"}},
	{errInvalidToken, answer{status: 401, detail: "The bearer token is invalid or has expired; get a new one by signing in again.",
		challenge: challengeInvalid, logLevel: slog.LevelInfo, logMessage: "token rejected"}},
	{errForbidden, answer{status: 403, detail: `The path names another user; use your own user id, or "me".`}},
	{ErrNotFound, answer{status: 404, detail: "There is no task with this id; it may have been deleted."}},
	// A signed cursor the store cannot use: only a bug or a leaked key.
	{ErrBadPosition, answer{status: 400, detail: errBadCursor.Error()}},
	{ErrStale, answer{status: 412, detail: "The task has changed since the ETag in If-Match; fetch it again, then retry."}},
	{ErrKeyReused, answer{status: 422, detail: "This Idempotency-Key was already used with a different request; use a new key for a new task."}},
	{ErrKeyTaskDeleted, answer{status: 409, detail: "The task this Idempotency-Key created has been deleted since; to create it again, send a new key."}},
	{ErrQuota, answer{status: 409, detail: "You have as many tasks as one account may have; delete some to make room."}},
	{errTooLarge, answer{status: 413, detail: errTooLarge.Error()}},
	{ErrRejected, answer{status: 422, detail: "A value is not acceptable to the database.",
		logLevel: slog.LevelWarn, logMessage: "database rejected a validated value"}},
	{errDraining, answer{status: 503, detail: "This instance is shutting down; send requests to another.", retryAfter: time.Second}},
	{ErrUnavailable, answerUnavailable},
	{ErrKeysUnavailable, answerUnavailable},
}

var answerUnavailable = answer{status: 503, detail: "A service taskapi depends on is unavailable; try again in a moment.",
	retryAfter: time.Second, logLevel: slog.LevelWarn, logMessage: "unavailable"}

// answerFor returns the answer to err: from errorAnswers, from the error
// types that carry their own details, or, for anything unexpected, a
// generic 500 that reveals nothing and logs the error.
func answerFor(r *http.Request, err error) answer {
	for _, e := range errorAnswers {
		if errors.Is(err, e.err) {
			return e.answer
		}
	}
	var (
		badRequest  badRequestError
		fieldErrs   *fieldErrors
		rateLimited *rateLimitedError
	)
	switch {
	case errors.As(err, &badRequest):
		return answer{status: 400, detail: badRequest.Error()}
	case errors.As(err, &fieldErrs):
		return answer{status: 422, detail: fieldErrs.detail(), fields: fieldErrs}
	case errors.As(err, &rateLimited):
		return answer{status: 429, detail: "Too many requests; wait as long as Retry-After says, then try again.",
			retryAfter: max(rateLimited.retryAfter, time.Second)}
	case r.Context().Err() != nil:
		// The client went away; nobody will read this answer.
		return answer{status: 503, detail: "The request was cancelled."}
	}
	return answer{status: 500, detail: "Something went wrong in taskapi; quote the request id when reporting it.",
		logLevel: slog.LevelError, logMessage: "internal error"}
}

// writeError is the one place that turns an error into an HTTP status: it
// answers with the problem details of answerFor, its headers, and logs what
// the answer says to log, with the request id.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	a := answerFor(r, err)
	p := problem{Type: "about:blank", Title: http.StatusText(a.status), Status: a.status,
		Detail: a.detail, RequestID: requestIDFrom(r.Context())}
	if a.fields != nil {
		p.Errors, p.ErrorCount = a.fields.list, a.fields.count
	}
	if a.logMessage != "" {
		logger.LogAttrs(r.Context(), a.logLevel, a.logMessage,
			slog.String("request_id", p.RequestID), slog.String("err", err.Error()))
	}
	if a.challenge != "" {
		w.Header().Set("WWW-Authenticate", a.challenge)
	}
	if a.retryAfter > 0 {
		// Whole seconds, at least one (RFC 9110, section 10.2.3).
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(a.retryAfter.Seconds(), 1)))))
	}
	writeProblem(w, p)
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, p problem) {
	body, _ := json.Marshal(p) // a problem always marshals
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	w.Write(append(body, '\n'))
}

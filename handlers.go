package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// maxBodyBytes bounds every request body; a task is far smaller.
const maxBodyBytes = 64 << 10

// newServer returns the whole HTTP API: the routes, each with its own
// middleware, and the middleware every request passes through.
func newServer(logger *slog.Logger, store *Store, verifier *Verifier, limiter *rateLimiter, cursors cursorCodec, corsOrigins []string) http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes(logger, store, verifier, limiter, cursors) {
		mux.Handle(r.pattern, r.handler)
	}

	// Inner to outer. recoverPanics is inside logRequests so that a panic
	// is logged as the 500 it becomes.
	var h http.Handler = mux
	h = problemRoutes(h, logger)
	h = limitQuery(h, logger)
	h = cors(h, corsOrigins)
	h = secureHeaders(h)
	h = recoverPanics(h, logger)
	h = logRequests(h, logger)
	return h
}

// route is one entry of the route table.
type route struct {
	pattern string
	handler http.Handler
}

// routes is the route table: every pattern taskapi serves, with the
// middleware of each. openapi.json describes exactly these.
func routes(logger *slog.Logger, store *Store, verifier *Verifier, limiter *rateLimiter, cursors cursorCodec) []route {
	authenticate, limit := requireUser(verifier, logger), limitRate(limiter, logger)
	auth := func(h http.Handler) http.Handler { return authenticate(limit(h)) }
	return []route{
		{"GET /healthz", handleHealthz(buildVersion())},
		{"GET /readyz", handleReadyz(logger, store)},
		{"GET /openapi.json", handleOpenAPI()},

		{"GET /api/me", auth(handleAccountGet(logger, store))},
		{"DELETE /api/me", auth(handleAccountDelete(logger, store))},

		{"GET /api/{user_id}/tasks", auth(handleTaskList(logger, store, cursors))},
		{"POST /api/{user_id}/tasks", auth(handleTaskCreate(logger, store))},
		{"DELETE /api/{user_id}/tasks", auth(handleTaskDeleteCompleted(logger, store))},
		{"GET /api/{user_id}/tasks/stats", auth(handleTaskStats(logger, store))},
		{"GET /api/{user_id}/tasks/{id}", auth(handleTaskGet(logger, store))},
		{"PUT /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store))},
		{"PATCH /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store))},
		{"DELETE /api/{user_id}/tasks/{id}", auth(handleTaskDelete(logger, store))},
		{"PATCH /api/{user_id}/tasks/{id}/complete", auth(handleTaskComplete(logger, store))},
	}
}

// handleHealthz answers 200 while the process runs, with the version. It
// touches no database, so a slow database never gets a healthy instance
// restarted.
func handleHealthz(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version})
	})
}

// openAPIDocument describes every route, parameter, header and schema.
//
//go:embed openapi.json
var openAPIDocument []byte

// handleOpenAPI serves the OpenAPI 3.1 document.
func handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPIDocument)
	})
}

// handleReadyz answers 200 when the database answers within a second, and
// 503 otherwise, so that a load balancer sends traffic elsewhere.
func handleReadyz(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := store.Ping(r.Context(), time.Second); err != nil {
			writeError(w, r, logger, fmt.Errorf("%w: %w", ErrUnavailable, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// handleTaskList answers GET /api/{user_id}/tasks with a page of the
// caller's tasks: a JSON array, and, when there are more, a Link header with
// rel="next" whose URL fetches the next page. See parseListOptions for the
// query parameters.
func handleTaskList(logger *slog.Logger, store *Store, cursors cursorCodec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := userFrom(r.Context())
		q := r.URL.Query()
		opts, err := parseListOptions(q)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		scope := listScope(opts)
		if c := q.Get("cursor"); c != "" {
			pos, err := cursors.decode(u.ID, scope, c)
			if err != nil {
				writeError(w, r, logger, err)
				return
			}
			opts.After = &pos
		}
		limit := opts.Limit
		opts.Limit++ // one more than asked tells whether a next page exists
		tasks, err := store.ListTasks(r.Context(), u.ID, opts)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if len(tasks) > limit {
			tasks = tasks[:limit]
			last := tasks[limit-1]
			q.Set("cursor", cursors.encode(u.ID, scope, Position{Key: SortKey(opts.Sort, opts.Desc, last), ID: last.ID}))
			w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+q.Encode()+`>; rel="next"`)
		}
		writeTasks(w, tasks)
	})
}

// Limits of the list query parameters.
const (
	defaultLimit = 100
	maxLimit     = 500
	maxQuery     = 200
)

// parseListOptions reads the list query parameters, naming the one that has a
// value it cannot use:
//
//	status=all|pending|completed  sort=created|updated|title|due_date|priority
//	order=asc|desc                limit=1..500 (default 100)
//	q=text                        priority=low|medium|high
//	tag=t (repeatable)            due_before=, due_after= (RFC 3339)
//	overdue=true|false
//
// The default order is newest first for created and updated, ascending
// otherwise. The cursor parameter is read by the caller.
func parseListOptions(q url.Values) (ListOptions, error) {
	opts := ListOptions{Sort: "created", Limit: defaultLimit}
	switch status := q.Get("status"); status {
	case "", "all":
	case "pending", "completed":
		completed := status == "completed"
		opts.Completed = &completed
	default:
		return ListOptions{}, badRequest("status must be all, pending or completed")
	}
	if s := q.Get("sort"); s != "" {
		if _, ok := listSorts[s]; !ok {
			return ListOptions{}, badRequest("sort must be created, updated, title, due_date or priority")
		}
		opts.Sort = s
	}
	switch order := q.Get("order"); order {
	case "":
		opts.Desc = opts.Sort == "created" || opts.Sort == "updated" // newest first
	case "asc", "desc":
		opts.Desc = order == "desc"
	default:
		return ListOptions{}, badRequest("order must be asc or desc")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return ListOptions{}, badRequest("limit must be a whole number from 1 to %d", maxLimit)
		}
		opts.Limit = n
	}
	if v := q.Get("q"); v != "" {
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) || utf8.RuneCountInString(v) > maxQuery {
			return ListOptions{}, badRequest("q must be text of at most %d characters", maxQuery)
		}
		opts.Query = v
	}
	if v := q.Get("priority"); v != "" {
		if !slices.Contains(priorities, v) {
			return ListOptions{}, badRequest("priority must be low, medium or high")
		}
		opts.Priority = v
	}
	for _, tag := range q["tag"] {
		tag = strings.TrimSpace(tag)
		if tag == "" || !utf8.ValidString(tag) || strings.ContainsRune(tag, 0) || utf8.RuneCountInString(tag) > maxTag {
			return ListOptions{}, badRequest("tag must be 1 to %d characters", maxTag)
		}
		if !slices.Contains(opts.Tags, tag) {
			opts.Tags = append(opts.Tags, tag)
		}
	}
	for _, p := range []struct {
		name string
		dst  **time.Time
	}{{"due_before", &opts.DueBefore}, {"due_after", &opts.DueAfter}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return ListOptions{}, badRequest("%s must be an RFC 3339 timestamp, such as 2026-12-31T00:00:00Z", p.name)
			}
			t = t.UTC()
			*p.dst = &t
		}
	}
	switch v := q.Get("overdue"); v {
	case "":
	case "true", "false":
		overdue := v == "true"
		opts.Overdue = &overdue
	default:
		return ListOptions{}, badRequest("overdue must be true or false")
	}
	return opts, nil
}

// listScope describes what a list selects and in which order, but not where
// a page starts or how long it is. A cursor is only valid within its scope.
func listScope(opts ListOptions) string {
	opts.Limit, opts.After = 0, nil
	b, _ := json.Marshal(opts) // plain data: cannot fail
	return string(b)
}

// cursorCodec makes and checks the opaque cursors of list pages. A cursor
// holds the position of the last task of a page and an HMAC over it, the
// user and the list's scope, so a cursor that was altered, or made for
// another user or another query, is refused.
type cursorCodec struct {
	key []byte
}

var errBadCursor = badRequestError("cursor is not valid for this list; start again without it")

func (c cursorCodec) mac(userID, scope, payload string) []byte {
	m := hmac.New(sha256.New, c.key)
	for _, part := range []string{userID, scope, payload} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return m.Sum(nil)[:16]
}

func (c cursorCodec) encode(userID, scope string, p Position) string {
	payload := p.Key + "\x00" + p.ID
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(c.mac(userID, scope, payload))
}

func (c cursorCodec) decode(userID, scope, cursor string) (Position, error) {
	rawPayload, rawMAC, ok := strings.Cut(cursor, ".")
	if !ok || len(cursor) > 2048 {
		return Position{}, errBadCursor
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(rawPayload)
	mac, err2 := base64.RawURLEncoding.DecodeString(rawMAC)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, c.mac(userID, scope, string(payload))) {
		return Position{}, errBadCursor
	}
	key, id, ok := strings.Cut(string(payload), "\x00")
	if !ok {
		return Position{}, errBadCursor
	}
	return Position{Key: key, ID: id}, nil
}

// handleTaskStats answers GET /api/{user_id}/tasks/stats with the caller's
// task counts.
func handleTaskStats(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := store.Stats(r.Context(), userFrom(r.Context()).ID)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}

// handleTaskDeleteCompleted answers DELETE /api/{user_id}/tasks?status=completed
// by deleting the caller's completed tasks, with {"deleted": n}. Every other
// form is refused, so that no list is wiped by accident.
func handleTaskDeleteCompleted(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); len(q) != 1 || len(q["status"]) != 1 || q.Get("status") != "completed" {
			writeError(w, r, logger, badRequest("only completed tasks can be deleted in bulk: DELETE ...?status=completed"))
			return
		}
		n, err := store.DeleteCompleted(r.Context(), userFrom(r.Context()).ID)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int64{"deleted": n})
	})
}

// handleTaskCreate answers POST /api/{user_id}/tasks: 201 with the new task
// and its Location. With an Idempotency-Key header, a retry of the same
// request gets the same answer and creates nothing.
func handleTaskCreate(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, hasKey := r.Header.Get("Idempotency-Key"), len(r.Header.Values("Idempotency-Key")) > 0
		if hasKey && !validIdempotencyKey(key) {
			writeError(w, r, logger, badRequest("Idempotency-Key must be 1 to 255 visible ASCII characters"))
			return
		}
		var req taskRequest
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, logger, err)
			return
		}
		in, err := req.newTask()
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		u := userFrom(r.Context())
		var (
			task     Task
			replayed bool
		)
		if hasKey {
			task, replayed, err = store.CreateTaskOnce(r.Context(), u, key, in)
		} else {
			task, err = store.CreateTask(r.Context(), u, in)
		}
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		w.Header().Set("Location", "/api/"+url.PathEscape(u.ID)+"/tasks/"+task.ID)
		writeTask(w, http.StatusCreated, task)
	})
}

// validIdempotencyKey accepts 1 to 255 visible ASCII characters.
func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > 255 {
		return false
	}
	for _, c := range []byte(key) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// handleTaskGet answers GET /api/{user_id}/tasks/{id}, or 304 when
// If-None-Match names the task's current ETag.
func handleTaskGet(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		task, err := store.GetTask(r.Context(), userFrom(r.Context()).ID, r.PathValue("id"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatchHits(inm, task.Version) {
			w.Header().Set("ETag", etag(task))
			w.WriteHeader(http.StatusNotModified)
			return
		}
		writeTask(w, http.StatusOK, task)
	})
}

// handleTaskUpdate answers PUT and PATCH /api/{user_id}/tasks/{id}, both a
// partial update: members present in the body change, absent ones stay, and
// null clears description or due_date. With If-Match the update happens only
// if the task is unchanged since; otherwise 412.
func handleTaskUpdate(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ifMatch, err := parseIfMatch(r.Header.Values("If-Match"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		var req taskRequest
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, logger, err)
			return
		}
		patch, err := req.patch()
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		task, err := store.UpdateTask(r.Context(), userFrom(r.Context()), r.PathValue("id"), patch, ifMatch)
		if err != nil {
			writeWriteError(w, r, logger, task, err)
			return
		}
		writeTask(w, http.StatusOK, task)
	})
}

// handleTaskComplete answers PATCH /api/{user_id}/tasks/{id}/complete. With
// no body it toggles completed; with {"completed": bool} it sets it, which
// is safe to retry. If-Match works as for updates.
func handleTaskComplete(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ifMatch, err := parseIfMatch(r.Header.Values("If-Match"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		var completed *bool // nil toggles
		body, err := readBody(w, r)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if len(bytes.TrimSpace(body)) > 0 {
			var req struct {
				Completed field[bool] `json:"completed"`
			}
			if err := unmarshalStrict(body, &req); err != nil {
				writeError(w, r, logger, err)
				return
			}
			if !req.Completed.Set || req.Completed.Null || req.Completed.Invalid {
				writeError(w, r, logger, fieldErrors{{"completed", "must be true or false (or send no body to toggle)"}})
				return
			}
			completed = &req.Completed.Value
		}
		task, err := store.SetCompleted(r.Context(), userFrom(r.Context()), r.PathValue("id"), completed, ifMatch)
		if err != nil {
			writeWriteError(w, r, logger, task, err)
			return
		}
		writeTask(w, http.StatusOK, task)
	})
}

// handleTaskDelete answers DELETE /api/{user_id}/tasks/{id} with 204.
// If-Match works as for updates.
func handleTaskDelete(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ifMatch, err := parseIfMatch(r.Header.Values("If-Match"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if current, err := store.DeleteTask(r.Context(), userFrom(r.Context()).ID, r.PathValue("id"), ifMatch); err != nil {
			writeWriteError(w, r, logger, current, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// writeWriteError answers a failed write; a 412 carries the ETag of the
// task as it now is, so the client can fetch it and decide.
func writeWriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, current Task, err error) {
	if errors.Is(err, ErrStale) {
		w.Header().Set("ETag", etag(current))
	}
	writeError(w, r, logger, err)
}

// handleAccountGet answers GET /api/me with the caller's profile and task counts.
func handleAccountGet(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := store.Account(r.Context(), userFrom(r.Context()))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, a)
	})
}

// handleAccountDelete answers DELETE /api/me by erasing the caller and all
// their tasks, with 204. A later request with a still-valid token finds an
// empty account.
func handleAccountDelete(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := store.DeleteAccount(r.Context(), userFrom(r.Context()).ID); err != nil {
			writeError(w, r, logger, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// etag is the strong entity tag of a task: its version, quoted.
func etag(t Task) string {
	return `"` + strconv.FormatInt(t.Version, 10) + `"`
}

// parseIfMatch reads If-Match headers (RFC 9110, section 13.1.1) into the
// versions they accept: nil for none or "*", which put no condition on the
// write (a missing task is a 404 either way). Weak tags never match, by the
// strong comparison If-Match requires, and neither do tags that are not
// versions, so a list of only those accepts nothing: 412.
func parseIfMatch(values []string) ([]int64, error) {
	if len(values) == 0 {
		return nil, nil
	}
	accepted := []int64{}
	for _, tag := range splitETags(values) {
		switch {
		case tag == "*":
			return nil, nil
		case strings.HasPrefix(tag, "W/") && isQuoted(tag[2:]):
			// weak: never matches
		case isQuoted(tag):
			if v, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
				accepted = append(accepted, v)
			}
		default:
			return nil, badRequest(`If-Match must be "*" or entity tags such as "3" (with the quotes)`)
		}
	}
	return accepted, nil
}

// noneMatchHits reports whether an If-None-Match header names version, by
// the weak comparison it calls for, or is "*".
func noneMatchHits(header string, version int64) bool {
	want := strconv.FormatInt(version, 10)
	for _, tag := range splitETags([]string{header}) {
		tag = strings.TrimPrefix(tag, "W/")
		if tag == "*" || isQuoted(tag) && tag[1:len(tag)-1] == want {
			return true
		}
	}
	return false
}

// splitETags splits comma-separated entity tags.
func splitETags(values []string) []string {
	var tags []string
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				tags = append(tags, tag)
			}
		}
	}
	return tags
}

func isQuoted(s string) bool {
	return len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"'
}

// writeTask writes a task with its ETag.
func writeTask(w http.ResponseWriter, status int, t Task) {
	w.Header().Set("ETag", etag(t))
	writeEncoded(w, status, func(b []byte) []byte { return appendTask(b, &t) })
}

// writeTasks writes a page of tasks as a JSON array.
func writeTasks(w http.ResponseWriter, tasks []Task) {
	writeEncoded(w, http.StatusOK, func(b []byte) []byte { return appendTasks(b, tasks) })
}

// bufferPool holds response buffers, so that a busy server does not make a
// new one for every response.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// writeEncoded writes the JSON that encode appends to a pooled buffer. A
// buffer that a very large response grew is not kept: one big page must not
// hold its memory for ever.
func writeEncoded(w http.ResponseWriter, status int, encode func([]byte) []byte) {
	buf := bufferPool.Get().(*[]byte)
	*buf = append(encode((*buf)[:0]), '\n')
	writeBody(w, status, *buf)
	if cap(*buf) <= 64<<10 {
		bufferPool.Put(buf)
	}
}

// appendTasks appends tasks as a JSON array.
func appendTasks(b []byte, tasks []Task) []byte {
	b = append(b, '[')
	for i := range tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTask(b, &tasks[i])
	}
	return append(b, ']')
}

// appendTask appends t as JSON, byte for byte what json.Marshal makes of it
// (FuzzAppendTask checks that), but without reflection: encoding was the
// largest cost of a list in taskapi's CPU profile, and this is four times
// faster and allocates nothing (BenchmarkEncodeTasks).
func appendTask(b []byte, t *Task) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, t.ID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, t.UserID)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, t.Title)
	b = append(b, `,"description":`...)
	if t.Description == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *t.Description)
	}
	b = append(b, `,"completed":`...)
	b = strconv.AppendBool(b, t.Completed)
	b = append(b, `,"priority":`...)
	b = appendJSONString(b, t.Priority)
	b = append(b, `,"due_date":`...)
	if t.DueDate == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONTime(b, *t.DueDate)
	}
	b = append(b, `,"tags":[`...)
	for i, tag := range t.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, tag)
	}
	b = append(b, `],"created_at":`...)
	b = appendJSONTime(b, t.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendJSONTime(b, t.UpdatedAt)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, t.Version, 10)
	return append(b, '}')
}

// appendJSONTime appends t as encoding/json does: RFC 3339 with as many
// fractional digits as needed, in quotes.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: quotes, backslashes and control characters; <, > and & (so
// that the JSON is safe inside HTML); U+2028 and U+2029 (so that it is safe
// inside JavaScript); invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// field is one member of a JSON request body. It records whether the member
// was present, whether it was null, and whether its value was unusable (the
// wrong JSON type, or not valid UTF-8), instead of failing the whole decode,
// so that validation can list every bad member at once.
type field[T any] struct {
	Set     bool
	Null    bool
	Invalid bool
	Value   T
}

// UnmarshalJSON implements json.Unmarshaler. It sees the member's raw bytes,
// before encoding/json would quietly replace invalid UTF-8 with U+FFFD.
func (f *field[T]) UnmarshalJSON(b []byte) error {
	f.Set = true
	switch {
	case string(b) == "null":
		f.Null = true
	case !utf8.Valid(b):
		f.Invalid = true
	default:
		f.Invalid = json.Unmarshal(b, &f.Value) != nil
	}
	return nil
}

// taskRequest is the body of a create or an update.
type taskRequest struct {
	Title       field[string]    `json:"title"`
	Description field[string]    `json:"description"`
	Completed   field[bool]      `json:"completed"`
	Priority    field[string]    `json:"priority"`
	DueDate     field[time.Time] `json:"due_date"`
	Tags        field[[]string]  `json:"tags"`
}

// Limits of a task's fields, in characters (runes), mirrored by schema.sql.
const (
	maxTitle       = 200
	maxDescription = 1000
	maxTags        = 20
	maxTag         = 50
)

// newTask validates req as a create: title is required, the rest default.
func (req *taskRequest) newTask() (NewTask, error) {
	var errs fieldErrors
	if !req.Title.Set {
		errs.add("title", "is required")
	}
	p := req.validate(&errs)
	if err := errs.err(); err != nil {
		return NewTask{}, err
	}
	in := NewTask{Title: *p.Title, Description: p.Description, DueDate: p.DueDate, Priority: "medium", Tags: p.Tags}
	if p.Completed != nil {
		in.Completed = *p.Completed
	}
	if p.Priority != nil {
		in.Priority = *p.Priority
	}
	return in, nil
}

// patch validates req as a partial update.
func (req *taskRequest) patch() (TaskPatch, error) {
	var errs fieldErrors
	p := req.validate(&errs)
	return p, errs.err()
}

// validate checks every member that is present, adds a message to errs for
// each bad one, and returns the good ones as a patch. Title and tags are
// trimmed; duplicate tags are dropped, keeping the first.
func (req *taskRequest) validate(errs *fieldErrors) TaskPatch {
	var p TaskPatch
	if f := req.Title; f.Set {
		title := strings.TrimSpace(f.Value)
		switch n := utf8.RuneCountInString(title); {
		case f.Null || f.Invalid:
			errs.add("title", "must be a string")
		case n == 0:
			errs.add("title", "must not be empty")
		case n > maxTitle:
			errs.add("title", fmt.Sprintf("must be at most %d characters (got %d)", maxTitle, n))
		case strings.ContainsRune(title, 0):
			errs.add("title", "must not contain NUL characters")
		default:
			p.Title = &title
		}
	}
	if f := req.Description; f.Set {
		p.SetDescription = true
		switch n := utf8.RuneCountInString(f.Value); {
		case f.Null:
		case f.Invalid:
			errs.add("description", "must be a string or null")
		case n > maxDescription:
			errs.add("description", fmt.Sprintf("must be at most %d characters (got %d)", maxDescription, n))
		case strings.ContainsRune(f.Value, 0):
			errs.add("description", "must not contain NUL characters")
		default:
			p.Description = &f.Value
		}
	}
	if f := req.Completed; f.Set {
		if f.Null || f.Invalid {
			errs.add("completed", "must be true or false")
		} else {
			p.Completed = &f.Value
		}
	}
	if f := req.Priority; f.Set {
		if f.Null || f.Invalid || !slices.Contains(priorities, f.Value) {
			errs.add("priority", "must be low, medium or high")
		} else {
			p.Priority = &f.Value
		}
	}
	if f := req.DueDate; f.Set {
		p.SetDueDate = true
		switch {
		case f.Null:
		case f.Invalid:
			errs.add("due_date", "must be an RFC 3339 timestamp, such as 2026-12-31T17:00:00Z, or null")
		default:
			d := f.Value.UTC()
			p.DueDate = &d
		}
	}
	if f := req.Tags; f.Set {
		if f.Null || f.Invalid {
			errs.add("tags", "must be an array of strings")
		} else {
			p.Tags = cleanTags(f.Value, errs)
		}
	}
	return p
}

// cleanTags trims each tag, drops duplicates and checks the limits.
func cleanTags(raw []string, errs *fieldErrors) []string {
	tags := make([]string, 0, len(raw))
	for i, tag := range raw {
		tag = strings.TrimSpace(tag)
		name := fmt.Sprintf("tags[%d]", i)
		switch n := utf8.RuneCountInString(tag); {
		case n == 0:
			errs.add(name, "must not be empty")
		case n > maxTag:
			errs.add(name, fmt.Sprintf("must be at most %d characters (got %d)", maxTag, n))
		case strings.ContainsRune(tag, 0):
			errs.add(name, "must not contain NUL characters")
		case !slices.Contains(tags, tag):
			tags = append(tags, tag)
		}
	}
	if len(tags) > maxTags {
		errs.add("tags", fmt.Sprintf("must hold at most %d distinct tags (got %d)", maxTags, len(tags)))
	}
	return tags
}

// fieldError says what is wrong with one member of a request body.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// fieldErrors collects every fieldError of one request; writeError answers
// it with 422.
type fieldErrors []fieldError

func (e *fieldErrors) add(field, message string) {
	*e = append(*e, fieldError{Field: field, Message: message})
}

// err returns e as an error, or nil when it is empty.
func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

func (e fieldErrors) Error() string {
	return fmt.Sprintf("%d invalid fields, first %s: %s", len(e), e[0].Field, e[0].Message)
}

// badRequestError is a request taskapi cannot read: malformed JSON, an
// unknown member, a bad query parameter. writeError answers it with 400 and
// its text as the detail.
type badRequestError string

func (e badRequestError) Error() string { return string(e) }

func badRequest(format string, args ...any) error {
	return badRequestError(fmt.Sprintf(format, args...))
}

// errTooLarge means the body is over maxBodyBytes.
var errTooLarge = fmt.Errorf("request body is larger than %d bytes", maxBodyBytes)

// readBody reads the whole body, up to maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, badRequest("could not read the body: %v", err)
	}
	return body, nil
}

// decodeJSON reads the body into dst with unmarshalStrict.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return unmarshalStrict(body, dst)
}

// unmarshalStrict decodes exactly one JSON object into dst, refusing
// unknown members and anything after the object.
func unmarshalStrict(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("the body must be a JSON object")
		case errors.As(err, &syntaxErr):
			return badRequest("the body is not valid JSON (at byte %d)", syntaxErr.Offset)
		case errors.As(err, &typeErr):
			return badRequest("the body must be a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return badRequest("the body has an unknown member %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return badRequest("the body is not valid JSON: %v", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body must hold a single JSON object and nothing after it")
	}
	return nil
}

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

// problem is an RFC 9457 problem details object, the body of every error.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []fieldError `json:"errors,omitempty"`
}

// writeError is the one place that turns an error into an HTTP status. It
// answers with problem details; an unexpected error is logged with the
// request id and answered with a generic 500 that reveals nothing.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	p := problem{Type: "about:blank", RequestID: requestIDFrom(r.Context())}
	var (
		fieldErrs   fieldErrors
		badRequest  badRequestError
		rateLimited *rateLimitedError
	)
	switch {
	case errors.Is(err, errMissingToken):
		p.Status, p.Detail = http.StatusUnauthorized, "send a bearer token: Authorization: Bearer <token>"
		w.Header().Set("WWW-Authenticate", `Bearer realm="taskapi"`)
	case errors.Is(err, errInvalidToken):
		p.Status, p.Detail = http.StatusUnauthorized, "the bearer token is invalid or expired"
		w.Header().Set("WWW-Authenticate", `Bearer realm="taskapi", error="invalid_token"`)
		logger.LogAttrs(r.Context(), slog.LevelInfo, "token rejected",
			slog.String("request_id", p.RequestID), slog.String("reason", err.Error()))
	case errors.Is(err, errForbidden):
		p.Status, p.Detail = http.StatusForbidden, "the path names another user; use your own user id or \"me\""
	case errors.Is(err, ErrNotFound):
		p.Status, p.Detail = http.StatusNotFound, "no task with that id"
	case errors.Is(err, ErrBadPosition):
		// A signed cursor the store cannot use: only a bug or a leaked key.
		p.Status, p.Detail = http.StatusBadRequest, errBadCursor.Error()
	case errors.Is(err, ErrStale):
		p.Status, p.Detail = http.StatusPreconditionFailed, "the task has changed since the ETag in If-Match; fetch it again"
	case errors.Is(err, ErrKeyReused):
		p.Status, p.Detail = http.StatusUnprocessableEntity, "this Idempotency-Key was already used with a different request"
	case errors.Is(err, errTooLarge):
		p.Status, p.Detail = http.StatusRequestEntityTooLarge, err.Error()
	case errors.As(err, &badRequest):
		p.Status, p.Detail = http.StatusBadRequest, badRequest.Error()
	case errors.As(err, &fieldErrs):
		p.Status, p.Detail, p.Errors = http.StatusUnprocessableEntity, "some fields are invalid", fieldErrs
	case errors.Is(err, ErrRejected):
		p.Status, p.Detail = http.StatusUnprocessableEntity, "a value is not acceptable"
		logger.LogAttrs(r.Context(), slog.LevelWarn, "database rejected a validated value",
			slog.String("request_id", p.RequestID), slog.String("err", err.Error()))
	case errors.As(err, &rateLimited):
		p.Status, p.Detail = http.StatusTooManyRequests, "too many requests; slow down"
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(rateLimited.retryAfter.Seconds(), 1)))))
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrKeysUnavailable):
		p.Status, p.Detail = http.StatusServiceUnavailable, "a service taskapi depends on is unavailable; try again shortly"
		w.Header().Set("Retry-After", "1")
		logger.LogAttrs(r.Context(), slog.LevelWarn, "unavailable",
			slog.String("request_id", p.RequestID), slog.String("err", err.Error()))
	case r.Context().Err() != nil:
		// The client went away; nobody will read this answer.
		p.Status, p.Detail = http.StatusServiceUnavailable, "request cancelled"
	default:
		p.Status, p.Detail = http.StatusInternalServerError, "internal error; quote the request id when reporting it"
		logger.LogAttrs(r.Context(), slog.LevelError, "internal error",
			slog.String("request_id", p.RequestID), slog.String("err", err.Error()))
	}
	p.Title = http.StatusText(p.Status)
	writeProblem(w, p)
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, p problem) {
	body, _ := json.Marshal(p) // a problem always marshals
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	w.Write(append(body, '\n'))
}

// problemRoutes answers the 404 and 405 responses of ServeMux itself, which
// are plain text, with problem details instead. A response is the mux's own
// when no pattern matched (r.Pattern is empty); a 405 keeps its Allow header.
func problemRoutes(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&routeErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

// routeErrorWriter replaces ServeMux's plain-text 404 and 405.
type routeErrorWriter struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool
}

func (w *routeErrorWriter) WriteHeader(status int) {
	if w.r.Pattern == "" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		w.replaced = true
		p := problem{Type: "about:blank", Title: http.StatusText(status), Status: status,
			RequestID: requestIDFrom(w.r.Context()), Detail: "no such route"}
		if status == http.StatusMethodNotAllowed {
			p.Detail = "method " + w.r.Method + " is not allowed here; allowed: " + w.Header().Get("Allow")
		}
		writeProblem(w.ResponseWriter, p)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *routeErrorWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil // the mux's plain-text body, already replaced
	}
	return w.ResponseWriter.Write(b)
}

func (w *routeErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cors lets the browser frontends at origins call the API: it answers
// preflight requests and marks responses readable by them. "*" allows any
// origin, which is safe here because credentials travel in the
// Authorization header, never in cookies. With no origins, it does nothing.
func cors(next http.Handler, origins []string) http.Handler {
	if len(origins) == 0 {
		return next
	}
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !anyOrigin && !slices.Contains(origins, origin) {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key, X-Request-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Retry-After, X-Request-ID, Idempotent-Replayed")
		next.ServeHTTP(w, r)
	})
}

// maxQueryBytes bounds the query string; a real one is far shorter.
const maxQueryBytes = 8 << 10

// limitQuery refuses a query string over maxQueryBytes with 400 before any
// work is done on it.
func limitQuery(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.RawQuery) > maxQueryBytes {
			writeError(w, r, logger, badRequest("the query string is longer than %d bytes", maxQueryBytes))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// secureHeaders marks every response as not to be sniffed or cached: the
// API's answers hold personal data.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// recoverPanics turns a panic in a handler into a logged 500, so that one
// bad request cannot take the process down. http.ErrAbortHandler is passed
// on: it is how a handler asks the server to abort the response.
func recoverPanics(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(w, r, logger, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// requestIDKey is the context key of the request id.
type requestIDKey struct{}

// requestIDFrom returns the request id logRequests put in ctx, or "".
func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// logRequests gives each request an id (the client's X-Request-ID when it is
// sane, else a new one), returns it in X-Request-ID, and logs one line per
// request once it is answered.
func logRequests(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set("X-Request-ID", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("route", r.Pattern), // the pattern, never the path: no ids in logs
			slog.Int("status", rec.status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			slog.String("request_id", id),
		)
	})
}

// validRequestID accepts 1 to 128 characters of letters, digits and "-_.:".
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.:", c) >= 0) {
			return false
		}
	}
	return true
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

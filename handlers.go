package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// maxBodyBytes bounds every request body; a task is far smaller.
const maxBodyBytes = 64 << 10

// newServer returns the whole HTTP API: the route table, each route's own
// middleware, and the middleware every request passes through.
func newServer(logger *slog.Logger, store *Store, verifier *Verifier, corsOrigins []string) http.Handler {
	mux := http.NewServeMux()
	auth := requireUser(verifier, logger)

	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(logger, store))

	mux.Handle("GET /api/{user_id}/tasks", auth(handleTaskList(logger, store)))
	mux.Handle("POST /api/{user_id}/tasks", auth(handleTaskCreate(logger, store)))
	mux.Handle("GET /api/{user_id}/tasks/{id}", auth(handleTaskGet(logger, store)))
	mux.Handle("PUT /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store)))
	mux.Handle("PATCH /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store)))
	mux.Handle("DELETE /api/{user_id}/tasks/{id}", auth(handleTaskDelete(logger, store)))
	mux.Handle("PATCH /api/{user_id}/tasks/{id}/complete", auth(handleTaskComplete(logger, store)))

	// Inner to outer. recoverPanics is inside logRequests so that a panic
	// is logged as the 500 it becomes.
	var h http.Handler = mux
	h = problemRoutes(h, logger)
	h = cors(h, corsOrigins)
	h = secureHeaders(h)
	h = recoverPanics(h, logger)
	h = logRequests(h, logger)
	return h
}

// handleHealthz answers 200 while the process runs. It touches no database,
// so a slow database never gets a healthy instance restarted.
func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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

// handleTaskList answers GET /api/{user_id}/tasks with the caller's tasks.
// Query parameters: status=all|pending|completed (default all),
// sort=created|updated|title|due_date|priority (default created) and
// order=asc|desc (default desc for created and updated, asc otherwise).
func handleTaskList(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts, err := parseListOptions(r.URL.Query())
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		tasks, err := store.ListTasks(r.Context(), userFrom(r.Context()).ID, opts)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, tasks)
	})
}

// parseListOptions reads the list query parameters, naming the first one
// that has a value it does not know.
func parseListOptions(q url.Values) (ListOptions, error) {
	opts := ListOptions{Sort: "created"}
	switch status := q.Get("status"); status {
	case "", "all":
	case "pending", "completed":
		completed := status == "completed"
		opts.Completed = &completed
	default:
		return ListOptions{}, badRequest("status must be all, pending or completed")
	}
	if s := q.Get("sort"); s != "" {
		if _, ok := listOrders[s]; !ok {
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
	return opts, nil
}

// handleTaskCreate answers POST /api/{user_id}/tasks: 201 with the new task
// and its Location.
func handleTaskCreate(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		task, err := store.CreateTask(r.Context(), u, in)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		w.Header().Set("Location", "/api/"+url.PathEscape(u.ID)+"/tasks/"+task.ID)
		writeJSON(w, http.StatusCreated, task)
	})
}

// handleTaskGet answers GET /api/{user_id}/tasks/{id}.
func handleTaskGet(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		task, err := store.GetTask(r.Context(), userFrom(r.Context()).ID, r.PathValue("id"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, task)
	})
}

// handleTaskUpdate answers PUT and PATCH /api/{user_id}/tasks/{id}, both a
// partial update: members present in the body change, absent ones stay, and
// null clears description or due_date.
func handleTaskUpdate(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		task, err := store.UpdateTask(r.Context(), userFrom(r.Context()), r.PathValue("id"), patch)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, task)
	})
}

// handleTaskComplete answers PATCH /api/{user_id}/tasks/{id}/complete. With
// no body it toggles completed; with {"completed": bool} it sets it, which
// is safe to retry.
func handleTaskComplete(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			var errs fieldErrors
			if !req.Completed.Set || req.Completed.Null || req.Completed.Invalid {
				errs.add("completed", "must be true or false (or send no body to toggle)")
			}
			if err := errs.err(); err != nil {
				writeError(w, r, logger, err)
				return
			}
			completed = &req.Completed.Value
		}
		task, err := store.SetCompleted(r.Context(), userFrom(r.Context()), r.PathValue("id"), completed)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		writeJSON(w, http.StatusOK, task)
	})
}

// handleTaskDelete answers DELETE /api/{user_id}/tasks/{id} with 204.
func handleTaskDelete(logger *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := store.DeleteTask(r.Context(), userFrom(r.Context()).ID, r.PathValue("id")); err != nil {
			writeError(w, r, logger, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
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
		fieldErrs  fieldErrors
		badRequest badRequestError
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
		h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Retry-After, X-Request-ID")
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

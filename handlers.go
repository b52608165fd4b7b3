// This file is the HTTP API: the route table, and the handlers of the
// task and account routes, each of which reads the request, calls the
// store and writes the answer. The handlers of live sync are beside
// their own machinery: the event stream and /changes in events.go, the
// stream tickets in ticket.go; /healthz and /readyz are in ready.go. Next:
// auth.go, how a request's user is known; store.go, what the handlers call.
// How a request is read is in request.go, how an answer is written in
// respond.go.

package main

import (
	_ "embed"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// newServer returns the whole HTTP API: the routes, each with its own
// middleware, and the middleware every request passes through.
// version is the build's, as /healthz reports it. With live nil, the
// routes of live updates answer 503.
func newServer(logger *slog.Logger, version string, store *Store, verifier *Verifier, guards guards, cursors cursorCodec, corsOrigins []string, live *liveUpdates) http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes(logger, version, store, verifier, guards, cursors, live) {
		mux.Handle(r.pattern, r.handler)
		// The API answers with one trailing slash too, as frontends written
		// for other backends send it, without a redirect, which would
		// break their cross-origin POSTs.
		if _, path, _ := strings.Cut(r.pattern, " "); strings.HasPrefix(path, "/api/") {
			mux.Handle(r.pattern+"/{$}", r.handler)
		}
	}

	// Inner to outer. recoverPanics is inside logRequests so that a panic
	// is logged as the 500 it becomes.
	var h http.Handler = mux
	h = problemRoutes(h, logger)
	h = checkQuery(h, logger)
	h = cors(h, corsOrigins, logger)
	h = secureHeaders(h)
	h = recoverPanics(h, logger)
	h = logRequests(h, logger, guards.requests)
	return h
}

// liveUpdates is what the routes of live updates are handed: the hub of
// the instance's streams, and the codec of the tickets that open them.
type liveUpdates struct {
	hub     *eventHub
	tickets ticketCodec
}

// route is one entry of the route table.
type route struct {
	pattern string
	handler http.Handler
}

// routes is the route table: every pattern taskapi serves, with the
// middleware of each. openapi.json describes exactly these.
func routes(logger *slog.Logger, version string, store *Store, verifier *Verifier, guards guards, cursors cursorCodec, live *liveUpdates) []route {
	authenticate := requireUser(verifier, guards.failedAuth, logger)
	limitRequests := limitRate(guards.rate, logger)
	limitDatabase := limitConcurrency(guards.concurrency, logger)
	auth := func(h http.Handler) http.Handler { return authenticate(limitRequests(limitDatabase(h))) }
	bufs := newBodyBuffers()
	var (
		hub     *eventHub
		tickets ticketCodec
	)
	if live != nil {
		hub, tickets = live.hub, live.tickets
	}
	streamAuth := requireStreamUser(verifier, tickets, guards.failedAuth, logger)
	return []route{
		{"GET /healthz", handleHealthz(version)},
		{"GET /readyz", handleReadyz(logger, store)},
		{"GET /openapi.json", handleOpenAPI()},

		{"GET /api/me", auth(handleAccountGet(logger, store))},
		{"DELETE /api/me", auth(handleAccountDelete(logger, store))},

		{"GET /api/{user_id}/tasks", auth(handleTaskList(logger, store, cursors, bufs))},
		{"POST /api/{user_id}/tasks", auth(handleTaskCreate(logger, store, bufs))},
		{"DELETE /api/{user_id}/tasks", auth(handleTaskDeleteCompleted(logger, store))},
		{"GET /api/{user_id}/tasks/stats", auth(handleTaskStats(logger, store))},
		{"GET /api/{user_id}/tasks/{id}", auth(handleTaskGet(logger, store, bufs))},
		{"PUT /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store, bufs))},
		{"PATCH /api/{user_id}/tasks/{id}", auth(handleTaskUpdate(logger, store, bufs))},
		{"DELETE /api/{user_id}/tasks/{id}", auth(handleTaskDelete(logger, store, bufs))},
		{"PATCH /api/{user_id}/tasks/{id}/complete", auth(handleTaskComplete(logger, store, bufs))},

		// Live updates (events.go). A stream holds no database connection
		// between its reads, so it is not counted against
		// USER_MAX_CONCURRENT; its own caps are in the hub.
		{"GET /api/{user_id}/events", streamAuth(limitRequests(handleEvents(logger, hub)))},
		{"POST /api/{user_id}/events/ticket", auth(handleEventsTicket(logger, hub, tickets))},
		{"GET /api/{user_id}/changes", auth(handleChanges(logger, store, bufs))},
	}
}

// openAPIDocument describes every route, parameter, header and schema.
//
//go:embed openapi.json
var openAPIDocument string

// handleOpenAPI serves the OpenAPI 3.1 document.
func handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, openAPIDocument)
	})
}

// handleTaskList answers GET /api/{user_id}/tasks with a page of the
// caller's tasks: a JSON array, and, when there are more, a Link header with
// rel="next" whose URL fetches the next page. See parseListOptions for the
// query parameters.
func handleTaskList(logger *slog.Logger, store *Store, cursors cursorCodec, bufs *bodyBuffers) http.Handler {
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
			if opts.After, err = cursors.decode(u.ID, scope, c); err != nil {
				writeError(w, r, logger, err)
				return
			}
		}
		page, err := store.ListTasks(r.Context(), u.ID, opts)
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		if page.Next != "" {
			q.Set("cursor", cursors.encode(u.ID, scope, page.Next))
			w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+q.Encode()+`>; rel="next"`)
		}
		writeTasks(w, bufs, page.Tasks)
	})
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
		if !asksForCompleted(r.URL.Query()) {
			writeError(w, r, logger, badRequest("Only completed tasks can be deleted in bulk: DELETE /api/{user_id}/tasks?status=completed."))
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
func handleTaskCreate(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, hasKey := r.Header.Get("Idempotency-Key"), len(r.Header.Values("Idempotency-Key")) > 0
		if hasKey && !validIdempotencyKey(key) {
			writeError(w, r, logger, badRequest("The Idempotency-Key header must be 1 to %d visible ASCII characters.", maxIdempotencyKey))
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
		writeTask(w, bufs, http.StatusCreated, task)
	})
}

// handleTaskGet answers GET /api/{user_id}/tasks/{id}, or 304 when
// If-None-Match names the task's current ETag.
func handleTaskGet(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
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
		writeTask(w, bufs, http.StatusOK, task)
	})
}

// handleTaskUpdate answers PUT and PATCH /api/{user_id}/tasks/{id}, both a
// partial update: members present in the body change, absent ones stay, and
// null clears description or due_date. If-Match works as handleTaskWrite says.
func handleTaskUpdate(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return handleTaskWrite(logger, bufs, http.StatusOK, func(w http.ResponseWriter, r *http.Request, ifMatch []int64) (Task, error) {
		var req taskRequest
		if err := decodeJSON(w, r, &req); err != nil {
			return Task{}, err
		}
		patch, err := req.patch()
		if err != nil {
			return Task{}, err
		}
		return store.UpdateTask(r.Context(), userFrom(r.Context()), r.PathValue("id"), patch, ifMatch)
	})
}

// handleTaskComplete answers PATCH /api/{user_id}/tasks/{id}/complete. With
// no body it toggles completed; with {"completed": bool} it sets it, which
// is safe to retry. If-Match works as handleTaskWrite says.
func handleTaskComplete(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return handleTaskWrite(logger, bufs, http.StatusOK, func(w http.ResponseWriter, r *http.Request, ifMatch []int64) (Task, error) {
		completed, err := decodeCompleted(w, r)
		if err != nil {
			return Task{}, err
		}
		return store.SetCompleted(r.Context(), userFrom(r.Context()), r.PathValue("id"), completed, ifMatch)
	})
}

// handleTaskDelete answers DELETE /api/{user_id}/tasks/{id} with 204.
// If-Match works as handleTaskWrite says.
func handleTaskDelete(logger *slog.Logger, store *Store, bufs *bodyBuffers) http.Handler {
	return handleTaskWrite(logger, bufs, http.StatusNoContent, func(w http.ResponseWriter, r *http.Request, ifMatch []int64) (Task, error) {
		return store.DeleteTask(r.Context(), userFrom(r.Context()).ID, r.PathValue("id"), ifMatch)
	})
}

// taskWrite changes or deletes one task, on condition that its version is
// one of ifMatch (nil: any), and returns the task as it now is (nothing
// when deleted), or the task as it is with ErrStale when the condition
// failed.
type taskWrite func(w http.ResponseWriter, r *http.Request, ifMatch []int64) (Task, error)

// handleTaskWrite is the skeleton shared by the writes to one task. It reads
// If-Match first, then runs write. A failed condition is 412 with the ETag
// of the task as it now is, so that the client can fetch it and decide; a
// missing task is 404 either way. Success is status: 200 with the task as
// it now is, or 204 with no body.
func handleTaskWrite(logger *slog.Logger, bufs *bodyBuffers, status int, write taskWrite) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ifMatch, err := parseIfMatch(r.Header.Values("If-Match"))
		if err != nil {
			writeError(w, r, logger, err)
			return
		}
		task, err := write(w, r, ifMatch)
		if errors.Is(err, ErrStale) {
			w.Header().Set("ETag", etag(task))
		}
		switch {
		case err != nil:
			writeError(w, r, logger, err)
		case status == http.StatusNoContent:
			w.WriteHeader(status)
		default:
			writeTask(w, bufs, status, task)
		}
	})
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

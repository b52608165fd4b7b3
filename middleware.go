// This file holds the middleware every request passes through: request
// ids and the request log, panic recovery, protective headers, CORS, the
// query-string limit, and problem details for the router's own 404 and 405.

package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// problemRoutes answers the 404 and 405 responses of ServeMux itself, which
// are plain text, and its redirects to a clean path, with problem details
// instead. A 404 or 405 is the mux's own when no pattern matched (r.Pattern
// is empty); a 405 keeps its Allow header.
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
	p := problem{Type: "about:blank", Title: http.StatusText(status), Status: status,
		RequestID: requestIDFrom(w.r.Context()), Detail: "There is no such route; /openapi.json lists them all."}
	switch {
	case w.r.Pattern == "" && status == http.StatusNotFound:
	case w.r.Pattern == "" && status == http.StatusMethodNotAllowed:
		p.Detail = "The method " + truncate(w.r.Method, 20) + " is not allowed here; use " + w.Header().Get("Allow") + "."
	case status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect:
		// No handler redirects: this is the mux, which sends a path with an
		// empty, "." or ".." segment to its clean form, with an HTML body
		// (r.Pattern is then that path). An API client that built such a
		// path has a bug (an empty user id, say) that a redirect hides.
		w.Header().Del("Location")
		p.Status, p.Title = http.StatusNotFound, http.StatusText(http.StatusNotFound)
		p.Detail = "There is no such route: the path has an empty, \".\" or \"..\" segment; /openapi.json lists the routes."
	default:
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.replaced = true
	writeProblem(w.ResponseWriter, p)
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
// Authorization header, never in cookies. Origins listed by name may also
// send requests with credentials (fetch's credentials: "include"), which
// some frontends do for every call; taskapi reads no cookie, so that grants
// nothing more. A preflight from an origin not allowed (any origin, with no
// origins) is logged with that origin, since the browser only tells the
// page's console; with no origins, cors does nothing else.
func cors(next http.Handler, origins []string, logger *slog.Logger) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		listed := origin != "" && slices.Contains(origins, origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight && origin != "" && !anyOrigin && !listed {
			logger.Warn("refused a browser's preflight: its origin is not in CORS_ORIGINS",
				"origin", origin, "cors_origins", strings.Join(origins, ","), "path", r.URL.Path)
		}
		if len(origins) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		if origin == "" || !anyOrigin && !listed {
			if preflight && origin != "" {
				// An origin not allowed: answered, without the headers
				// that would let the browser go on.
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if listed {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key, Last-Event-ID, X-Request-ID")
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

// checkQuery refuses, with 400 and before any work is done on it, a query
// string over maxQueryBytes and one that does not parse: a bad escape
// (%ZZ) or a semicolon, which url.Values would silently drop with
// everything after it, so that a filter sent as ?completed=true; would
// answer the whole list.
func checkQuery(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.RawQuery) > maxQueryBytes {
			writeError(w, r, logger, badRequest("The query string is longer than %d bytes.", maxQueryBytes))
			return
		}
		if r.URL.RawQuery != "" {
			if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
				writeError(w, r, logger, badRequest("The query string does not parse: %s. Separate parameters with &, and escape %%, & and ; in values (%%25, %%26, %%3B).",
					truncate(err.Error(), 100)))
				return
			}
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

// requestInfo is what the middleware learns of a request for the handlers:
// its id, from logRequests, and its user, from requireUser. It is one
// context value, which logRequests adds and requireUser fills in, so that a
// request is copied for a new context once, not by each middleware that has
// something to add: a copy is about 300 bytes, on every request.
type requestInfo struct {
	id            string
	user          User
	authenticated bool
}

// requestInfoKey is the context key of the *requestInfo.
type requestInfoKey struct{}

// infoFrom returns the request's info, or nil when logRequests did not see
// it (a handler tested on its own).
func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// requestIDFrom returns the request id logRequests gave the request, or "".
func requestIDFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

// logRequests gives each request an id (the client's X-Request-ID when it is
// sane, else a new one), returns it in X-Request-ID, and logs one line per
// request once it is answered. It counts the request in requests, when set,
// for /metrics.
func logRequests(next http.Handler, logger *slog.Logger, requests *requestMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set("X-Request-ID", id)
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{id: id}))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		requests.observe(r.Pattern, rec.status, time.Since(start))
		if !logger.Enabled(r.Context(), slog.LevelInfo) {
			return
		}
		// The record is made here rather than by logger.LogAttrs, which
		// would look up its caller on the stack for a source the handler
		// never prints: a cost on every request.
		line := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		line.AddAttrs(
			slog.String("method", truncate(r.Method, 16)), // any token a client likes
			slog.String("route", r.Pattern),               // the pattern, never the path: no ids in logs
			slog.Int("status", rec.status),
			slog.Float64("duration_ms", float64(line.Time.Sub(start).Microseconds())/1000),
			slog.String("request_id", id),
		)
		logger.Handler().Handle(r.Context(), line)
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

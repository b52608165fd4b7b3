// This file says whether this instance should be sent requests: /healthz,
// which answers while the process runs, and /readyz, which answers 200 only
// while the database answers and the instance is not shutting down. The
// shutdown sets draining (main.go, run): from then on /readyz answers 503,
// so that load balancers send new requests elsewhere, before the server
// stops. The routes are in handlers.go; the answers' statuses in respond.go.

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// handleHealthz answers 200 while the process runs, with the version. It
// touches no database, so a slow database never gets a healthy instance
// restarted.
func handleHealthz(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version})
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

// errDraining is the answer of /readyz while the instance shuts down.
var errDraining = errors.New("draining")

// drainReadiness answers GET /readyz with 503 while draining is set: the
// instance is shutting down, and a load balancer should send new requests
// elsewhere. Requests that still come are served, with Connection: close,
// so that their clients open their next connection elsewhere. Idle
// connections are left alone: closing one as a client sends on it would
// fail that request; Shutdown closes them after the drain.
func drainReadiness(next http.Handler, draining *atomic.Bool, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !draining.Load() {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if r.URL.Path == "/readyz" {
			writeError(w, r, logger, errDraining)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// This file holds the limits that keep one client from slowing everyone
// down: a token bucket per user, a cap on each user's requests at once, and
// a token bucket per client address for failed sign-ins; past any of them,
// 429 with Retry-After.

package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// guards are the per-client limits of the API. A nil member limits nothing.
// Each counts what it refuses, for /metrics.
type guards struct {
	rate        *rateLimiter // requests a second, per user
	concurrency *userGate    // requests at once, per user
	failedAuth  *addrLimiter // failed authentications a second, per client address
	// requests, when set, counts every request for /metrics (metrics.go).
	requests *requestMetrics
}

// rateLimiter gives each user a token bucket: burst requests at once, then
// rate a second. It lives in memory, so with several instances each holds
// its own buckets and a user's allowance is per instance.
type rateLimiter struct {
	rate  float64 // tokens added per second
	burst float64 // bucket size
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time

	refused atomic.Uint64 // requests refused by limitRate, for /metrics
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newRateLimiter returns a limiter of rate requests a second with bursts of
// burst, or nil, which limits nothing, when rate is 0.
func newRateLimiter(rate float64, burst int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes a token from key's bucket. When there is none it says how long
// until there will be one.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// empty reports whether key's bucket holds no token now, without taking
// one, and how long until it will.
func (l *rateLimiter) empty(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return false, 0
	}
	tokens := min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	if tokens >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - tokens) / l.rate * float64(time.Second))
}

// sweep forgets, once a minute, the buckets that have filled up again: a
// full bucket is the same as none, so memory stays bounded by the users
// active in the last minute or so.
func (l *rateLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// rateLimitedError is a request over the caller's limit; writeError answers
// it with 429 and Retry-After.
type rateLimitedError struct {
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string { return "rate limit exceeded" }

// limitRate returns middleware that holds each authenticated user to l. It
// goes inside requireUser. A nil l limits nothing.
func limitRate(l *rateLimiter, logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ok, wait := l.allow(userFrom(r.Context()).ID); !ok {
				l.refused.Add(1)
				writeError(w, r, logger, &rateLimitedError{retryAfter: wait})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// userGate holds each user to at most max requests at once, so that no one
// user can hold most of the database pool: every request takes one pooled
// connection for its statement. A request over the limit waits up to wait
// for one of the user's others to finish (a page that loads its list, stats
// and account at once only queues), then gets 429.
type userGate struct {
	max  int
	wait time.Duration

	mu    sync.Mutex
	users map[string]*userSlots
	spare []*userSlots // entries no request holds, for the next user to come

	refused atomic.Uint64 // requests refused, for /metrics
}

// userSlots are one user's places: a semaphore, and how many requests hold
// or wait for it, so that the entry goes when none do.
type userSlots struct {
	sem  chan struct{}
	refs int
}

// maxSpareSlots bounds the entries a gate keeps for reuse: enough for the
// users active at once on a busy instance, so that a request makes none.
const maxSpareSlots = 256

// newUserGate returns a gate of max requests at once per user, or nil,
// which limits nothing, when max is 0.
func newUserGate(max int, wait time.Duration) *userGate {
	if max <= 0 {
		return nil
	}
	return &userGate{max: max, wait: wait, users: map[string]*userSlots{}}
}

// enter takes one of the user's places, waiting up to g.wait (or until ctx
// ends) for one. It returns the user's entry, to give the place back with
// exit, or false when none came free.
func (g *userGate) enter(ctx context.Context, userID string) (*userSlots, bool) {
	g.mu.Lock()
	s, ok := g.users[userID]
	if !ok {
		if n := len(g.spare); n > 0 {
			s, g.spare = g.spare[n-1], g.spare[:n-1]
		} else {
			s = &userSlots{sem: make(chan struct{}, g.max)}
		}
		g.users[userID] = s
	}
	s.refs++
	g.mu.Unlock()

	select {
	case s.sem <- struct{}{}:
		return s, true
	default:
	}
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case s.sem <- struct{}{}:
		return s, true
	case <-timer.C:
	case <-ctx.Done():
	}
	g.forget(userID, s)
	return nil, false
}

// exit gives back the place that enter took.
func (g *userGate) exit(userID string, s *userSlots) {
	<-s.sem
	g.forget(userID, s)
}

// forget drops a request's reference to the user's entry, and the entry
// with the last one.
func (g *userGate) forget(userID string, s *userSlots) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	delete(g.users, userID)
	if len(g.spare) < maxSpareSlots {
		g.spare = append(g.spare, s)
	}
}

// limitConcurrency returns middleware that holds each authenticated user to
// g. It goes inside requireUser. A nil g limits nothing.
func limitConcurrency(g *userGate, logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if g == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := userFrom(r.Context()).ID
			s, ok := g.enter(r.Context(), id)
			if !ok {
				g.refused.Add(1)
				writeError(w, r, logger, &rateLimitedError{retryAfter: time.Second})
				return
			}
			defer g.exit(id, s)
			next.ServeHTTP(w, r)
		})
	}
}

// addrLimiter counts the failed authentications of each client address in a
// token bucket: a failure takes a token, and while the bucket is empty the
// address's requests are refused before any token is checked, so that a
// flood of bad tokens costs neither signature checks nor log lines. An
// address is the request's remote address, or, behind a proxy that says
// who the client is, the header it says it in.
type addrLimiter struct {
	buckets *rateLimiter
	header  string        // e.g. Fly-Client-IP; "" uses the remote address
	refused atomic.Uint64 // requests refused, for /metrics
}

// newAddrLimiter returns a limiter of rate failures a second per address,
// with bursts of burst, or nil when rate is 0.
func newAddrLimiter(rate float64, burst int, header string) *addrLimiter {
	buckets := newRateLimiter(rate, burst)
	if buckets == nil {
		return nil
	}
	return &addrLimiter{buckets: buckets, header: header}
}

// addr returns the client address of r.
func (l *addrLimiter) addr(r *http.Request) string {
	if l.header != "" {
		if v := r.Header.Get(l.header); v != "" {
			return truncate(v, 64)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// blocked reports whether r's address has no failures left, and for how
// long.
func (l *addrLimiter) blocked(r *http.Request) (bool, time.Duration) {
	if l == nil {
		return false, 0
	}
	blocked, wait := l.buckets.empty(l.addr(r))
	if blocked {
		l.refused.Add(1)
	}
	return blocked, wait
}

// failed takes one of r's address's failures.
func (l *addrLimiter) failed(r *http.Request) {
	if l != nil {
		l.buckets.allow(l.addr(r))
	}
}

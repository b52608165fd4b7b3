// This file limits how fast each user may call the API: a token bucket per
// user, and the middleware that answers 429 past it.

package main

import (
	"log/slog"
	"net/http"
	"sync"
	"time"
)

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
				writeError(w, r, logger, &rateLimitedError{retryAfter: wait})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

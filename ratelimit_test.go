package main

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRateLimiterBuckets(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(2, 3) // 2 a second, bursts of 3
	clock := newFakeClock()
	l.now = clock.now
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Errorf("over the burst: ok=%v, wait %v; want refused with a wait of at most 0.5 s", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another user was refused")
	}
	clock.advance(500 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Error("refused after the bucket refilled one token")
	}
	if ok, _ := l.allow("a"); ok {
		t.Error("allowed a second request on one refilled token")
	}
	// Idle users are forgotten: memory follows the active users only.
	clock.advance(2 * time.Minute)
	l.allow("c")
	if _, kept := l.buckets["a"]; kept || len(l.buckets) != 1 {
		t.Errorf("after two idle minutes %d buckets are kept, want only the new one", len(l.buckets))
	}
	if newRateLimiter(0, 10) != nil {
		t.Error("RATE_LIMIT=0 does not turn limiting off")
	}
}

func TestRateLimitResponses(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	logger := slog.New(slog.DiscardHandler)
	limiter := newRateLimiter(0.5, 2)
	e := newTestEnvOn(t, db, nil)
	srv := httptest.NewServer(newServer(logger, "test", NewStore(db, 5*time.Second, testTaskQuota), NewVerifier(VerifierConfig{Secret: testSecret}, logger),
		limiter, newCursorCodec([]byte("k")), nil))
	t.Cleanup(srv.Close)
	e.srv = srv
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 2 {
		if res := e.do("POST", "/api/me/tasks", alice, `{"title":"ok"}`); res.Status != 201 {
			t.Fatalf("request %d: %d", i+1, res.Status)
		}
	}
	res := e.do("POST", "/api/me/tasks", alice, `{"title":"one too many"}`)
	if res.Status != 429 || res.Header.Get("Retry-After") != "2" {
		t.Errorf("over the limit: %d, Retry-After %q; want 429 and 2", res.Status, res.Header.Get("Retry-After"))
	}
	res.problem(t)
	if n := countTasksIn(t, e, "alice"); n != 2 {
		t.Errorf("alice has %d tasks; the refused create must not have run", n)
	}
	if res := e.do("GET", "/api/me/tasks", bob, nil); res.Status != 200 {
		t.Errorf("bob, under his own limit: %d", res.Status)
	}
	// Health checks and refused tokens do not count against anyone.
	if res := e.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Errorf("healthz: %d", res.Status)
	}
}

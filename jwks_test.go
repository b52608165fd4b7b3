package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestJWKSRotationAndRefetchLimit(t *testing.T) {
	t.Parallel()
	old, next := newEd25519Key(t, "2026-01"), newEd25519Key(t, "2026-02")
	jwks := newJWKSServer(t, old.jwk(t))
	e := newTestEnv(t, jwksConfig(jwks.URL))
	clock := newFakeClock()
	e.useClock(clock)
	get := func(tok string) int {
		return e.do("GET", "/api/me/tasks", tok, nil).Status
	}

	if s := get(old.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 200 || jwks.fetches.Load() != 1 {
		t.Fatalf("first token: status %d after %d fetches, want 200 after 1", s, jwks.fetches.Load())
	}
	if s := get(old.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 200 || jwks.fetches.Load() != 1 {
		t.Fatalf("known kid: status %d after %d fetches, want 200 from the cache", s, jwks.fetches.Load())
	}

	// The issuer rotates in a new key. Within 30 s of the last fetch, an
	// unknown kid is refused without a fetch, however many arrive.
	jwks.setKeys(old.jwk(t), next.jwk(t))
	clock.advance(10 * time.Second)
	for i := range 20 {
		bogus := newEd25519Key(t, "bogus-"+string(rune('a'+i)))
		if s := get(bogus.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 401 {
			t.Errorf("made-up kid: status %d, want 401", s)
		}
	}
	if n := jwks.fetches.Load(); n != 1 {
		t.Errorf("made-up kids caused %d fetches in 30 s, want none beyond the first", n-1)
	}
	clock.advance(25 * time.Second)
	if s := get(next.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 200 || jwks.fetches.Load() != 2 {
		t.Errorf("rotated key after 35 s: status %d after %d fetches, want 200 after 2", s, jwks.fetches.Load())
	}

	// The old key is withdrawn; once the cached set is an hour old it is
	// fetched again, in the background, and then the old key stops
	// verifying new tokens.
	jwks.setKeys(next.jwk(t))
	clock.advance(61 * time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for get(old.sign(t, betterAuthClaimsAt("u", clock.now()))) != 401 {
		if time.Now().After(deadline) {
			t.Fatalf("withdrawn key: still accepted 5 s after the set was an hour old (%d fetches), want 401", jwks.fetches.Load())
		}
		clock.advance(time.Second) // a new token each time, never one from the cache
		time.Sleep(10 * time.Millisecond)
	}
	if s := get(next.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 200 {
		t.Errorf("current key: status %d, want 200", s)
	}
}

func TestJWKSUnavailable(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "ed-1")
	jwks := newJWKSServer(t, ed.jwk(t))
	jwks.status.Store(http.StatusBadGateway)
	e := newTestEnv(t, jwksConfig(jwks.URL))
	clock := newFakeClock()
	e.useClock(clock)
	tok := ed.sign(t, betterAuthClaimsAt("u", clock.now()))
	fresh := func() string { return ed.sign(t, betterAuthClaimsAt("u", clock.now())) }

	res := e.do("GET", "/api/me/tasks", tok, nil)
	if res.Status != 503 || res.Header.Get("Retry-After") == "" {
		t.Fatalf("JWKS down: status %d, Retry-After %q; want 503", res.Status, res.Header.Get("Retry-After"))
	}
	res.problem(t)
	// Still 503, without hammering the issuer, until the next attempt is due.
	if res := e.do("GET", "/api/me/tasks", tok, nil); res.Status != 503 || jwks.fetches.Load() != 1 {
		t.Errorf("JWKS down, second request: status %d, %d fetches; want 503 after 1", res.Status, jwks.fetches.Load())
	}
	// HS256 keeps working meanwhile.
	if res := e.do("GET", "/api/me/tasks", e.token("hs"), nil); res.Status != 200 {
		t.Errorf("HS256 while the JWKS is down: %d, want 200", res.Status)
	}
	jwks.status.Store(0)
	clock.advance(31 * time.Second)
	if res := e.do("GET", "/api/me/tasks", fresh(), nil); res.Status != 200 {
		t.Errorf("JWKS back: status %d, want 200", res.Status)
	}
	// Once keys are known, an outage leaves them working.
	jwks.status.Store(http.StatusInternalServerError)
	clock.advance(2 * time.Hour)
	if res := e.do("GET", "/api/me/tasks", fresh(), nil); res.Status != 200 {
		t.Errorf("JWKS down after keys were fetched: status %d, want 200 with the known key", res.Status)
	}
}

func TestJWKSHangingIsBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	v := NewVerifier(*jwksConfig(hang.URL), slog.New(slog.DiscardHandler))
	ed := newEd25519Key(t, "ed-1")
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), ed.sign(t, betterAuthClaims("u")))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrKeysUnavailable) {
			t.Errorf("err = %v, want ErrKeysUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Verify still waiting on a hanging JWKS after 10 s; the fetch timeout is 500 ms")
	}
}

func TestParseJWK(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "k").jwk(t)
	es := newES256Key(t, "k").jwk(t)
	with := func(j map[string]string, k, v string) map[string]string {
		c := map[string]string{}
		for key, val := range j {
			c[key] = val
		}
		c[k] = v
		return c
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallJWK := signingKey{"k", jwt.SigningMethodRS256, small}.jwk(t)
	for _, tc := range []struct {
		name string
		jwk  map[string]string
		ok   bool
	}{
		{"Ed25519", ed, true},
		{"P-256", es, true},
		{"Ed25519 without alg", with(ed, "alg", ""), true},
		{"Ed25519 claiming RS256", with(ed, "alg", "RS256"), false},
		{"encryption key", with(ed, "use", "enc"), false},
		{"short x", with(ed, "x", "AAAA"), false},
		{"P-256 point off the curve", with(es, "y", base64.RawURLEncoding.EncodeToString(make([]byte, 32))), false},
		{"P-384", with(es, "crv", "P-384"), false},
		{"RSA 1024", smallJWK, false},
		{"no kid", with(ed, "kid", ""), false},
		{"symmetric", map[string]string{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}, false},
	} {
		b, _ := json.Marshal(tc.jwk)
		var j jwk
		json.Unmarshal(b, &j)
		if _, err := j.publicKey(); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestJWKSRefreshNeverBlocksKnownKid checks that a token whose kid is known
// is answered while the refresh of an old key set hangs.
func TestJWKSRefreshNeverBlocksKnownKid(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "ed-1")
	jwks := newJWKSServer(t, ed.jwk(t))
	cfg := jwksConfig(jwks.URL)
	// A fetch may hang for longer than the test waits for an answer, so
	// that a request that waited for the refresh is seen waiting.
	cfg.Client = &http.Client{Timeout: 10 * time.Second}
	e := newTestEnv(t, cfg)
	clock := newFakeClock()
	e.useClock(clock)
	if s := e.do("GET", "/api/me/tasks", ed.sign(t, betterAuthClaimsAt("u", clock.now())), nil).Status; s != 200 {
		t.Fatalf("first token: %d, want 200", s)
	}
	hold := make(chan struct{})
	jwks.hold.Store(hold)
	defer close(hold)
	clock.advance(2 * time.Hour) // the set is old: the next lookup refreshes it
	for i := range 5 {
		clock.advance(time.Second)
		done := make(chan int, 1)
		go func() {
			done <- e.do("GET", "/api/me/tasks", ed.sign(t, betterAuthClaimsAt("u", clock.now())), nil).Status
		}()
		select {
		case s := <-done:
			if s != 200 {
				t.Errorf("token %d with a known kid during the refresh: %d, want 200", i, s)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("token %d with a known kid waited for the hanging refresh, want an answer within 3 s", i)
		}
	}
	if n := jwks.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want the first and one refresh", n)
	}
}

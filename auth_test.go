package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// authBaseURL stands for Better Auth's base URL: the iss and aud of its tokens.
const authBaseURL = "https://auth.example.com"

// signingKey is a private key with its kid and algorithm.
type signingKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func newEd25519Key(t testing.TB, kid string) signingKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid, jwt.SigningMethodEdDSA, priv}
}

func newES256Key(t *testing.T, kid string) signingKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid, jwt.SigningMethodES256, priv}
}

func newRS256Key(t *testing.T, kid string) signingKey {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid, jwt.SigningMethodRS256, priv}
}

// jwk returns the public half of k as a JWK, the way Better Auth publishes it.
func (k signingKey) jwk(t testing.TB) map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	j := map[string]string{"kid": k.kid, "alg": k.method.Alg()}
	switch pub := k.priv.Public().(type) {
	case ed25519.PublicKey:
		j["kty"], j["crv"], j["x"] = "OKP", "Ed25519", b64(pub)
	case *ecdsa.PublicKey:
		point, err := pub.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		j["kty"], j["crv"], j["x"], j["y"] = "EC", "P-256", b64(point[1:33]), b64(point[33:])
	case *rsa.PublicKey:
		j["kty"], j["n"], j["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	}
	return j
}

// sign returns a token signed by k with claims, setting k's kid.
func (k signingKey) sign(t testing.TB, claims jwt.MapClaims) string {
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// betterAuthClaims are the claims of a Better Auth JWT for user id.
func betterAuthClaims(id string) jwt.MapClaims {
	return betterAuthClaimsAt(id, time.Now())
}

// betterAuthClaimsAt is betterAuthClaims for a token issued at now.
func betterAuthClaimsAt(id string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": id, "iss": authBaseURL, "aud": authBaseURL, "iat": now.Unix(),
		"exp": now.Add(15 * time.Minute).Unix(), "email": id + "@example.com", "name": "User " + id}
}

// jwksServer serves a JWKS that a test can change, and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int32
	status  atomic.Int32 // when not 0, answer with this status instead
}

func newJWKSServer(t testing.TB, keys ...map[string]string) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if code := s.status.Load(); code != 0 {
			w.WriteHeader(int(code))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(keys ...map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

// fakeClock is a settable clock for the key set's refetch limits.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func newFakeClock() *fakeClock               { c := &fakeClock{}; c.ns.Store(time.Now().UnixNano()); return c }
func (e *testEnv) useClock(c *fakeClock)     { e.verifier.keys.now, e.verifier.now = c.now, c.now }
func jwksConfig(url string) *VerifierConfig {
	return &VerifierConfig{
		Secret:     testSecret,
		JWKSURL:    url,
		JWKSIssuer: authBaseURL, JWKSAudience: authBaseURL,
		Client: &http.Client{Timeout: 500 * time.Millisecond},
	}
}

func TestAuthTable(t *testing.T) {
	t.Parallel()
	ed, es, rs := newEd25519Key(t, "ed-1"), newES256Key(t, "es-1"), newRS256Key(t, "rs-1")
	jwks := newJWKSServer(t, ed.jwk(t), es.jwk(t), rs.jwk(t))
	e := newTestEnv(t, jwksConfig(jwks.URL))
	now := time.Now()

	hs := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(base jwt.MapClaims, k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for key, val := range base {
			c[key] = val
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	plain := jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	ba := betterAuthClaims("u1")

	noneToken, err := jwt.NewWithClaims(jwt.SigningMethodNone, plain).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// The classic confusion attack: HS256 "signed" with the public key.
	edPub := ed.priv.Public().(ed25519.PublicKey)
	confused := jwt.NewWithClaims(jwt.SigningMethodHS256, ba)
	confused.Header["kid"] = ed.kid
	confusedToken, err := confused.SignedString([]byte(edPub))
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, err := jwt.NewWithClaims(jwt.SigningMethodHS256, plain).SignedString([]byte("another-secret-0123456789-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	jku := jwt.NewWithClaims(jwt.SigningMethodEdDSA, ba)
	jku.Header["kid"], jku.Header["jku"] = ed.kid, "https://evil.example.com/jwks"
	jkuToken, err := jku.SignedString(ed.priv)
	if err != nil {
		t.Fatal(err)
	}
	wrongAlgKid := jwt.NewWithClaims(jwt.SigningMethodEdDSA, ba)
	wrongAlgKid.Header["kid"] = es.kid // an EdDSA token naming the ES256 key
	wrongAlgKidToken, err := wrongAlgKid.SignedString(ed.priv)
	if err != nil {
		t.Fatal(err)
	}
	// The same signature bytes, spelled with non-zero padding bits in the
	// last base64 character.
	canonical := hs(plain)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	lastIndex := strings.IndexByte(alphabet, canonical[len(canonical)-1])
	nonCanonical := canonical[:len(canonical)-1] + string(alphabet[lastIndex|1])

	tampered := hs(plain)
	parts := strings.Split(tampered, ".")
	payload, _ := json.Marshal(with(plain, "sub", "admin"))
	tampered = parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	tests := []struct {
		name     string
		header   string // the whole Authorization header; "" sends none
		wantUser string // "" means 401
	}{
		{"missing header", "", ""},
		{"basic scheme", "Basic dXNlcjpwYXNz", ""},
		{"bearer without token", "Bearer ", ""},
		{"not a JWT", "Bearer not.a.jwt", ""},
		{"garbage", "Bearer " + strings.Repeat("x", 100), ""},
		{"HS256 valid", "Bearer " + hs(plain), "u1"},
		{"scheme is case-insensitive", "bearer " + hs(plain), "u1"},
		{"HS256 wrong secret", "Bearer " + otherSecret, ""},
		{"HS256 tampered payload", "Bearer " + tampered, ""},
		{"signature in non-canonical base64", "Bearer " + nonCanonical, ""},
		{"expired", "Bearer " + hs(with(plain, "exp", now.Add(-time.Hour).Unix())), ""},
		{"expired within leeway", "Bearer " + hs(with(plain, "exp", now.Add(-5*time.Second).Unix())), "u1"},
		{"no exp", "Bearer " + hs(with(plain, "exp", nil)), ""},
		{"exp as string", "Bearer " + hs(with(plain, "exp", "tomorrow")), ""},
		{"exp huge", "Bearer " + hs(with(plain, "exp", 1e300)), ""},
		{"exp past year 9999", "Bearer " + hs(with(plain, "exp", 1e12)), ""},
		{"exp negative", "Bearer " + hs(with(plain, "exp", -1e300)), ""},
		{"nbf in the future", "Bearer " + hs(with(plain, "nbf", now.Add(time.Hour).Unix())), ""},
		{"nbf in the past", "Bearer " + hs(with(plain, "nbf", now.Add(-time.Minute).Unix())), "u1"},
		{"iat in the future", "Bearer " + hs(with(plain, "iat", now.Add(time.Hour).Unix())), ""},
		{"alg none", "Bearer " + noneToken, ""},
		{"HS256 signed with the public key", "Bearer " + confusedToken, ""},
		{"EdDSA from JWKS", "Bearer " + ed.sign(t, ba), "u1"},
		{"ES256 from JWKS", "Bearer " + es.sign(t, ba), "u1"},
		{"RS256 from JWKS", "Bearer " + rs.sign(t, ba), "u1"},
		{"JWKS token with wrong iss", "Bearer " + ed.sign(t, with(ba, "iss", "https://evil.example.com")), ""},
		{"JWKS token without iss", "Bearer " + ed.sign(t, with(ba, "iss", nil)), ""},
		{"JWKS token with wrong aud", "Bearer " + ed.sign(t, with(ba, "aud", "https://other.example.com")), ""},
		{"JWKS token with aud list", "Bearer " + ed.sign(t, with(ba, "aud", []string{"x", authBaseURL})), "u1"},
		{"JWKS token, expired", "Bearer " + ed.sign(t, with(ba, "exp", now.Add(-time.Hour).Unix())), ""},
		{"kid of another algorithm's key", "Bearer " + wrongAlgKidToken, ""},
		{"jku header", "Bearer " + jkuToken, ""},
		{"kid that is a URL", "Bearer " + signWithKid(t, ed, "https://evil.example.com/jwks.json", ba), ""},
		{"kid that points nowhere", "Bearer " + signWithKid(t, ed, "no-such-key", ba), ""},
		{"x5u header", "Bearer " + signWithHeader(t, ed, "x5u", "https://evil.example.com/cert.pem", ba), ""},
		{"userId when sub is absent", "Bearer " + hs(with(with(plain, "sub", nil), "userId", "u2")), "u2"},
		{"id when sub and userId are absent", "Bearer " + hs(with(with(plain, "sub", nil), "id", "u3")), "u3"},
		{"empty sub does not fall back", "Bearer " + hs(with(with(plain, "sub", ""), "userId", "u2")), ""},
		{"numeric sub", "Bearer " + hs(with(plain, "sub", 42)), ""},
		{"no user id at all", "Bearer " + hs(with(plain, "sub", nil)), ""},
		{"255 character user id", "Bearer " + hs(with(plain, "sub", strings.Repeat("é", 255))), strings.Repeat("é", 255)},
		{"256 character user id", "Bearer " + hs(with(plain, "sub", strings.Repeat("é", 256))), ""},
		{"10,000 character user id", "Bearer " + hs(with(plain, "sub", strings.Repeat("a", 10000))), ""},
		{"token over 8 KiB", "Bearer " + hs(with(plain, "pad", strings.Repeat("p", 8<<10))), ""},
		{"token just under 8 KiB", "Bearer " + hs(with(plain, "pad", strings.Repeat("p", 5<<10))), "u1"},
		{"user id with NUL", "Bearer " + hs(with(plain, "sub", "a\x00b")), ""},
		{"Better Auth style id", "Bearer " + hs(with(plain, "sub", "4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF")), "4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/me/tasks", strings.NewReader(`{"title":"auth probe"}`))
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			if tt.wantUser == "" {
				if resp.StatusCode != 401 {
					t.Fatalf("status %d, want 401; body %s", resp.StatusCode, buf.Bytes())
				}
				if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q", got)
				}
				res := response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}
				if p := res.problem(t); p.Detail == "" {
					t.Error("401 without detail")
				}
				return
			}
			if resp.StatusCode != 201 {
				t.Fatalf("status %d, want 201; body %s", resp.StatusCode, buf.Bytes())
			}
			var task Task
			json.Unmarshal(buf.Bytes(), &task)
			if task.UserID != tt.wantUser {
				t.Errorf("task created for %q, want %q", task.UserID, tt.wantUser)
			}
		})
	}
	// Nothing got in: every refused token created nothing.
	var n int
	if err := e.db.QueryRow("SELECT count(*) FROM tasks WHERE user_id NOT IN ('u1','u2','u3') AND char_length(user_id) < 200 AND user_id <> '4bX9aQ2mZk7LrT1vY8wE3nH6pJ0sD5cF'").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d tasks for unexpected users (err %v)", n, err)
	}
}

func TestMissingAndInvalidTokenHeaders(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	res := e.do("GET", "/api/me/tasks", "", nil)
	if res.Status != 401 || res.Header.Get("WWW-Authenticate") != `Bearer realm="taskapi"` {
		t.Errorf("no token: %d, WWW-Authenticate %q", res.Status, res.Header.Get("WWW-Authenticate"))
	}
	res = e.do("GET", "/api/me/tasks", "x.y.z", nil)
	if res.Status != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("bad token: %d, WWW-Authenticate %q", res.Status, res.Header.Get("WWW-Authenticate"))
	}
	// A missing token is 401 even on another user's path: sign in first.
	if res := e.do("GET", "/api/someone/tasks", "", nil); res.Status != 401 {
		t.Errorf("no token, other user's path: %d, want 401", res.Status)
	}
	// The token never reaches the logs.
	tok := e.token("logcheck")
	e.do("GET", "/api/me/tasks", tok, nil)
	e.do("GET", "/api/me/tasks", tok+"x", nil)
	if logs := e.logs.String(); strings.Contains(logs, tok[:40]) || strings.Contains(logs, strings.Split(tok, ".")[2]) {
		t.Errorf("a token appears in the logs:\n%s", logs)
	}
}

func TestHS256IssuerAndAudienceWhenConfigured(t *testing.T) {
	t.Parallel()
	v := NewVerifier(VerifierConfig{Secret: testSecret, Issuer: "https://app.example.com", Audience: "taskapi"}, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		iss, aud string
		ok       bool
	}{
		{"https://app.example.com", "taskapi", true},
		{"https://app.example.com", "", false},
		{"", "taskapi", false},
		{"https://evil.example.com", "taskapi", false},
	} {
		tok, err := mintToken(testSecret, User{ID: "u"}, tc.iss, tc.aud, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(context.Background(), tok)
		if (err == nil) != tc.ok {
			t.Errorf("iss %q aud %q: err = %v, want ok=%v", tc.iss, tc.aud, err, tc.ok)
		}
	}
}

func TestJWKSOnlyRefusesHS256(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "ed-1")
	jwks := newJWKSServer(t, ed.jwk(t))
	cfg := jwksConfig(jwks.URL)
	cfg.Secret = nil
	v := NewVerifier(*cfg, slog.New(slog.DiscardHandler))
	tok, _ := mintToken(testSecret, User{ID: "u"}, authBaseURL, authBaseURL, time.Minute)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, errInvalidToken) {
		t.Errorf("HS256 token in JWKS-only mode: err = %v, want errInvalidToken", err)
	}
	if u, err := v.Verify(context.Background(), ed.sign(t, betterAuthClaims("me1"))); err != nil || u.ID != "me1" || u.Email != "me1@example.com" {
		t.Errorf("EdDSA token: %+v, %v", u, err)
	}
}

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
	// fetched again and the old key stops verifying new tokens.
	jwks.setKeys(next.jwk(t))
	clock.advance(61 * time.Minute)
	if s := get(old.sign(t, betterAuthClaimsAt("u", clock.now()))); s != 401 {
		t.Errorf("withdrawn key: status %d, want 401", s)
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
		t.Errorf("HS256 while the JWKS is down: %d", res.Status)
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

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BETTER_AUTH_SECRET": string(testSecret)}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"taskapi", "token", "-sub", "zed", "-email", "zed@example.com", "-ttl", "2m"},
		func(k string) string { return env[k] }, &out, &errOut)
	if err != nil {
		t.Fatalf("taskapi token: %v (%s)", err, errOut.String())
	}
	v := NewVerifier(VerifierConfig{Secret: testSecret}, slog.New(slog.DiscardHandler))
	u, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
	if err != nil || u.ID != "zed" || u.Email != "zed@example.com" {
		t.Errorf("token verifies as %+v, %v", u, err)
	}
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseWithClaims(strings.TrimSpace(out.String()), &claims, func(*jwt.Token) (any, error) { return testSecret, nil })
	if ttl := time.Until(claims.ExpiresAt.Time); ttl > 2*time.Minute || ttl < time.Minute {
		t.Errorf("token lives %v, want about 2m", ttl)
	}
}

func TestVerifiedTokenCache(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "ed-1")
	jwks := newJWKSServer(t, ed.jwk(t))
	v := NewVerifier(*jwksConfig(jwks.URL), slog.New(slog.DiscardHandler))
	clock := newFakeClock()
	v.now, v.keys.now = clock.now, clock.now
	ctx := context.Background()

	claims := betterAuthClaimsAt("cached", clock.now())
	claims["exp"] = clock.now().Add(time.Minute).Unix()
	tok := ed.sign(t, claims)
	for range 3 {
		if u, err := v.Verify(ctx, tok); err != nil || u.ID != "cached" || u.Email != "cached@example.com" {
			t.Fatalf("Verify = %+v, %v", u, err)
		}
	}
	if n := len(v.cache.entries); n != 1 {
		t.Errorf("%d cached tokens, want 1", n)
	}
	// A token differing in one byte of its signature is no cache hit.
	last := "A"
	if tok[len(tok)-2] == 'A' {
		last = "B"
	}
	tampered := tok[:len(tok)-2] + last + tok[len(tok)-1:]
	if _, err := v.Verify(ctx, tampered); err == nil {
		t.Error("a tampered copy of a cached token was accepted")
	}
	// Past exp and its leeway, the cached token is refused like any other.
	clock.advance(time.Minute + clockLeeway + time.Second)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, errInvalidToken) {
		t.Errorf("expired cached token: err = %v, want errInvalidToken", err)
	}

	// The cache stays bounded.
	c := newTokenCache(100)
	now := time.Now()
	for i := range 1000 {
		c.put(sha256.Sum256([]byte(fmt.Sprint(i))), User{ID: "u"}, now.Add(time.Hour), now)
		if len(c.entries) > 100 {
			t.Fatalf("cache holds %d tokens, max 100", len(c.entries))
		}
	}
	if _, ok := c.get(sha256.Sum256([]byte("999")), now); !ok {
		t.Error("the newest token is not cached")
	}
	if _, ok := c.get(sha256.Sum256([]byte("999")), now.Add(2*time.Hour)); ok {
		t.Error("a token is served from the cache past its exp")
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"taskapi", "version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "taskapi " + buildVersion() + "\n"
	if out.String() != want || buildVersion() == "" {
		t.Errorf("taskapi version printed %q, want %q", out.String(), want)
	}
	rec := httptest.NewRecorder()
	handleHealthz(buildVersion()).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["status"] != "ok" || body["version"] != buildVersion() {
		t.Errorf("/healthz = %s", rec.Body)
	}
}

// signWithKid signs claims with k but names another kid.
func signWithKid(t testing.TB, k signingKey, kid string, claims jwt.MapClaims) string {
	return signWithHeader(t, k, "kid", kid, claims)
}

// signWithHeader signs claims with k and sets one more header.
func signWithHeader(t testing.TB, k signingKey, name, value string, claims jwt.MapClaims) string {
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	tok.Header[name] = value
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

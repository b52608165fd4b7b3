package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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

	// raw signs a header and claims written as JSON by hand, which may say
	// what no claims map can: a name twice, a claim in another case.
	raw := func(header, claims string) string {
		t.Helper()
		signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
		sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	const hsHeader = `{"alg":"HS256","typ":"JWT"}`
	exp, past := strconv.FormatInt(now.Add(time.Hour).Unix(), 10), strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)

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
		{"hand-written claims", "Bearer " + raw(hsHeader, `{"sub":"u1","exp":`+exp+`}`), "u1"},
		{"exp past, Exp future", "Bearer " + raw(hsHeader, `{"sub":"u1","exp":`+past+`,"Exp":`+exp+`}`), ""},
		{"sub and SUB", "Bearer " + raw(hsHeader, `{"sub":"alice","SUB":"bob","exp":`+exp+`}`), ""},
		{"SUB alone", "Bearer " + raw(hsHeader, `{"SUB":"bob","exp":`+exp+`}`), ""},
		{"sub twice", "Bearer " + raw(hsHeader, `{"sub":"alice","sub":"bob","exp":`+exp+`}`), ""},
		{"exp as a numeric string", "Bearer " + raw(hsHeader, `{"sub":"u1","exp":"`+exp+`"}`), ""},
		{"nbf as a string", "Bearer " + raw(hsHeader, `{"sub":"u1","exp":`+exp+`,"nbf":"0"}`), ""},
		{"iat as a string", "Bearer " + raw(hsHeader, `{"sub":"u1","exp":`+exp+`,"iat":"0"}`), ""},
		{"sub null falls back to nothing", "Bearer " + raw(hsHeader, `{"sub":null,"id":"u3","exp":`+exp+`}`), ""},
		{"sub an object", "Bearer " + raw(hsHeader, `{"sub":{"id":"u1"},"exp":`+exp+`}`), ""},
		{"crit header", "Bearer " + raw(`{"alg":"HS256","crit":["exp"],"typ":"JWT"}`, `{"sub":"u1","exp":`+exp+`}`), ""},
		{"alg twice in the header", "Bearer " + raw(`{"alg":"none","alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`}`), ""},
		{"ALG in the header", "Bearer " + raw(`{"alg":"HS256","ALG":"none"}`, `{"sub":"u1","exp":`+exp+`}`), ""},
		{"claims not an object", "Bearer " + raw(hsHeader, `["sub","u1"]`), ""},
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
					t.Errorf("WWW-Authenticate = %q, want it to start with Bearer", got)
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
		t.Errorf("no token: %d, WWW-Authenticate %q; want 401, Bearer realm=\"taskapi\"", res.Status, res.Header.Get("WWW-Authenticate"))
	}
	res = e.do("GET", "/api/me/tasks", "x.y.z", nil)
	if res.Status != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("bad token: %d, WWW-Authenticate %q; want 401 with error=\"invalid_token\"", res.Status, res.Header.Get("WWW-Authenticate"))
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
		t.Errorf("a token appears in the logs, want none:\n%s", logs)
	}
}

// TestSessionTokenInsteadOfJWT checks the 401 of a frontend that sends
// Better Auth's session token where the JWT belongs: it says the token is
// not a JWT and where the JWT comes from, while a JWT that fails gets the
// plain 401.
func TestSessionTokenInsteadOfJWT(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	res := e.do("GET", "/api/me/tasks", "aZ3kq9XbT2mLr7sVw1yE5nHc8uJd4fGp", nil) // Better Auth's session token
	if d := res.problem(t).Detail; res.Status != 401 || !strings.Contains(d, "not a JWT") || !strings.Contains(d, "/api/auth/token") {
		t.Errorf("session token: %d %q, want 401 saying it is not a JWT and where the JWT comes from", res.Status, d)
	}
	res = e.do("GET", "/api/me/tasks", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl", nil)
	if d := res.problem(t).Detail; res.Status != 401 || strings.Contains(d, "not a JWT") {
		t.Errorf("a JWT that fails: %d %q, want the plain 401", res.Status, d)
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
		t.Errorf("EdDSA token: %+v, %v; want me1 <me1@example.com>", u, err)
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
			t.Fatalf("Verify = %+v, %v; want cached <cached@example.com>", u, err)
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
			t.Fatalf("cache holds %d tokens, want at most 100", len(c.entries))
		}
	}
	if _, ok := c.get(sha256.Sum256([]byte("999")), now); !ok {
		t.Error("the newest token is not cached")
	}
	if _, ok := c.get(sha256.Sum256([]byte("999")), now.Add(2*time.Hour)); ok {
		t.Error("a token is served from the cache past its exp")
	}
}

// FuzzBearer sends arbitrary Authorization headers through token checking.
func FuzzBearer(f *testing.F) {
	ed := newEd25519Key(f, "ed-1")
	jwks := newJWKSServer(f, ed.jwk(f))
	valid, err := mintToken(testSecret, User{ID: "fuzz"}, "", "", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"Bearer " + valid, "Bearer " + ed.sign(f, betterAuthClaims("fuzz")), "bearer x.y.z", "Bearer", "Basic abc",
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer " + strings.Repeat("a.", 5000),
	} {
		f.Add(seed)
	}
	v := NewVerifier(*jwksConfig(jwks.URL), testLogger())
	f.Fuzz(func(t *testing.T, header string) {
		raw, ok := bearerToken(header)
		if !ok {
			return
		}
		u, err := v.Verify(context.Background(), raw)
		if err == nil && u.ID != "fuzz" {
			t.Fatalf("header %q verified as %+v, want it refused or verified as fuzz", header, u)
		}
		if err != nil && !isAuthError(err) {
			t.Fatalf("header %q: unexpected error kind %v", header, err)
		}
	})
}

// TestRejectionLogIsBounded checks that what an attacker puts in a token
// reaches the log only in a bounded length.
func TestRejectionLogIsBounded(t *testing.T) {
	t.Parallel()
	ed := newEd25519Key(t, "ed-1")
	e := newTestEnv(t, jwksConfig(newJWKSServer(t, ed.jwk(t)).URL))
	long := strings.Repeat("k", 4<<10) // the token stays under maxTokenBytes
	for _, tok := range []string{
		signWithKid(t, ed, long, betterAuthClaims("u")),
		ed.sign(t, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(), "iss": long, "aud": authBaseURL}),
		ed.sign(t, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(), "iss": authBaseURL, "aud": long}),
	} {
		before := len(e.logs.String())
		if res := e.do("GET", "/api/me/tasks", tok, nil); res.Status != 401 {
			t.Errorf("status %d, want 401", res.Status)
		}
		if logged := len(e.logs.String()) - before; logged > 1<<10 {
			t.Errorf("a rejected token with 4 KiB of attacker's text logged %d bytes, want under 1 KiB", logged)
		}
	}
}

// This file is the tests' kit for tokens: the keys the auth tests sign
// with, Better Auth's claims, JWKS servers, and a settable clock.

package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
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
	hold    atomic.Value // a chan struct{}: when set, answers wait until it is closed
}

func newJWKSServer(t testing.TB, keys ...map[string]string) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if hold, ok := s.hold.Load().(chan struct{}); ok {
			<-hold
		}
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

func (c *fakeClock) now() time.Time { return time.Unix(0, c.ns.Load()) }

func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newFakeClock() *fakeClock { c := &fakeClock{}; c.ns.Store(time.Now().UnixNano()); return c }

func (e *testEnv) useClock(c *fakeClock) { e.verifier.keys.now, e.verifier.now = c.now, c.now }

func jwksConfig(url string) *VerifierConfig {
	return &VerifierConfig{
		Secret:     testSecret,
		JWKSURL:    url,
		JWKSIssuer: authBaseURL, JWKSAudience: authBaseURL,
		Client: &http.Client{Timeout: 500 * time.Millisecond},
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

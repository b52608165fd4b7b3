// This file fetches and parses JSON Web Key Sets: the public keys that
// verify tokens from Better Auth's JWT plugin, or any issuer that publishes
// a JWKS.

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// publicKey is a verification key from the JWKS and the one algorithm it may
// verify.
type publicKey struct {
	alg string
	key any // ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey
}

// keySet caches the JWKS. A known kid is served from memory. An unknown kid
// triggers a refetch, at most once per minRefetch, so that a flood of tokens
// with made-up kids cannot turn into a flood of fetches; a key rotated in by
// the issuer is picked up on first sight. The set is also refetched when
// older than maxAge, so that removed keys stop verifying. When a fetch fails
// the known keys keep working.
type keySet struct {
	url        string
	client     *http.Client
	logger     *slog.Logger
	minRefetch time.Duration
	maxAge     time.Duration
	now        func() time.Time // time.Now, but for tests

	mu        sync.RWMutex // guards keys and fetchedAt
	keys      map[string]publicKey
	fetchedAt time.Time

	fetchMu     sync.Mutex // one fetch at a time; guards lastAttempt and lastErr
	lastAttempt time.Time
	lastErr     error

	refreshing atomic.Bool // a background refresh is under way
}

func newKeySet(url string, client *http.Client, logger *slog.Logger) *keySet {
	return &keySet{url: url, client: client, logger: logger, minRefetch: 30 * time.Second, maxAge: time.Hour, now: time.Now}
}

// cached returns the key for kid and whether the set is younger than maxAge.
func (ks *keySet) cached(kid string) (publicKey, bool, bool) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	k, ok := ks.keys[kid]
	return k, ok, ks.now().Sub(ks.fetchedAt) < ks.maxAge
}

// lookup returns the key for kid. A known kid never waits: when the set is
// older than maxAge, it is refreshed in the background, and the key serves
// until the refresh has replaced it. An unknown kid waits for a fetch of the
// set, within the refetch limit. lookup returns ErrKeysUnavailable when it
// has no such key and its last fetch failed.
func (ks *keySet) lookup(ctx context.Context, kid string) (publicKey, error) {
	if k, ok, fresh := ks.cached(kid); ok {
		if !fresh {
			ks.refreshInBackground()
		}
		return k, nil
	}
	ks.fetchMu.Lock()
	defer ks.fetchMu.Unlock()
	if k, ok, _ := ks.cached(kid); ok { // fetched while we waited
		return k, nil
	}
	ks.fetchWithinLimit(ctx)
	if k, ok, _ := ks.cached(kid); ok {
		return k, nil
	}
	if ks.lastErr != nil {
		return publicKey{}, fmt.Errorf("%w: %w", ErrKeysUnavailable, ks.lastErr)
	}
	return publicKey{}, fmt.Errorf("no key with kid %q in the JWKS", truncate(kid, 64))
}

// fetchWithinLimit fetches the set unless the last attempt was less than
// minRefetch ago. The caller holds fetchMu.
func (ks *keySet) fetchWithinLimit(ctx context.Context) {
	if ks.now().Sub(ks.lastAttempt) < ks.minRefetch {
		return
	}
	ks.lastAttempt = ks.now()
	ks.lastErr = ks.fetch(ctx)
	if ks.lastErr != nil {
		ks.logger.Error("fetch JWKS", "url", ks.url, "err", ks.lastErr)
	}
}

// refreshInBackground starts a refresh of an old set, unless one is under
// way. It ends within the client's timeout.
func (ks *keySet) refreshInBackground() {
	if !ks.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer ks.refreshing.Store(false)
		ks.fetchMu.Lock()
		defer ks.fetchMu.Unlock()
		if _, _, fresh := ks.cached(""); !fresh {
			ks.fetchWithinLimit(context.Background())
		}
	}()
}

// fetch replaces the cached keys with the set at ks.url. It is not cut short
// when the request that triggered it is cancelled: others may be waiting.
func (ks *keySet) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ks.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", ks.url, resp.Status)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("decode JWKS: %w", err)
	}
	keys := make(map[string]publicKey, len(set.Keys))
	for _, j := range set.Keys {
		k, err := j.publicKey()
		if err != nil {
			ks.logger.Warn("skip JWKS key", "kid", j.Kid, "err", err)
			continue
		}
		keys[j.Kid] = k
	}
	if len(keys) == 0 {
		return fmt.Errorf("JWKS at %s holds no usable key", ks.url)
	}
	ks.mu.Lock()
	ks.keys, ks.fetchedAt = keys, ks.now()
	ks.mu.Unlock()
	return nil
}

// jwk is one JSON Web Key (RFC 7517) of the kinds taskapi verifies with:
// Ed25519 (RFC 8037), EC P-256 and RSA (RFC 7518).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// publicKey parses j. The algorithm follows from the key type; an "alg"
// member, when present, must agree with it.
func (j jwk) publicKey() (publicKey, error) {
	if j.Kid == "" {
		return publicKey{}, errors.New("no kid")
	}
	if j.Use != "" && j.Use != "sig" {
		return publicKey{}, fmt.Errorf("use %q is not sig", j.Use)
	}
	var k publicKey
	switch {
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := b64(j.X, ed25519.PublicKeySize)
		if err != nil {
			return publicKey{}, fmt.Errorf("x: %w", err)
		}
		k = publicKey{alg: "EdDSA", key: ed25519.PublicKey(x)}
	case j.Kty == "EC" && j.Crv == "P-256":
		x, errX := b64(j.X, 32)
		y, errY := b64(j.Y, 32)
		if err := errors.Join(errX, errY); err != nil {
			return publicKey{}, err
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil { // not on the curve
			return publicKey{}, err
		}
		k = publicKey{alg: "ES256", key: pub}
	case j.Kty == "RSA":
		n, errN := b64(j.N, 0)
		e, errE := b64(j.E, 0)
		if err := errors.Join(errN, errE); err != nil {
			return publicKey{}, err
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
		if len(e) > 4 || pub.N.BitLen() < 2048 {
			return publicKey{}, errors.New("RSA key under 2048 bits or with an oversized exponent")
		}
		pub.E = int(new(big.Int).SetBytes(e).Int64())
		if pub.E < 3 || pub.E%2 == 0 {
			return publicKey{}, errors.New("bad RSA exponent")
		}
		k = publicKey{alg: "RS256", key: pub}
	default:
		return publicKey{}, fmt.Errorf("unsupported key type %q (crv %q)", j.Kty, j.Crv)
	}
	if j.Alg != "" && j.Alg != k.alg {
		return publicKey{}, fmt.Errorf("alg %q does not fit a %s key", j.Alg, k.alg)
	}
	return k, nil
}

// b64 decodes base64url without padding, as JWKs carry it, and checks the
// length when size is not zero.
func b64(s string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || size != 0 && len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}

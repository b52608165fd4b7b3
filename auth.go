package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
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
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Authentication errors. writeError answers the first two with 401 and a
// WWW-Authenticate header, errForbidden with 403, ErrKeysUnavailable with 503.
var (
	// errMissingToken means the request carried no bearer token.
	errMissingToken = errors.New("missing bearer token")
	// errInvalidToken means the token failed a check; it wraps the reason,
	// which is logged but never sent to the client.
	errInvalidToken = errors.New("invalid token")
	// errForbidden means the path names a user other than the token's.
	errForbidden = errors.New("forbidden")
	// ErrKeysUnavailable means the JWKS could not be fetched, so a token
	// signed by an unknown key can be neither accepted nor refused.
	ErrKeysUnavailable = errors.New("signing keys unavailable")
)

// maxTokenBytes bounds the token size; real ones are well under 2 KiB.
const maxTokenBytes = 8 << 10

// clockLeeway absorbs clock skew between the token issuer and this server
// when checking exp, nbf and iat.
const clockLeeway = 30 * time.Second

// userKey is the context key of the authenticated User.
type userKey struct{}

// userFrom returns the User that requireUser put in ctx. It panics when there
// is none: that is a route wired without requireUser, a bug that panic
// recovery turns into a logged 500.
func userFrom(ctx context.Context) User {
	u, ok := ctx.Value(userKey{}).(User)
	if !ok {
		panic("userFrom: no authenticated user in context; is the route wrapped in requireUser?")
	}
	return u
}

// requireUser returns middleware that admits a request only with a valid
// bearer token, and, on routes with a {user_id} path segment, only when that
// segment is the token's user id or "me". The handler finds the caller with
// userFrom. A missing token is 401, never 403: the client must sign in first.
func requireUser(v *Verifier, logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, ok := bearerToken(r.Header.Get("Authorization"))
			if !ok {
				writeError(w, r, logger, errMissingToken)
				return
			}
			u, err := v.Verify(r.Context(), raw)
			if err != nil {
				writeError(w, r, logger, err)
				return
			}
			if id := r.PathValue("user_id"); id != "" && id != "me" && id != u.ID {
				writeError(w, r, logger, errForbidden)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
		})
	}
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
// The scheme is case-insensitive (RFC 9110).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// VerifierConfig says which tokens a Verifier accepts. At least one of
// Secret and JWKSURL must be set; both may be.
type VerifierConfig struct {
	// Secret verifies HS256 tokens, and only those.
	Secret []byte
	// Issuer and Audience, when set, must match the iss and aud of HS256 tokens.
	Issuer, Audience string

	// JWKSURL is where the issuer publishes its public keys. Each key
	// verifies only tokens of its own algorithm: EdDSA, ES256 or RS256.
	JWKSURL string
	// JWKSIssuer and JWKSAudience, when set, must match the iss and aud
	// of tokens verified with a JWKS key.
	JWKSIssuer, JWKSAudience string
	// Client fetches the JWKS; its Timeout bounds every fetch.
	Client *http.Client
}

// Verifier checks bearer tokens and turns them into Users. It is safe for
// concurrent use.
type Verifier struct {
	cfg    VerifierConfig
	keys   *keySet // nil without a JWKS URL
	parser *jwt.Parser
	cache  *tokenCache
	now    func() time.Time // time.Now, but for tests
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg VerifierConfig, logger *slog.Logger) *Verifier {
	var methods []string
	if len(cfg.Secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	v := &Verifier{cfg: cfg, cache: newTokenCache(tokenCacheSize), now: time.Now}
	if cfg.JWKSURL != "" {
		methods = append(methods, jwt.SigningMethodEdDSA.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodRS256.Alg())
		v.keys = newKeySet(cfg.JWKSURL, cfg.Client, logger)
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods), // "none" and everything unlisted is refused
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(clockLeeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
		// One encoding per token: base64 with non-zero padding bits would
		// otherwise spell the same signature in several ways.
		jwt.WithStrictDecoding(),
	)
	return v
}

// tokenClaims are the claims taskapi reads. Sub and the fallbacks are
// pointers so that an absent claim can be told from an empty one.
type tokenClaims struct {
	jwt.RegisteredClaims
	Sub    *string `json:"sub"` // shadows RegisteredClaims.Subject
	UserID *string `json:"userId"`
	AltID  *string `json:"id"`
	Email  string  `json:"email"`
	Name   string  `json:"name"`
}

// Verify checks the token's signature, algorithm, expiry, not-before,
// issued-at, issuer and audience, and returns its User. Every failure wraps
// errInvalidToken, except a JWKS that cannot be fetched: ErrKeysUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw string) (User, error) {
	if len(raw) > maxTokenBytes {
		return User{}, fmt.Errorf("%w: token of %d bytes", errInvalidToken, len(raw))
	}
	// A token seen before, byte for byte, was verified then: its signature
	// cannot have changed, and the cache forgets it at its exp.
	digest := sha256.Sum256([]byte(raw))
	if u, ok := v.cache.get(digest, v.now()); ok {
		return u, nil
	}
	var (
		claims   tokenClaims
		fromJWKS bool
	)
	_, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		// Never follow a key the token points at itself.
		for _, h := range []string{"jku", "x5u", "jwk", "x5c"} {
			if _, ok := t.Header[h]; ok {
				return nil, fmt.Errorf("token carries a %q header", h)
			}
		}
		alg := t.Method.Alg()
		if alg == jwt.SigningMethodHS256.Alg() {
			return v.cfg.Secret, nil // listed in the valid methods only when set
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("token has no kid")
		}
		key, err := v.keys.lookup(ctx, kid)
		if err != nil {
			return nil, err
		}
		if key.alg != alg {
			return nil, fmt.Errorf("key %q is for %s, token is %s", kid, key.alg, alg)
		}
		fromJWKS = true
		return key.key, nil
	})
	if errors.Is(err, ErrKeysUnavailable) {
		return User{}, err
	}
	if err != nil {
		return User{}, fmt.Errorf("%w: %w", errInvalidToken, err)
	}

	// A NumericDate past year 9999 is no date at all (1e300 overflows).
	if exp := claims.ExpiresAt.Time; exp.Year() > 9999 || exp.Year() < 1970 {
		return User{}, fmt.Errorf("%w: exp out of range", errInvalidToken)
	}

	issuer, audience := v.cfg.Issuer, v.cfg.Audience
	if fromJWKS {
		issuer, audience = v.cfg.JWKSIssuer, v.cfg.JWKSAudience
	}
	if issuer != "" && claims.Issuer != issuer {
		return User{}, fmt.Errorf("%w: issuer %q, want %q", errInvalidToken, claims.Issuer, issuer)
	}
	if audience != "" && !slices.Contains(claims.Audience, audience) {
		return User{}, fmt.Errorf("%w: audience %q, want %q", errInvalidToken, claims.Audience, audience)
	}

	id := claims.Sub
	if id == nil {
		id = firstNonNil(claims.UserID, claims.AltID)
	}
	if id == nil || !validUserID(*id) {
		return User{}, fmt.Errorf("%w: no usable user id in sub, userId or id", errInvalidToken)
	}
	u := User{ID: *id, Email: cleanClaim(claims.Email, 320), Name: cleanClaim(claims.Name, 255)}
	v.cache.put(digest, u, claims.ExpiresAt.Time, v.now())
	return u, nil
}

// tokenCacheSize bounds the verified-token cache: about 2 MB when full.
const tokenCacheSize = 10_000

// tokenCache remembers verified tokens until they expire, by their SHA-256,
// so that a client's repeated requests skip the signature check: an EdDSA or
// RSA verification costs tens of microseconds, a lookup well under one. It
// holds at most max tokens. A token stays valid here until its exp even if
// the key that signed it is withdrawn from the JWKS meanwhile; Better Auth's
// tokens live 15 minutes.
type tokenCache struct {
	mu      sync.RWMutex
	max     int
	entries map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	user User
	exp  time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[[sha256.Size]byte]cachedToken)}
}

// get returns the user of a cached token that has not expired at now.
func (c *tokenCache) get(digest [sha256.Size]byte, now time.Time) (User, bool) {
	c.mu.RLock()
	e, ok := c.entries[digest]
	c.mu.RUnlock()
	if !ok || !now.Before(e.exp) {
		return User{}, false
	}
	return e.user, true
}

// put caches a verified token until exp. When the cache is full it first
// drops expired tokens, then, if it must, an arbitrary half of the rest.
func (c *tokenCache) put(digest [sha256.Size]byte, u User, exp, now time.Time) {
	if !now.Before(exp) || c.max == 0 {
		return // accepted within the clock leeway (or no cache): verify it every time
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.exp) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max/2 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[digest] = cachedToken{user: u, exp: exp}
}

// firstNonNil returns the first non-nil pointer, or nil.
func firstNonNil(ps ...*string) *string {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// validUserID reports whether id can be a user id: 1 to 255 characters,
// with no control characters (PostgreSQL refuses NUL in text).
func validUserID(id string) bool {
	if id == "" || utf8.RuneCountInString(id) > 255 {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// cleanClaim returns a profile claim fit to store, or "" for one that is
// too long or holds a NUL. Profile data is a convenience: a strange email
// claim must not refuse an otherwise valid token.
func cleanClaim(s string, max int) string {
	if utf8.RuneCountInString(s) > max || strings.ContainsRune(s, 0) {
		return ""
	}
	return s
}

// mintToken returns an HS256 token for u, signed with secret and valid for
// ttl, with iss and aud when they are not empty. It serves `taskapi token`,
// the development start-up line and the tests.
func mintToken(secret []byte, u User, issuer, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": u.ID,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}
	if u.Email != "" {
		claims["email"] = u.Email
	}
	if u.Name != "" {
		claims["name"] = u.Name
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

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

// lookup returns the key for kid, fetching the set when kid is unknown or the
// set is old, within the refetch limit. It returns ErrKeysUnavailable when it
// has no such key and its last fetch failed.
func (ks *keySet) lookup(ctx context.Context, kid string) (publicKey, error) {
	if k, ok, fresh := ks.cached(kid); ok && fresh {
		return k, nil
	}
	ks.fetchMu.Lock()
	defer ks.fetchMu.Unlock()
	if k, ok, fresh := ks.cached(kid); ok && fresh { // fetched while we waited
		return k, nil
	}
	if ks.now().Sub(ks.lastAttempt) >= ks.minRefetch {
		ks.lastAttempt = ks.now()
		ks.lastErr = ks.fetch(ctx)
		if ks.lastErr != nil {
			ks.logger.Error("fetch JWKS", "url", ks.url, "err", ks.lastErr)
		}
	}
	if k, ok, _ := ks.cached(kid); ok {
		return k, nil
	}
	if ks.lastErr != nil {
		return publicKey{}, fmt.Errorf("%w: %w", ErrKeysUnavailable, ks.lastErr)
	}
	return publicKey{}, fmt.Errorf("no key with kid %q in the JWKS", kid)
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

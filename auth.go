// This file authenticates requests: the bearer-token middleware, and the
// verification of tokens signed with the shared secret (HS256) or with a key
// from the JWKS (jwks.go). The user it finds is what every store call is
// scoped by: next, store.go.

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

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
	// errNotJWT is an errInvalidToken that is not a JWT at all: most often
	// a session token from Better Auth's cookie, sent in place of its JWT.
	errNotJWT = fmt.Errorf("%w: not a JWT (three dot-separated parts)", errInvalidToken)
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

// userFrom returns the User that requireUser gave the request. It panics
// when there is none: that is a route wired without requireUser, a bug that
// panic recovery turns into a logged 500.
func userFrom(ctx context.Context) User {
	info := infoFrom(ctx)
	if info == nil || !info.authenticated {
		panic("userFrom: no authenticated user in context; is the route wrapped in requireUser?")
	}
	return info.user
}

// withUser returns r with u as its authenticated user: r itself, its info
// filled in, when logRequests gave it one, else a copy with new info.
func withUser(r *http.Request, u User) *http.Request {
	if info := infoFrom(r.Context()); info != nil {
		info.user, info.authenticated = u, true
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{user: u, authenticated: true}))
}

// requireUser returns middleware that admits a request only with a valid
// bearer token, and, on routes with a {user_id} path segment, only when that
// segment is the token's user id or "me". The handler finds the caller with
// userFrom. A missing token is 401, never 403: the client must sign in first.
//
// Invalid tokens count against the client's address in failures: once it
// has none left, its tokens are not checked (those verified before still
// pass) and it gets 429 until it has.
func requireUser(v *Verifier, failures *addrLimiter, logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, ok := bearerToken(r.Header.Get("Authorization"))
			if !ok {
				writeError(w, r, logger, errMissingToken)
				return
			}
			u, ok := v.cached(raw)
			if !ok {
				if blocked, wait := failures.blocked(r); blocked {
					writeError(w, r, logger, &rateLimitedError{retryAfter: wait})
					return
				}
				var err error
				if u, err = v.Verify(r.Context(), raw); err != nil {
					if errors.Is(err, errInvalidToken) {
						failures.failed(r)
					}
					writeError(w, r, logger, err)
					return
				}
			}
			if id := r.PathValue("user_id"); id != "" && id != "me" && id != u.ID {
				writeError(w, r, logger, errForbidden)
				return
			}
			next.ServeHTTP(w, withUser(r, u))
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
	if strings.Count(raw, ".") != 2 {
		return User{}, errNotJWT
	}
	// A token seen before, byte for byte, was verified then (see cached).
	digest := sha256.Sum256([]byte(raw))
	if u, ok := v.cache.get(digest, v.now()); ok {
		return u, nil
	}
	if err := checkTokenJSON(raw); err != nil {
		return User{}, fmt.Errorf("%w: %w", errInvalidToken, err)
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
			return nil, fmt.Errorf("key %q is for %s, token is %s", truncate(kid, 64), key.alg, alg)
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
		return User{}, fmt.Errorf("%w: issuer %q, want %q", errInvalidToken, truncate(claims.Issuer, 100), issuer)
	}
	if audience != "" && !slices.Contains(claims.Audience, audience) {
		return User{}, fmt.Errorf("%w: audience %q, want %q", errInvalidToken, truncate(strings.Join(claims.Audience, " "), 100), audience)
	}

	id := claims.Sub
	if id == nil {
		id = firstNonNil(claims.UserID, claims.AltID)
	}
	if id == nil || !validUserID(*id) {
		return User{}, fmt.Errorf("%w: no usable user id in sub, userId or id", errInvalidToken)
	}
	u := User{ID: *id, Email: cleanClaim(claims.Email, maxEmailClaim), Name: cleanClaim(claims.Name, maxNameClaim)}
	v.cache.put(digest, u, claims.ExpiresAt.Time, v.now())
	return u, nil
}

// claimNames are the claims and header members taskapi reads. encoding/json
// matches member names without regard to case, so a token with "SUB" would
// otherwise be read as sub: checkTokenJSON refuses every case variant.
var claimNames = []string{"alg", "typ", "kid", "crit", "sub", "userId", "id", "email", "name", "iss", "aud", "exp", "nbf", "iat", "jti"}

// checkTokenJSON refuses what the JWT library would accept but a strict
// reading of RFC 7519 and RFC 7515 does not: a member named twice, or in
// another case than a claim taskapi reads (so that the claims checked are the
// claims used); exp, nbf or iat that are not JSON numbers; a sub that is
// present but not a non-empty string (no falling back to another claim); and
// a crit header, since taskapi understands no extension (RFC 7515, section
// 4.1.11). raw has three dot-separated parts.
func checkTokenJSON(raw string) error {
	header, rest, _ := strings.Cut(raw, ".")
	payload, _, _ := strings.Cut(rest, ".")
	for _, part := range []struct {
		name, text string
	}{{"header", header}, {"claims", payload}} {
		b, err := base64.RawURLEncoding.Strict().DecodeString(part.text)
		if err != nil {
			return fmt.Errorf("%s: not base64url", part.name)
		}
		members, err := jsonMembers(b)
		if err != nil {
			return fmt.Errorf("%s: %w", part.name, err)
		}
		seen := make(map[string]bool, len(members))
		for name, value := range members {
			folded := strings.ToLower(name)
			if seen[folded] {
				return fmt.Errorf("%s: a member named twice, or in two cases", part.name)
			}
			seen[folded] = true
			if i := slices.IndexFunc(claimNames, func(c string) bool { return strings.EqualFold(c, name) }); i >= 0 && claimNames[i] != name {
				return fmt.Errorf("%s: member %q is not spelled %q", part.name, truncate(name, 20), claimNames[i])
			}
			switch {
			case part.name == "header" && name == "crit":
				return errors.New("header: crit names extensions taskapi does not understand")
			case part.name == "claims" && (name == "exp" || name == "nbf" || name == "iat"):
				if c := value[0]; c != '-' && (c < '0' || c > '9') {
					return fmt.Errorf("claims: %s is not a number", name)
				}
			case part.name == "claims" && name == "sub":
				if value[0] != '"' || string(value) == `""` {
					return errors.New("claims: sub is not a non-empty string")
				}
			}
		}
	}
	return nil
}

// jsonMembers returns the raw values of a JSON object's members, in a map
// that keeps every name: a name given twice is an error.
func jsonMembers(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	members := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		name, _ := t.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := members[name]; dup {
			return nil, errors.New("a member named twice")
		}
		members[name] = value
	}
	if _, err := dec.Token(); err != nil {
		return nil, errors.New("not a JSON object")
	}
	return members, nil
}

// cached returns the user of a token verified before, byte for byte, that
// has not expired: its signature cannot have changed, and the cache forgets
// it at its exp.
func (v *Verifier) cached(raw string) (User, bool) {
	if len(raw) > maxTokenBytes {
		return User{}, false
	}
	return v.cache.get(sha256.Sum256([]byte(raw)), v.now())
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

// validUserID reports whether id can be a user id: 1 to maxUserID
// characters of text without control characters.
func validUserID(id string) bool {
	return checkText(id, 1, maxUserID) == "" &&
		!strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// cleanClaim returns a profile claim fit to store, or "" for one that is
// not valid text of at most max characters. Profile data is a convenience:
// a strange email claim must not refuse an otherwise valid token.
func cleanClaim(s string, max int) string {
	if !validText(s, max) {
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

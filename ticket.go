// This file authenticates event streams: the short-lived tickets with which
// a browser's EventSource, which cannot send an Authorization header, opens
// GET /api/{user_id}/events, and how long a stream may stay open.

package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Ticket lifetimes.
const (
	// ticketTTL is how long a ticket may be used to open a stream.
	ticketTTL = 60 * time.Second
	// ticketStreamMax is the longest a stream opened with a ticket stays
	// open, unless the token the ticket was made with expires sooner.
	ticketStreamMax = 15 * time.Minute
	// maxTicketBytes bounds what is parsed: a ticket is about 100 bytes
	// more than its user id.
	maxTicketBytes = 1024
)

// ticketCodec makes and checks event-stream tickets: "<expires>.<until>.
// <user id in base64url>.<HMAC-SHA256 of the rest>", keyed by a secret every
// instance shares (the "events" server key). expires bounds when the ticket
// may open a stream, until how long that stream may last. It is safe for
// concurrent use.
type ticketCodec struct {
	key []byte
}

// newTicketCodec returns a codec whose key is derived from secret.
func newTicketCodec(secret []byte) ticketCodec {
	key := sha256.Sum256(append([]byte("taskapi events ticket\x00"), secret...))
	return ticketCodec{key: key[:]}
}

// mint returns a ticket for userID that opens streams until expires, each
// lasting until until.
func (c ticketCodec) mint(userID string, expires, until time.Time) string {
	payload := strconv.FormatInt(expires.Unix(), 10) + "." + strconv.FormatInt(until.Unix(), 10) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(userID))
	return payload + "." + base64.RawURLEncoding.EncodeToString(c.mac(payload))
}

func (c ticketCodec) mac(payload string) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// check returns the user and stream deadline of a ticket minted by mint
// that has not expired at now. Every failure wraps errInvalidToken; none
// quotes the ticket.
func (c ticketCodec) check(ticket string, now time.Time) (userID string, until time.Time, err error) {
	bad := func(why string) (string, time.Time, error) {
		return "", time.Time{}, fmt.Errorf("%w: event ticket %s", errInvalidToken, why)
	}
	if len(ticket) > maxTicketBytes {
		return bad("too long")
	}
	payload, sig, ok := cutLast(ticket, ".")
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(mac, c.mac(payload)) {
		return bad("forged or damaged")
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return bad("malformed")
	}
	expires, err1 := strconv.ParseInt(parts[0], 10, 64)
	end, err2 := strconv.ParseInt(parts[1], 10, 64)
	id, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return bad("malformed")
	}
	if !now.Before(time.Unix(expires, 0)) {
		return bad("expired")
	}
	return string(id), time.Unix(end, 0), nil
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// streamUntilKey is the context key of the time a stream must end.
type streamUntilKey struct{}

// streamUntil returns when the request's stream must end: its token's exp,
// or its ticket's end.
func streamUntil(ctx context.Context) time.Time {
	t, _ := ctx.Value(streamUntilKey{}).(time.Time)
	return t
}

// requireStreamUser is requireUser for the event stream: it admits a
// request with a valid ?ticket= (and then reads no Authorization header), or
// else with a bearer token, and records when the stream must end. A ticket
// for another user than the path's is 403, a forged or expired one 401; both
// count as failed authentications of the client's address.
func requireStreamUser(v *Verifier, tickets ticketCodec, failures *addrLimiter, logger *slog.Logger) func(http.Handler) http.Handler {
	bearer := requireUser(v, failures, logger)
	return func(next http.Handler) http.Handler {
		withBearer := bearer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, _ := bearerToken(r.Header.Get("Authorization"))
			ctx := context.WithValue(r.Context(), streamUntilKey{}, tokenExpiry(raw))
			next.ServeHTTP(w, r.WithContext(ctx))
		}))
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ticket := r.URL.Query().Get("ticket")
			if ticket == "" {
				withBearer.ServeHTTP(w, r)
				return
			}
			if blocked, wait := failures.blocked(r); blocked {
				writeError(w, r, logger, &rateLimitedError{retryAfter: wait})
				return
			}
			userID, until, err := tickets.check(ticket, time.Now())
			if err != nil {
				failures.failed(r)
				writeError(w, r, logger, err)
				return
			}
			if id := r.PathValue("user_id"); id != "me" && id != userID {
				writeError(w, r, logger, errForbidden)
				return
			}
			r = withUser(r, User{ID: userID})
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), streamUntilKey{}, until)))
		})
	}
}

// tokenExpiry returns the exp of a token that requireUser has verified
// (which requires exp), or the zero time if it cannot be read.
func tokenExpiry(raw string) time.Time {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(b, &claims); err != nil {
		return time.Time{}
	}
	f, err := claims.Exp.Float64()
	if err != nil {
		return time.Time{}
	}
	return time.Unix(int64(f), 0)
}

// errNoStreamWindow means a token expires too soon for a ticket.
var errNoStreamWindow = errors.New("token expires too soon")

// handleEventsTicket answers POST /api/{user_id}/events/ticket with a
// ticket for the caller's event stream: {"ticket", "expires_at"}. It opens
// streams for ticketTTL; each lasts until the caller's token expires, or
// ticketStreamMax, whichever is sooner.
func handleEventsTicket(logger *slog.Logger, live *eventHub, tickets ticketCodec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if live == nil {
			writeError(w, r, logger, fmt.Errorf("%w: live updates are not running", ErrUnavailable))
			return
		}
		raw, _ := bearerToken(r.Header.Get("Authorization"))
		now := time.Now()
		until := now.Add(ticketStreamMax)
		if exp := tokenExpiry(raw); exp.Before(until) {
			until = exp
		}
		if !until.After(now) {
			writeError(w, r, logger, fmt.Errorf("%w: %w", errInvalidToken, errNoStreamWindow))
			return
		}
		expires := now.Add(ticketTTL)
		if until.Before(expires) {
			expires = until
		}
		ticket := tickets.mint(userFrom(r.Context()).ID, expires, until)
		writeJSON(w, http.StatusOK, struct {
			Ticket    string    `json:"ticket"`
			ExpiresAt time.Time `json:"expires_at"`
		}{ticket, expires.UTC().Truncate(time.Second)})
	})
}

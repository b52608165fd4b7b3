// This file is how the hub (hub.go) hears of changes: it wakes this
// instance's streams after a write here and tells the other instances in
// one coalesced notification (changed, tell), hears theirs on its LISTEN
// connection (listen, hear), and polls the history as the safety net that
// needs no notification at all (poller, poll).

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// changed is told that a write of userID's has committed a change: the
// user's streams on this instance wake at once, and the listener tells the
// other instances (hear). While the hub does not listen it tells no one:
// the instances share their configuration, so none listens either, and
// the safety net alone carries changes across instances.
func (h *eventHub) changed(userID string) {
	h.mu.Lock()
	if us := h.users[userID]; us != nil {
		us.wake()
	}
	if h.listening.Load() {
		h.pending[userID] = struct{}{}
	}
	h.mu.Unlock()
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// start makes the hub hear of changes until it closes: the safety net, and
// a listener on url that reconnects whenever it drops, and tells the other
// instances of this one's changes. It
// fails only when url does not parse; a listener that cannot LISTEN (a
// pooler in transaction mode, a database that is down) is warned of once
// and tried again with backoff, while the safety net polls more often.
func (h *eventHub) start(ctx context.Context, url string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return errors.New("DATABASE_LISTEN_URL is not a valid PostgreSQL connection string")
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "taskapi-listen"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-h.ctx.Done()
		cancel()
	}()
	go h.poller(ctx, logger)
	go h.listen(ctx, cfg, logger)
	return nil
}

// errQuiet ends a listener's wait for a notification after listenPing.
var errQuiet = errors.New("no notification for a while")

// tell sends, on the listener's connection, the notification of every user
// changed here since the last one (notifySQL), if any.
func (h *eventHub) tell(ctx context.Context, conn *pgx.Conn) error {
	h.mu.Lock()
	users := slices.Collect(maps.Keys(h.pending))
	clear(h.pending)
	h.mu.Unlock()
	if len(users) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, notifySQL, notifyPayloads(h.instance, users)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// notifyPayloads puts users in payloads of at most maxNotifyPayload bytes,
// each "<instance>\n<user>\n<user>...". A user id holds no control
// character (validUserID), and is at most 1020 bytes.
func notifyPayloads(instance string, users []string) []string {
	var payloads []string
	b := []byte(instance)
	for _, u := range users {
		if len(b)+1+len(u) > maxNotifyPayload {
			payloads = append(payloads, string(b))
			b = []byte(instance)
		}
		b = append(append(b, '\n'), u...)
	}
	return append(payloads, string(b))
}

// heard wakes the users a notification names, unless it is this instance's
// own: its streams woke when the write committed.
func (h *eventHub) heard(payload string) {
	instance, users, ok := strings.Cut(payload, "\n")
	if !ok || instance == h.instance {
		return
	}
	h.heardFrom.Add(1)
	for _, u := range strings.Split(users, "\n") {
		h.wakeUser(u)
	}
}

// poller runs the safety net until ctx ends: a poll every PollInterval
// while the hub listens, every PollFallback while it does not.
func (h *eventHub) poller(ctx context.Context, logger *slog.Logger) {
	t := time.NewTimer(h.cfg.PollFallback)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := h.poll(ctx)
		if err != nil && ctx.Err() == nil && !failing {
			logger.Warn("live updates: poll", "err", err)
		} else if err == nil && failing {
			logger.Info("live updates: polling again")
		}
		failing = err != nil && ctx.Err() == nil
		if h.listening.Load() {
			t.Reset(h.cfg.PollInterval)
		} else {
			t.Reset(h.cfg.PollFallback)
		}
	}
}

// poll asks the history, in one statement, which of the users with
// streams here changed since the watermark, wakes them, and moves the
// watermark on. With no stream open it asks nothing: an idle instance
// leaves an idle database alone (Neon scales it to zero).
func (h *eventHub) poll(ctx context.Context) error {
	h.mu.Lock()
	since := h.watermark
	users := slices.Collect(maps.Keys(h.users))
	h.polling, h.joined = true, 0
	h.mu.Unlock()
	if since == 0 || len(users) == 0 {
		h.mu.Lock()
		h.polling = false
		h.mu.Unlock()
		return nil
	}
	changed, next, err := h.store.PollChanged(ctx, strconv.FormatUint(since, 10), users)
	h.mu.Lock()
	if err == nil && h.watermark != 0 {
		if h.joined != 0 {
			next = min(next, h.joined)
		}
		h.watermark = max(h.watermark, next)
	}
	h.polling, h.joined = false, 0
	h.mu.Unlock()
	if err != nil {
		return err
	}
	h.polls.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for u, top := range changed {
		if us := h.users[u]; us != nil && top > us.polled {
			us.polled = top
			us.wake()
		}
	}
	return nil
}

// listen keeps a LISTEN connection up until ctx ends, with backoff between
// tries, and wakes every stream each time it is up again, for what went
// unheard meanwhile. The first failure is warned of, with what to do.
func (h *eventHub) listen(ctx context.Context, cfg *pgx.ConnConfig, logger *slog.Logger) {
	backoff := 100 * time.Millisecond
	warned, dropped := false, false
	for {
		conn, err := listenConn(ctx, cfg)
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close(context.Background())
			}
			return
		}
		if err != nil {
			if !warned {
				warned = true
				logger.Warn("live updates: cannot LISTEN; streams hear of other instances' changes from the poll alone, "+
					"every "+h.cfg.PollFallback.String()+"; to hear of them at once, set DATABASE_LISTEN_URL to a direct "+
					"connection to the database (a pooler in transaction mode, such as PgBouncer or Neon's -pooler host, cannot LISTEN)",
					"host", cfg.Host, "err", err)
			} else {
				logger.Debug("live updates: LISTEN failed; retrying", "retry_in", backoff.String(), "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, listenMaxBackoff)
			continue
		}
		backoff = 100 * time.Millisecond
		h.listening.Store(true)
		if warned || dropped {
			logger.Info("live updates: listening; every stream catches up")
		}
		warned, dropped = false, true
		h.wakeAll()
		err = h.hear(ctx, conn)
		h.mu.Lock()
		h.listening.Store(false)
		clear(h.pending) // the safety net carries them
		h.mu.Unlock()
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return
		}
		logger.Warn("live updates: the LISTEN connection dropped; reconnecting", "err", err)
	}
}

// hear wakes the users of each notification on conn, and sends on it the
// notification of the users changed here (tell), until the connection
// fails or ctx ends; a quiet connection is pinged every listenPing. A
// change here ends the wait for a notification (the driver keeps the
// connection when a wait ends by its context), so that conn, which is this
// instance's own, sends one notification at a time, and never waits for
// the pool.
func (h *eventHub) hear(ctx context.Context, conn *pgx.Conn) error {
	for {
		if err := h.tell(ctx, conn); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeoutCause(ctx, listenPing, errQuiet)
		go func() {
			select {
			case <-h.notify:
				if wctx.Err() != nil {
					// The wait had ended already: leave the poke for the next.
					select {
					case h.notify <- struct{}{}:
					default:
					}
				}
				cancel()
			case <-wctx.Done():
			}
		}()
		n, err := conn.WaitForNotification(wctx)
		ended, quiet := wctx.Err() != nil, errors.Is(context.Cause(wctx), errQuiet)
		cancel()
		switch {
		case err == nil:
			h.heard(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !ended || conn.IsClosed():
			return err // the connection failed
		case !quiet:
			continue // a change here to tell
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// listenConn connects, LISTENs, and turns synchronous_commit off for the
// notifications it will send; then it sends a notification from a second
// connection and waits for it, as other instances will send them: a pooler in
// transaction mode loses it. The probe's payload names no user.
func listenConn(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*pgx.Conn, error) {
		conn.Close(context.Background())
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		return fail(err)
	}
	// The notifications this connection sends (tell) are hints: one lost
	// in a crash costs a poll interval, and waiting for the commit's disk
	// flush would delay every one.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return fail(err)
	}
	notifier, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	_, err = notifier.Exec(ctx, "SELECT pg_notify($1, 'probe')", changesChannel)
	notifier.Close(context.Background())
	if err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := conn.WaitForNotification(wctx); err != nil {
		return fail(fmt.Errorf("no notification arrived after LISTEN: %w", err))
	}
	return conn, nil
}

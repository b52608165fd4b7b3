// This file opens the database: the connection pool, the schema applied at
// boot, the secrets every instance shares, and the count of statements
// that ran into a time limit. How the store bounds each call in time is in
// conndeadline.go; which database errors become which of the store's, in
// store.go (dbError).

package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// schemaSQL is the whole database schema, applied at every boot by applySchema.
//
//go:embed schema.sql
var schemaSQL string

// dbConfig holds the pool settings for openDB.
type dbConfig struct {
	URL             string
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
	ConnectTimeout  time.Duration // per connection attempt, unless the URL sets connect_timeout
	BootTimeout     time.Duration // how long openDB keeps retrying
	// StatementTimeout, when set, is the server's statement_timeout for
	// every connection, unless the URL sets one.
	StatementTimeout time.Duration
	// DialFunc, when set, opens the network connections; tests use it to
	// count round trips.
	DialFunc pgconn.DialFunc
}

// pingAfterIdle is how long a pooled connection may sit idle before it is
// checked with a ping on its next use. The driver's default, one second,
// would add a round trip to most requests of a lightly used service; a
// connection idle this long may have been dropped by a suspended database or
// a NAT, so it is worth one.
const pingAfterIdle = 30 * time.Second

// Default pool sizes. A database on this machine serves best with about as
// many busy connections as it has cores, and shares them with taskapi; one
// across a network holds each pooled connection for a round trip as well,
// so a pool of 4 caps an instance at 4 statements per round trip (about
// 3,000 a second at 1.3 ms). bench/run's pool sweep chose these;
// bench/README.md, "The pool", has its table.
const (
	localPoolSize  = 4
	remotePoolSize = 16
)

// defaultPoolSize returns the pool size for a DATABASE_URL: localPoolSize
// when the database is on this machine (a Unix socket, localhost, a
// loopback address, or no URL: the development database), else
// remotePoolSize.
func defaultPoolSize(url string) int {
	if url == "" {
		return localPoolSize
	}
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return localPoolSize // openDB reports the error
	}
	hosts := []string{cfg.Host}
	for _, f := range cfg.Fallbacks { // the other hosts of a multi-host URL
		hosts = append(hosts, f.Host)
	}
	for _, host := range hosts {
		ip, err := netip.ParseAddr(host)
		local := strings.HasPrefix(host, "/") || host == "localhost" || err == nil && ip.IsLoopback()
		if !local {
			return remotePoolSize
		}
	}
	return localPoolSize
}

// openDB opens a pool to the database at cfg.URL and waits until it answers,
// retrying with backoff for up to cfg.BootTimeout: a serverless database may
// be waking up. The URL is any libpq-style URL or DSN, so a Neon URL with
// sslmode=require and channel_binding=require works as it is.
func openDB(ctx context.Context, cfg dbConfig, logger *slog.Logger) (*sql.DB, error) {
	pgCfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		// The parse error can echo the URL, password included: say less.
		return nil, errors.New("DATABASE_URL is not a valid PostgreSQL connection string (postgres://user:password@host:5432/db?sslmode=require)")
	}
	if pgCfg.ConnectTimeout == 0 {
		pgCfg.ConnectTimeout = cfg.ConnectTimeout
	}
	if _, ok := pgCfg.RuntimeParams["application_name"]; !ok {
		pgCfg.RuntimeParams["application_name"] = "taskapi"
	}
	if cfg.DialFunc != nil {
		pgCfg.DialFunc = cfg.DialFunc
	}
	// The server ends a statement that runs past the timeout itself: a
	// parameter of the connection's start-up message, so it costs no round
	// trip, and the connection stays usable, where a timeout on this side
	// can only close it.
	_, urlSetsTimeout := pgCfg.RuntimeParams["statement_timeout"]
	if cfg.StatementTimeout > 0 && !urlSetsTimeout {
		pgCfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	}
	open := func() *sql.DB {
		db := stdlib.OpenDB(*pgCfg, stdlib.OptionShouldPing(func(_ context.Context, p stdlib.ShouldPingParams) bool {
			return p.IdleDuration > pingAfterIdle
		}))
		db.SetMaxOpenConns(cfg.MaxOpenConns)
		db.SetMaxIdleConns(cfg.MaxIdleConns)
		db.SetConnMaxLifetime(cfg.ConnMaxLifetime)
		db.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)
		return db
	}
	db := open()

	deadline := time.Now().Add(cfg.BootTimeout)
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		err = db.PingContext(pingCtx)
		cancel()
		if err == nil {
			return db, nil
		}
		if refusesStartupParameter(err) && !urlSetsTimeout && pgCfg.RuntimeParams["statement_timeout"] != "" {
			// A pooler such as PgBouncer refuses start-up parameters it
			// was not told to pass on: the client's timeout remains.
			logger.Warn("the database (a pooler?) refuses statement_timeout at start-up; statements are "+
				"timed on this side only. Set it on the server instead: ALTER ROLE <user> SET statement_timeout = '5s'",
				"host", pgCfg.Host)
			delete(pgCfg.RuntimeParams, "statement_timeout")
			db.Close()
			db = open()
			continue
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			break
		}
		logger.Warn("database not reachable yet, retrying",
			"host", pgCfg.Host, "attempt", attempt, "retry_in", backoff.String(), "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	db.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("could not reach the database at %s:%d within %s: %w\n"+
		"check that DATABASE_URL names the right host, port, database, user and password, "+
		"that the server is running and reachable from here, and that sslmode suits it",
		pgCfg.Host, pgCfg.Port, cfg.BootTimeout, err)
}

// refusesStartupParameter reports whether err is a server (a pooler, most
// likely) refusing a parameter of the start-up message.
func refusesStartupParameter(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "08P01" && strings.Contains(pgErr.Message, "unsupported startup parameter")
}

// schemaLockKey is the advisory lock that serializes schema application
// across every taskapi instance sharing a database.
const schemaLockKey = 7_283_424_952_120_117_391

// applySchema applies schema.sql in one transaction that first takes an
// advisory lock, so that instances booting at the same moment apply it one
// after the other and never see a half-made schema. Every statement in it is
// idempotent, so applying it to an up-to-date database changes nothing; a
// database on which this very schema.sql was applied (schema_digest says
// so) is left alone, as applying it would lock the tables other instances
// serve from.
func applySchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	defer tx.Rollback()
	// Building an index on a large table, or waiting for another instance
	// to finish, may take longer than any request should.
	if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLockKey)); err != nil {
		return fmt.Errorf("apply schema: lock: %w", err)
	}
	digest := sha256.Sum256([]byte(schemaSQL))
	var applied bool
	err = tx.QueryRowContext(ctx, `SELECT to_regclass('schema_digest') IS NOT NULL`).Scan(&applied)
	if err == nil && applied {
		err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM schema_digest WHERE digest = $1)`, digest[:]).Scan(&applied)
	}
	if err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if applied {
		return tx.Commit()
	}
	// With no arguments, pgx sends the text over the simple protocol, which
	// runs several statements at once.
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_digest (digest) VALUES ($1)
    ON CONFLICT (one) DO UPDATE SET digest = EXCLUDED.digest`, digest[:]); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply schema: commit: %w", err)
	}
	return nil
}

// serverKey returns the secret called name from server_keys, making a random
// one the first time: every instance on the database then shares it.
func serverKey(ctx context.Context, db *sql.DB, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	rand.Read(fresh)
	_, err := db.ExecContext(ctx, `INSERT INTO server_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh)
	if err != nil {
		return nil, fmt.Errorf("make server key %q: %w", name, err)
	}
	// A statement of its own: when another instance booting at the same
	// moment made the key, the insert above waited for its commit, but a
	// SELECT in the same statement would still read the snapshot from
	// before it, and find nothing.
	var key []byte
	if err := db.QueryRowContext(ctx, `SELECT key FROM server_keys WHERE name = $1`, name).Scan(&key); err != nil {
		return nil, fmt.Errorf("read server key %q: %w", name, err)
	}
	return key, nil
}

// statementTimeouts counts statements that ran into a time limit: the
// server's statement_timeout, or the store's own deadline on the socket.
type statementTimeouts struct {
	server, client atomic.Uint64
}

// count counts err if it is a statement timeout.
func (t *statementTimeouts) count(err error) {
	if err == nil {
		return
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "57014": // query_canceled
		t.server.Add(1)
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		t.client.Add(1)
	default:
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			t.client.Add(1)
		}
	}
}

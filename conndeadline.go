// This file is a speed layer a reader may skip: how the store bounds each
// of its calls in time. It replaces the standard way, a context with a
// deadline on every call,
//
//	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
//	defer cancel()
//	err := db.QueryRowContext(ctx, query, args...).Scan(...)
//
// which database/sql and pgx pay for on every statement: database/sql
// starts a goroutine to watch a context that can end, and pgx registers a
// callback on it. Instead, the wait for a pooled connection is bounded by
// a context shared by the waits that begin within 10 ms (sharedDeadlines),
// and the statements by a deadline on the connection's socket, to the same
// time; the statements themselves get a context that never ends. A read
// past the deadline fails, and the driver closes the connection, as it
// does when a context ends mid-statement. Behaviour is the same either
// way: the store's timeout tests (TestStoreTimeoutBoundsEveryStatement,
// TestCancelledRequestKeepsConnection, TestStatementRetriedOnBrokenConnection)
// pass with both.
//
// What it measured against the standard way, on a 2-core machine, bench/run
// with both builds in turn (TASKAPI_BINS="layer=/tmp/a plain=/tmp/b"
// SCENARIOS="get list" CONNS="32 128" RUNS=5), as the range of the five
// paired ratios, standard / this layer:
//
//	get  at 128 connections: p99 2.8-16x (median 3.5x: 137 against 39 ms), req/s 0.85-1.18
//	get  at  32 connections: p99 0.6-127x (median 5.6x), req/s 0.50-1.16 (median 0.75)
//	list at 128 connections: p99 0.59-1.47, req/s 0.68-1.29: no difference beyond noise
//	list at  32 connections: p99 0.41-1.92, req/s 0.50-1.51: no difference beyond noise
//
// The gets' slowest answers are what it buys: it stays for every call, as
// one mechanism, rather than for gets alone.

package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// stmtConn is a pooled connection taken for the statements of one call of
// the store, with a deadline on its socket.
type stmtConn struct {
	conn    *sql.Conn
	ctx     context.Context // the caller's values; never ends
	started *int            // statements begun on it
}

func (c stmtConn) QueryRow(query string, args ...any) *sql.Row {
	*c.started++
	return c.conn.QueryRowContext(c.ctx, query, args...)
}

func (c stmtConn) Query(query string, args ...any) (*sql.Rows, error) {
	*c.started++
	return c.conn.QueryContext(c.ctx, query, args...)
}

func (c stmtConn) Exec(query string, args ...any) (sql.Result, error) {
	*c.started++
	return c.conn.ExecContext(c.ctx, query, args...)
}

// boundedDB runs the statements of each call of the store on a pooled
// connection, within a time limit per call.
type boundedDB struct {
	pool     *sql.DB
	waits    sharedDeadlines   // the time limit of each call, from its start
	timeouts statementTimeouts // calls that hit it, for /metrics
}

func newBoundedDB(pool *sql.DB, timeout time.Duration) *boundedDB {
	return &boundedDB{pool: pool, waits: sharedDeadlines{timeout: timeout}}
}

// maxConnTries is how many pooled connections withConn tries when the
// driver finds one broken before anything is sent on it
// (driver.ErrBadConn); database/sql tries as many for a statement run on
// the pool itself.
const maxConnTries = 3

// withConn calls f with a pooled connection on which f's statements must
// finish within the timeout (at most deadlineSlack more) from now, the wait
// for the connection included; past it, they fail with an error
// isUnavailable knows. A client that goes away does not end them: stopping
// a statement midway costs the connection, and finishing one that takes
// milliseconds is cheaper than a new connection for the next request
// (TestCancelledRequestKeepsConnection). When f's first statement fails
// with driver.ErrBadConn, nothing was sent, and withConn calls f again on
// another connection; a failure after a statement has run is returned as
// it is, so that no statement runs twice.
func (b *boundedDB) withConn(ctx context.Context, f func(stmtConn) error) error {
	ctx = context.WithoutCancel(ctx)
	wait := b.waits.context(time.Now())
	deadline, _ := wait.Deadline() // the wait and the statements end together
	var err error
	for range maxConnTries {
		var retry bool
		if retry, err = b.tryConn(ctx, wait, deadline, f); !retry {
			b.timeouts.count(err)
			return err
		}
	}
	return err
}

// tryConn is one try of withConn: it waits for a connection until wait
// ends, and gives f until deadline. retry is true when f's first statement
// found the connection broken before sending anything.
func (b *boundedDB) tryConn(ctx, wait context.Context, deadline time.Time, f func(stmtConn) error) (retry bool, err error) {
	conn, err := b.pool.Conn(wait)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	// A connection that comes at the deadline goes back unused: a
	// statement begun past it would fail at once, and the driver would
	// close the connection for it.
	if !time.Now().Before(deadline) {
		return false, context.DeadlineExceeded
	}
	if err := setDeadline(conn, deadline); err != nil {
		return false, err
	}
	defer clearDeadline(conn)
	var started int
	err = f(stmtConn{conn: conn, ctx: ctx, started: &started})
	return errors.Is(err, driver.ErrBadConn) && started == 1, err
}

// sharedDeadlines hands out contexts that end timeout (and at most
// deadlineSlack more) after they are asked for. One context serves every
// ask within deadlineSlack of its making, so that a wait for a pooled
// connection costs no context, timer or allocation of its own.
type sharedDeadlines struct {
	timeout time.Duration
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc // never called: its own deadline ends ctx
	renew   time.Time          // asks after it need a new ctx
}

const deadlineSlack = 10 * time.Millisecond

// context returns a context that ends between timeout and
// timeout+deadlineSlack after now.
func (d *sharedDeadlines) context(now time.Time) context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil || now.After(d.renew) {
		d.ctx, d.cancel = context.WithDeadline(context.Background(), now.Add(d.timeout+deadlineSlack))
		d.renew = now.Add(deadlineSlack)
	}
	return d.ctx
}

// setDeadline sets the deadline of conn's socket.
func setDeadline(conn *sql.Conn, t time.Time) error {
	return conn.Raw(func(dc any) error {
		return pgConn(dc).Conn().SetDeadline(t)
	})
}

// clearDeadline clears the deadline of conn's socket before conn goes back
// to the pool. A connection the driver closed (a statement ran past the
// deadline) is left alone, as the driver says goodbye on it with a deadline
// of its own, and reported broken, so that the pool drops it now rather
// than at its next use.
func clearDeadline(conn *sql.Conn) {
	conn.Raw(func(dc any) error {
		pc := pgConn(dc)
		if pc.IsClosed() {
			return driver.ErrBadConn
		}
		return pc.Conn().SetDeadline(time.Time{})
	})
}

// pgConn returns the pgx connection of a database/sql driver connection:
// the pool is opened with pgx's stdlib (openDB), so it is always one.
func pgConn(driverConn any) *pgconn.PgConn {
	return driverConn.(*stdlib.Conn).Conn().PgConn()
}

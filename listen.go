// This file bounds the connections taskapi keeps open, so that clients that
// open many and leave them idle cannot use up the process's file
// descriptors and lock every other client out.

package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimiter is a listener that keeps at most max connections open. At
// the limit it first closes the connection that has been idle the longest
// (its client, a keep-alive pool, just opens another when it needs one);
// when none is idle, Accept waits for one to close, and new clients wait in
// the kernel's backlog. Its track method must be the server's ConnState.
type connLimiter struct {
	net.Listener
	slots      chan struct{} // one per open connection
	becameIdle chan struct{} // a connection went idle: one may be closed
	closed     chan struct{} // closed with the listener, to end a waiting Accept
	once       sync.Once

	mu   sync.Mutex
	idle map[net.Conn]time.Time // idle connections, since when
}

// maxConnsFor returns the default connection limit for an open-file limit:
// all but 256 descriptors, kept for the database pool, the JWKS client, logs
// and the development database; at most 20,000 (about 100 MB of idle
// connections); 10,000 when the limit is unknown.
func maxConnsFor(openFiles uint64) int {
	switch {
	case openFiles == 0:
		return 10_000
	case openFiles <= 512:
		return int(openFiles / 2)
	}
	return int(min(openFiles-256, 20_000))
}

func newConnLimiter(ln net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: ln, slots: make(chan struct{}, max), becameIdle: make(chan struct{}, 1),
		closed: make(chan struct{}), idle: map[net.Conn]time.Time{}}
}

// Accept waits for room under the limit, making it by closing the longest
// idle connection if it must, then accepts the next connection.
func (l *connLimiter) Accept() (net.Conn, error) {
	if err := l.takeSlot(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

// takeSlot takes a place for a connection: a free one, or that of the
// longest idle connection, which it closes; else it waits until a
// connection closes or goes idle.
func (l *connLimiter) takeSlot() error {
	for {
		select {
		case l.slots <- struct{}{}:
			return nil
		default:
		}
		if l.closeOldestIdle() {
			continue // its Close gave its place back
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		case <-l.becameIdle:
		case <-l.closed:
			return net.ErrClosed
		}
	}
}

// Close closes the listener and ends a waiting Accept.
func (l *connLimiter) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// track follows the state of each connection (http.Server.ConnState).
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if state == http.StateIdle {
		l.idle[c] = time.Now()
		select {
		case l.becameIdle <- struct{}{}:
		default:
		}
	} else {
		delete(l.idle, c)
	}
}

// closeOldestIdle closes the connection idle the longest, and reports
// whether there was one.
func (l *connLimiter) closeOldestIdle() bool {
	l.mu.Lock()
	var (
		oldest net.Conn
		since  time.Time
	)
	for conn, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = conn, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.Close()
	return true
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// SetWriteBuffer sets the connection's send buffer, as net.TCPConn's does.
func (c *limitedConn) SetWriteBuffer(bytes int) error {
	if tc, ok := c.Conn.(interface{ SetWriteBuffer(int) error }); ok {
		return tc.SetWriteBuffer(bytes)
	}
	return nil
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// This file bounds the connections taskapi keeps open, so that clients that
// open many and leave them idle cannot use up the process's file
// descriptors and lock every other client out.

package main

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
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
	idleTurn   atomic.Int64 // counts connections going idle, to order them

	mu    sync.Mutex
	conns map[*limitedConn]struct{} // the open connections
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

// maxStreamsFor returns the most event streams an instance with a limit of
// maxConns connections may hold: three in four. A stream holds its
// connection for as long as it lasts and is never idle, so the connection
// limit cannot make room by closing one; the quarter left keeps the
// instance answering its health checks and ordinary requests when streams
// come in numbers.
func maxStreamsFor(maxConns int) int {
	return max(1, maxConns-maxConns/4)
}

func newConnLimiter(ln net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: ln, slots: make(chan struct{}, max), becameIdle: make(chan struct{}, 1),
		closed: make(chan struct{}), conns: map[*limitedConn]struct{}{}}
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
	lc := &limitedConn{Conn: c, limiter: l}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
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

// track follows the state of each connection (http.Server.ConnState). It
// runs twice for every request on a kept-alive connection, so it only
// marks the connection: idle, with its turn, or busy.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	if state != http.StateIdle {
		lc.idleTurn.Store(0)
		return
	}
	lc.idleTurn.Store(l.idleTurn.Add(1))
	select {
	case l.becameIdle <- struct{}{}:
	default:
	}
}

// closeOldestIdle closes the connection idle the longest, and reports
// whether there was one.
func (l *connLimiter) closeOldestIdle() bool {
	for {
		var (
			oldest *limitedConn
			turn   int64
		)
		l.mu.Lock()
		for c := range l.conns {
			if t := c.idleTurn.Load(); t != 0 && (oldest == nil || t < turn) {
				oldest, turn = c, t
			}
		}
		l.mu.Unlock()
		if oldest == nil {
			return false
		}
		// Claim it, unless a request came on it meanwhile.
		if oldest.idleTurn.CompareAndSwap(turn, 0) {
			oldest.Close()
			return true
		}
	}
}

// limitedConn is a connection under a connLimiter: it gives its place back
// once, when closed.
type limitedConn struct {
	net.Conn
	limiter  *connLimiter
	idleTurn atomic.Int64 // when it went idle, in the limiter's turns; 0 while busy
	once     sync.Once
}

// SetWriteBuffer sets the connection's send buffer, as net.TCPConn's does.
func (c *limitedConn) SetWriteBuffer(bytes int) error {
	if tc, ok := c.Conn.(interface{ SetWriteBuffer(int) error }); ok {
		return tc.SetWriteBuffer(bytes)
	}
	return nil
}

// SyscallConn gives the connection's socket, as net.TCPConn's does, for
// options that net does not set (setUserTimeout).
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.idleTurn.Store(0)
		l := c.limiter
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		<-l.slots
	})
	return err
}

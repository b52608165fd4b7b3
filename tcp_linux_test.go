package main

import (
	"net"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
)

// recordingListener remembers the connections it accepts.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*net.TCPConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		l.mu.Lock()
		l.conns = append(l.conns, tc)
		l.mu.Unlock()
	}
	return c, err
}

// userTimeouts returns the TCP_USER_TIMEOUT of each connection accepted, in
// milliseconds.
func (l *recordingListener) userTimeouts(t *testing.T) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ms []int
	for _, c := range l.conns {
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		raw.Control(func(fd uintptr) {
			v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
			if err == nil {
				ms = append(ms, v)
			}
		})
	}
	return ms
}

// TestStreamUserTimeout checks that a stream's socket gives up on a client
// that acknowledges nothing after the write timeout, as a client whose
// network vanished does, and that other connections keep the kernel's
// default.
func TestStreamUserTimeout(t *testing.T) {
	t.Parallel()
	var ln *recordingListener
	cfg := testEventsConfig()
	e := newLiveEnvWith(t, cfg, liveOptions{server: func(s *httptest.Server) {
		ln = &recordingListener{Listener: s.Listener}
		s.Listener = ln
	}})
	tok := e.token("mobile")
	if res := e.do("GET", "/api/me/tasks", tok, nil); res.Status != 200 {
		t.Fatalf("list: %d", res.Status)
	}
	openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	var set, unset int
	for _, ms := range ln.userTimeouts(t) {
		switch ms {
		case int(cfg.WriteTimeout.Milliseconds()):
			set++
		case 0:
			unset++
		default:
			t.Errorf("a connection's TCP_USER_TIMEOUT is %d ms, want %d or the default 0", ms, cfg.WriteTimeout.Milliseconds())
		}
	}
	if set != 1 || unset < 1 {
		t.Errorf("%d connections with the stream's user timeout and %d without, want the stream's alone with it", set, unset)
	}
}

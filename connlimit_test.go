package main

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// countingListener counts the connections it has accepted and not yet
// closed: the file descriptors a server holds.
type countingListener struct {
	net.Listener
	mu         sync.Mutex
	open, most int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open++
	l.most = max(l.most, l.open)
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) counts() (open, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.most
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.mu.Lock(); c.l.open--; c.l.mu.Unlock() })
	return c.Conn.Close()
}

// idleCount returns how many connections the limiter holds as idle.
func (l *connLimiter) idleCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.idleTurn.Load() != 0 {
			n++
		}
	}
	return n
}

// TestConnectionLimit checks that a server behind connLimiter never has
// more connections open than its limit: at the limit an idle connection
// makes room for a new client, and with none idle the new client waits for
// a request to finish, then is served. Open means an accepted connection
// not yet closed, a file descriptor; the server's ConnState callbacks lag
// behind that, so they are not what is counted.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingListener{Listener: tcp}
	ln := newConnLimiter(counted, 3)
	release := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "ok")
		}),
		ConnState: ln.track,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String()
	// Each client has a connection of its own, kept alive.
	get := func(path string) error {
		c := &http.Client{Transport: &http.Transport{}}
		res, err := c.Get(url + path)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		return res.Body.Close()
	}

	for i := range 6 { // twice the limit of idle keep-alive connections
		if err := get("/"); err != nil {
			t.Fatalf("client %d: %v, want no error", i, err)
		}
	}

	// Three requests in flight hold every place: a fourth client waits.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { get("/slow") })
	}
	waitFor(t, func() bool { open, _ := counted.counts(); return open == 3 && ln.idleCount() == 0 })
	fourth := make(chan error, 1)
	go func() { fourth <- get("/") }()
	select {
	case err := <-fourth:
		t.Fatalf("a fourth client was served while three requests held every place (%v), want it to wait", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if err := <-fourth; err != nil {
		t.Errorf("the fourth client, once a place was free: %v, want no error", err)
	}
	if _, most := counted.counts(); most > 3 {
		t.Errorf("%d connections were open at once, want at most 3", most)
	}
}

func TestMaxConnsFor(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		files uint64
		want  int
	}{{0, 10_000}, {256, 128}, {1024, 768}, {65536, 20_000}} {
		if got := maxConnsFor(c.files); got != c.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", c.files, got, c.want)
		}
	}
}

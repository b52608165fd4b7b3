// Command dbproxy is a TCP proxy that delays everything it forwards, in
// each direction, by a fixed time: bench/run puts it between the servers and
// PostgreSQL to measure them against a database that is not on the same
// machine (DB_LATENCY=0.5ms bench/run).
//
//	dbproxy -listen 127.0.0.1:6000 -upstream 127.0.0.1:5432 -delay 1ms
//
// The delay is one way: a round trip gains twice it. It is latency, not a
// bandwidth cap: every chunk read is stamped with the time it is due and
// queued, and is written at that time, while the reader goes on reading, so
// chunks in flight overlap as on a long wire. As every chunk waits the same
// time, a queue in arrival order is also in order of due time: one queue for
// each direction (towards the upstream, towards the clients) serves all
// connections, with one writer each that sleeps until the head is due. A
// connection's chunks keep their order.
//
// On Linux each writer sleeps with nanosleep on a thread of its own, with a
// timer slack of 1 ns, since the Go runtime's timers can wake up to a
// millisecond late on an idle machine; a chunk still arrives some tens of
// microseconds after it is due, more on a busy machine. The writers assume
// that both ends read what they are sent, as PostgreSQL and its clients do:
// a write that blocks holds up its direction for every connection.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("dbproxy: ")
	listen := flag.String("listen", "127.0.0.1:0", "the address to listen on")
	upstream := flag.String("upstream", "127.0.0.1:5432", "the address to forward to")
	def := time.Duration(0)
	if v := os.Getenv("DB_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			log.Fatalf("DB_LATENCY=%q: %v", v, err)
		}
		def = d
	}
	delay := flag.Duration("delay", def, "the delay added in each direction (default $DB_LATENCY, else 0)")
	flag.Parse()
	if *delay < 0 {
		log.Fatal("-delay must not be negative")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s, forwarding to %s with %s each way", ln.Addr(), *upstream, *delay)
	up, down := newLine(*delay), newLine(*delay)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			u, err := net.Dial("tcp", *upstream)
			if err != nil {
				log.Print(err)
				c.Close()
				return
			}
			p := &pair{client: c.(*net.TCPConn), server: u.(*net.TCPConn)}
			p.open.Store(2)
			go up.read(p, p.client, p.server)
			go down.read(p, p.server, p.client)
		}()
	}
}

// pair is a client's connection and the one made for it upstream. open
// counts the directions still forwarding: both are closed when it is 0.
type pair struct {
	client, server *net.TCPConn
	open           atomic.Int32
}

func (p *pair) close() {
	p.client.Close()
	p.server.Close()
}

// chunk is what one read returned, and when it is to be written to dst; a
// chunk without data ends its direction.
type chunk struct {
	due  time.Time
	p    *pair
	dst  *net.TCPConn
	data []byte
}

// line is one direction: a queue of chunks in order of due time, and the
// goroutine that writes each when it is due.
type line struct {
	delay time.Duration
	queue chan chunk
}

func newLine(delay time.Duration) *line {
	l := &line{delay: delay, queue: make(chan chunk, 1<<16)}
	go l.write()
	return l
}

// read queues what src sends, for dst, until src ends.
func (l *line) read(p *pair, src, dst *net.TCPConn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.queue <- chunk{due: time.Now().Add(l.delay), p: p, dst: dst, data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			if err != io.EOF {
				p.close()
			}
			l.queue <- chunk{due: time.Now().Add(l.delay), p: p, dst: dst}
			return
		}
	}
}

// write writes each chunk of the queue when it is due. A failed write
// closes the pair, which ends its reads too.
func (l *line) write() {
	if l.delay > 0 {
		preciseSleeper()
	}
	for c := range l.queue {
		sleepUntil(c.due)
		if c.data == nil {
			c.dst.CloseWrite()
			if c.p.open.Add(-1) == 0 {
				c.p.close()
			}
			continue
		}
		if _, err := c.dst.Write(c.data); err != nil {
			c.p.close()
		}
	}
}

// This file batches log lines into few write system calls. Every request
// logs a line, and writing each with a system call of its own costs a
// busy instance more than composing it. Lines are written when a batch
// fills, at least every flush interval, and when the writer is closed, so
// that a clean shutdown loses none.

package main

import (
	"io"
	"sync"
	"time"
)

// logBatch is the size at which a batch of log lines is written at once.
const logBatch = 32 << 10

// logWriter is an io.Writer that collects what it is given and writes it to
// out in batches. It is safe for concurrent use; each Write stays whole.
type logWriter struct {
	mu     sync.Mutex
	out    io.Writer
	buf    []byte
	closed bool // after Close, every Write goes straight to out

	stop chan struct{}
	done chan struct{}
}

// newLogWriter returns a logWriter that writes to out at least every
// interval. Close it to write what remains and stop its goroutine.
func newLogWriter(out io.Writer, interval time.Duration) *logWriter {
	l := &logWriter{out: out, buf: make([]byte, 0, logBatch+4<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
				l.Flush()
			}
		}
	}()
	return l
}

// Write adds p to the batch, and writes the batch once it is full.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.out.Write(p)
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= logBatch {
		if err := l.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what the batch holds.
func (l *logWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

func (l *logWriter) flushLocked() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.out.Write(l.buf)
	l.buf = l.buf[:0]
	return err
}

// Close writes what the batch holds and stops the periodic writes; later
// Writes go straight to out.
func (l *logWriter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.flushLocked()
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return err
}

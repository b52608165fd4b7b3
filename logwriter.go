// This file batches log lines into few write system calls. Every request
// logs a line, and writing each with a system call of its own costs a
// busy instance more than composing it. Lines are written when a batch
// fills, at least every flush interval, and when the writer is closed, so
// that a clean shutdown loses none.

package main

import (
	"io"
	"strconv"
	"sync"
	"time"
)

// logBatch is the size at which a batch of log lines is written at once.
const logBatch = 32 << 10

// logMaxPending bounds what waits to be written: when the output stalls (a
// full pipe, a log collector that stopped reading), lines past it are
// dropped, and counted, rather than held without bound or making requests
// wait. Once the output takes writes again, a line says how many were lost.
const logMaxPending = 4 << 20

// logWriter is an io.Writer that collects what it is given and writes it to
// out in batches. It is safe for concurrent use; each Write stays whole, or
// is dropped whole when logMaxPending is waiting already. A
// batch is written outside the lock that Writes take, from a buffer swapped
// out under it, so that requests never wait for a write system call.
type logWriter struct {
	mu      sync.Mutex // guards buf, closed and closing
	buf     []byte
	spare   []byte // the other buffer, while not being written; guarded by outMu
	closed  bool   // after Close, every Write goes straight to out
	closing bool   // Close has begun
	dropped int    // lines dropped since the last batch, past logMaxPending

	outMu sync.Mutex // one write to out at a time, in order
	out   io.Writer

	full chan struct{} // a batch is full: write it now
	stop chan struct{}
	done chan struct{}
}

// newLogWriter returns a logWriter that writes to out at least every
// interval. Close it to write what remains and stop its goroutine.
func newLogWriter(out io.Writer, interval time.Duration) *logWriter {
	l := &logWriter{out: out, buf: make([]byte, 0, logBatch+4<<10), spare: make([]byte, 0, logBatch+4<<10),
		full: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
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
			case <-l.full:
				l.Flush()
			}
		}
	}()
	return l
}

// Write adds p to the batch, and has the batch written once it is full.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.outMu.Lock()
		defer l.outMu.Unlock()
		return l.out.Write(p)
	}
	if len(l.buf)+len(p) > logMaxPending {
		l.dropped++
		l.mu.Unlock()
		return len(p), nil
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= logBatch {
		select {
		case l.full <- struct{}{}:
		default: // already asked
		}
	}
	l.mu.Unlock()
	return len(p), nil
}

// Flush writes what the batch holds.
func (l *logWriter) Flush() error {
	l.outMu.Lock()
	defer l.outMu.Unlock()
	l.mu.Lock()
	batch := l.buf
	l.buf = l.spare[:0]
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	if dropped > 0 {
		batch = appendDroppedLine(batch, dropped)
	}
	if cap(batch) > 2*(logBatch+4<<10) {
		l.spare = nil // grown while the output stalled: let it go
	} else {
		l.spare = batch[:0]
	}
	if len(batch) == 0 {
		return nil
	}
	_, err := l.out.Write(batch)
	return err
}

// appendDroppedLine appends a JSON log line that says n lines were dropped.
func appendDroppedLine(b []byte, n int) []byte {
	b = append(b, `{"time":"`...)
	b = time.Now().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"WARN","msg":"log lines dropped: the output did not take them","dropped":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "}\n"...)
}

// Close writes what the batch holds and stops the periodic writes; later
// Writes go straight to out.
func (l *logWriter) Close() error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil
	}
	l.closing = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	// The last batch goes out before any Write that comes after.
	l.outMu.Lock()
	defer l.outMu.Unlock()
	l.mu.Lock()
	l.closed = true
	batch := l.buf
	l.buf = nil
	if l.dropped > 0 {
		batch = appendDroppedLine(batch, l.dropped)
		l.dropped = 0
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	_, err := l.out.Write(batch)
	return err
}

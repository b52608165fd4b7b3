package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records what is written to it and in how many writes.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *countingWriter) state() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

// TestLogWriterBatches checks that log lines from many goroutines reach the
// output whole, in far fewer writes than lines, within the flush interval
// when few, and all of them by Close.
func TestLogWriterBatches(t *testing.T) {
	t.Parallel()
	out := &countingWriter{}
	l := newLogWriter(out, 50*time.Millisecond)

	l.Write([]byte("first\n"))
	if s, _ := out.state(); s != "" {
		t.Errorf("a line was written at once: %q, want nothing before a flush", s)
	}
	waitFor(t, func() bool { s, _ := out.state(); return s == "first\n" })

	var wg sync.WaitGroup
	const writers, lines = 8, 2000
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(l, `{"writer":%d,"line":%d,"pad":"%s"}`+"\n", g, i, strings.Repeat("x", 100))
			}
		})
	}
	wg.Wait()
	l.Close()
	l.Write([]byte("after close\n"))

	s, writes := out.state()
	got := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(got) != 1+writers*lines+1 {
		t.Fatalf("%d lines written, want %d", len(got), 1+writers*lines+1)
	}
	seen := map[string]bool{}
	for _, line := range got[1 : len(got)-1] {
		var g, i int
		var pad string
		if n, _ := fmt.Sscanf(line, `{"writer":%d,"line":%d,"pad":%q}`, &g, &i, &pad); n != 3 || len(pad) != 100 {
			t.Fatalf("a line was not written whole: %q, want its writer, line and a pad of 100 bytes", line)
		}
		seen[line[:strings.Index(line, `,"pad"`)]] = true
	}
	if len(seen) != writers*lines || got[len(got)-1] != "after close" {
		t.Errorf("%d distinct lines, last %q; want %d, last \"after close\"", len(seen), got[len(got)-1], writers*lines)
	}
	if writes > writers*lines/20 {
		t.Errorf("%d lines took %d writes, want at most %d: not batched", writers*lines, writes, writers*lines/20)
	}
	t.Logf("%d lines in %d writes", writers*lines+2, writes)
}

// stallingWriter blocks every write until released, as a full pipe does.
type stallingWriter struct {
	release chan struct{}
	countingWriter
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.countingWriter.Write(p)
}

// TestLogWriterBoundedWhenOutputStalls checks that while the output takes
// no writes, what waits for it stays within logMaxPending, Write does not
// wait, and once the output moves again every line is either written whole
// or counted in a line that says how many were dropped.
func TestLogWriterBoundedWhenOutputStalls(t *testing.T) {
	t.Parallel()
	out := &stallingWriter{release: make(chan struct{})}
	l := newLogWriter(out, 10*time.Millisecond)
	line := []byte(strings.Repeat("x", 999) + "\n")
	const lines = 3 * logMaxPending / 1000 // three times what may wait
	for range lines {
		l.Write(line)
	}
	l.mu.Lock()
	pending, dropped := len(l.buf), l.dropped
	l.mu.Unlock()
	// One batch may be out of buf already, stuck in the stalled write.
	if pending > logMaxPending {
		t.Errorf("%d bytes wait for a stalled output, want at most %d", pending, logMaxPending)
	}
	if dropped == 0 {
		t.Errorf("no line dropped of %d bytes written to a stalled output, want some", lines*len(line))
	}
	close(out.release)
	l.Close()
	text, _ := out.state()
	m := regexp.MustCompile(`"msg":"log lines dropped[^"]*","dropped":(\d+)}`).FindAllStringSubmatch(text, -1)
	if len(m) == 0 {
		t.Fatalf("no line says how many lines were dropped, want one")
	}
	total := strings.Count(text, string(line))
	for _, sub := range m {
		n, _ := strconv.Atoi(sub[1])
		total += n
	}
	if total != lines {
		t.Errorf("%d lines written or counted as dropped, want the %d sent", total, lines)
	}
}

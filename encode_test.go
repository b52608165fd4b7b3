package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzAppendTask checks the hand-written task encoder against encoding/json
// on arbitrary strings (invalid UTF-8 included) and times. The encoder is
// pure, so this target needs no database and runs fast.
func FuzzAppendTask(f *testing.F) {
	for _, seed := range []string{"", "plain", "<a href=\"x\">&amp;</a>", "tab\tnew\nline\r\\back", "\x00\x01\x1f\x7f",
		"\u2028\u2029", "é😀", "\xff\xfe", "a\xc3", "\xed\xa0\x80"} {
		f.Add(seed, int64(1767225600123456789), true)
	}
	f.Fuzz(func(t *testing.T, s string, nanos int64, flag bool) {
		at := time.Unix(0, nanos).UTC()
		task := Task{ID: s, UserID: s, Title: s, Completed: flag, Priority: s, Tags: []string{s, s + s},
			CreatedAt: at, UpdatedAt: at.Add(time.Duration(len(s))), Version: nanos}
		if flag {
			task.Description, task.DueDate = &s, &at
		}
		want, err := json.Marshal(task)
		if err != nil {
			return // a time json.Marshal refuses; tasks come from the database and never have one
		}
		if got := appendTask(nil, &task); !bytes.Equal(got, want) {
			t.Fatalf("appendTask(%+v)\n got %s\nwant %s", task, got, want)
		}
	})
}

// BenchmarkEncodeTasks compares the hand-written encoder with encoding/json
// on a page of 20 tasks like the load benchmark's.
func BenchmarkEncodeTasks(b *testing.B) {
	now := time.Now().UTC()
	desc := "a description of middling length, with a <tag> & a quote \""
	tasks := make([]Task, 20)
	for i := range tasks {
		tasks[i] = Task{ID: "00000000-0000-4000-8000-000000001001", UserID: "Xy8aQ2mN0pLk3vT7wR5sU1zB4cD6eF9g",
			Title: fmt.Sprint("task ", i), Priority: "medium", Tags: []string{"home", "t3"},
			CreatedAt: now, UpdatedAt: now, Version: 3}
		if i%2 == 0 {
			tasks[i].Description, tasks[i].DueDate = &desc, &now
		}
	}
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(tasks); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appendTasks", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendTasks(buf[:0], tasks)
		}
	})
}

// TestLargePageHasContentLength checks that a page larger than net/http's
// buffers is sent with Content-Length, in one piece, rather than chunked,
// and that it is the JSON encoding/json would make of the same tasks.
func TestLargePageHasContentLength(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("big")
	for i := range 10 {
		res := e.do("POST", "/api/me/tasks", tok, map[string]any{"title": fmt.Sprint("task <", i, ">"),
			"description": strings.Repeat("d&\u2028", 300), "tags": []string{"a", "b&c"}, "due_date": "2027-01-02T03:04:05.5Z"})
		if res.Status != http.StatusCreated {
			t.Fatalf("create: %d %s, want 201", res.Status, res.Body)
		}
	}
	res := e.do("GET", "/api/me/tasks", tok, nil)
	if res.Status != http.StatusOK || len(res.Body) < 10_000 {
		t.Fatalf("list: %d, %d bytes; want 200, at least 10,000 bytes", res.Status, len(res.Body))
	}
	if got := res.Header.Get("Content-Length"); got != strconv.Itoa(len(res.Body)) {
		t.Errorf("Content-Length %q for a body of %d bytes, want %d", got, len(res.Body), len(res.Body))
	}
	var tasks []Task
	if err := json.Unmarshal(res.Body, &tasks); err != nil || len(tasks) != 10 {
		t.Fatalf("decode: %d tasks, %v; want 10", len(tasks), err)
	}
	want, _ := json.Marshal(tasks)
	if !bytes.Equal(res.Body, append(want, '\n')) {
		t.Errorf("body differs from encoding/json's:\n got %s\nwant %s", res.Body, want)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRoutes drives each route through the real handler (middleware,
// auth, JSON, logging to io.Discard) and the real database, for a user with
// 100 tasks.
func BenchmarkRoutes(b *testing.B) {
	db, _ := newTestDB(b)
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	store := NewStore(db, 5*time.Second, testTaskQuota)
	h := newServer(logger, "test", store, NewVerifier(VerifierConfig{Secret: testSecret}, logger), guards{}, newCursorCodec([]byte("k")), nil, nil)
	tok, err := mintToken(testSecret, User{ID: "bench", Email: "bench@example.com"}, "", "", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for i := range 100 {
		t, err := store.CreateTask(ctx, User{ID: "bench"}, NewTask{Title: fmt.Sprint("task ", i), Priority: "medium", Tags: []string{"x"}})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, t.ID)
	}
	serve := func(b *testing.B, method, path, body string, want int) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("%s %s: %d %s, want %d", method, path, rec.Code, rec.Body, want)
		}
	}
	b.Run("list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, "GET", "/api/me/tasks?limit=20", "", http.StatusOK)
		}
	})
	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			serve(b, "GET", "/api/me/tasks/"+ids[i%len(ids)], "", http.StatusOK)
		}
	})
	b.Run("create", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, "POST", "/api/me/tasks", `{"title":"bench","tags":["a","b"],"priority":"high"}`, http.StatusCreated)
		}
	})
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			serve(b, "PATCH", "/api/me/tasks/"+ids[i%len(ids)], `{"title":"renamed","description":null}`, http.StatusOK)
		}
	})
	b.Run("complete", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			serve(b, "PATCH", "/api/me/tasks/"+ids[i%len(ids)]+"/complete", "", http.StatusOK)
		}
	})
	b.Run("delete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			t, err := store.CreateTask(ctx, User{ID: "bench"}, NewTask{Title: "doomed", Priority: "low"})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			serve(b, "DELETE", "/api/me/tasks/"+t.ID, "", http.StatusNoContent)
		}
	})
}

// BenchmarkRoutesParallel serves gets of 200 users' tasks from 128 requests
// at once (64 per GOMAXPROCS; run it with -cpu 2), through the real handler
// with every guard on and logging, as a busy instance does: 128 requests
// share a pool of 4 connections, so most wait for one, and each garbage
// collection has their stacks and objects to scan. gc-ms/kop is the CPU
// the collector took per thousand requests, as the runtime estimates it;
// compare GOGC=100 with taskapi's 200 (main.go, tuneGC), which the
// benchmark, not calling run, takes from the environment.
func BenchmarkRoutesParallel(b *testing.B) {
	db, _ := newTestDB(b)
	logOut := newLogWriter(io.Discard, 100*time.Millisecond)
	defer logOut.Close()
	logger := slog.New(slog.NewJSONHandler(logOut, nil))
	store := NewStore(db, 5*time.Second, testTaskQuota)
	h := newServer(logger, "test", store, NewVerifier(VerifierConfig{Secret: testSecret}, logger), guards{
		rate:        newRateLimiter(1e6, 100),
		concurrency: newUserGate(2, time.Second),
		failedAuth:  newAddrLimiter(5, 50, ""),
	}, newCursorCodec([]byte("k")), nil, nil)
	type user struct{ auth, path string }
	var users []user
	for i := range 200 {
		u := User{ID: fmt.Sprint("bench-", i)}
		tok, err := mintToken(testSecret, u, "", "", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		t, err := store.CreateTask(context.Background(), u, NewTask{Title: "task", Priority: "medium", Tags: []string{"x"}})
		if err != nil {
			b.Fatal(err)
		}
		users = append(users, user{"Bearer " + tok, "/api/me/tasks/" + t.ID})
	}
	var next atomic.Int64
	get := func() int {
		u := users[next.Add(1)%int64(len(users))]
		req := httptest.NewRequest("GET", u.path, nil)
		req.Header.Set("Authorization", u.auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for range 2 * len(users) { // every token verified once, the pool warm
		get()
	}
	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(64)
		gc := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
		metrics.Read(gc)
		before := gc[0].Value.Float64()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if code := get(); code != http.StatusOK {
					b.Errorf("get: %d, want 200", code)
					return
				}
			}
		})
		metrics.Read(gc)
		b.ReportMetric((gc[0].Value.Float64()-before)*1e6/float64(b.N), "gc-ms/kop")
	})
}

// BenchmarkVerify measures token verification in each mode, with a warm
// key set for JWKS.
func BenchmarkVerify(b *testing.B) {
	ed := newEd25519Key(b, "ed-1")
	jwks := newJWKSServer(b, ed.jwk(b))
	logger := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	hsTok, err := mintToken(testSecret, User{ID: "bench"}, "", "", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		v    *Verifier
		tok  string
	}{
		{"HS256", NewVerifier(VerifierConfig{Secret: testSecret}, logger), hsTok},
		{"EdDSA", NewVerifier(*jwksConfig(jwks.URL), logger), ed.sign(b, betterAuthClaims("bench"))},
	} {
		for _, cached := range []bool{false, true} {
			name := bc.name + "/uncached"
			if cached {
				name = bc.name + "/cached"
			} else {
				bc.v.cache = newTokenCache(0)
			}
			b.Run(name, func(b *testing.B) {
				if _, err := bc.v.Verify(ctx, bc.tok); err != nil { // warm the key set
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := bc.v.Verify(ctx, bc.tok); err != nil {
						b.Fatal(err)
					}
				}
			})
			bc.v.cache = newTokenCache(tokenCacheSize)
		}
	}
}

// TestBenchSQLMirrorsStore keeps the pgbench scripts of bench/run running
// the statements taskapi runs, with pgbench variables (or, where pgbench has
// no strings, constants) in place of the parameters, and the bare server
// that bench/run measures taskapi against (BARE=1) running them unchanged.
func TestBenchSQLMirrorsStore(t *testing.T) {
	t.Parallel()
	createVars := strings.NewReplacer("$10", "10000", "$1", ":u", "$2", "''", "$3", "''", "$4", "'bench task'", "$5", "NULL",
		"$6", "false", "$7", "'high'", "$8", "NULL", "$9", "'{load}'")
	list, _, err := listQuery("u", ListOptions{Sort: SortCreated, Desc: true, Limit: 20})
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"bench/list.sql": strings.NewReplacer("$1", ":u", "$2", ":lim").Replace(list),
		"bench/get.sql": strings.NewReplacer("$1", "('00000000-0000-4000-8000-' || lpad(:m::text, 12, '0'))::uuid",
			"$2", ":u").Replace(getTaskSQL),
		"bench/create.sql": createVars.Replace(createTaskSQL),
		// The same create without its change record: what the history
		// costs a write (bench/create-cost.sh).
		"bench/create-nohistory.sql": createVars.Replace(strings.Replace(createTaskSQL, recordCreatedCTE, "", 1)),
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var sql []string
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !strings.HasPrefix(line, `\set `) {
				sql = append(sql, line)
			}
		}
		if got := strings.TrimSuffix(strings.Join(sql, "\n"), ";"); got != want {
			t.Errorf("%s runs\n%s\nbut taskapi runs\n%s", file, got, want)
		}
	}
	// The bare server (bench/bare) runs the statements as they are (the
	// create without its change record), with
	// the same parameters: the list's $2 is the page size plus one, 21, as
	// taskapi's, and the create's $10 is taskapi's default quota.
	for file, want := range map[string]string{
		"bench/bare/list.sql":   list,
		"bench/bare/get.sql":    getTaskSQL,
		"bench/bare/create.sql": strings.Replace(createTaskSQL, recordCreatedCTE, "", 1),
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s runs\n%s\nbut taskapi runs\n%s", file, got, want)
		}
	}
}

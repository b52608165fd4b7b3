package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRateLimiterBuckets(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(2, 3) // 2 a second, bursts of 3
	clock := newFakeClock()
	l.now = clock.now
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d of the burst refused, want it allowed", i+1)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Errorf("over the burst: ok=%v, wait %v; want refused with a wait of at most 0.5 s", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another user was refused")
	}
	clock.advance(500 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Error("refused after the bucket refilled one token")
	}
	if ok, _ := l.allow("a"); ok {
		t.Error("allowed a second request on one refilled token")
	}
	// Idle users are forgotten: memory follows the active users only.
	clock.advance(2 * time.Minute)
	l.allow("c")
	if _, kept := l.buckets["a"]; kept || len(l.buckets) != 1 {
		t.Errorf("after two idle minutes %d buckets are kept, want only the new one", len(l.buckets))
	}
	if newRateLimiter(0, 10) != nil {
		t.Error("RATE_LIMIT=0 does not turn limiting off")
	}
}

func TestRateLimitResponses(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	logger := slog.New(slog.DiscardHandler)
	limiter := newRateLimiter(0.5, 2)
	e := newTestEnvOn(t, db, nil)
	srv := httptest.NewServer(newServer(logger, "test", NewStore(db, 5*time.Second, testTaskQuota), NewVerifier(VerifierConfig{Secret: testSecret}, logger),
		guards{rate: limiter}, newCursorCodec([]byte("k")), nil, nil))
	t.Cleanup(srv.Close)
	e.srv = srv
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 2 {
		if res := e.do("POST", "/api/me/tasks", alice, `{"title":"ok"}`); res.Status != 201 {
			t.Fatalf("request %d: %d, want 201", i+1, res.Status)
		}
	}
	res := e.do("POST", "/api/me/tasks", alice, `{"title":"one too many"}`)
	if res.Status != 429 || res.Header.Get("Retry-After") != "2" {
		t.Errorf("over the limit: %d, Retry-After %q; want 429 and 2", res.Status, res.Header.Get("Retry-After"))
	}
	res.problem(t)
	if n := countTasksIn(t, e, "alice"); n != 2 {
		t.Errorf("alice has %d tasks, want 2: the refused create must not have run", n)
	}
	if res := e.do("GET", "/api/me/tasks", bob, nil); res.Status != 200 {
		t.Errorf("bob, under his own limit: %d, want 200", res.Status)
	}
	// Health checks and refused tokens do not count against anyone.
	if res := e.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Errorf("healthz: %d, want 200", res.Status)
	}
}

// TestOneUserCannotStarveAnother has one user hold the database with
// statements that wait on a row lock, as slow filters would, while another
// user lists: the second user's requests must not wait for the first's.
func TestOneUserCannotStarveAnother(t *testing.T) {
	t.Parallel()
	db, url := newTestDB(t) // a pool of 4
	e := newTestEnvOn(t, db, nil)
	e.srv.Config.Handler = newServer(testLogger(), "test", e.store, e.verifier,
		guards{concurrency: newUserGate(2, 200*time.Millisecond)}, newCursorCodec([]byte("k")), nil, nil)
	hog, other := e.token("hog"), e.token("other")
	task := e.do("POST", "/api/me/tasks", hog, `{"title":"contended"}`).task(t)
	e.do("POST", "/api/me/tasks", other, `{"title":"mine"}`)

	locker, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	tx, err := locker.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() // also when the test fails midway: the schema's drop waits for it
	if _, err := tx.Exec("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", task.ID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	statuses := make(chan int, 6)
	for range 6 {
		wg.Go(func() {
			statuses <- e.do("PATCH", "/api/me/tasks/"+task.ID, hog, `{"title":"waiting"}`).Status
		})
	}
	waitForBlockedN(t, locker, tx, 2) // the hog's two places are statements waiting on the lock
	var latencies []time.Duration
	for range 40 {
		start := time.Now()
		if res := e.do("GET", "/api/me/tasks?limit=5", other, nil); res.Status != 200 {
			t.Errorf("the other user's list: %d, want 200", res.Status)
		}
		latencies = append(latencies, time.Since(start))
	}
	// The other four are answered while the lock is held: none can get a
	// place before the gate's wait ends.
	count := map[int]int{}
	for range 4 {
		select {
		case s := <-statuses:
			count[s]++
		case <-time.After(30 * time.Second):
			t.Fatalf("the hog's updates past its two places: %v answered after 30 s, want four answered while two wait on the lock", count)
		}
	}
	tx.Rollback()
	wg.Wait()
	close(statuses)
	for s := range statuses {
		count[s]++
	}
	slices.Sort(latencies)
	p50, p99 := latencies[len(latencies)/2], latencies[len(latencies)*99/100]
	t.Logf("the other user's list while the hog waits: p50 %v, p99 %v; the hog's answers: %v", p50, p99, count)
	if p99 > time.Second {
		t.Errorf("the other user's list p99 = %v while one user holds the pool, want well under 1 s", p99)
	}
	if count[200] != 2 || count[429] != 4 {
		t.Errorf("the hog's six updates: %v, want 2 done and 4 refused with 429", count)
	}
}

// TestFailedAuthIsLimited checks that a client address that sends bad
// tokens is soon refused without any checking, while tokens it proved good
// before still pass, and other addresses are not affected.
func TestFailedAuthIsLimited(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.srv.Config.Handler = newServer(slog.New(slog.NewJSONHandler(e.logs, nil)), "test", e.store, e.verifier,
		guards{failedAuth: newAddrLimiter(0.5, 5, "Fly-Client-IP")}, newCursorCodec([]byte("k")), nil, nil)
	good := e.token("good")
	from := func(addr, token string) response {
		return e.doWith("GET", "/api/me/tasks", token, map[string]string{"Fly-Client-IP": addr}, "")
	}
	if res := from("203.0.113.7", good); res.Status != 200 {
		t.Fatalf("a good token: %d, want 200", res.Status)
	}
	bad := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0." + strings.Repeat("A", 43)
	for i := range 5 {
		if res := from("203.0.113.7", bad); res.Status != 401 {
			t.Errorf("bad token %d: %d, want 401", i+1, res.Status)
		}
	}
	for i := range 20 {
		res := from("203.0.113.7", bad)
		if res.Status != 429 || res.Header.Get("Retry-After") == "" {
			t.Errorf("bad token %d past the limit: %d, want 429 with Retry-After", i+6, res.Status)
		}
	}
	if n := strings.Count(e.logs.String(), `"token rejected"`); n != 5 {
		t.Errorf("%d token rejections logged, want 5: the refused ones cost no log line", n)
	}
	if res := from("203.0.113.7", good); res.Status != 200 {
		t.Errorf("a token the address proved good before: %d, want 200", res.Status)
	}
	if res := from("203.0.113.7", e.token("new")); res.Status != 429 {
		t.Errorf("a new token from the blocked address: %d, want 429", res.Status)
	}
	if res := from("198.51.100.1", e.token("elsewhere")); res.Status != 200 {
		t.Errorf("another address: %d, want 200", res.Status)
	}
}

// TestUserGateEntries checks the gate's bookkeeping: a user's places are
// limited, given back on exit, and the user's entry goes with the last
// request, to be reused for the next user rather than kept.
func TestUserGateEntries(t *testing.T) {
	t.Parallel()
	g := newUserGate(2, 10*time.Millisecond)
	ctx := context.Background()
	a1, ok1 := g.enter(ctx, "a")
	a2, ok2 := g.enter(ctx, "a")
	if !ok1 || !ok2 {
		t.Fatalf("two places for a: got %v and %v, want both", ok1, ok2)
	}
	if _, ok := g.enter(ctx, "a"); ok {
		t.Fatal("a third place for a: got one, want none while two are held")
	}
	if _, ok := g.enter(ctx, "b"); !ok {
		t.Fatal("a place for b while a holds two: got none, want one")
	}
	g.exit("a", a1)
	a3, ok := g.enter(ctx, "a")
	if !ok {
		t.Fatal("a place for a after one was given back: got none, want one")
	}
	g.exit("a", a2)
	g.exit("a", a3)
	if _, held := g.users["a"]; held {
		t.Error("a's entry after its last request: still held, want gone")
	}
	if len(g.spare) != 1 || g.spare[0] != a1 {
		t.Errorf("spare entries: got %d, want a's one entry kept for reuse", len(g.spare))
	}
	c, _ := g.enter(ctx, "c")
	if c != a1 {
		t.Error("c's entry: got a new one, want a's spare reused")
	}
	if n := len(c.sem); n != 1 {
		t.Errorf("c's reused entry holds %d places, want 1 (its own)", n)
	}
}

// TestFailedAuthIgnoresUntrustedHeader checks that without a configured
// client-address header, a client cannot escape the failed-authentication
// limit by naming a new address in one: its connection's address counts.
func TestFailedAuthIgnoresUntrustedHeader(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.srv.Config.Handler = newServer(testLogger(), "test", e.store, e.verifier,
		guards{failedAuth: newAddrLimiter(0.5, 5, "")}, newCursorCodec([]byte("k")), nil, nil)
	bad := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0." + strings.Repeat("A", 43)
	statuses := map[int]int{}
	for i := range 20 {
		addr := fmt.Sprintf("203.0.113.%d", i+1) // a new address every time
		res := e.doWith("GET", "/api/me/tasks", bad, map[string]string{"Fly-Client-IP": addr, "X-Forwarded-For": addr}, "")
		statuses[res.Status]++
	}
	if statuses[401] != 5 || statuses[429] != 15 {
		t.Errorf("20 bad tokens naming 20 addresses in headers: got %v, want 5 401s and 15 429s", statuses)
	}
}

// TestSlowFiltersDoNotSlowOthers has one user with a full quota of tasks
// loop on the filters that read all of them (a tag and a search that match
// nothing), from six clients at once, while another user lists: the other
// user's p99 must stay within a small multiple of its quiet value.
func TestSlowFiltersDoNotSlowOthers(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t) // a pool of 4
	e := newTestEnvOn(t, db, nil)
	e.srv.Config.Handler = newServer(testLogger(), "test", e.store, e.verifier,
		guards{concurrency: newUserGate(2, time.Second)}, newCursorCodec([]byte("k")), nil, nil)
	hog, other := e.token("hog"), e.token("other")
	e.do("POST", "/api/me/tasks", hog, `{"title":"first"}`)
	e.do("POST", "/api/me/tasks", other, `{"title":"mine"}`)
	if _, err := db.Exec(`INSERT INTO tasks (user_id, title, description, tags)
		SELECT 'hog', 'task ' || g, 'a description of task ' || g, ARRAY['work', 't' || (g % 7)]
		  FROM generate_series(2, $1) g`, testTaskQuota); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("ANALYZE tasks"); err != nil {
		t.Fatal(err)
	}
	listP99 := func() time.Duration {
		var latencies []time.Duration
		for range 100 {
			start := time.Now()
			if res := e.do("GET", "/api/me/tasks?limit=5", other, nil); res.Status != 200 {
				t.Errorf("the other user's list: status %d, want 200", res.Status)
			}
			latencies = append(latencies, time.Since(start))
		}
		slices.Sort(latencies)
		return latencies[98]
	}
	quiet := listP99()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	hogAnswers := map[int]int{}
	started := map[int]bool{} // the clients that have had an answer
	for i := range 6 {
		path := "/api/me/tasks?tag=nomatch&limit=5"
		if i%2 == 1 {
			path = "/api/me/tasks?q=nomatch&limit=5"
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := e.do("GET", path, hog, nil).Status
				mu.Lock()
				hogAnswers[s]++
				started[i] = true
				mu.Unlock()
			}
		})
	}
	endHog := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer endHog() // also when the test fails midway
	// The hog's six clients are all under way: each has had an answer.
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(started) == 6
	})
	hammered := listP99()
	endHog()
	t.Logf("the other user's list p99: %v quiet, %v with six clients of a user of %d tasks on slow filters (their answers: %v)",
		quiet, hammered, testTaskQuota, hogAnswers)
	if limit := 20*quiet + 100*time.Millisecond; hammered > limit {
		t.Errorf("the other user's list p99 under the slow filters: got %v, want at most %v (20 times the quiet %v, plus 100 ms)",
			hammered, limit, quiet)
	}
	if hogAnswers[200] == 0 {
		t.Errorf("the slow filters' answers: got %v, want some 200s", hogAnswers)
	}
}

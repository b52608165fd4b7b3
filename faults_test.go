package main

import (
	"bufio"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ownPostgres starts a server of the test's own, which the test may stop
// and start again on the same data and socket.
func ownPostgres(t *testing.T) (start func() *devPostgres, url string) {
	t.Helper()
	dir := passableTempDir(t)
	sock := filepath.Join(dir, "s")
	if err := os.Mkdir(sock, 0o700); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		current *devPostgres
	)
	// start may run on another goroutine, so it reports with Errorf.
	start = func() *devPostgres {
		pg, err := startDevPostgres(context.Background(), devPostgresOptions{
			DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "pg.log"), Throwaway: true, SocketDir: sock,
		})
		if err != nil {
			t.Errorf("start PostgreSQL: %v", err)
			return nil
		}
		mu.Lock()
		current = pg
		mu.Unlock()
		return pg
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if current != nil {
			current.Stop()
		}
	})
	return start, "postgres:///postgres?user=taskapi&sslmode=disable&host=" + sock
}

// TestDatabaseOutageUnderLoad stops PostgreSQL under a load of creates and
// starts it again: requests fail fast with 503 meanwhile, the service
// recovers by itself, and every create that got a 201 is in the database.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	t.Parallel()
	start, url := ownPostgres(t)
	pg := start()
	if pg == nil {
		t.FailNow()
	}
	cfg := testDBConfig(url)
	cfg.ConnectTimeout = time.Second
	db, err := openDB(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := applySchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	store := NewStore(db, 2*time.Second, testTaskQuota)
	srv := httptest.NewServer(newServer(testLogger(), "test", store, NewVerifier(VerifierConfig{Secret: testSecret}, testLogger()), guards{}, newCursorCodec([]byte("k")), nil, nil))
	t.Cleanup(srv.Close)
	tok, _ := mintToken(testSecret, User{ID: "loader"}, "", "", time.Hour)

	type result struct {
		title   string
		status  int
		elapsed time.Duration
		phase   string
	}
	var (
		mu      sync.Mutex
		results []result
		phase   atomic.Value
		stop    atomic.Bool
		wg      sync.WaitGroup
		n       atomic.Int64
	)
	phase.Store("before")
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				title := fmt.Sprintf("w%d-%d", w, n.Add(1))
				req, _ := http.NewRequest("POST", srv.URL+"/api/me/tasks", strings.NewReader(`{"title":"`+title+`"}`))
				req.Header.Set("Authorization", "Bearer "+tok)
				p := phase.Load().(string)
				began := time.Now()
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				results = append(results, result{title, status, time.Since(began), p})
				mu.Unlock()
				if status != 201 {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	defer stop.Store(true) // the load ends also when the test fails midway
	// seen counts the answers of status to requests begun in phase p.
	seen := func(p string, status int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.phase == p && r.status == status {
				n++
			}
		}
		return n
	}
	ready := func() int {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	waitFor(t, func() bool { return seen("before", 201) > 0 }) // the load is under way
	phase.Store("outage")
	pg.Stop() // returns once the server has exited
	outage := time.Now()
	if s := ready(); s != 503 {
		t.Errorf("readyz during the outage: %d, want 503", s)
	}
	// The database stays down for 3 s, and until the load has met the outage.
	waitFor(t, func() bool { return seen("outage", 503) >= 6 })
	time.Sleep(3*time.Second - time.Since(outage))
	phase.Store("restarting")
	if start() == nil {
		t.FailNow()
	}
	phase.Store("after")
	deadline := time.Now().Add(15 * time.Second)
	for ready() != 200 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if s := ready(); s != 200 {
		t.Errorf("readyz after the restart: %d, want 200", s)
	}
	waitFor(t, func() bool { return seen("after", 201) > 0 }) // the service has recovered
	stop.Store(true)
	wg.Wait()

	counts := map[string]map[int]int{}
	var acked []string
	var slowest time.Duration
	for _, r := range results {
		if counts[r.phase] == nil {
			counts[r.phase] = map[int]int{}
		}
		counts[r.phase][r.status]++
		if r.status == 201 {
			acked = append(acked, r.title)
		}
		if r.status != 201 && r.status != 503 {
			t.Errorf("a create during %s got %d, want 201 or 503", r.phase, r.status)
		}
		if r.phase == "outage" && r.elapsed > slowest {
			slowest = r.elapsed
		}
	}
	t.Logf("requests by phase and status: %v; slowest during the outage: %v", counts, slowest)
	if slowest > 5*time.Second {
		t.Errorf("a request waited %v during the outage; want a quick 503", slowest)
	}
	if counts["outage"][503] == 0 {
		t.Error("no request saw the outage")
	}
	if counts["after"][201] == 0 {
		t.Error("no create succeeded after the restart: the service did not recover by itself")
	}
	stored := map[string]bool{}
	rows, err := db.Query("SELECT title FROM tasks WHERE user_id = 'loader'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var title string
		rows.Scan(&title)
		stored[title] = true
	}
	rows.Close()
	for _, title := range acked {
		if !stored[title] {
			t.Errorf("the create of %q got 201 but is not in the database, want it stored", title)
		}
	}
	t.Logf("%d acknowledged creates, all present", len(acked))
}

// TestBootWaitsForDatabase starts taskapi's pool 10 s before the database
// is up, as a waking Neon compute would refuse it: it retries until the
// database answers, and gives up with a message that says what to check
// when it never does.
func TestBootWaitsForDatabase(t *testing.T) {
	t.Parallel()
	start, url := ownPostgres(t)
	go func() {
		time.Sleep(10 * time.Second)
		start()
	}()
	cfg := testDBConfig(url)
	cfg.BootTimeout = 30 * time.Second
	began := time.Now()
	db, err := openDB(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatalf("openDB with the database up after 10 s: %v, want no error", err)
	}
	db.Close()
	if waited := time.Since(began); waited < 10*time.Second {
		t.Errorf("openDB returned after %v, before the database was up; want at least 10 s", waited)
	}

	cfg = testDBConfig("postgres://taskapi@127.0.0.1:1/none?sslmode=disable")
	cfg.BootTimeout = 1500 * time.Millisecond
	_, err = openDB(context.Background(), cfg, testLogger())
	if err == nil || !strings.Contains(err.Error(), "could not reach the database at 127.0.0.1:1") || !strings.Contains(err.Error(), "check") {
		t.Errorf("openDB against nothing: %v, want an error naming 127.0.0.1:1 and what to check", err)
	}
}

// TestGracefulShutdownUnderLoad stops taskapi while requests are in flight:
// every request it accepted (every one it logged) completes with its answer
// and its write, and it exits in time. A connection still in the kernel's
// accept queue when the listener closes is reset before any request is read:
// that is not an accepted request, and the client may retry it.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	db, url := newTestDB(t)
	addr, logs, _, stop := startRun(t, map[string]string{
		"DATABASE_URL": url, "BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1",
		"SHUTDOWN_TIMEOUT": "5s", "RATE_LIMIT": "0",
	})
	tok, _ := mintToken(testSecret, User{ID: "drain"}, "", "", time.Hour)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	var (
		wg               sync.WaitGroup
		created, dropped atomic.Int64
		mu               sync.Mutex
		badStatuses      []string
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				req, _ := http.NewRequest("POST", "http://"+addr+"/api/me/tasks", strings.NewReader(fmt.Sprintf(`{"title":"w%d-%d"}`, w, i)))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					dropped.Add(1)
					if strings.Contains(err.Error(), "connection refused") {
						return // the listener is gone
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					mu.Lock()
					badStatuses = append(badStatuses, resp.Status)
					mu.Unlock()
					continue
				}
				created.Add(1)
			}
		}()
	}
	waitFor(t, func() bool { return created.Load() >= 8 }) // the load is under way
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	took := time.Since(began)
	wg.Wait()

	logged := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		var entry struct {
			Msg    string
			Route  string
			Status int
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "request" {
			logged++
			if entry.Status != 201 {
				t.Errorf("an accepted request ended with %d, want 201: %s", entry.Status, line)
			}
		}
	}
	var stored int64
	if err := db.QueryRow("SELECT count(*) FROM tasks WHERE user_id = 'drain'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests accepted and answered 201, %d tasks stored, %d connections refused or reset before a request was read; shutdown took %v",
		created.Load(), stored, dropped.Load(), took)
	if len(badStatuses) > 0 {
		t.Errorf("requests answered with errors during shutdown: %v, want none", badStatuses)
	}
	if int64(logged) != created.Load() || stored != created.Load() {
		t.Errorf("the server logged %d requests, clients got %d answers of 201, %d tasks are stored; want the three equal: every accepted request must complete",
			logged, created.Load(), stored)
	}
	if took > 5*time.Second {
		t.Errorf("shutdown took %v, want at most 5 s (SHUTDOWN_TIMEOUT)", took)
	}
}

// TestTwoInstancesBootTogether starts two taskapi processes on one new
// database at the same moment: both apply the schema and serve, and writes
// through each are seen by both.
func TestTwoInstancesBootTogether(t *testing.T) {
	t.Parallel()
	dbURL := newEmptyTestDB(t)
	env := map[string]string{
		"DATABASE_URL": dbURL, "DATABASE_LISTEN_URL": testListenURL(dbURL),
		"BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1", "SHUTDOWN_DRAIN": "0",
	}
	// Both processes' run start together; each applies the schema at boot.
	ctx, cancel := context.WithCancel(context.Background())
	outs := []*syncBuffer{{}, {}}
	done := make(chan error, 2)
	for i := range 2 {
		go func() {
			done <- run(ctx, []string{"taskapi"}, func(k string) string { return env[k] }, outs[i], io.Discard)
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v, want nil", err)
			}
		}
	})
	addrs := make([]string, 2)
	deadline := time.Now().Add(30 * time.Second)
	for i := range 2 {
		for addrs[i] = listeningAddr(outs[i]); addrs[i] == "" && time.Now().Before(deadline); addrs[i] = listeningAddr(outs[i]) {
			time.Sleep(20 * time.Millisecond)
		}
		if addrs[i] == "" {
			t.Fatalf("instance %d did not start, want it listening:\n%s", i, outs[i])
		}
	}
	tok, _ := mintToken(testSecret, User{ID: "twin"}, "", "", time.Hour)
	for i, addr := range addrs {
		for j := range 3 {
			res := send(t, http.DefaultClient, "POST", "http://"+addr+"/api/me/tasks", tok, nil, fmt.Sprintf(`{"title":"via %d, %d"}`, i, j))
			if res.Status != 201 {
				t.Fatalf("create through instance %d: %d, want 201", i, res.Status)
			}
		}
	}
	for i, addr := range addrs {
		if n := len(send(t, http.DefaultClient, "GET", "http://"+addr+"/api/me/tasks", tok, nil, "").tasks(t)); n != 6 {
			t.Errorf("instance %d lists %d of the 6 tasks, want all 6", i, n)
		}
	}
}

// TestServerLimits checks the limits of the real server (run): a huge body
// is refused without being read, huge headers are cut off, and a client
// that sends its headers too slowly is disconnected.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	_, url := newTestDB(t)
	addr, _, _, _ := startRun(t, map[string]string{
		"DATABASE_URL": url, "BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1",
	})
	tok, _ := mintToken(testSecret, User{ID: "limits"}, "", "", time.Hour)

	// 10 MB announced, 128 KiB sent: the 413 comes before the rest.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/me/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", tok, 10<<20)
	conn.Write([]byte(`{"title":"` + strings.Repeat("x", 128<<10)))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || !strings.Contains(status, " 413 ") {
		t.Errorf("10 MB body: %q, %v; want 413 before the body is sent", status, err)
	}

	// Headers over 64 KiB.
	req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("p", 128<<10))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 431 {
			t.Errorf("128 KiB of headers: %d, want 431", resp.StatusCode)
		}
	}

	// Headers never finished: cut off after ReadHeaderTimeout (5 s).
	conn, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	began := time.Now()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadAll(conn)
	if waited := time.Since(began); err != nil || waited > 10*time.Second {
		t.Errorf("slow headers: connection closed after %v (%v), want within about 5 s", waited, err)
	}
}

// TestRollingRestartDropsNothing runs two taskapi processes behind a small
// health-checked reverse proxy, as a platform would, and restarts one, then
// the other, under a steady load of creates and lists: no request may fail,
// and every create that was answered 201 must be stored.
func TestRollingRestartDropsNothing(t *testing.T) {
	t.Parallel()
	dbURL := newEmptyTestDB(t)

	start := func() (*exec.Cmd, string) {
		return startProcess(t, dbURL, "SHUTDOWN_DRAIN=1s", "SHUTDOWN_TIMEOUT=5s")
	}

	// The proxy sends each request to a backend whose /readyz said 200 at
	// the last check, every 50 ms, taking turns.
	type backend struct {
		addr    atomic.Value // string
		healthy atomic.Bool
	}
	backends := [2]*backend{{}, {}}
	var cmds [2]*exec.Cmd
	for i := range backends {
		var addr string
		cmds[i], addr = start()
		backends[i].addr.Store(addr)
	}
	checker := &http.Client{Timeout: 2 * time.Second}
	stopChecks := make(chan struct{})
	var checks sync.WaitGroup
	checks.Go(func() {
		for {
			for _, b := range backends {
				res, err := checker.Get("http://" + b.addr.Load().(string) + "/readyz")
				b.healthy.Store(err == nil && res.StatusCode == 200)
				if err == nil {
					res.Body.Close()
				}
			}
			select {
			case <-stopChecks:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer func() { close(stopChecks); checks.Wait() }()
	var turn atomic.Uint32
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			first := turn.Add(1)
			for i := range uint32(2) {
				b := backends[(first+i)%2]
				if b.healthy.Load() {
					r.SetURL(&url.URL{Scheme: "http", Host: b.addr.Load().(string)})
					return
				}
			}
			r.SetURL(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}) // none: the request fails
		},
	})
	t.Cleanup(proxy.Close)
	waitFor(t, func() bool { return backends[0].healthy.Load() && backends[1].healthy.Load() })

	// The load: creates and lists, each answer checked.
	tok := mintTestToken(t, "rolling")
	var (
		mu       sync.Mutex
		created  []string
		failures []string
	)
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	endLoad := sync.OnceFunc(func() { close(stopLoad); load.Wait() })
	defer endLoad() // also when the test fails midway
	// loadGoesThrough waits until ten more creates have been acknowledged.
	loadGoesThrough := func() {
		mu.Lock()
		n := len(created)
		mu.Unlock()
		waitFor(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(created) >= n+10
		})
	}
	for w := range 4 {
		load.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				method, path, body := "POST", "/api/me/tasks", fmt.Sprintf(`{"title":"w%d-%d"}`, w, i)
				if i%2 == 1 {
					method, path, body = "GET", "/api/me/tasks?limit=5", ""
				}
				req, _ := http.NewRequest(method, proxy.URL+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				res, err := client.Do(req)
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s: %v", method, path, err))
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				mu.Lock()
				switch {
				case method == "POST" && res.StatusCode == 201:
					var task Task
					json.Unmarshal(b, &task)
					created = append(created, task.ID)
				case res.StatusCode != 200 && res.StatusCode != 201:
					failures = append(failures, fmt.Sprintf("%s %s: %d %s", method, path, res.StatusCode, b))
				}
				mu.Unlock()
			}
		})
	}

	// Restart each instance in turn, as a deploy does.
	for i := range cmds {
		loadGoesThrough()
		cmds[i].Process.Signal(syscall.SIGTERM)
		if err := cmds[i].Wait(); err != nil {
			t.Errorf("instance %d exited with %v, want a clean exit", i, err)
		}
		var addr string
		cmds[i], addr = start()
		backends[i].addr.Store(addr)
		waitFor(t, func() bool { return backends[i].healthy.Load() })
	}
	loadGoesThrough()
	endLoad()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d creates acknowledged during two restarts; %d failed requests", len(created), len(failures))
	for _, f := range failures[:min(len(failures), 10)] {
		t.Errorf("a request failed, want none: %s", f)
	}
	if len(created) < 20 {
		t.Errorf("only %d creates went through, want at least 20: the load did not run", len(created))
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stored int
	if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE id = ANY ($1::uuid[])`, created).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(created) {
		t.Errorf("%d of %d acknowledged creates are stored, want all", stored, len(created))
	}
}

// TestEventsWriterKilled runs a writer instance A that never notifies (it
// cannot LISTEN, so it notifies no one: what B sees of a writer
// killed between its commit and its notification) under a load of
// creates, and SIGKILLs it mid-load. Every create A answered 201, and one
// committed as A died, reaches a stream on instance B, in order, once,
// within two of B's poll intervals.
func TestEventsWriterKilled(t *testing.T) {
	t.Parallel()
	dbURL := newEmptyTestDB(t)
	const interval = time.Second
	cmdA, a := startProcess(t, dbURL, "DATABASE_LISTEN_URL=postgres://taskapi@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	// B's stream may fall a poll's worth of changes behind: the buffer,
	// not the test, must not turn that into a reload.
	_, b := startProcess(t, dbURL, "EVENTS_POLL_INTERVAL="+interval.String(), "EVENTS_BUFFER=100000")
	tok := mintTestToken(t, "victim")
	s := openStream(t, "http://"+b, "/api/me/events", tok, nil)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second}
	wg.Go(func() {
		for i := 0; ; i++ {
			resp, err := client.Do(newRequest(t, "POST", "http://"+a+"/api/me/tasks", tok, nil, fmt.Sprintf(`{"title":"w%d"}`, i)))
			if err != nil {
				return // A is gone
			}
			var task Task
			json.NewDecoder(resp.Body).Decode(&task)
			resp.Body.Close()
			if resp.StatusCode == 201 {
				mu.Lock()
				acked = append(acked, task.ID)
				mu.Unlock()
			}
		}
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 20 }) // A is writing
	cmdA.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	wg.Wait()

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stored int
	if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE user_id = 'victim'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored < len(acked) || len(acked) == 0 {
		t.Fatalf("%d creates answered 201, %d stored; want some, all stored", len(acked), stored)
	}
	for i := range stored {
		ev := s.next()
		if ev.Event != "task.created" || ev.ID != int64(i+1) {
			t.Fatalf("event %d on B: %+v, want task.created at id %d", i, ev, i+1)
		}
		if i < len(acked) && !strings.Contains(ev.Data, acked[i]) {
			t.Fatalf("event %d on B: %+v, want the creation of %s, answered 201 by A", i, ev, acked[i])
		}
	}
	took := time.Since(killed)
	t.Logf("%d creates answered 201 and %d stored before A was killed; B had every one %v after", len(acked), stored, took)
	if took > 2*interval+time.Second {
		t.Errorf("B had the last change %v after A was killed, want within two poll intervals (%v)", took, 2*interval)
	}
	s.quiet(2 * interval)
}

// TestEventsPooledOnly runs two instances given one database URL and no
// DATABASE_LISTEN_URL. Behind PgBouncer in transaction mode (.ci/pooler)
// that URL is the pooler's, which cannot LISTEN; elsewhere the test gives
// them a listener URL that is down. Each starts, warns, stays ready, and a
// write on one reaches a stream on the other, from the poll.
func TestEventsPooledOnly(t *testing.T) {
	t.Parallel()
	dbURL := newEmptyTestDB(t)
	listen := "DATABASE_LISTEN_URL=" // the pooled URL itself
	if !testPooler {
		listen += "postgres://taskapi@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"
	}
	_, a := startProcess(t, dbURL, listen)
	_, b := startProcess(t, dbURL, listen)
	tok := mintTestToken(t, "pooled")
	s := openStream(t, "http://"+b, "/api/me/events", tok, nil)
	for _, addr := range []string{a, b} {
		if res := send(t, http.DefaultClient, "GET", "http://"+addr+"/readyz", "", nil, ""); res.Status != 200 {
			t.Errorf("readyz without a listener: %d, want 200", res.Status)
		}
	}
	var delays []time.Duration
	for i := range 40 {
		sent := time.Now()
		res := send(t, http.DefaultClient, "POST", "http://"+a+"/api/me/tasks", tok, nil, fmt.Sprintf(`{"title":"pooled %d"}`, i))
		if ev := s.next(); ev.Event != "task.created" || ev.Data != strings.TrimSuffix(string(res.Body), "\n") || ev.ID != int64(i+1) {
			t.Fatalf("on B, after create %d on A: %+v, want task.created at id %d with A's answer %s", i, ev, i+1, res.Body)
		}
		delays = append(delays, time.Since(sent))
		time.Sleep(time.Duration(i%5) * 37 * time.Millisecond)
	}
	slices.Sort(delays)
	t.Logf("pooler %v: from a create on A to its event on B, %d creates: p50 %v, p99 %v", testPooler, len(delays),
		delays[len(delays)/2].Round(time.Millisecond), delays[len(delays)*99/100].Round(time.Millisecond))
}

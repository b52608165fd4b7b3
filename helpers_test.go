// This file is the tests' shared kit: the throwaway PostgreSQL and a schema
// per test; taskapi run inside the test or as a process of its own; a
// running API with its requests and responses; the tokens, keys and JWKS
// servers the auth tests sign with (in helpers_auth_test.go); seeded tasks and
// paged lists; and a running API with live updates, with the event streams
// its clients read (in helpers_live_test.go).

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// testDatabaseURL points at the PostgreSQL server the tests use: the one
// TEST_DATABASE_URL names, or a throwaway server TestMain starts.
var testDatabaseURL string

// testPooler is set (TEST_POOLER=1) when TEST_DATABASE_URL goes through a
// pooler in transaction mode, such as PgBouncer: session settings do not
// last there, so each test gets a database of its own instead of a schema
// chosen by search_path.
var testPooler = os.Getenv("TEST_POOLER") == "1"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	testDatabaseURL = os.Getenv("TEST_DATABASE_URL")
	if testDatabaseURL == "" {
		dir, err := os.MkdirTemp("", "taskapi-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pg, err := startDevPostgres(context.Background(), devPostgresOptions{
			DataDir:   filepath.Join(dir, "data"),
			LogPath:   filepath.Join(dir, "postgres.log"),
			Throwaway: true,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests need PostgreSQL: set TEST_DATABASE_URL or install the server binaries:", err)
			return 1
		}
		defer pg.Stop()
		testDatabaseURL = pg.URL
	}
	code := m.Run()
	if testBinaryDir != "" {
		os.RemoveAll(testBinaryDir)
	}
	return code
}

// adminDB is one pool, shared by all tests, that makes and drops their schemas.
var adminDB = sync.OnceValues(func() (*sql.DB, error) {
	return openDB(context.Background(), testDBConfig(testDatabaseURL), slog.New(slog.DiscardHandler))
})

// testDBConfig is the pool configuration the tests use for url.
func testDBConfig(url string) dbConfig {
	return dbConfig{
		URL:             url,
		MaxOpenConns:    4,
		MaxIdleConns:    4,
		ConnMaxLifetime: time.Minute,
		ConnMaxIdleTime: time.Minute,
		ConnectTimeout:  5 * time.Second,
		BootTimeout:     10 * time.Second,
	}
}

// newTestDB returns a pool on a schema (or, behind a pooler, a database)
// of the test's own, with schema.sql applied, so that tests can run in
// parallel. It is dropped when the test ends. The pool's URL is returned
// too, for tests that open more connections to the same place.
func newTestDB(t testing.TB, options ...func(*dbConfig)) (*sql.DB, string) {
	t.Helper()
	url := newEmptyTestDB(t)
	cfg := testDBConfig(url)
	for _, o := range options {
		o(&cfg)
	}
	db, err := openDB(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := applySchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, url
}

// newEmptyTestDB makes an empty schema, or behind a pooler an empty
// database, for the test, drops it when the test ends, and returns the URL
// that reaches it.
func newEmptyTestDB(t testing.TB) string {
	t.Helper()
	admin, err := adminDB()
	if err != nil {
		t.Fatal(err)
	}
	name := "test_" + strings.ToLower(rand.Text())
	if testPooler {
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
				t.Errorf("drop test database: %v", err)
			}
		})
		u, err := url.Parse(testDatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		return u.String()
	}
	if _, err := admin.Exec("CREATE SCHEMA " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP SCHEMA " + name + " CASCADE"); err != nil {
			t.Errorf("drop test schema: %v", err)
		}
	})
	return withSearchPath(testDatabaseURL, name)
}

// testBinary returns the path of taskapi built once for the tests that run
// it as a process of its own.
func testBinary(t testing.TB) string {
	t.Helper()
	bin, err := buildTestBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// testBinaryDir holds the binary of buildTestBinary, removed by testMain.
var testBinaryDir string

// buildTestBinary builds taskapi into a temporary folder, once.
var buildTestBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "taskapi-bin-")
	if err != nil {
		return "", err
	}
	testBinaryDir = dir
	bin := filepath.Join(dir, "taskapi")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// startProcess runs the taskapi binary as a process of its own, on dbURL
// with the test secret, a free port and the extra environment, until the
// test ends, and returns it with the address it listens on.
func startProcess(t *testing.T, dbURL string, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(testBinary(t))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "DATABASE_LISTEN_URL="+testListenURL(dbURL),
		"BETTER_AUTH_SECRET="+string(testSecret), "HOST=127.0.0.1", "PORT=0", "RATE_LIMIT=0")
	cmd.Env = append(cmd.Env, extra...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var addr string
	waitFor(t, func() bool { addr = listeningAddr(logs); return addr != "" })
	return cmd, addr
}

// startRun runs the program with env until the test ends, and returns the
// address it listens on and its output.
func startRun(t *testing.T, env map[string]string) (addr string, stdout, stderr *syncBuffer, stop func() error) {
	t.Helper()
	if _, ok := env["SHUTDOWN_DRAIN"]; !ok {
		env["SHUTDOWN_DRAIN"] = "0" // stop at once, unless the test is about draining
	}
	if db, ok := env["DATABASE_URL"]; ok && env["DATABASE_LISTEN_URL"] == "" {
		env["DATABASE_LISTEN_URL"] = testListenURL(db)
	}
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() {
		runErr = run(ctx, []string{"taskapi"}, func(k string) string { return env[k] }, stdout, stderr)
		close(finished)
	}()
	stop = func() error {
		cancel()
		select {
		case <-finished:
			return runErr
		case <-time.After(30 * time.Second):
			return fmt.Errorf("run did not return 30 s after its context was cancelled")
		}
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if addr := listeningAddr(stdout); addr != "" {
			return addr, stdout, stderr, stop
		}
		select {
		case <-finished:
			t.Fatalf("run returned before listening: %v\nstdout: %s\nstderr: %s", runErr, stdout, stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("run is not listening after 60 s\nstdout: %s\nstderr: %s", stdout, stderr)
	return
}

// listeningAddr returns the address a run's log says it listens on, or "".
func listeningAddr(log *syncBuffer) string {
	for _, line := range strings.Split(log.String(), "\n") {
		var entry struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "listening" {
			return entry.Addr
		}
	}
	return ""
}

// testListenURL returns a URL for a LISTEN connection to the database that
// dbURL names. Behind a pooler in transaction mode, which cannot LISTEN,
// TEST_LISTEN_URL names the server itself, and the database is dbURL's.
func testListenURL(dbURL string) string {
	direct := os.Getenv("TEST_LISTEN_URL")
	if direct == "" {
		return dbURL
	}
	d, err1 := url.Parse(direct)
	u, err2 := url.Parse(dbURL)
	if err1 != nil || err2 != nil {
		panic("TEST_LISTEN_URL or the test database URL is not a URL")
	}
	d.Path = u.Path
	return d.String()
}

// withSearchPath adds a search_path run-time parameter to a connection URL.
func withSearchPath(url, schema string) string {
	return withParam(url, "search_path", schema)
}

// withParam adds a query parameter to a connection URL.
func withParam(url, name, value string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + name + "=" + value
}

// testTaskQuota is the task quota of the tests' stores: the default.
const testTaskQuota = 10_000

// testSecret signs the HS256 tokens of the tests.
var testSecret = []byte("test-secret-0123456789-0123456789-abcdef")

// testEnv is a running API over a test database.
type testEnv struct {
	t        testing.TB
	srv      *httptest.Server
	db       *sql.DB
	store    *Store
	verifier *Verifier
	logs     *syncBuffer
	secret   []byte
}

// newTestEnv starts the real handler, with its middleware and auth, over a
// fresh test database. cfg defaults to shared-secret mode with testSecret.
func newTestEnv(t testing.TB, cfg *VerifierConfig) *testEnv {
	t.Helper()
	db, _ := newTestDB(t)
	return newTestEnvOn(t, db, cfg)
}

// newTestEnvOn is newTestEnv over a database the test opened itself.
func newTestEnvOn(t testing.TB, db *sql.DB, cfg *VerifierConfig) *testEnv {
	t.Helper()
	if cfg == nil {
		cfg = &VerifierConfig{Secret: testSecret}
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := NewStore(db, 5*time.Second, testTaskQuota)
	verifier := NewVerifier(*cfg, logger)
	srv := httptest.NewServer(newServer(logger, buildVersion(), store, verifier, guards{}, newCursorCodec([]byte("test cursor key")), []string{"https://app.example.com"}, nil))
	t.Cleanup(srv.Close)
	return &testEnv{t: t, srv: srv, db: db, store: store, verifier: verifier, logs: logs, secret: cfg.Secret}
}

// token returns a valid HS256 token for userID.
func (e *testEnv) token(userID string) string {
	e.t.Helper()
	tok, err := mintToken(e.secret, User{ID: userID}, "", "", time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// mintTestToken returns an HS256 token for userID signed with testSecret.
func mintTestToken(t *testing.T, userID string) string {
	t.Helper()
	tok, err := mintToken(testSecret, User{ID: userID}, "", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// response is what a test request got back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request with a bearer token (none when token is "") and a body:
// a string is sent as it is, anything else as JSON, nil as no body.
func (e *testEnv) do(method, path, token string, body any) response {
	e.t.Helper()
	var text string
	headers := map[string]string{}
	switch b := body.(type) {
	case nil:
	case string:
		text = b
	case []byte:
		text = string(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		text = string(j)
	}
	if body != nil {
		headers["Content-Type"] = "application/json"
	}
	return send(e.t, e.srv.Client(), method, e.srv.URL+path, token, headers, text)
}

// doWith sends a request with extra headers, which may override any other.
func (e *testEnv) doWith(method, path, token string, headers map[string]string, body string) response {
	e.t.Helper()
	return send(e.t, e.srv.Client(), method, e.srv.URL+path, token, headers, body)
}

// newRequest makes a request with the bearer token (none when "") and the
// headers.
func newRequest(t testing.TB, method, url, token string, headers map[string]string, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return req
}

// send makes one request and reads the whole response.
func send(t testing.TB, client *http.Client, method, url, token string, headers map[string]string, body string) response {
	t.Helper()
	resp, err := client.Do(newRequest(t, method, url, token, headers, body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// task decodes the body as a Task.
func (r response) task(t testing.TB) Task {
	t.Helper()
	var task Task
	if err := json.Unmarshal(r.Body, &task); err != nil {
		t.Fatalf("decode task from %s: %v", r.Body, err)
	}
	return task
}

// tasks decodes the body as a list of tasks.
func (r response) tasks(t testing.TB) []Task {
	t.Helper()
	var tasks []Task
	if err := json.Unmarshal(r.Body, &tasks); err != nil {
		t.Fatalf("decode tasks from %s: %v", r.Body, err)
	}
	return tasks
}

// problem decodes the body as problem details, checking the content type.
func (r response) problem(t testing.TB) problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json (body %s)", ct, r.Body)
	}
	var p problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("decode problem from %s: %v", r.Body, err)
	}
	if p.Status != r.Status {
		t.Errorf("problem status = %d, want the response's %d", p.Status, r.Status)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger discards everything.
func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// isAuthError reports whether err is one of the errors Verify may return.
func isAuthError(err error) bool {
	return errors.Is(err, errInvalidToken) || errors.Is(err, ErrKeysUnavailable)
}

// waitForBlocked waits until a statement waits for a lock that tx holds.
func waitForBlocked(t *testing.T, db *sql.DB, tx *sql.Tx) {
	t.Helper()
	waitForBlockedN(t, db, tx, 1)
}

// waitForBlockedN waits until n statements wait for a lock that tx holds,
// or for one that a statement waiting for it holds: the second of two
// updates of a locked row waits for the first one's lock on the row.
func waitForBlockedN(t *testing.T, db *sql.DB, tx *sql.Tx, n int) {
	t.Helper()
	var holder int
	if err := tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	waiting := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		err := db.QueryRow(`WITH RECURSIVE waiter (pid) AS (
				SELECT pid FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))
				UNION
				SELECT a.pid FROM pg_stat_activity a JOIN waiter w ON w.pid = ANY (pg_blocking_pids(a.pid)))
			SELECT count(*) FROM waiter`, holder).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
	}
	t.Fatalf("%d statements waited for the transaction's lock after 10 s, want %d", waiting, n)
}

// lockTask locks the task's row in a transaction on a connection of its
// own to url, for a test of statements that wait for it: commit or roll
// back lock to let them go (the test's end rolls it back). other reaches
// the same database, for waitForBlocked.
func lockTask(t *testing.T, url, taskID string) (other *sql.DB, lock *sql.Tx) {
	t.Helper()
	other, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	lock, err = other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Rollback() })
	if _, err := lock.Exec(`SELECT FROM tasks WHERE id = $1 FOR UPDATE`, taskID); err != nil {
		t.Fatal(err)
	}
	return other, lock
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func numberedTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = "t" + string(rune('0'+i/10)) + string(rune('0'+i%10))
	}
	tags[0], tags[1] = "t0", "t1"
	return tags
}

func countTasks(t *testing.T, e *testEnv, tok string) int {
	t.Helper()
	res := e.do("GET", "/api/me/tasks", tok, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("list: status %d, want 200", res.Status)
	}
	return len(res.tasks(t))
}

// wantBadParam checks that the answer to query (name=value) is a 400 whose
// detail names the parameter.
func wantBadParam(t *testing.T, res response, query string) {
	t.Helper()
	if res.Status != 400 {
		t.Errorf("?%s: status %d, want 400", query, res.Status)
		return
	}
	param, _, _ := strings.Cut(query, "=")
	if p := res.problem(t); !strings.Contains(p.Detail, param) {
		t.Errorf("?%s: detail %q, want it to name %s", query, p.Detail, param)
	}
}

// createTask creates a task from body (JSON text, or a value to encode as
// JSON) as the user of tok, and fails the test unless it is created.
func createTask(t testing.TB, e *testEnv, tok string, body any) Task {
	t.Helper()
	res := e.do("POST", "/api/me/tasks", tok, body)
	if res.Status != 201 {
		t.Fatalf("create %v: %d %s, want 201", body, res.Status, res.Body)
	}
	return res.task(t)
}

// listTitles lists path as the user of tok and returns the titles of the
// tasks, in order; it fails the test unless the list is a 200.
func listTitles(t testing.TB, e *testEnv, tok, path string) []string {
	t.Helper()
	res := e.do("GET", path, tok, nil)
	if res.Status != 200 {
		t.Fatalf("list %s: %d %s, want 200", path, res.Status, res.Body)
	}
	var titles []string
	for _, task := range res.tasks(t) {
		titles = append(titles, task.Title)
	}
	return titles
}

// countTasksIn counts a user's tasks straight from the database.
func countTasksIn(t testing.TB, e *testEnv, userID string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow("SELECT count(*) FROM tasks WHERE user_id = $1", userID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// passableTempDir returns a temporary directory that a database server run
// as another user (when the tests run as root) can enter.
func passableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// nextLink returns the URL of the Link rel="next" header, or "".
func nextLink(t *testing.T, h http.Header) string {
	t.Helper()
	link := h.Get("Link")
	if link == "" {
		return ""
	}
	m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link = %q, want <url>; rel=\"next\"", link)
	}
	return m[1]
}

// pageAll follows Link headers from path and returns every task seen.
func pageAll(t *testing.T, e *testEnv, tok, path string) (tasks []Task, pages int) {
	t.Helper()
	for path != "" {
		res := e.do("GET", path, tok, nil)
		if res.Status != 200 {
			t.Fatalf("GET %s: %d %s, want 200", path, res.Status, res.Body)
		}
		page := res.tasks(t)
		tasks = append(tasks, page...)
		pages++
		path = nextLink(t, res.Header)
		if path != "" && len(page) == 0 {
			t.Fatalf("an empty page with a next link at %s, want no next page after an empty one", path)
		}
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
	}
	return tasks, pages
}

// seedVaried creates n tasks with repeated titles, priorities and due dates
// (some without), so that every order has ties to break.
func seedVaried(t *testing.T, e *testEnv, tok string, n int) []Task {
	t.Helper()
	var out []Task
	for i := range n {
		body := map[string]any{
			"title":    fmt.Sprintf("task %d", i%7),
			"priority": priorities[i%3],
			"tags":     []string{fmt.Sprintf("t%d", i%4)},
		}
		if i%5 != 0 {
			body["due_date"] = time.Date(2026, 1, 1+i%6, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
		}
		if i%4 == 0 {
			body["completed"] = true
		}
		res := e.do("POST", "/api/me/tasks", tok, body)
		if res.Status != 201 {
			t.Fatalf("seed: %d %s, want 201", res.Status, res.Body)
		}
		out = append(out, res.task(t))
	}
	return out
}

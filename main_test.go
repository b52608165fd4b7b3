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
	"path/filepath"
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
	return m.Run()
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

// withSearchPath adds a search_path run-time parameter to a connection URL.
func withSearchPath(url, schema string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + schema
}

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
	store := NewStore(db, 5*time.Second)
	verifier := NewVerifier(*cfg, logger)
	srv := httptest.NewServer(newServer(logger, buildVersion(), store, verifier, nil, cursorCodec{[]byte("test cursor key")}, []string{"https://app.example.com"}))
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

// send makes one request and reads the whole response.
func send(t testing.TB, client *http.Client, method, url, token string, headers map[string]string, body string) response {
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
	resp, err := client.Do(req)
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
		t.Errorf("problem status = %d, response status = %d", p.Status, r.Status)
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

// startRun runs the program with env until the test ends, and returns the
// address it listens on and its output.
func startRun(t *testing.T, env map[string]string) (addr string, stdout, stderr *syncBuffer, stop func() error) {
	t.Helper()
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

func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	_, url := newTestDB(t)
	addr, stdout, _, stop := startRun(t, map[string]string{
		"DATABASE_URL": url, "BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1",
	})
	tok, err := mintToken(testSecret, User{ID: "runner"}, "", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res := send(t, http.DefaultClient, "POST", "http://"+addr+"/api/me/tasks", tok, nil, `{"title":"through run"}`); res.Status != 201 {
		t.Errorf("create through run: %d", res.Status)
	}
	if err := stop(); err != nil {
		t.Errorf("run returned %v after a clean shutdown", err)
	}
	if !strings.Contains(stdout.String(), `"msg":"stopped"`) {
		t.Errorf("no shutdown in the log:\n%s", stdout)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestRunDevelopmentDatabase(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(passableTempDir(t), ".data")
	env := map[string]string{"TASKAPI_DATA_DIR": dataDir, "PORT": "0"}

	addr, stdout, stderr, stop := startRun(t, env)
	if !strings.Contains(stdout.String(), "DEVELOPMENT database") {
		t.Errorf("the log does not say this is a development database:\n%s", stdout)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("development mode listens on %s, want loopback only", addr)
	}
	// The printed curl line works as it is.
	line := stderr.String()
	start := strings.Index(line, "Bearer ")
	if start < 0 {
		t.Fatalf("no curl line with a token:\n%s", line)
	}
	tok := strings.Fields(line[start+len("Bearer "):])[0]
	tok = strings.TrimSuffix(tok, "'")
	if res := send(t, http.DefaultClient, "POST", "http://"+addr+"/api/me/tasks", tok, nil, `{"title":"survives a restart"}`); res.Status != 201 {
		t.Fatalf("create with the printed token: %d", res.Status)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("the development server is still running after taskapi stopped (postmaster.pid: %v)", err)
	}

	// Second start: same data, same secret, so the same token still works.
	addr, _, _, stop = startRun(t, env)
	tasks := send(t, http.DefaultClient, "GET", "http://"+addr+"/api/me/tasks", tok, nil, "").tasks(t)
	if len(tasks) != 1 || tasks[0].Title != "survives a restart" {
		t.Errorf("after a restart: %+v", tasks)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://db.example.com/app", "BETTER_AUTH_SECRET": string(testSecret)}
	with := func(k, v string) map[string]string {
		env := map[string]string{}
		for key, val := range base {
			env[key] = val
		}
		env[k] = v
		return env
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"secret mode", base, ""},
		{"no auth outside development", with("BETTER_AUTH_SECRET", ""), "no way to verify tokens"},
		{"short secret", with("BETTER_AUTH_SECRET", "short"), "at least 32 bytes"},
		{"JWKS mode", map[string]string{"DATABASE_URL": "postgres://x/y", "BETTER_AUTH_URL": "https://auth.example.com/"}, ""},
		{"bad auth URL", with("BETTER_AUTH_URL", "auth.example.com"), "BETTER_AUTH_URL must be"},
		{"bad port", with("PORT", "http"), "PORT"},
		{"bad duration", with("DB_QUERY_TIMEOUT", "5"), "DB_QUERY_TIMEOUT"},
		{"bad pool size", with("DB_MAX_CONNS", "0"), "DB_MAX_CONNS"},
		{"bad log level", with("LOG_LEVEL", "loud"), "LOG_LEVEL"},
		{"Neon's variable name", map[string]string{"NEON_DATABASE_URL": "postgres://n/db", "BETTER_AUTH_SECRET": string(testSecret)}, ""},
	} {
		cfg, err := loadConfig(func(k string) string { return tc.env[k] })
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if cfg.DevDB || cfg.Host != "" {
				t.Errorf("%s: DevDB %v, Host %q; want a production config on all interfaces", tc.name, cfg.DevDB, cfg.Host)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.wantErr)
		}
	}

	cfg, err := loadConfig(func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://x/y", "BETTER_AUTH_URL": "https://auth.example.com/"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	vc := cfg.verifierConfig()
	if vc.JWKSURL != "https://auth.example.com/api/auth/jwks" || vc.JWKSIssuer != "https://auth.example.com" ||
		vc.JWKSAudience != "https://auth.example.com" || vc.Issuer != "" || len(vc.Secret) != 0 {
		t.Errorf("JWKS mode from BETTER_AUTH_URL: %+v", vc)
	}
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
	var holder int
	if err := tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var waiting bool
		err := db.QueryRow(`SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)))`, holder).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
	}
	t.Fatal("no statement ever waited for the transaction's lock")
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// newTestDB returns a pool whose tables live in a schema of the test's own,
// with schema.sql applied, so that tests can run in parallel. The schema is
// dropped when the test ends. The pool's URL is returned too, for tests that
// open more connections to the same schema.
func newTestDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	admin, err := adminDB()
	if err != nil {
		t.Fatal(err)
	}
	schema := "test_" + strings.ToLower(rand.Text())
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	url := withSearchPath(testDatabaseURL, schema)
	db, err := openDB(context.Background(), testDBConfig(url), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop test schema: %v", err)
		}
	})
	if err := applySchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, url
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
	t        *testing.T
	srv      *httptest.Server
	db       *sql.DB
	store    *Store
	verifier *Verifier
	logs     *syncBuffer
	secret   []byte
}

// newTestEnv starts the real handler, with its middleware and auth, over a
// fresh test database. cfg defaults to shared-secret mode with testSecret.
func newTestEnv(t *testing.T, cfg *VerifierConfig) *testEnv {
	t.Helper()
	db, _ := newTestDB(t)
	if cfg == nil {
		cfg = &VerifierConfig{Secret: testSecret}
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := NewStore(db, 5*time.Second)
	verifier := NewVerifier(*cfg, logger)
	srv := httptest.NewServer(newServer(logger, store, verifier, []string{"https://app.example.com"}))
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
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// task decodes the body as a Task.
func (r response) task(t *testing.T) Task {
	t.Helper()
	var task Task
	if err := json.Unmarshal(r.Body, &task); err != nil {
		t.Fatalf("decode task from %s: %v", r.Body, err)
	}
	return task
}

// tasks decodes the body as a list of tasks.
func (r response) tasks(t *testing.T) []Task {
	t.Helper()
	var tasks []Task
	if err := json.Unmarshal(r.Body, &tasks); err != nil {
		t.Fatalf("decode tasks from %s: %v", r.Body, err)
	}
	return tasks
}

// problem decodes the body as problem details, checking the content type.
func (r response) problem(t *testing.T) problem {
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

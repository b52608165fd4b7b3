// Command bare is the floor bench/run measures taskapi against: the least
// server that can be built from taskapi's own stack and answer the requests
// of bench/load.lua. It has net/http's pattern routing, database/sql over
// pgx's stdlib driver with a pool of DB_MAX_CONNS (default 4, as taskapi's),
// taskapi's own SQL statements (list.sql, get.sql and create.sql, which
// TestBenchSQLMirrorsStore keeps equal to the store's; create.sql without
// the change record, so that the comparison says what live updates cost a
// write end to end), and encoding/json
// for the answers. Instead of checking a JWT it looks the bearer token up in
// a map read at start from BENCH_TOKENS (lines "token user", the file
// bench/run mints). It does no validation, no logging, and has no
// middleware.
//
//	PORT=8080 HOST=127.0.0.1 DATABASE_URL=postgres://... BENCH_TOKENS=tokens bare
package main

import (
	"bufio"
	"cmp"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// The statements, byte for byte taskapi's (see TestBenchSQLMirrorsStore in
// the service's bench_test.go).
var (
	//go:embed list.sql
	listSQL string
	//go:embed get.sql
	getSQL string
	//go:embed create.sql
	createSQL string
)

const (
	// pageSize is the page bench/load.lua asks for (?limit=20). Like
	// taskapi, the list asks for one row more, which would tell that there
	// is a next page.
	pageSize = 20
	// taskQuota is taskapi's default TASK_QUOTA, the create statement's $10.
	taskQuota = 10_000
)

type task struct {
	ID          string     `json:"id"`
	UserID      string     `json:"user_id"`
	Title       string     `json:"title"`
	Description *string    `json:"description"`
	Completed   bool       `json:"completed"`
	Priority    string     `json:"priority"`
	DueDate     *time.Time `json:"due_date"`
	Tags        []string   `json:"tags"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	Version     int64      `json:"version"`
}

type newTask struct {
	Title       string     `json:"title"`
	Description *string    `json:"description"`
	Completed   bool       `json:"completed"`
	Priority    string     `json:"priority"`
	DueDate     *time.Time `json:"due_date"`
	Tags        []string   `json:"tags"`
}

type server struct {
	db     *sql.DB
	tokens map[string]string // bearer token → user id
	// typeMaps hold pgtype.Maps, which scan the tags column (text[]) the
	// way pgx documents for database/sql; one is not safe for concurrent use.
	typeMaps sync.Pool
}

func main() {
	log.SetFlags(0)
	for _, q := range []*string{&listSQL, &getSQL, &createSQL} {
		*q = strings.TrimSpace(*q)
	}
	pool := 4
	if v := os.Getenv("DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			log.Fatalf("DB_MAX_CONNS=%q: want a positive integer", v)
		}
		pool = n
	}
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(pool)
	db.SetMaxIdleConns(pool)
	tokens, err := readTokens(os.Getenv("BENCH_TOKENS"))
	if err != nil {
		log.Fatal(err)
	}
	s := &server{db: db, tokens: tokens}
	s.typeMaps.New = func() any { return pgtype.NewMap() }

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /api/{user}/tasks", s.list)
	mux.HandleFunc("GET /api/{user}/tasks/{id}", s.get)
	mux.HandleFunc("POST /api/{user}/tasks", s.create)
	addr := net.JoinHostPort(os.Getenv("HOST"), cmp.Or(os.Getenv("PORT"), "8080"))
	log.Fatal(http.ListenAndServe(addr, mux))
}

// readTokens reads lines "token user" from the file at path.
func readTokens(path string) (map[string]string, error) {
	if path == "" {
		return nil, errors.New("BENCH_TOKENS must name a file of lines \"token user\"")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tokens := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if token, user, ok := strings.Cut(sc.Text(), " "); ok {
			tokens[token] = user
		}
	}
	return tokens, sc.Err()
}

// user returns the caller's user id, or answers 401 (unknown token) or 403
// (a path naming another user) and returns false.
func (s *server) user(w http.ResponseWriter, r *http.Request) (string, bool) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	u, ok := s.tokens[token]
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return "", false
	}
	if p := r.PathValue("user"); p != "me" && p != u {
		w.WriteHeader(http.StatusForbidden)
		return "", false
	}
	return u, true
}

// scanner reads rows of the statements' ten columns into t.
type scanner struct {
	t    task
	dest []any
}

func (s *server) newScanner(m *pgtype.Map) *scanner {
	sc := &scanner{}
	t := &sc.t
	sc.dest = []any{&t.ID, &t.Title, &t.Description, &t.Completed, &t.Priority,
		&t.DueDate, m.SQLScanner(&t.Tags), &t.CreatedAt, &t.UpdatedAt, &t.Version}
	return sc
}

func (sc *scanner) scan(row interface{ Scan(...any) error }, user string) (task, error) {
	sc.t = task{}
	err := row.Scan(sc.dest...)
	t := sc.t
	t.UserID = user
	return t, err
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	if err := s.db.PingContext(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	u, ok := s.user(w, r)
	if !ok {
		return
	}
	m := s.typeMaps.Get().(*pgtype.Map)
	defer s.typeMaps.Put(m)
	rows, err := s.db.QueryContext(context.Background(), listSQL, u, pageSize+1)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	defer rows.Close()
	tasks := []task{}
	sc := s.newScanner(m)
	for rows.Next() {
		t, err := sc.scan(rows, u)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		tasks = append(tasks, t)
	}
	if rows.Err() != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	reply(w, http.StatusOK, tasks[:min(len(tasks), pageSize)])
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	u, ok := s.user(w, r)
	if !ok {
		return
	}
	m := s.typeMaps.Get().(*pgtype.Map)
	defer s.typeMaps.Put(m)
	t, err := s.newScanner(m).scan(s.db.QueryRowContext(context.Background(), getSQL, r.PathValue("id"), u), u)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		w.WriteHeader(http.StatusNotFound)
	case err != nil:
		w.WriteHeader(http.StatusInternalServerError)
	default:
		reply(w, http.StatusOK, t)
	}
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	u, ok := s.user(w, r)
	if !ok {
		return
	}
	var in newTask
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if in.Tags == nil {
		in.Tags = []string{}
	}
	m := s.typeMaps.Get().(*pgtype.Map)
	defer s.typeMaps.Put(m)
	// The user's email and name ($2, $3) are empty, as in the tokens
	// bench/run mints.
	t, err := s.newScanner(m).scan(s.db.QueryRowContext(context.Background(), createSQL,
		u, "", "", in.Title, in.Description, in.Completed, in.Priority, in.DueDate, in.Tags, taskQuota), u)
	switch {
	case errors.Is(err, sql.ErrNoRows): // the quota
		w.WriteHeader(http.StatusConflict)
	case err != nil:
		w.WriteHeader(http.StatusInternalServerError)
	default:
		reply(w, http.StatusCreated, t)
	}
}

func reply(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

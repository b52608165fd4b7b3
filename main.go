// Command taskapi is the backend of a multi-user todo app: a JSON API over
// PostgreSQL that keeps each person's tasks apart, for a frontend that signs
// people in with Better Auth and calls it with a JWT.
//
// Usage:
//
//	taskapi                      serve the API (configured by environment variables)
//	taskapi token [-sub ID] ...  print an HS256 token for trying the API by hand
//	taskapi version              print the version
//
// This file reads the configuration, opens the database, starts the server
// and shuts it down (run). To read the code in order, go on with
// handlers.go, the routes and what each does; auth.go, who the caller is;
// store.go, the statements that read and write tasks; and schema.sql, the
// tables they use.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "taskapi:", err)
		os.Exit(1)
	}
}

// run is the whole program: main only supplies the process's context,
// arguments, environment and output, so that tests can supply their own.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "token":
			return runToken(args[2:], getenv, stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "taskapi", buildVersion())
			return nil
		case "help", "-h", "-help", "--help":
			fmt.Fprintln(stdout, usage)
			return nil
		default:
			return fmt.Errorf("unknown command %q\n%s", args[1], usage)
		}
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	// Whatever run starts in the background (sweeps, the listener) ends
	// when run returns, on an error too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Log lines are written in batches, at least every 100 ms, and all of
	// them by the time run returns.
	logOut := newLogWriter(stdout, 100*time.Millisecond)
	defer logOut.Close()
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if len(cfg.CORSOrigins) == 0 {
		logger.Warn("CORS_ORIGINS is not set: no web page on another origin can call taskapi; " +
			"set it to the frontend's origin, e.g. CORS_ORIGINS=http://localhost:3000")
	}

	usingDevSecret := false
	if cfg.DevDB {
		pg, err := startDevPostgres(ctx, devPostgresOptions{
			DataDir: filepath.Join(cfg.DataDir, "postgres"),
			LogPath: filepath.Join(cfg.DataDir, "postgres.log"),
		})
		if err != nil {
			return err
		}
		defer pg.Stop()
		logger.Warn("DATABASE_URL is not set: using a local DEVELOPMENT database; set DATABASE_URL in production",
			"data_dir", filepath.Join(cfg.DataDir, "postgres"), "log", filepath.Join(cfg.DataDir, "postgres.log"))
		cfg.DB.URL = pg.URL
		// A database for the example frontend's Better Auth, so that it
		// needs no PostgreSQL of its own: its URL changes with each start.
		authURL, err := pg.offerDatabase(ctx, "better_auth")
		if err != nil {
			return err
		}
		authURLFile := filepath.Join(cfg.DataDir, "better-auth-database-url")
		if err := os.WriteFile(authURLFile, []byte(authURL+"\n"), 0o600); err != nil {
			return fmt.Errorf("development database: %w", err)
		}
		logger.Info("a development database for Better Auth", "url_file", authURLFile)
		if !cfg.authConfigured() {
			if cfg.Secret, err = devSecret(cfg.DataDir); err != nil {
				return err
			}
			usingDevSecret = true
			logger.Warn("no BETTER_AUTH_SECRET or BETTER_AUTH_URL: accepting HS256 tokens signed with a DEVELOPMENT secret",
				"secret_file", filepath.Join(cfg.DataDir, "dev-secret"))
		}
	}

	db, err := openDB(ctx, cfg.DB, logger)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := applySchema(ctx, db); err != nil {
		return err
	}

	cursorKey, err := serverKey(ctx, db, "cursor")
	if err != nil {
		return err
	}
	// The server times statements out at DB_QUERY_TIMEOUT (see openDB); the
	// store's own timeout, a second later, is for a server that stops
	// answering altogether.
	store := NewStore(db, cfg.QueryTimeout+time.Second, cfg.TaskQuota)
	go sweep(ctx, logger, "idempotency keys", 10*time.Minute, store.SweepKeys)
	ticketKey, err := serverKey(ctx, db, "events")
	if err != nil {
		return err
	}
	openFiles := raiseOpenFileLimit()
	maxConns := cmp.Or(cfg.MaxConns, maxConnsFor(openFiles))
	if n := maxStreamsFor(maxConns); cfg.Events.MaxStreams > n {
		if cfg.MaxStreamsSet {
			logger.Warn("EVENTS_MAX_STREAMS is lowered to leave connections for requests",
				"events_max_streams", n, "max_connections", maxConns)
		}
		cfg.Events.MaxStreams = n
	}
	live := newEventHub(cfg.Events, store)
	store.OnChange(live.changed)
	if err := live.start(ctx, cmp.Or(cfg.ListenURL, cfg.DB.URL), logger); err != nil {
		return err
	}
	defer live.close()
	go sweep(ctx, logger, "changes", 10*time.Minute, func(ctx context.Context) (int64, error) {
		return store.SweepChanges(ctx, cfg.Events.Retention)
	})
	verifier := NewVerifier(cfg.verifierConfig(), logger)
	var draining atomic.Bool // set at SIGTERM: /readyz says 503
	g := guards{
		rate:        newRateLimiter(cfg.RateLimit, cfg.RateBurst),
		concurrency: newUserGate(cfg.UserConcurrency, time.Second),
		failedAuth:  newAddrLimiter(cfg.AuthFailureLimit, cfg.AuthFailureBurst, cfg.ClientAddrHeader),
		requests:    &requestMetrics{},
	}
	if cfg.MetricsAddr != "" {
		stop, err := serveMetrics(cfg.MetricsAddr, &metricsSource{version: buildVersion(), pool: db, store: store,
			live: live, guards: g, started: time.Now()}, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	srv := &http.Server{
		Handler: drainReadiness(newServer(logger, buildVersion(), store, verifier, g,
			newCursorCodec(cursorKey), cfg.CORSOrigins, &liveUpdates{hub: live, tickets: newTicketCodec(ticketKey)}), &draining, logger),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// Longer than the slowest honest request: a statement timeout plus
		// a JWKS fetch.
		WriteTimeout: cfg.QueryTimeout + 15*time.Second,
		// Just over the 60 s after which Fly.io's proxy drops an idle
		// connection, so that the proxy, not taskapi, ends an idle one
		// (no request is ever sent on a connection being closed), and
		// clients that hoard idle connections are let go within a minute.
		IdleTimeout:    65 * time.Second,
		MaxHeaderBytes: 64 << 10, // larger headers are cut off with 431
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	tcp, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, cfg.Port))
	if err != nil {
		return err
	}
	gogc := tuneGC(getenv)
	ln := newConnLimiter(tcp, maxConns)
	srv.ConnState = ln.track
	srv.RegisterOnShutdown(live.close) // streams end at once; clients resume elsewhere
	logger.Info("listening", "addr", ln.Addr().String(), "version", buildVersion(),
		"max_connections", maxConns, "max_streams", cfg.Events.MaxStreams, "open_file_limit", openFiles, "gogc", gogc)
	logOut.Flush() // whoever waits for this line sees it at once
	if usingDevSecret {
		token, err := mintToken(cfg.Secret, User{ID: "dev-user", Email: "dev@example.com"}, cfg.Issuer, cfg.Audience, 24*time.Hour)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "\ntaskapi is running in development mode. Try it (the token is valid for 24 hours):\n\n"+
			"  curl -H 'Authorization: Bearer %s' http://localhost:%d/api/me/tasks\n\n"+
			"More tokens: go run . token -sub <user id>\n\n", token, ln.Addr().(*net.TCPAddr).Port)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	// First drain: /readyz turns 503 at once, so that load balancers stop
	// sending requests here, while the requests that still come are
	// served, each answered with Connection: close.
	draining.Store(true)
	logger.Info("draining", "for", cfg.DrainTimeout.String())
	time.Sleep(cfg.DrainTimeout)
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	// ctx is already cancelled: shutdown gets a deadline of its own, shorter
	// than the platform's kill timeout, to let in-flight requests finish.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Streams on connections taken over from net/http are not the
	// server's to wait for: they ended with the hub, each within one write.
	live.closeAndWait()
	logger.Info("stopped")
	return nil
}

const usage = `usage:
  taskapi                  serve the API; configuration comes from environment variables (see docs/configuration.md)
  taskapi token [flags]    print an HS256 token signed with BETTER_AUTH_SECRET or the development secret
                           flags: -sub ID (default dev-user), -email E, -name N, -ttl D (default 1h)
  taskapi version          print the version`

// defaultGCPercent is taskapi's GOGC when the environment sets none. The
// garbage collector starts a cycle once the heap has grown by GOGC percent
// over what the last cycle left live, with a floor of 4 MB × GOGC/100.
// taskapi's live heap is about 2 MB, most of it what the requests in
// flight hold, so at Go's default of 100 a busy instance collected every
// few hundred requests, each cycle scanning those requests' objects and
// stacks. 200 makes cycles less than half as frequent for a few megabytes
// more (bench/README.md); GOMEMLIMIT, where it is set, still bounds
// the whole.
const defaultGCPercent = 200

// tuneGC sets GOGC to defaultGCPercent unless the environment set it (the
// runtime read that at start), and returns the setting in force.
func tuneGC(getenv func(string) string) string {
	if v := getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}

// runToken implements `taskapi token`.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "dev-user", "the user id (sub claim)")
	email := fs.String("email", "", "the email claim")
	name := fs.String("name", "", "the name claim")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !validUserID(*sub) {
		return errors.New("-sub must be 1 to 255 characters without control characters")
	}
	if *ttl <= 0 {
		return errors.New("-ttl must be positive")
	}
	secret := []byte(getenv("BETTER_AUTH_SECRET"))
	if len(secret) == 0 {
		var err error
		if secret, err = devSecret(cmp.Or(getenv("TASKAPI_DATA_DIR"), ".data")); err != nil {
			return err
		}
	}
	token, err := mintToken(secret, User{ID: *sub, Email: *email, Name: *name},
		getenv("JWT_ISSUER"), getenv("JWT_AUDIENCE"), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

// buildVersion returns the version the go command recorded in the binary:
// the module version (a tag, or a pseudo-version made from the commit when
// built in a git checkout), else "devel" with the VCS revision if known.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision == "" {
		return "devel"
	}
	v := "devel+" + revision[:min(12, len(revision))]
	if modified == "true" {
		v += "-dirty"
	}
	return v
}

// sweep runs clean now and then every interval until ctx ends, and logs
// how many rows of what it deleted. Every instance sweeps; a sweep that finds
// nothing costs one index lookup.
func sweep(ctx context.Context, logger *slog.Logger, what string, interval time.Duration, clean func(context.Context) (int64, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := clean(ctx); err != nil {
			logger.Warn("sweep", "what", what, "err", err)
		} else if n > 0 {
			logger.Info("swept", "what", what, "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// devSecret returns the development signing secret kept in dir, making it
// on first use. It is only ever used with the development database.
func devSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, "dev-secret")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("development secret: %w", err)
	}
	secret := []byte(rand.Text() + rand.Text()) // 52 characters, 260 random bits
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("development secret: %w", err)
	}
	return secret, nil
}

// config is everything taskapi reads from its environment.
type config struct {
	Host, Port  string
	DataDir     string // where the development database and secret live
	DevDB       bool   // no DATABASE_URL: run a development database in DataDir
	DB          dbConfig
	CORSOrigins []string
	LogLevel    slog.Level

	QueryTimeout    time.Duration
	DrainTimeout    time.Duration // how long /readyz says 503 before shutdown begins
	ShutdownTimeout time.Duration
	MaxConns        int // the most open HTTP connections; 0 derives it from the open-file limit

	RateLimit float64 // requests a second per user; 0 turns limiting off
	RateBurst int
	TaskQuota int // the most tasks one user may have
	// UserConcurrency is the most requests one user may have at once.
	UserConcurrency int
	// AuthFailureLimit is the failed authentications a second each client
	// address may make, sustained; 0 turns limiting off.
	AuthFailureLimit float64
	AuthFailureBurst int
	ClientAddrHeader string // the header a trusted proxy names the client in

	MetricsAddr string // METRICS_ADDR: where /metrics is served; "" serves none

	ListenURL     string // DATABASE_LISTEN_URL; "" uses DB.URL
	Events        eventsConfig
	MaxStreamsSet bool // EVENTS_MAX_STREAMS was set, not defaulted

	Secret           []byte
	AuthURL          string // Better Auth's base URL
	JWKSURL          string
	Issuer, Audience string // JWT_ISSUER and JWT_AUDIENCE as given
}

// authConfigured reports whether any way of verifying tokens was configured.
func (c config) authConfigured() bool { return len(c.Secret) > 0 || c.JWKSURL != "" }

// verifierConfig derives the token rules: the secret checks iss and aud only
// when JWT_ISSUER and JWT_AUDIENCE say so; JWKS tokens must also carry
// Better Auth's base URL as iss and aud unless those variables say otherwise.
func (c config) verifierConfig() VerifierConfig {
	vc := VerifierConfig{Secret: c.Secret, Issuer: c.Issuer, Audience: c.Audience}
	if c.JWKSURL != "" {
		vc.JWKSURL = c.JWKSURL
		vc.JWKSIssuer = cmp.Or(c.Issuer, c.AuthURL)
		vc.JWKSAudience = cmp.Or(c.Audience, c.AuthURL)
		vc.Client = &http.Client{Timeout: 5 * time.Second}
	}
	return vc
}

// loadConfig reads and checks the configuration, failing with a message that
// says what to set.
func loadConfig(getenv func(string) string) (config, error) {
	var errs []error
	durationVar := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be a positive duration such as 5s or 10m, not %q", name, v))
			return def
		}
		return d
	}
	intVar := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("%s must be a whole number of at least 1, not %q", name, v))
			return def
		}
		return n
	}
	// floatVar reads a rate: a number of at least 0, where 0 turns a limit off.
	floatVar := func(name string, def float64) float64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			errs = append(errs, fmt.Errorf("%s must be a number a second of at least 0 (0 turns the limit off), not %q", name, v))
			return def
		}
		return r
	}

	c := config{
		Port:            cmp.Or(getenv("PORT"), "8080"),
		DataDir:         cmp.Or(getenv("TASKAPI_DATA_DIR"), ".data"),
		QueryTimeout:    durationVar("DB_QUERY_TIMEOUT", 5*time.Second),
		ShutdownTimeout: durationVar("SHUTDOWN_TIMEOUT", 10*time.Second),
		Secret:          []byte(getenv("BETTER_AUTH_SECRET")),
		AuthURL:         strings.TrimRight(getenv("BETTER_AUTH_URL"), "/"),
		Issuer:          getenv("JWT_ISSUER"),
		Audience:        getenv("JWT_AUDIENCE"),
	}
	c.DB = dbConfig{
		URL:             cmp.Or(getenv("DATABASE_URL"), getenv("NEON_DATABASE_URL")),
		MaxOpenConns:    intVar("DB_MAX_CONNS", defaultPoolSize(cmp.Or(getenv("DATABASE_URL"), getenv("NEON_DATABASE_URL")))),
		ConnMaxLifetime: durationVar("DB_CONN_MAX_LIFETIME", 30*time.Minute),
		ConnMaxIdleTime: durationVar("DB_CONN_MAX_IDLE_TIME", 5*time.Minute),
		ConnectTimeout:  5 * time.Second,
		BootTimeout:     durationVar("DB_BOOT_TIMEOUT", 30*time.Second),
	}
	c.DB.StatementTimeout = c.QueryTimeout
	c.DB.MaxIdleConns = intVar("DB_MAX_IDLE_CONNS", c.DB.MaxOpenConns)
	c.RateBurst = intVar("RATE_LIMIT_BURST", 100)
	c.TaskQuota = intVar("TASK_QUOTA", 10_000)
	c.MaxConns = intVar("HTTP_MAX_CONNS", 0)
	c.UserConcurrency = intVar("USER_MAX_CONCURRENT", max(1, c.DB.MaxOpenConns/2))
	c.AuthFailureLimit = floatVar("AUTH_FAILURE_LIMIT", 5)
	c.AuthFailureBurst = intVar("AUTH_FAILURE_BURST", 50)
	c.ClientAddrHeader = getenv("CLIENT_ADDR_HEADER")
	c.RateLimit = floatVar("RATE_LIMIT", 50)
	c.ListenURL = getenv("DATABASE_LISTEN_URL")
	c.MetricsAddr = getenv("METRICS_ADDR")
	c.Events = eventsConfig{
		Heartbeat:    durationVar("EVENTS_HEARTBEAT", 25*time.Second),
		PerUser:      intVar("EVENTS_MAX_PER_USER", 10),
		MaxStreams:   intVar("EVENTS_MAX_STREAMS", 5000),
		Buffer:       intVar("EVENTS_BUFFER", 64),
		WriteTimeout: durationVar("EVENTS_WRITE_TIMEOUT", 10*time.Second),
		Retention:    durationVar("CHANGES_RETENTION", 24*time.Hour),
		PollInterval: durationVar("EVENTS_POLL_INTERVAL", 2*time.Second),
		PollFallback: durationVar("EVENTS_POLL_INTERVAL", 500*time.Millisecond),
		MaxLifetime:  durationVar("EVENTS_MAX_LIFETIME", 30*time.Minute),
	}
	c.MaxStreamsSet = getenv("EVENTS_MAX_STREAMS") != ""
	c.DevDB = c.DB.URL == ""
	c.DrainTimeout = 5 * time.Second
	if c.DevDB {
		c.DrainTimeout = 0 // nobody balances load onto a development server
	}
	if v := getenv("SHUTDOWN_DRAIN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("SHUTDOWN_DRAIN must be a duration such as 5s, or 0, not %q", v))
		}
		c.DrainTimeout = max(d, 0)
	}
	c.Host = getenv("HOST")
	if c.DevDB && c.Host == "" {
		c.Host = "127.0.0.1" // the development secret is no protection on a network
	}
	if n, err := strconv.Atoi(c.Port); err != nil || n < 0 || n > 65535 { // 0: any free port
		errs = append(errs, fmt.Errorf("PORT must be a port number, not %q", c.Port))
	}

	if len(c.Secret) > 0 && len(c.Secret) < 32 {
		errs = append(errs, errors.New("BETTER_AUTH_SECRET must be at least 32 bytes (generate one with: openssl rand -base64 32)"))
	}
	c.JWKSURL = getenv("BETTER_AUTH_JWKS_URL")
	if c.JWKSURL == "" && c.AuthURL != "" {
		c.JWKSURL = c.AuthURL + "/api/auth/jwks"
	}
	for name, u := range map[string]string{"BETTER_AUTH_URL": c.AuthURL, "BETTER_AUTH_JWKS_URL": c.JWKSURL} {
		if u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			errs = append(errs, fmt.Errorf("%s must be an http:// or https:// URL, not %q", name, u))
		}
	}
	if !c.DevDB && !c.authConfigured() {
		errs = append(errs, errors.New("no way to verify tokens: set BETTER_AUTH_SECRET (HS256 tokens signed with the shared secret) "+
			"or BETTER_AUTH_URL (tokens from Better Auth's JWT plugin, checked against its JWKS), or both"))
	}

	for _, o := range strings.Split(getenv("CORS_ORIGINS"), ",") {
		if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
			c.CORSOrigins = append(c.CORSOrigins, o)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(cmp.Or(getenv("LOG_LEVEL"), "info"))); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", getenv("LOG_LEVEL")))
	}
	if err := errors.Join(errs...); err != nil {
		return config{}, fmt.Errorf("configuration:\n%w", err)
	}
	return c, nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
)

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
		t.Errorf("create through run: %d, want 201", res.Status)
	}
	if err := stop(); err != nil {
		t.Errorf("run returned %v after a clean shutdown, want nil", err)
	}
	if !strings.Contains(stdout.String(), "CORS_ORIGINS is not set") {
		t.Errorf("run without CORS_ORIGINS does not warn about it, want \"CORS_ORIGINS is not set\":\n%s", stdout)
	}
	if !strings.Contains(stdout.String(), `"msg":"stopped"`) {
		t.Errorf("no shutdown in the log, want a \"stopped\" line:\n%s", stdout)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

// TestTuneGC checks the collector's setting: taskapi's own GOGC when the
// environment sets none, the environment's when it does. Not parallel: the
// setting is the process's.
func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	if got := tuneGC(func(string) string { return "" }); got != "200" {
		t.Errorf("no GOGC in the environment: tuneGC says %q, want \"200\"", got)
	}
	if p := debug.SetGCPercent(100); p != defaultGCPercent {
		t.Errorf("no GOGC in the environment: GOGC is %d, want %d", p, defaultGCPercent)
	}
	env := func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	}
	if got := tuneGC(env); got != "50" {
		t.Errorf("GOGC=50: tuneGC says %q, want \"50\"", got)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC=50 in the environment: taskapi set GOGC to %d, want it left as it was", p)
	}
}

func TestRunDevelopmentDatabase(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(passableTempDir(t), ".data")
	env := map[string]string{"TASKAPI_DATA_DIR": dataDir, "PORT": "0"}

	addr, stdout, stderr, stop := startRun(t, env)
	if !strings.Contains(stdout.String(), "DEVELOPMENT database") {
		t.Errorf("the log does not say this is a development database, want \"DEVELOPMENT database\":\n%s", stdout)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("development mode listens on %s, want loopback only", addr)
	}
	// The printed curl line works as it is. run prints it just after the
	// listening line that startRun waits for, so it may not be there yet.
	for end := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "Bearer ") && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	line := stderr.String()
	start := strings.Index(line, "Bearer ")
	if start < 0 {
		t.Fatalf("no curl line with a token, want one with \"Bearer \":\n%s", line)
	}
	tok := strings.Fields(line[start+len("Bearer "):])[0]
	tok = strings.TrimSuffix(tok, "'")
	if res := send(t, http.DefaultClient, "POST", "http://"+addr+"/api/me/tasks", tok, nil, `{"title":"survives a restart"}`); res.Status != 201 {
		t.Fatalf("create with the printed token: %d, want 201", res.Status)
	}
	// A database for Better Auth, at the URL in the file.
	authURL, err := os.ReadFile(filepath.Join(dataDir, "better-auth-database-url"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), strings.TrimSpace(string(authURL)))
	if err != nil {
		t.Fatalf("connect to the Better Auth database at %s: %v", authURL, err)
	}
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil || name != "better_auth" {
		t.Errorf("Better Auth's database: %q, %v; want better_auth", name, err)
	}
	conn.Close(context.Background())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("the development server is still running after taskapi stopped (postmaster.pid: %v), want it stopped", err)
	}

	// Second start: same data, same secret, so the same token still works.
	addr, _, _, stop = startRun(t, env)
	tasks := send(t, http.DefaultClient, "GET", "http://"+addr+"/api/me/tasks", tok, nil, "").tasks(t)
	if len(tasks) != 1 || tasks[0].Title != "survives a restart" {
		t.Errorf("after a restart: %+v, want the one task \"survives a restart\"", tasks)
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
				t.Errorf("%s: %v, want no error", tc.name, err)
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
		t.Errorf("JWKS mode from BETTER_AUTH_URL: %+v, want the JWKS URL, issuer and audience of https://auth.example.com and no shared secret", vc)
	}
}

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BETTER_AUTH_SECRET": string(testSecret)}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"taskapi", "token", "-sub", "zed", "-email", "zed@example.com", "-ttl", "2m"},
		func(k string) string { return env[k] }, &out, &errOut)
	if err != nil {
		t.Fatalf("taskapi token: %v (%s), want no error", err, errOut.String())
	}
	v := NewVerifier(VerifierConfig{Secret: testSecret}, slog.New(slog.DiscardHandler))
	u, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
	if err != nil || u.ID != "zed" || u.Email != "zed@example.com" {
		t.Errorf("token verifies as %+v, %v; want zed <zed@example.com>", u, err)
	}
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseWithClaims(strings.TrimSpace(out.String()), &claims, func(*jwt.Token) (any, error) { return testSecret, nil })
	if ttl := time.Until(claims.ExpiresAt.Time); ttl > 2*time.Minute || ttl < time.Minute {
		t.Errorf("token lives %v, want about 2m", ttl)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"taskapi", "version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "taskapi " + buildVersion() + "\n"
	if out.String() != want || buildVersion() == "" {
		t.Errorf("taskapi version printed %q, want %q", out.String(), want)
	}
	rec := httptest.NewRecorder()
	handleHealthz(buildVersion()).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["status"] != "ok" || body["version"] != buildVersion() {
		t.Errorf("/healthz = %s, want status ok and version %s", rec.Body, buildVersion())
	}
}

// TestRunStopsWhatItStarted checks that run, when it fails after it has
// started its background work (here its port is taken), leaves none of
// that work running. It is not parallel: it counts the process's
// goroutines.
func TestRunStopsWhatItStarted(t *testing.T) {
	_, url := newTestDB(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// In a test binary package main's functions go by the module's path:
	// the name comes from the function itself.
	sweepFunc := runtime.FuncForPC(reflect.ValueOf(sweep).Pointer()).Name() + "("
	sweeps := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), sweepFunc)
	}
	before := sweeps()
	env := map[string]string{"DATABASE_URL": url, "DATABASE_LISTEN_URL": testListenURL(url), "BETTER_AUTH_SECRET": string(testSecret),
		"HOST": "127.0.0.1", "PORT": strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)}
	err = run(context.Background(), []string{"taskapi"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("run on a port in use returned no error, want one")
	}
	for deadline := time.Now().Add(10 * time.Second); sweeps() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sweeps still run 10 s after run returned %q, want none of its own", sweeps()-before, err)
		}
	}
}

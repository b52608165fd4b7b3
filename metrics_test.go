package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeMetrics reads /metrics at url and returns each sample's value by
// its series ("name{labels}"), failing the test if the text is not well
// formed: every sample belongs to a family whose TYPE came before it, no
// series appears twice, and histogram buckets only grow.
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET %s: %d %q, want 200 text/plain; version=0.0.4", url, res.StatusCode, res.Header.Get("Content-Type"))
	}
	series := map[string]float64{}
	types := map[string]string{}
	lastBucket := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		key, value := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("bad value in %q", line)
		}
		name, _, _ := strings.Cut(key, "{")
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && types[base] == "histogram" {
				family = base
			}
		}
		if types[family] == "" {
			t.Errorf("%q: no TYPE for %s before it", line, family)
		}
		if _, dup := series[key]; dup {
			t.Errorf("series %s twice", key)
		}
		series[key] = v
		if strings.HasSuffix(name, "_bucket") {
			group, _, _ := strings.Cut(key, `le="`)
			if v < lastBucket[group] {
				t.Errorf("%s: %v, below the bucket before it (%v)", key, v, lastBucket[group])
			}
			lastBucket[group] = v
		}
	}
	return series
}

// metricsAddr returns the address a run's log says /metrics is served on.
func metricsAddr(log *syncBuffer) string {
	for _, line := range strings.Split(log.String(), "\n") {
		var entry struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "serving metrics" {
			return entry.Addr
		}
	}
	return ""
}

// TestMetricsThroughRun runs the program with METRICS_ADDR and checks what
// /metrics says of requests and streams sent to the public port: counted by
// route pattern and status, never by what the request said, and served
// only on the metrics address.
func TestMetricsThroughRun(t *testing.T) {
	t.Parallel()
	_, url := newTestDB(t)
	addr, stdout, _, _ := startRun(t, map[string]string{
		"DATABASE_URL": url, "BETTER_AUTH_SECRET": string(testSecret), "PORT": "0", "HOST": "127.0.0.1",
		"METRICS_ADDR": "127.0.0.1:0",
	})
	metricsURL := "http://" + metricsAddr(stdout) + "/metrics"
	base := "http://" + addr
	tok := mintTestToken(t, "watched")

	if res := send(t, http.DefaultClient, "GET", base+"/metrics", "", nil, ""); res.Status != 404 {
		t.Errorf("GET /metrics on the public port: %d, want 404", res.Status)
	}
	// Paths an attacker chooses: none of them may become a label.
	secret := strings.ToLower(rand.Text())
	for range 2 {
		if res := send(t, http.DefaultClient, "GET", base+"/api/me/tasks/"+newUUID(), tok, nil, ""); res.Status != 404 {
			t.Fatalf("get of no task: %d, want 404", res.Status)
		}
	}
	if res := send(t, http.DefaultClient, "GET", base+"/"+secret, tok, map[string]string{"X-Request-ID": secret}, ""); res.Status != 404 {
		t.Fatalf("GET /%s: %d, want 404", secret, res.Status)
	}
	stream := openStream(t, base, "/api/me/events", tok, nil)
	if res := send(t, http.DefaultClient, "POST", base+"/api/me/tasks", tok, nil, `{"title":"`+secret+`"}`); res.Status != 201 {
		t.Fatalf("create: %d, want 201", res.Status)
	}
	if ev := stream.next(); ev.Event != "task.created" {
		t.Fatalf("event %+v, want task.created", ev)
	}
	var m map[string]float64
	waitFor(t, func() bool {
		m = scrapeMetrics(t, metricsURL)
		return m[`taskapi_http_requests_total{route="POST /api/{user_id}/tasks",status="201"}`] == 1 &&
			m["taskapi_events_sent_total"] == 1 && m["taskapi_event_streams_open"] == 1
	})
	stream.close()
	waitFor(t, func() bool {
		m = scrapeMetrics(t, metricsURL)
		// The listener comes up in the background, after the instance
		// serves.
		return m[`taskapi_event_streams_ended_total{reason="client"}`] == 1 && m["taskapi_event_streams_open"] == 0 &&
			m["taskapi_events_listener_up"] == 1
	})

	for series, want := range map[string]float64{
		`taskapi_http_requests_total{route="GET /api/{user_id}/tasks/{id}",status="404"}`:            2,
		`taskapi_http_requests_total{route="unmatched",status="404"}`:                                2, // and /metrics
		`taskapi_http_requests_total{route="GET /api/{user_id}/events",status="200"}`:                1,
		`taskapi_http_request_duration_seconds_count{route="GET /api/{user_id}/tasks/{id}"}`:         2,
		`taskapi_http_request_duration_seconds_bucket{route="POST /api/{user_id}/tasks",le="+Inf"}`:  1,
		`taskapi_db_pool_max_connections`:                                                            float64(localPoolSize),
		`taskapi_events_listener_up`:                                                                 1,
		`taskapi_refused_requests_total{kind="rate"}`:                                                0,
		`taskapi_db_statement_timeouts_total{by="server"}`:                                           0,
		`taskapi_build_info{version="` + buildVersion() + `",goversion="` + runtime.Version() + `"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"go_goroutines", "go_heap_objects_bytes", "go_gc_cycles_total", "taskapi_db_pool_idle_connections",
		"taskapi_db_pool_wait_seconds_total", `taskapi_event_wake_lag_seconds_count`} {
		if _, ok := m[series]; !ok {
			t.Errorf("no %s in /metrics", series)
		}
	}
	if m["go_goroutines"] < 1 {
		t.Errorf("go_goroutines = %v, want at least 1", m["go_goroutines"])
	}
	for series := range m {
		if strings.Contains(series, secret) || strings.Contains(series, "watched") {
			t.Errorf("series %s holds a value from a request", series)
		}
	}
}

// TestMetricsRefusalsAndTimeouts checks the counters of requests refused
// over a user's rate and of statements that ran into the time limit.
func TestMetricsRefusalsAndTimeouts(t *testing.T) {
	t.Parallel()
	if testPooler {
		// PgBouncer refuses statement_timeout at start-up, so the store's
		// own deadline ends the statement, with a cancel request that
		// PgBouncer before 1.21 can exit on (see
		// TestStoreTimeoutBoundsEveryStatement).
		t.Skip("PgBouncer before 1.21 can exit on the cancel request this test causes")
	}
	db, url := newTestDB(t, func(c *dbConfig) { c.StatementTimeout = 200 * time.Millisecond })
	store := NewStore(db, 5*time.Second, testTaskQuota)
	g := guards{rate: newRateLimiter(0.001, 1), requests: &requestMetrics{}}
	srv := httptest.NewServer(newServer(testLogger(), "test", store, NewVerifier(VerifierConfig{Secret: testSecret}, testLogger()),
		g, newCursorCodec([]byte("k")), nil, nil))
	t.Cleanup(srv.Close)
	src := &metricsSource{version: "test", pool: db, store: store, guards: g, started: time.Now()}
	metrics := httptest.NewServer(handleMetrics(src, testLogger()))
	t.Cleanup(metrics.Close)

	tok := mintTestToken(t, "hasty")
	for i, want := range []int{200, 429} {
		if res := send(t, http.DefaultClient, "GET", srv.URL+"/api/me/tasks", tok, nil, ""); res.Status != want {
			t.Fatalf("list %d: %d, want %d", i+1, res.Status, want)
		}
	}

	u := User{ID: "locked out"}
	task, err := store.CreateTask(context.Background(), u, NewTask{Title: "locked", Priority: "low"})
	if err != nil {
		t.Fatal(err)
	}
	other, lock := lockTask(t, url, task.ID)
	done := make(chan error, 1)
	go func() {
		title := "renamed"
		_, err := store.UpdateTask(context.Background(), u, task.ID, TaskPatch{Title: &title}, nil)
		done <- err
	}()
	waitForBlocked(t, other, lock)
	if err := <-done; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("update of a locked task past the statement timeout: %v, want ErrUnavailable", err)
	}

	var m map[string]float64
	waitFor(t, func() bool {
		m = scrapeMetrics(t, metrics.URL)
		return m[`taskapi_http_requests_total{route="GET /api/{user_id}/tasks",status="429"}`] == 1
	})
	for series, want := range map[string]float64{
		`taskapi_refused_requests_total{kind="rate"}`:        1,
		`taskapi_refused_requests_total{kind="concurrency"}`: 0,
		`taskapi_db_statement_timeouts_total{by="server"}`:   1,
		`taskapi_db_statement_timeouts_total{by="client"}`:   0,
	} {
		if got := m[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if _, ok := m["taskapi_events_listener_up"]; ok {
		t.Error("taskapi_events_listener_up reported without live updates")
	}
}

// BenchmarkRequestMetrics is what counting a request costs each request,
// with every core counting the same route: it should stay far below the
// microseconds a request takes (BenchmarkRoutesParallel).
func BenchmarkRequestMetrics(b *testing.B) {
	m := &requestMetrics{}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.observe("GET /api/{user_id}/tasks/{id}", 200, 300*time.Microsecond)
		}
	})
}

// This file serves the numbers a team watches a fleet by: GET /metrics in
// the Prometheus text format (version 0.0.4), on an address of its own
// (METRICS_ADDR, off by default), never the public port. Most of what it
// reports is read when it is scraped: the pool's statistics, the hub's
// streams, the limiters' refusals, the Go runtime. What nothing else keeps,
// it counts itself: requests by route pattern and status, their latency,
// statements that hit the time limit, and the event streams' events, ends
// and wake-up lag. Every label value comes from a fixed set (the route
// table's patterns, HTTP status codes, the names below), never from the
// request, so that no client can grow the number of series.

package main

import (
	"bufio"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBuckets are the upper bounds, in seconds, of the request latency
// histogram: from a cached get (well under a millisecond) to a statement
// at the default 5 s time limit.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// lagBuckets are the upper bounds, in seconds, of the wake-up lag
// histogram: a notification normally wakes a stream within milliseconds.
var lagBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts observations into fixed buckets. It is safe for
// concurrent use and takes no lock.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64 // one per bound, and one for +Inf
	sumNS  atomic.Int64
}

// newHistogram returns an empty histogram of the given upper bounds, which
// must be sorted.
func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// observe counts one observation of d.
func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(h.bounds, s) // the first bound >= s
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// routeStatus is the key of the request counter.
type routeStatus struct {
	route  string
	status int
}

// requestMetrics counts requests by route pattern and status, and their
// latency by route pattern. A nil *requestMetrics counts nothing.
type requestMetrics struct {
	counts  sync.Map // routeStatus -> *atomic.Uint64
	latency sync.Map // route -> *histogram
}

// observe counts one answered request. route is r.Pattern, from the route
// table; "" (no route matched, or the request was refused before routing,
// such as a query string over maxQueryBytes) is counted as "unmatched". An
// event stream is counted, with its latency, when it is taken over from
// net/http, at its start. It costs about 140 ns and no allocation
// (BenchmarkRequestMetrics).
func (m *requestMetrics) observe(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	key := routeStatus{route, status}
	c, ok := m.counts.Load(key)
	if !ok {
		c, _ = m.counts.LoadOrStore(key, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
	h, ok := m.latency.Load(route)
	if !ok {
		h, _ = m.latency.LoadOrStore(route, newHistogram(latencyBuckets))
	}
	h.(*histogram).observe(d)
}

// streamEnd is why an event stream ended: a label of
// taskapi_event_streams_ended_total.
type streamEnd int

// The reasons a stream ends.
const (
	endClient   streamEnd = iota // the client left, or a write to it failed
	endShutdown                  // the instance shut down
	endExpired                   // the token or ticket expired
	endReload                    // the stream fell behind or resumed too far back, and was told to reload
	endAccount                   // the account was deleted
	endError                     // the database failed a read
	streamEnds
)

// streamEndNames are the reason labels, by streamEnd.
var streamEndNames = [streamEnds]string{"client", "shutdown", "expired", "reload", "account_deleted", "error"}

// streamMetrics counts what the event streams of an instance did. The hub
// holds one; its zero value is ready.
type streamMetrics struct {
	sent  atomic.Uint64             // events sent
	ended [streamEnds]atomic.Uint64 // streams ended, by reason
	lag   *histogram                // the age of the newest change a wake-up read
	once  sync.Once
}

// observeLag counts the age of the newest change a woken stream read, when
// the change says when it was made (task events carry the task's
// updated_at, set by the writing statement).
func (s *streamMetrics) observeLag(changes []Change) {
	if len(changes) == 0 {
		return
	}
	at := changes[len(changes)-1].Task.UpdatedAt
	if at.IsZero() {
		return
	}
	s.lagHistogram().observe(max(time.Since(at), 0))
}

// lagHistogram returns the wake-up lag histogram, made on first use so
// that the zero streamMetrics is ready.
func (s *streamMetrics) lagHistogram() *histogram {
	s.once.Do(func() { s.lag = newHistogram(lagBuckets) })
	return s.lag
}

// metricsSource is everything /metrics reads.
type metricsSource struct {
	version string
	pool    *sql.DB
	store   *Store
	live    *eventHub // nil: live updates off
	guards  guards    // with the request counters
	started time.Time
}

// runtimeSamples are the Go runtime metrics reported, by name in
// runtime/metrics, with the name and help of each in /metrics.
var runtimeSamples = []struct{ name, metric, kind, help string }{
	{"/sched/goroutines:goroutines", "go_goroutines", "gauge", "Goroutines that exist now."},
	{"/memory/classes/heap/objects:bytes", "go_heap_objects_bytes", "gauge", "Memory held by live and not yet swept heap objects."},
	{"/memory/classes/total:bytes", "go_memory_total_bytes", "gauge", "All memory mapped by the Go runtime."},
	{"/gc/cycles/total:gc-cycles", "go_gc_cycles_total", "counter", "Completed garbage collection cycles."},
	{"/cpu/classes/gc/total:cpu-seconds", "go_gc_cpu_seconds_total", "counter", "CPU time spent collecting garbage (an estimate by the runtime)."},
}

// writeMetrics writes every metric in the Prometheus text format.
func (src *metricsSource) writeMetrics(out io.Writer) error {
	w := &metricsWriter{w: bufio.NewWriter(out)}

	w.family("taskapi_build_info", "gauge", "Always 1; the labels say which build runs.")
	w.sample("taskapi_build_info", labels("version", src.version, "goversion", runtime.Version()), 1)
	w.family("process_start_time_seconds", "gauge", "When this instance began to serve, in seconds since the Unix epoch.")
	w.sample("process_start_time_seconds", "", float64(src.started.UnixNano())/1e9)

	w.family("taskapi_http_requests_total", "counter", "Answered requests, by route pattern and status.")
	type count struct {
		key routeStatus
		n   uint64
	}
	var counts []count
	src.guards.requests.counts.Range(func(k, v any) bool {
		counts = append(counts, count{k.(routeStatus), v.(*atomic.Uint64).Load()})
		return true
	})
	slices.SortFunc(counts, func(a, b count) int {
		return cmpRouteStatus(a.key, b.key)
	})
	for _, c := range counts {
		w.sample("taskapi_http_requests_total", labels("route", c.key.route, "status", strconv.Itoa(c.key.status)), float64(c.n))
	}
	w.family("taskapi_http_request_duration_seconds", "histogram", "Time from a request's arrival to its answer, by route pattern.")
	var routes []string
	src.guards.requests.latency.Range(func(k, _ any) bool {
		routes = append(routes, k.(string))
		return true
	})
	slices.Sort(routes)
	for _, route := range routes {
		h, _ := src.guards.requests.latency.Load(route)
		w.histogram("taskapi_http_request_duration_seconds", "route", route, h.(*histogram))
	}

	st := src.pool.Stats()
	w.gauge("taskapi_db_pool_max_connections", "The most connections the pool may open (DB_MAX_CONNS).", float64(st.MaxOpenConnections))
	w.gauge("taskapi_db_pool_in_use_connections", "Pooled connections running a statement now.", float64(st.InUse))
	w.gauge("taskapi_db_pool_idle_connections", "Pooled connections open and idle now.", float64(st.Idle))
	w.counter("taskapi_db_pool_waits_total", "Times a call waited for a pooled connection.", float64(st.WaitCount))
	w.counter("taskapi_db_pool_wait_seconds_total", "Time calls spent waiting for a pooled connection.", st.WaitDuration.Seconds())
	w.family("taskapi_db_statement_timeouts_total", "counter",
		"Store calls that hit the time limit: by the server's statement_timeout, or by the store's deadline when the server did not answer.")
	w.sample("taskapi_db_statement_timeouts_total", labels("by", "server"), float64(src.store.db.timeouts.server.Load()))
	w.sample("taskapi_db_statement_timeouts_total", labels("by", "client"), float64(src.store.db.timeouts.client.Load()))

	w.family("taskapi_refused_requests_total", "counter",
		"Requests refused with 429, by kind: over the user's rate, over the user's concurrency, "+
			"from a client address with too many failed sign-ins, or streams over a stream limit.")
	refused := []struct {
		kind string
		n    uint64
	}{{"rate", 0}, {"concurrency", 0}, {"failed_auth", 0}, {"streams", 0}}
	if g := src.guards; g.rate != nil {
		refused[0].n = g.rate.refused.Load()
	}
	if g := src.guards; g.concurrency != nil {
		refused[1].n = g.concurrency.refused.Load()
	}
	if g := src.guards; g.failedAuth != nil {
		refused[2].n = g.failedAuth.refused.Load()
	}
	if src.live != nil {
		refused[3].n = src.live.refused.Load()
	}
	for _, r := range refused {
		w.sample("taskapi_refused_requests_total", labels("kind", r.kind), float64(r.n))
	}

	if live := src.live; live != nil {
		up := 0.0
		if live.listening.Load() {
			up = 1
		}
		w.gauge("taskapi_events_listener_up", "1 while the LISTEN connection that hears of other instances' changes is up; while it is 0, streams hear of them from the poll alone.", up)
		w.counter("taskapi_events_polls_total", "Polls of the history for the users with streams here: one statement each.", float64(live.polls.Load()))
		w.gauge("taskapi_event_streams_open", "Event streams open on this instance.", float64(live.count("")))
		w.counter("taskapi_events_sent_total", "Changes sent on event streams.", float64(live.stats.sent.Load()))
		w.family("taskapi_event_streams_ended_total", "counter", "Event streams ended, by reason.")
		for i, name := range streamEndNames {
			w.sample("taskapi_event_streams_ended_total", labels("reason", name), float64(live.stats.ended[i].Load()))
		}
		w.family("taskapi_event_wake_lag_seconds", "histogram",
			"The age of the newest change a woken stream read: from the writing statement to the stream's read of it.")
		w.histogram("taskapi_event_wake_lag_seconds", "", "", live.stats.lagHistogram())
	}

	samples := make([]metrics.Sample, len(runtimeSamples))
	for i, s := range runtimeSamples {
		samples[i].Name = s.name
	}
	metrics.Read(samples)
	for i, s := range runtimeSamples {
		v := 0.0
		switch samples[i].Value.Kind() {
		case metrics.KindUint64:
			v = float64(samples[i].Value.Uint64())
		case metrics.KindFloat64:
			v = samples[i].Value.Float64()
		}
		w.family(s.metric, s.kind, s.help)
		w.sample(s.metric, "", v)
	}
	return w.flush()
}

// cmpRouteStatus orders the request counter's series.
func cmpRouteStatus(a, b routeStatus) int {
	if c := strings.Compare(a.route, b.route); c != 0 {
		return c
	}
	return a.status - b.status
}

// metricsWriter writes the text format; the first write error sticks.
type metricsWriter struct {
	w   *bufio.Writer
	err error
}

// printf writes unless a write failed before.
func (w *metricsWriter) printf(format string, args ...any) {
	if w.err == nil {
		_, w.err = fmt.Fprintf(w.w, format, args...)
	}
}

// flush writes what is buffered, and returns the first write error.
func (w *metricsWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}

// family writes a metric's HELP and TYPE lines.
func (w *metricsWriter) family(name, kind, help string) {
	w.printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

// sample writes one sample; lbls is "" or made by labels.
func (w *metricsWriter) sample(name, lbls string, v float64) {
	w.printf("%s%s %s\n", name, lbls, strconv.FormatFloat(v, 'g', -1, 64))
}

// gauge writes a gauge family of one sample without labels.
func (w *metricsWriter) gauge(name, help string, v float64) {
	w.family(name, "gauge", help)
	w.sample(name, "", v)
}

// counter writes a counter family of one sample without labels.
func (w *metricsWriter) counter(name, help string, v float64) {
	w.family(name, "counter", help)
	w.sample(name, "", v)
}

// histogram writes h's cumulative buckets, sum and count, with the label
// name=value unless name is "".
func (w *metricsWriter) histogram(metric, name, value string, h *histogram) {
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		le := "+Inf"
		if i < len(h.bounds) {
			le = strconv.FormatFloat(h.bounds[i], 'g', -1, 64)
		}
		if name == "" {
			w.sample(metric+"_bucket", labels("le", le), float64(cum))
		} else {
			w.sample(metric+"_bucket", labels(name, value, "le", le), float64(cum))
		}
	}
	lbls := ""
	if name != "" {
		lbls = labels(name, value)
	}
	w.sample(metric+"_sum", lbls, float64(h.sumNS.Load())/1e9)
	w.sample(metric+"_count", lbls, float64(cum))
}

// labelEscaper escapes a label value as the text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labels formats name, value pairs as {name="value",...}.
func labels(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		labelEscaper.WriteString(&b, pairs[i+1])
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// handleMetrics answers GET /metrics.
func handleMetrics(src *metricsSource, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := src.writeMetrics(w); err != nil {
			logger.Debug("metrics: write", "err", err) // the scraper left
		}
	})
}

// serveMetrics serves /metrics at addr until stop is called. It fails at
// once when addr cannot be listened on, so that a wrong METRICS_ADDR stops
// the boot rather than the dashboard.
func serveMetrics(addr string, src *metricsSource, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", handleMetrics(src, logger))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       65 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go srv.Serve(ln)
	logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	return func() { srv.Close() }, nil
}

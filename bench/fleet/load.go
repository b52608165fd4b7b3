package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func signalNotify(ch chan os.Signal) { signal.Notify(ch, os.Interrupt, syscall.SIGTERM) }

// waitTCP waits until something listens on the port.
func waitTCP(port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %v", port, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// token returns an HS256 token for user, valid for two hours.
func token(secret, user string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := time.Now().Unix()
	claims := enc.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"iat":%d,"exp":%d}`, user, now, now+7200))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(header + "." + claims))
	return header + "." + claims + "." + enc.EncodeToString(m.Sum(nil))
}

// phase is what the clients saw during one part of the run.
type phase struct {
	name     string
	allow503 bool // the database is down on purpose: a 503 is the right answer
	killing  bool // an instance is killed: a 502 or a dropped connection is a request in flight on it

	mu                    sync.Mutex
	answers               map[string]int // "op status" -> count
	failures              map[string]int // answers a client should not get
	examples              []string
	ok, unavailable, lost int
	slowest503            time.Duration // how long the slowest 503 took
}

// answered503 notes how long a 503 took to come.
func (p *phase) answered503(d time.Duration) {
	p.mu.Lock()
	p.slowest503 = max(p.slowest503, d)
	p.mu.Unlock()
}

func newPhase(name string, allow503 bool) *phase {
	return &phase{name: name, allow503: allow503, answers: map[string]int{}, failures: map[string]int{}}
}

// record counts one answer: status 0 is a transport error err.
func (p *phase) record(op string, status int, want []int, err error, body string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := op + " " + strconv.Itoa(status)
	if status == 0 {
		key = op + " error"
	}
	p.answers[key]++
	switch {
	case slices.Contains(want, status):
		p.ok++
	case status == 503 && p.allow503:
		p.unavailable++
	case (status == 502 || status == 0) && p.killing:
		p.lost++
	default:
		p.failures[key]++
		if len(p.examples) < 5 {
			detail := body
			if err != nil {
				detail = err.Error()
			}
			p.examples = append(p.examples, fmt.Sprintf("%s: %.200s", key, detail))
		}
	}
}

func (p *phase) failed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.failures {
		n += c
	}
	return n
}

func (p *phase) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.failures {
		n += c
	}
	s := fmt.Sprintf("%-24s %6d answers as expected, %5d 503 (database down), %3d lost in flight on a killed instance, %3d failed",
		p.name+":", p.ok, p.unavailable, p.lost, n)
	if p.unavailable > 0 {
		s += fmt.Sprintf("; the slowest 503 took %v", p.slowest503.Round(time.Millisecond))
	}
	if n > 0 {
		s += fmt.Sprintf(" %v; e.g. %q", p.failures, p.examples)
	}
	return s
}

// loadUser is one user of the mixed load, with what they know of their
// tasks, and what the database must hold at the end.
type loadUser struct {
	id, tok string
	tasks   map[string]int64 // id -> version, of tasks whose state is known

	mu        sync.Mutex
	created   []string        // acknowledged creates
	deleted   map[string]bool // acknowledged deletes
	uncertain map[string]bool // writes whose outcome the client never learned
}

// load is the mixed load through the proxy, and the event streams.
type load struct {
	f       *fleet
	base    string
	client  *http.Client
	sent    atomic.Int64 // requests sent through the proxy, streams included
	current atomic.Pointer[phase]
	users   []*loadUser
	streams []*eventStream
}

func newClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 256, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// do sends one request through the proxy and returns its status and body.
func (l *load) do(method, path, tok string, headers map[string]string, body string) (int, http.Header, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, l.base+path, r)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	l.sent.Add(1)
	t0 := time.Now()
	res, err := l.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	if p := l.current.Load(); p != nil && res.StatusCode == 503 {
		p.answered503(time.Since(t0))
	}
	return res.StatusCode, res.Header, b, nil
}

// step makes one request of the mix for u: list 30%, get 20%, create 20%
// (half with an Idempotency-Key), update 10% and delete 10% with If-Match,
// toggle 10% (half with If-Match).
func (l *load) step(u *loadUser) {
	p := l.current.Load()
	var id string
	var version int64
	for id, version = range u.tasks {
		break
	}
	op := mrand.IntN(100)
	switch {
	case id == "" && op >= 30:
		op = 60 // nothing to get or change: create
	case len(u.tasks) > 40 && op >= 30 && op < 90:
		op = 95 // enough tasks: delete
	}
	ifMatch := map[string]string{"If-Match": `"` + strconv.FormatInt(version, 10) + `"`}
	switch {
	case op < 30:
		status, _, body, err := l.do("GET", "/api/me/tasks?limit=20", u.tok, nil, "")
		p.record("list", status, []int{200}, err, string(body))
	case op < 50:
		status, _, body, err := l.do("GET", "/api/me/tasks/"+id, u.tok, nil, "")
		p.record("get", status, []int{200}, err, string(body))
	case op < 70:
		var headers map[string]string
		if op%2 == 0 {
			headers = map[string]string{"Idempotency-Key": rand.Text()}
		}
		status, _, body, err := l.do("POST", "/api/me/tasks", u.tok, headers, `{"title":"fleet","priority":"medium","tags":["load"]}`)
		p.record("create", status, []int{201}, err, string(body))
		var t struct {
			ID      string
			Version int64
		}
		if status == 201 && json.Unmarshal(body, &t) == nil {
			u.tasks[t.ID] = t.Version
			u.mu.Lock()
			u.created = append(u.created, t.ID)
			u.mu.Unlock()
		}
	case op < 80, op < 90:
		path, body, name := "/api/me/tasks/"+id, `{"title":"fleet, renamed"}`, "update"
		headers := ifMatch
		if op >= 80 {
			path, body, name = path+"/complete", "", "toggle"
			if op%2 == 0 {
				headers = nil
			}
		}
		status, _, resBody, err := l.do("PATCH", path, u.tok, headers, body)
		p.record(name, status, []int{200}, err, string(resBody))
		var t struct{ Version int64 }
		if status == 200 && json.Unmarshal(resBody, &t) == nil {
			u.tasks[id] = t.Version
		} else {
			l.forget(u, id)
		}
	default:
		status, _, body, err := l.do("DELETE", "/api/me/tasks/"+id, u.tok, ifMatch, "")
		p.record("delete", status, []int{204}, err, string(body))
		u.mu.Lock()
		if status == 204 {
			u.deleted[id] = true
		} else {
			u.uncertain[id] = true
		}
		u.mu.Unlock()
		delete(u.tasks, id)
	}
}

// forget stops using a task whose state the client no longer knows.
func (l *load) forget(u *loadUser, id string) {
	delete(u.tasks, id)
	u.mu.Lock()
	u.uncertain[id] = true
	u.mu.Unlock()
}

// runMixed runs the mixed load at rate requests a second until ctx ends:
// each user makes one request at a time, paced.
func (l *load) runMixed(ctx context.Context, rate int) *sync.WaitGroup {
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) * float64(len(l.users)) / float64(rate))
	for i, u := range l.users {
		wg.Go(func() {
			// Spread the users' first requests over one interval.
			next := time.Now().Add(interval * time.Duration(i) / time.Duration(len(l.users)))
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(next)):
				}
				l.step(u)
				next = next.Add(interval)
				if d := time.Until(next); d < -interval {
					next = time.Now() // behind: do not burst to catch up
				}
			}
		})
	}
	return &wg
}

// eventStream is one client's event stream, reconnecting through the proxy
// with Last-Event-ID, as an EventSource does.
type eventStream struct {
	user  *loadUser
	mu    sync.Mutex
	ids   []int64  // every event id received, across reconnects
	tasks []string // the task id (or ids) of each event
	bad   []string
	reconnects,
	refused int // connections answered other than 200
	open atomic.Bool
}

func (s *eventStream) last() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 {
		return 0
	}
	return s.ids[len(s.ids)-1]
}

// follow keeps the stream open until ctx ends. It starts from position 0
// (the user is new, so that is their whole history), and resumes after the
// last event it received.
func (l *load) follow(ctx context.Context, s *eventStream, client *http.Client) {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", l.base+"/api/me/events", nil)
		req.Header.Set("Authorization", "Bearer "+s.user.tok)
		req.Header.Set("Last-Event-ID", strconv.FormatInt(s.last(), 10))
		l.sent.Add(1)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			if err == nil {
				res.Body.Close()
			}
			s.mu.Lock()
			s.refused++
			s.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(200+mrand.IntN(300)) * time.Millisecond):
			}
			continue
		}
		s.open.Store(true)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		var id int64
		var event, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				event = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			case line == "" && event != "":
				var d struct {
					ID  string
					IDs []string
				}
				json.Unmarshal([]byte(data), &d)
				s.mu.Lock()
				if event == "reload" || id == 0 {
					s.bad = append(s.bad, fmt.Sprintf("event %q id %d", event, id))
				} else {
					s.ids = append(s.ids, id)
					s.tasks = append(s.tasks, d.ID+strings.Join(d.IDs, " "))
				}
				s.mu.Unlock()
				id, event, data = 0, "", ""
			}
		}
		res.Body.Close()
		s.open.Store(false)
		s.mu.Lock()
		s.reconnects++
		s.mu.Unlock()
	}
}

// openCount returns how many streams are open now.
func (l *load) openCount() int {
	n := 0
	for _, s := range l.streams {
		if s.open.Load() {
			n++
		}
	}
	return n
}

// exercise is the run itself, once every process is up.
func (f *fleet) exercise(ctx context.Context) error {
	var problems []string
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		problems = append(problems, msg)
		logf("PROBLEM: %s", msg)
	}
	proxy := fmt.Sprintf("http://127.0.0.1:%d", f.proxyPort)
	run := rand.Text()[:6]

	// 1. Throughput behind one instance and behind three.
	one, three := []tput{}, []tput{}
	for range 2 {
		one = append(one, f.throughput(fmt.Sprintf("http://127.0.0.1:%d", f.proxyOnePort), "tput-"+run))
		three = append(three, f.throughput(proxy, "tput-"+run))
	}
	bestOne, bestThree := slices.MaxFunc(one, tput.cmp), slices.MaxFunc(three, tput.cmp)
	logf("throughput, %d closed-loop clients, mix 50%% get 30%% list 20%% create, all processes on %d cores:", f.o.tputWorkers, runtime.NumCPU())
	logf("  behind 1 instance:  %v", one)
	logf("  behind 3 instances: %v", three)
	logf("  ratio 3/1 (best runs): %.2f", bestThree.rps/bestOne.rps)

	// 2. A write on instance 1 reaching a stream on instance 2.
	f.eventLatency(ctx, "lat-"+run)

	// 3. The mixed load and the streams through the proxy.
	l := &load{f: f, base: proxy, client: newClient()}
	for i := range f.o.users {
		id := fmt.Sprintf("fleet-%s-%d", run, i)
		l.users = append(l.users, &loadUser{id: id, tok: token(f.secret, id), tasks: map[string]int64{},
			deleted: map[string]bool{}, uncertain: map[string]bool{}})
	}
	streamCtx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	streamClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}
	var streamsDone sync.WaitGroup
	for i := range f.o.streams {
		s := &eventStream{user: l.users[i%len(l.users)]}
		l.streams = append(l.streams, s)
		streamsDone.Go(func() { l.follow(streamCtx, s, streamClient) })
		if i%100 == 99 {
			time.Sleep(50 * time.Millisecond) // a few hundred handshakes at a time
		}
	}
	if err := waitUntil(30*time.Second, func() bool { return l.openCount() == len(l.streams) }); err != nil {
		fail("only %d of %d streams open after 30 s", l.openCount(), len(l.streams))
	}
	sleep(ctx, 1500*time.Millisecond) // a scrape
	logf("%d event streams open through HAProxy for %d users; per instance: %s", l.openCount(), len(l.users), f.promValues("taskapi_event_streams_open"))

	phases := []*phase{}
	begin := func(name string, allow503 bool) *phase {
		p := newPhase(name, allow503)
		p.killing = strings.HasPrefix(name, "SIGKILL")
		l.current.Store(p)
		phases = append(phases, p)
		return p
	}
	begin("steady", false)
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := l.runMixed(loadCtx, f.o.rate)
	sleep(ctx, f.o.settle)

	// 4. Rolling restart: SIGINT, start again, wait until ready, the next.
	p := begin("rolling restart", false)
	for i := range 3 {
		t0 := time.Now()
		if err := stopProcess(f.instances[i], syscall.SIGINT, 30*time.Second); err != nil {
			fail("%v", err)
		}
		if err := f.startInstance(i); err != nil {
			return err
		}
		if err := f.waitReady(i, 30*time.Second); err != nil {
			return err
		}
		logf("instance %d restarted and ready in %v", i+1, time.Since(t0).Round(time.Millisecond))
		sleep(ctx, proxyRise) // before the next goes down
	}
	sleep(ctx, f.o.settle)
	logf("%v", p)

	// 5. SIGKILL of one instance: only what was in flight on it fails.
	p = begin("SIGKILL of instance 2", false)
	t0 := time.Now()
	stopProcess(f.instances[1], syscall.SIGKILL, 5*time.Second)
	sleep(ctx, f.o.settle)
	if err := f.startInstance(1); err != nil {
		return err
	}
	if err := f.waitReady(1, 30*time.Second); err != nil {
		return err
	}
	logf("instance 2 started again, ready %v after the kill", time.Since(t0).Round(time.Millisecond))
	sleep(ctx, f.o.settle)
	logf("%v", p)

	// 6. PostgreSQL down for 5 s.
	p = begin("PostgreSQL down 5 s", true)
	t0 = time.Now()
	if err := f.stopPostgres(); err != nil {
		fail("stop PostgreSQL: %v", err)
	}
	sleep(ctx, 5*time.Second)
	if err := f.startPostgres(false); err != nil {
		return err
	}
	for i := range 3 {
		if err := f.waitReady(i, 60*time.Second); err != nil {
			return err
		}
	}
	logf("PostgreSQL back, every instance ready again %v after the stop", time.Since(t0).Round(time.Millisecond))
	sleep(ctx, f.o.settle)
	logf("%v", p)

	// 7. PgBouncer restarted.
	p = begin("PgBouncer restart", true)
	t0 = time.Now()
	stopProcess(f.bouncer, syscall.SIGTERM, 10*time.Second)
	if err := f.startBouncer(); err != nil {
		return err
	}
	for i := range 3 {
		if err := f.waitReady(i, 60*time.Second); err != nil {
			return err
		}
	}
	logf("PgBouncer back, every instance ready again %v after the stop", time.Since(t0).Round(time.Millisecond))
	sleep(ctx, f.o.settle)
	logf("%v", p)

	// 8. Prometheus counted what the load sent: a window with no restarts.
	p = begin("counted by Prometheus", false)
	sleep(ctx, 2500*time.Millisecond) // two scrapes after the last restart
	stopLoad()
	loadDone.Wait()
	quiet := func() (float64, int64) {
		// No request is in flight: wait for a scrape that saw them all.
		sleep(ctx, 2500*time.Millisecond)
		return f.promSum(`sum(taskapi_http_requests_total{route!="GET /readyz"})`), l.sent.Load()
	}
	v0, c0 := quiet()
	loadCtx, stopLoad = context.WithCancel(ctx)
	loadDone = l.runMixed(loadCtx, f.o.rate)
	sleep(ctx, 2*f.o.settle)
	stopLoad()
	loadDone.Wait()
	v1, c1 := quiet()
	logf("Prometheus: sum of taskapi_http_requests_total over the instances grew by %.0f; the load tool sent %d requests (streams' included)", v1-v0, c1-c0)
	if int64(v1-v0) != c1-c0 {
		fail("Prometheus counted %.0f requests, the load tool sent %d", v1-v0, c1-c0)
	}
	logf("%v", p)

	// Every series there is now, through promtool.
	if err := f.promtool(); err != nil {
		fail("%v", err)
	}

	// What a dashboard shows of the run, from Prometheus.
	for _, q := range []struct{ what, query string }{
		{"request p99 over the last minute, s", `histogram_quantile(0.99, sum by (le) (rate(taskapi_http_request_duration_seconds_bucket[1m])))`},
		{"wake-up lag p99 over the run, s", `histogram_quantile(0.99, sum by (le) (increase(taskapi_event_wake_lag_seconds_bucket[5m])))`},
		{"waits for a pooled connection over the run", `sum(increase(taskapi_db_pool_waits_total[5m]))`},
		{"statement timeouts over the run", `sum(increase(taskapi_db_statement_timeouts_total[5m]))`},
		{"refusals over the run", `sum by (kind) (increase(taskapi_refused_requests_total[5m]))`},
		{"streams ended over the run", `sum by (reason) (increase(taskapi_event_streams_ended_total[5m]))`},
	} {
		logf("Prometheus, %s: %s", q.what, f.promResult(q.query))
	}

	// 9. Every stream caught up, and received its user's history whole:
	// what the history holds now, and the changes of deleted tasks, which
	// go from the history with the task (a stream that resumes after they
	// went never sees them).
	history, err := f.history("fleet-" + run + "-")
	if err != nil {
		return err
	}
	tasks, err := f.taskIDs("fleet-" + run + "-")
	if err != nil {
		return err
	}
	err = waitUntil(30*time.Second, func() bool {
		for _, s := range l.streams {
			h := history[s.user.id]
			if len(h) > 0 && s.last() != h[len(h)-1] {
				return false
			}
		}
		return true
	})
	if err != nil {
		fail("streams still behind their users' history 30 s after the load stopped")
	}
	stopStreams()
	streamsDone.Wait()
	events, reconnects, refused, wrong, erased := 0, 0, 0, 0, 0
	for _, s := range l.streams {
		events += len(s.ids)
		reconnects += s.reconnects
		refused += s.refused
		problem := ""
		if len(s.bad) > 0 {
			problem = fmt.Sprintf("odd events %v", s.bad)
		}
		if !slices.IsSorted(s.ids) || len(slices.Compact(slices.Clone(s.ids))) != len(s.ids) {
			problem = "events out of order or twice"
		}
		h := history[s.user.id]
		j := 0
		for i, id := range s.ids {
			if j < len(h) && h[j] == id {
				j++
				continue
			}
			// Not in the history: a change of a task deleted since.
			for _, task := range strings.Fields(s.tasks[i]) {
				if tasks[task] {
					problem = fmt.Sprintf("event %d (task %s) is in no history, and its task was not deleted", id, task)
				}
			}
			erased++
		}
		if j < len(h) {
			problem = fmt.Sprintf("missed %d of the %d changes in the history, the first %d", len(h)-j, len(h), h[j])
		}
		if problem != "" {
			wrong++
			if wrong <= 3 {
				fail("stream of %s, %d events: %s", s.user.id, len(s.ids), problem)
			}
		}
	}
	logf("streams: %d, %d events received in all (%d of tasks deleted since, gone from the history), %d ends and resumes with Last-Event-ID, "+
		"%d connections refused (then retried); %d streams whose events differ from their user's history",
		len(l.streams), events, erased, reconnects, refused, wrong)
	if wrong > 0 {
		fail("%d streams did not receive exactly their user's history", wrong)
	}

	// 10. Every acknowledged create is in the database, unless deleted.
	acked, missing := 0, 0
	for _, u := range l.users {
		for _, id := range u.created {
			acked++
			if !tasks[id] && !u.deleted[id] && !u.uncertain[id] {
				missing++
				if missing <= 3 {
					fail("task %s of %s: created (201), never deleted, not in the database", id, u.id)
				}
			}
		}
		for id := range u.deleted {
			if tasks[id] {
				fail("task %s of %s: deleted (204), still in the database", id, u.id)
			}
		}
	}
	logf("database: %d acknowledged creates checked, %d missing", acked, missing)
	for _, p := range phases {
		logf("%v", p)
		if n := p.failed(); n > 0 {
			fail("%s: %d requests got an answer a client should not get", p.name, n)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func waitUntil(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// tput is one throughput run's result.
type tput struct {
	rps      float64
	p99      time.Duration
	failures int
}

func (t tput) String() string {
	return fmt.Sprintf("%.0f req/s p99 %v (%d failed)", t.rps, t.p99.Round(100*time.Microsecond), t.failures)
}

func (t tput) cmp(u tput) int {
	switch {
	case t.rps < u.rps:
		return -1
	case t.rps > u.rps:
		return 1
	}
	return 0
}

// throughput runs closed-loop clients against base for the throughput
// time: each client cycles through users of its own (16 each, so that no
// user passes RATE_LIMIT), 50% get, 30% list, 20% create.
func (f *fleet) throughput(base, prefix string) tput {
	l := &load{f: f, base: base, client: newClient()}
	p := newPhase("throughput", false)
	var mu sync.Mutex
	var lat []time.Duration
	var done atomic.Int64
	deadline := time.Now().Add(f.o.tputTime)
	var wg sync.WaitGroup
	for w := range f.o.tputWorkers {
		wg.Go(func() {
			type user struct{ tok, task string }
			users := make([]user, 16)
			for i := range users {
				users[i].tok = token(f.secret, fmt.Sprintf("%s-%d", prefix, w*16+i))
			}
			var mine []time.Duration
			for i := 0; time.Now().Before(deadline); i++ {
				u := &users[i%len(users)]
				op := mrand.IntN(10)
				if u.task == "" {
					op = 9
				}
				t0 := time.Now()
				var status int
				var body []byte
				var err error
				switch {
				case op < 5:
					status, _, body, err = l.do("GET", "/api/me/tasks/"+u.task, u.tok, nil, "")
					p.record("get", status, []int{200}, err, string(body))
				case op < 8:
					status, _, body, err = l.do("GET", "/api/me/tasks?limit=20", u.tok, nil, "")
					p.record("list", status, []int{200}, err, string(body))
				default:
					status, _, body, err = l.do("POST", "/api/me/tasks", u.tok, nil, `{"title":"throughput"}`)
					p.record("create", status, []int{201}, err, string(body))
					var t struct{ ID string }
					if status == 201 && json.Unmarshal(body, &t) == nil {
						u.task = t.ID
					}
				}
				mine = append(mine, time.Since(t0))
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(lat)
	r := tput{rps: float64(done.Load()) / f.o.tputTime.Seconds(), failures: p.failed()}
	if len(lat) > 0 {
		r.p99 = lat[len(lat)*99/100]
	}
	if r.failures > 0 {
		logf("throughput run at %s: %v", base, p)
	}
	return r
}

// eventLatency measures from a create's 201 on instance 1 to its event on
// a stream on instance 2, both reached directly.
func (f *fleet) eventLatency(ctx context.Context, prefix string) {
	a := fmt.Sprintf("http://127.0.0.1:%d", f.apiPorts[0])
	b := fmt.Sprintf("http://127.0.0.1:%d", f.apiPorts[1])
	const users = 20
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	acked := map[string]time.Time{}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var open atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for i := range users {
		tok := token(f.secret, fmt.Sprintf("%s-%d", prefix, i))
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(sctx, "GET", b+"/api/me/events", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := client.Do(req)
			if err != nil || res.StatusCode != 200 {
				return
			}
			defer res.Body.Close()
			open.Add(1)
			sc := bufio.NewScanner(res.Body)
			sc.Buffer(make([]byte, 0, 4096), 1<<20)
			event := ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "event: "):
					event = line[7:]
				case strings.HasPrefix(line, "data: ") && event == "task.created":
					var t struct{ ID string }
					json.Unmarshal([]byte(line[6:]), &t)
					mu.Lock()
					arrived[t.ID] = time.Now()
					mu.Unlock()
				}
			}
		})
	}
	waitUntil(10*time.Second, func() bool { return open.Load() == users })
	tick := time.NewTicker(time.Second / time.Duration(f.o.latRate))
	end := time.Now().Add(f.o.latTime)
	var creates sync.WaitGroup
	sent, failed := 0, 0
	var failedMu sync.Mutex
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		<-tick.C
		tok := token(f.secret, fmt.Sprintf("%s-%d", prefix, i%users))
		sent++
		creates.Go(func() {
			req, _ := http.NewRequest("POST", a+"/api/me/tasks", bytes.NewReader([]byte(`{"title":"latency"}`)))
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := client.Do(req)
			if err != nil {
				failedMu.Lock()
				failed++
				failedMu.Unlock()
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			at := time.Now()
			var t struct{ ID string }
			if res.StatusCode != 201 || json.Unmarshal(body, &t) != nil {
				failedMu.Lock()
				failed++
				failedMu.Unlock()
				return
			}
			mu.Lock()
			acked[t.ID] = at
			mu.Unlock()
		})
	}
	tick.Stop()
	creates.Wait()
	waitUntil(5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range acked {
			if _, ok := arrived[id]; !ok {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	var lat []time.Duration
	missing := 0
	for id, at := range acked {
		if got, ok := arrived[id]; ok {
			lat = append(lat, max(got.Sub(at), 0))
		} else {
			missing++
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
	}
	logf("event latency, 201 on instance 1 to the event on a stream on instance 2, %d creates a second, %d streams: p50 %v, p99 %v, max %v; %d creates, %d failed, %d events missing",
		f.o.latRate, users, q(0.5), q(0.99), q(1), sent, failed, missing)
}

// psql runs a query on the database directly and returns its rows.
func (f *fleet) psql(query string) ([]string, error) {
	out, err := exec.Command(f.pgbin+"/psql", "-X", "-At", "-h", "127.0.0.1", "-p", strconv.Itoa(f.pgPort),
		"-U", "taskapi", "-d", "postgres", "-c", query).Output()
	if err != nil {
		return nil, fmt.Errorf("psql: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// history returns each user's change positions, in order.
func (f *fleet) history(prefix string) (map[string][]int64, error) {
	rows, err := f.psql(fmt.Sprintf("SELECT user_id || '|' || position FROM task_changes WHERE user_id LIKE '%s%%' ORDER BY position", prefix))
	if err != nil {
		return nil, err
	}
	h := map[string][]int64{}
	for _, r := range rows {
		user, pos, _ := strings.Cut(r, "|")
		n, _ := strconv.ParseInt(pos, 10, 64)
		h[user] = append(h[user], n)
	}
	return h, nil
}

// taskIDs returns the ids of the tasks of users whose id begins with prefix.
func (f *fleet) taskIDs(prefix string) (map[string]bool, error) {
	rows, err := f.psql(fmt.Sprintf("SELECT id FROM tasks WHERE user_id LIKE '%s%%'", prefix))
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, r := range rows {
		ids[r] = true
	}
	return ids, nil
}

// promQuery returns the result of an instant query on Prometheus.
func (f *fleet) promQuery(query string) ([]promSample, error) {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", f.promPort, url.QueryEscape(query)))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return nil, err
	}
	var out []promSample
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out = append(out, promSample{s.Metric, v})
	}
	return out, nil
}

type promSample struct {
	labels map[string]string
	value  float64
}

// promSum returns a query's one value, or -1.
func (f *fleet) promSum(query string) float64 {
	s, err := f.promQuery(query)
	if err != nil || len(s) != 1 {
		logf("Prometheus query %s: %v %v", query, s, err)
		return -1
	}
	return s[0].value
}

// promValues returns a metric's value by instance, as text.
func (f *fleet) promValues(metric string) string {
	s, err := f.promQuery(metric)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%s=%v", x.labels["instance"], x.value))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// promResult returns a query's result as text: each value, with the
// labels that tell them apart.
func (f *fleet) promResult(query string) string {
	samples, err := f.promQuery(query)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, x := range samples {
		var labels []string
		for k, v := range x.labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		parts = append(parts, strings.TrimPrefix(fmt.Sprintf("%s %.3g", strings.Join(labels, ","), x.value), " "))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

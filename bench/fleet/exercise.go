// This file is the run itself, once every process is up: measure, load,
// break, and check.

package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

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
	// what the history holds now, and the changes that left it since: those
	// of deleted tasks, which go with the task, and those a later change of
	// the same task replaced (the history keeps a task's latest change; a
	// stream that resumes after they went never sees them).
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
			// Not in the history: a change of a task deleted since, or one
			// that a later change of the task, also received, replaced.
			for _, task := range strings.Fields(s.tasks[i]) {
				if tasks[task] && !slices.ContainsFunc(s.tasks[i+1:], func(later string) bool { return slices.Contains(strings.Fields(later), task) }) {
					problem = fmt.Sprintf("event %d (task %s) is in no history, its task was not deleted, and no later change of it came", id, task)
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
	logf("streams: %d, %d events received in all (%d gone from the history since: replaced, or of tasks deleted), %d ends and resumes with Last-Event-ID, "+
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
	twice, err := f.psql(fmt.Sprintf("SELECT count(*) FROM (SELECT FROM tasks WHERE user_id LIKE 'fleet-%s-%%' "+
		"AND title LIKE 'fleet key %%' GROUP BY user_id, title HAVING count(*) > 1) AS d", run))
	if err != nil {
		return err
	}
	if len(twice) != 1 || twice[0] != "0" {
		fail("Idempotency-Keys that made more than one task: %v, want 0", twice)
	}
	logf("database: %d acknowledged creates checked, %d missing; no Idempotency-Key made two tasks", acked, missing)
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

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitUntil polls cond until it holds, for up to timeout.
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

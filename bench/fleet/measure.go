// This file measures: throughput behind one instance and behind three, and
// the time from a write on one instance to its event on another.

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tput is one throughput run's result.
type tput struct {
	rps      float64
	p99      time.Duration
	failures int
}

// String is the run's result as it is printed.
func (t tput) String() string {
	return fmt.Sprintf("%.0f req/s p99 %v (%d failed)", t.rps, t.p99.Round(100*time.Microsecond), t.failures)
}

// cmp orders runs by throughput.
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

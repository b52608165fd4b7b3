// This file is the load: the mixed requests of many users through the
// proxy, what each answer was in each phase of the run, and the event
// streams that resume with Last-Event-ID.

package main

import (
	"bufio"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

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

// newPhase returns a phase with nothing recorded yet.
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

// failed returns how many answers were ones a client should not get.
func (p *phase) failed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.failures {
		n += c
	}
	return n
}

// String sums the phase up in one line.
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

// newClient returns a client for many requests at once to one address.
func newClient() *http.Client {
	// A connection idle for HAProxy's keep-alive timeout (10 s) is closed
	// by HAProxy: the client lets it go first, or a request sent on it as
	// it closes fails.
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 256, IdleConnTimeout: 5 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
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
		task := `{"title":"fleet","priority":"medium","tags":["load"]}`
		if op%2 == 0 {
			// The key is in the title too, so that the end can check that no
			// key made two tasks.
			key := rand.Text()
			headers = map[string]string{"Idempotency-Key": key}
			task = `{"title":"fleet key ` + key + `","priority":"medium","tags":["load"]}`
		}
		status, _, body, err := l.do("POST", "/api/me/tasks", u.tok, headers, task)
		p.record("create", status, []int{201}, err, string(body))
		// A create with a key whose answer was lost is sent again with the
		// same key, as a client should: it is made once, or answered with
		// the task made the first time.
		for try := 0; headers != nil && (status == 0 || status >= 500) && try < 5; try++ {
			time.Sleep(500 * time.Millisecond)
			status, _, body, err = l.do("POST", "/api/me/tasks", u.tok, headers, task)
			p.record("create again, same key", status, []int{201}, err, string(body))
		}
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

// last returns the id of the last event received, or 0.
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

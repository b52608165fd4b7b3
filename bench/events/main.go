// Command events is the load tool of taskapi's live updates, run by
// bench/events.sh against two instances, A and B, on one database. It
// measures the memory of many open event streams on B, the time from a
// create's 201 on A to its event on a stream on B, and create throughput on
// A with and without streams open on B. Standard library only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	var (
		a, b         = flag.String("a", "", "instance A's base URL"), flag.String("b", "", "instance B's base URL")
		secret       = flag.String("secret", "", "BETTER_AUTH_SECRET of both")
		pidB         = flag.Int("pid-b", 0, "instance B's process id, for its RSS")
		streams      = flag.Int("streams", 10_000, "event streams to open on B for the memory figure")
		perUser      = flag.Int("per-user", 10, "streams per user")
		latStreams   = flag.Int("latency-streams", 1_000, "streams open on B while latency is measured")
		rate         = flag.Int("rate", 500, "creates a second through A for the latency figure")
		latDuration  = flag.Duration("latency-duration", 20*time.Second, "how long creates are sent for the latency figure")
		clients      = flag.Int("clients", 32, "concurrent clients for the throughput figure")
		tputDuration = flag.Duration("throughput-duration", 10*time.Second, "each throughput run")
		rounds       = flag.Int("rounds", 3, "interleaved throughput rounds")
	)
	flag.Parse()
	t := &tool{a: *a, b: *b, secret: []byte(*secret), client: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 1024, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}}

	// 1. Memory of many open streams.
	before := rss(*pidB)
	open := t.openStreams(*streams, *perUser, "mem")
	after := rss(*pidB)
	fmt.Printf("streams open on B: %d of %d; B's RSS %d MB before, %d MB after: %.1f KB a stream\n",
		open.count(), *streams, before>>20, after>>20, float64(after-before)/float64(max(open.count(), 1))/1024)

	// 3. Throughput with the streams open, then without, interleaved.
	var with, without []float64
	for range *rounds {
		with = append(with, t.throughput(*clients, *tputDuration))
		open.close()
		without = append(without, t.throughput(*clients, *tputDuration))
		open = t.openStreams(*streams, *perUser, "mem")
	}
	open.close()
	mw, mo := median(with), median(without)
	fmt.Printf("creates on A, %d clients: %.0f req/s with %d streams open on B, %.0f without: %.2f (rounds: %v / %v)\n",
		*clients, mw, *streams, mo, mw/mo, round(with), round(without))

	// 2. Latency from a 201 on A to the event on B.
	lat := t.latency(*latStreams, *perUser, *rate, *latDuration)
	slices.Sort(lat.samples)
	q := func(p float64) time.Duration {
		if len(lat.samples) == 0 {
			return 0
		}
		return lat.samples[min(len(lat.samples)-1, int(p*float64(len(lat.samples))))]
	}
	fmt.Printf("201 on A to the event on B, %d creates a second, %d streams: p50 %v, p90 %v, p99 %v, max %v; %d creates, %d failed, %d events missing\n",
		*rate, *latStreams, q(0.5).Round(10*time.Microsecond), q(0.9).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond),
		q(1).Round(10*time.Microsecond), lat.sent, len(lat.failed), lat.sent-len(lat.failed)-len(lat.samples))
	if len(lat.failed) > 0 {
		fmt.Printf("  the first failure: %s\n", lat.failed[0])
	}
}

type tool struct {
	a, b   string
	secret []byte
	client *http.Client
}

// token returns an HS256 token for user, valid for an hour.
func (t *tool) token(user string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := time.Now().Unix()
	claims := enc.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"iat":%d,"exp":%d}`, user, now, now+3600))
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(header + "." + claims))
	return header + "." + claims + "." + enc.EncodeToString(m.Sum(nil))
}

// streamSet is a set of open streams.
type streamSet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	open   atomic.Int64
}

func (s *streamSet) count() int { return int(s.open.Load()) }
func (s *streamSet) close()     { s.cancel(); s.wg.Wait() }

// openStreams opens n streams on B, perUser for each user, and returns once
// every one has its response headers (or failed). onEvent, when set, is
// called with each task.created event's task id and when it arrived.
func (t *tool) openStreams(n, perUser int, prefix string, onEvent ...func(user, id string, at time.Time)) *streamSet {
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamSet{cancel: cancel}
	var ready sync.WaitGroup
	sem := make(chan struct{}, 200) // opening, not open: at most 200 handshakes at once
	for i := range n {
		user := fmt.Sprintf("%s-%d", prefix, i/perUser)
		tok := t.token(user)
		ready.Add(1)
		s.wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer s.wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", t.b+"/api/me/events", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := t.client.Do(req)
			<-sem
			if err != nil || res.StatusCode != 200 {
				if err == nil {
					res.Body.Close()
				}
				ready.Done()
				return
			}
			defer res.Body.Close()
			s.open.Add(1)
			ready.Done()
			defer s.open.Add(-1)
			sc := bufio.NewScanner(res.Body)
			sc.Buffer(make([]byte, 0, 4096), 1<<20)
			event := ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: ") && event == "task.created" && len(onEvent) > 0:
					var task struct{ ID string }
					json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &task)
					onEvent[0](user, task.ID, time.Now())
				case line == "":
					event = ""
				}
			}
		}()
	}
	ready.Wait()
	return s
}

// create makes one task for user through A and returns its id.
func (t *tool) create(user, tok string) (string, error) {
	req, _ := http.NewRequest("POST", t.a+"/api/me/tasks", strings.NewReader(`{"title":"load"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := t.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 201 {
		return "", fmt.Errorf("%d %s", res.StatusCode, bytes.TrimSpace(body))
	}
	var task struct{ ID string }
	json.Unmarshal(body, &task)
	return task.ID, nil
}

// throughput runs clients closed-loop creates through A for d, each client
// as one of the users whose streams the memory figure opened, and returns
// the creates a second.
func (t *tool) throughput(clients int, d time.Duration) float64 {
	var done atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for c := range clients {
		// The users whose streams are open (openStreams' "mem" users), so
		// that every create wakes streams on B when they are open.
		user := fmt.Sprintf("mem-%d", c)
		tok := t.token(user)
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := t.create(user, tok); err == nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds()
}

type latencyResult struct {
	sent    int
	failed  []string // the errors of the creates that failed
	samples []time.Duration
}

// latency opens streams on B, sends creates through A at rate a second for
// d, each for a user with a stream, and measures from each 201 to the
// matching event on that user's first stream.
func (t *tool) latency(streams, perUser, rate int, d time.Duration) latencyResult {
	var (
		mu      sync.Mutex
		arrived = map[string]time.Time{}
		acked   = map[string]time.Time{}
		failed  []string
	)
	users := streams / perUser
	set := t.openStreams(streams, perUser, "lat", func(user, id string, at time.Time) {
		mu.Lock()
		if _, seen := arrived[id]; !seen {
			arrived[id] = at
		}
		mu.Unlock()
	})
	defer set.close()
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i] = t.token(fmt.Sprintf("lat-%d", i))
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	sent := 0
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		u := i % users
		sent++
		wg.Go(func() {
			id, err := t.create(fmt.Sprintf("lat-%d", u), tokens[u])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err.Error())
				return
			}
			acked[id] = time.Now()
		})
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // the last events
	mu.Lock()
	defer mu.Unlock()
	r := latencyResult{sent: sent, failed: failed}
	for id, at := range acked {
		if got, ok := arrived[id]; ok {
			r.samples = append(r.samples, max(got.Sub(at), 0))
		}
	}
	return r
}

// rss returns the resident set size of pid in bytes, or 0.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func round(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

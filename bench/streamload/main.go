// Command streamload is the load tool of what event streams may cost one
// taskapi instance, run by bench/streams.sh: it opens streams whose clients
// replay long histories slowly, or never read, and meanwhile measures the
// instance's peak RSS and another user's list latency against a quiet
// baseline. Standard library only.
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
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
		base     = flag.String("url", "", "the instance's base URL")
		secret   = flag.String("secret", "", "its BETTER_AUTH_SECRET")
		pid      = flag.Int("pid", 0, "its process id, for RSS")
		users    = flag.String("users", "", "comma-separated users whose history streams replay")
		perUser  = flag.Int("per-user", 10, "streams per user")
		rate     = flag.Int("rate", 0, "bytes a second each stream's client reads; 0: it never reads")
		duration = flag.Duration("duration", 20*time.Second, "how long the streams are held")
	)
	flag.Parse()
	t := &tool{base: strings.TrimRight(*base, "/"), secret: []byte(*secret)}

	t.listLatency(2 * time.Second) // warm-up: connections, caches
	quiet := t.listLatency(*duration)
	fmt.Printf("quiet: another user's list p50 %.2f ms, p99 %.2f ms (%d requests); RSS %d MB\n",
		quiet.p(50), quiet.p(99), len(quiet), rss(*pid, "VmRSS")>>20)

	var open, ended atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, u := range strings.Split(*users, ",") {
		for range *perUser {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.stream(u, *rate, stop, &open, &ended)
			}()
		}
	}
	done := make(chan latencies)
	go func() { done <- t.listLatency(*duration) }()
	peak := int64(0)
	tick := time.NewTicker(200 * time.Millisecond)
	deadline := time.After(*duration)
loop:
	for {
		select {
		case <-tick.C:
			peak = max(peak, rss(*pid, "VmRSS"))
		case <-deadline:
			break loop
		}
	}
	loaded := <-done
	fmt.Printf("loaded: %d streams opened, %d ended by the server while held; peak RSS %d MB (VmHWM %d MB)\n",
		open.Load(), ended.Load(), peak>>20, rss(*pid, "VmHWM")>>20)
	fmt.Printf("loaded: another user's list p50 %.2f ms, p99 %.2f ms (%d requests); p99 %.2fx quiet\n",
		loaded.p(50), loaded.p(99), len(loaded), loaded.p(99)/quiet.p(99))
	close(stop)
	wg.Wait()
}

type tool struct {
	base   string
	secret []byte
}

// stream opens a stream of user's history from its start and reads it at
// rate bytes a second (never, with 0) until stop.
func (t *tool) stream(user string, rate int, stop chan struct{}, open, ended *atomic.Int64) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(t.base, "http://"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096) // a small window, as a slow mobile client has
	fmt.Fprintf(conn, "GET /api/me/events?since=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", t.token(user))
	br := bufio.NewReaderSize(conn, 1024)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		fmt.Fprintf(os.Stderr, "stream of %s: %q %v\n", user, status, err)
		return
	}
	open.Add(1)
	if rate == 0 {
		<-stop
		return
	}
	go func() { <-stop; conn.Close() }()
	buf := make([]byte, max(1, rate/10))
	for {
		if _, err := br.Read(buf); err != nil {
			select {
			case <-stop:
			default:
				ended.Add(1)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type latencies []float64

func (l latencies) p(q int) float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*q/100)]
}

// listLatency lists another user's tasks, one request after another, for d.
func (t *tool) listLatency(d time.Duration) latencies {
	client := &http.Client{Timeout: 10 * time.Second}
	tok := t.token("bystander")
	var l latencies
	for end := time.Now().Add(d); time.Now().Before(end); {
		req, _ := http.NewRequest("GET", t.base+"/api/me/tasks", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		began := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "list:", err)
			continue
		}
		resp.Body.Close()
		l = append(l, float64(time.Since(began).Microseconds())/1000)
		time.Sleep(5 * time.Millisecond)
	}
	return l
}

// token mints an HS256 token for sub, valid for an hour.
func (t *tool) token(sub string) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{"sub": sub, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	msg := head + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, t.secret)
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

// rss reads a memory figure of pid (VmRSS, VmHWM) in bytes.
func rss(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

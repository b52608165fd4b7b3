// Command fleet runs taskapi the way a small team deploys it, on one
// machine, and breaks it under load: PostgreSQL; PgBouncer in transaction
// mode for the requests (as Neon's -pooler host), with each instance's
// LISTEN connection direct; three taskapi processes; HAProxy in front,
// routing only to instances whose /readyz answers 200 (as Fly's proxy does
// with its checks); Prometheus scraping their /metrics. Then, with a mixed
// load of many users and event streams open through HAProxy, it restarts
// the instances one at a time, SIGKILLs one, restarts PostgreSQL and then
// PgBouncer, and checks what every client saw: which answers failed, that
// every stream resumed with Last-Event-ID and received its user's history
// whole, once and in order, that every acknowledged create is in the
// database, and that Prometheus counted the requests the load sent. It also
// measures throughput behind one instance and behind three, and how long a
// write on one instance takes to reach a stream on another.
//
//	cd bench/fleet && go run . -repo ../..          # see bench/README.md
//	cd bench/fleet && go run . -repo ../.. -short   # the short run of .ci/run
//
// It needs the PostgreSQL server binaries, pgbouncer, haproxy and
// prometheus (Debian's packages), listens on 127.0.0.1 ports from -port
// (23100) on, and stops everything it started. Standard library only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	repo        string
	port        int
	users       int
	streams     int
	rate        int // mixed-load requests a second
	tputWorkers int
	tputTime    time.Duration
	latRate     int
	latTime     time.Duration
	settle      time.Duration // load before and after each fault
	keep        bool
}

func main() {
	var o options
	short := flag.Bool("short", false, "a short run, for CI: fewer users and streams, shorter phases")
	flag.StringVar(&o.repo, "repo", ".", "the taskapi repository to build")
	flag.IntVar(&o.port, "port", 23100, "the first of the ports used (about 40 from it)")
	flag.IntVar(&o.users, "users", 200, "users of the mixed load, each making requests in turn")
	flag.IntVar(&o.streams, "streams", 1000, "event streams open through the proxy, spread over the users")
	flag.IntVar(&o.rate, "rate", 300, "mixed-load requests a second, over all users")
	flag.IntVar(&o.tputWorkers, "throughput-workers", 32, "closed-loop clients of the throughput figure")
	flag.DurationVar(&o.tputTime, "throughput-time", 8*time.Second, "each throughput run (two with one instance, two with three)")
	flag.IntVar(&o.latRate, "latency-rate", 100, "creates a second on instance 1 for the cross-instance event latency")
	flag.DurationVar(&o.latTime, "latency-time", 10*time.Second, "how long the event latency is measured")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "load before and after each fault")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, configuration) after a run that passed too")
	flag.Parse()
	if *short {
		o.users, o.streams, o.rate, o.tputWorkers = 20, 60, 100, 16
		o.tputTime, o.latRate, o.latTime, o.settle = 3*time.Second, 50, 4*time.Second, 2*time.Second
	}
	// SIGINT or SIGTERM end the run, and close stops what it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := newFleet(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	err = f.run(ctx)
	f.close(err == nil && !o.keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("fleet: PASS")
}

// fleet is the processes of one run.
type fleet struct {
	o      options
	work   string            // the work directory
	pgbin  string            // PostgreSQL's binaries
	asPG   []string          // runs a command as the postgres user, when this is root
	tools  map[string]string // the paths of pgbouncer, haproxy, prometheus and promtool
	secret string

	pgPort, bouncerPort, proxyPort, proxyOnePort, promPort int
	apiPorts, metricsPorts                                 [3]int

	instances [3]*process
	bouncer   *process
	proxy     *process
	prom      *process
}

// process is a child process and the channel closed when it exits.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// newFleet checks that the tools are installed and makes the work directory.
func newFleet(o options) (*fleet, error) {
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return nil, err
	}
	o.repo = repo
	f := &fleet{o: o, secret: "fleet-secret-0123456789-0123456789-abcdef"}
	f.pgPort, f.bouncerPort, f.proxyPort, f.proxyOnePort, f.promPort = o.port+1, o.port+2, o.port+30, o.port+31, o.port+40
	for i := range 3 {
		f.apiPorts[i], f.metricsPorts[i] = o.port+11+i, o.port+21+i
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, errors.New("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
	}
	f.pgbin = filepath.Dir(bins[len(bins)-1])
	f.tools = map[string]string{}
	for _, tool := range []string{"pgbouncer", "haproxy", "prometheus", "promtool"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			path = "/usr/sbin/" + tool // not on every PATH
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("%s is not installed (apt-get install haproxy prometheus pgbouncer)", tool)
			}
		}
		f.tools[tool] = path
	}
	if f.work, err = os.MkdirTemp("", "taskapi-fleet."); err != nil {
		return nil, err
	}
	if os.Getuid() == 0 { // PostgreSQL and PgBouncer refuse to run as root
		f.asPG = []string{"runuser", "-u", "postgres", "--"}
		if err := exec.Command("chown", "postgres", f.work).Run(); err != nil {
			return nil, err
		}
	}
	os.Chmod(f.work, 0o755)
	return f, nil
}

// logf prints a line of the run's progress, with the time.
func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// command returns a command whose output goes to the work directory's
// log file name.
func (f *fleet) command(log string, asPG bool, name string, args ...string) *exec.Cmd {
	if asPG && len(f.asPG) > 0 {
		args = append(append(f.asPG[1:], name), args...)
		name = f.asPG[0]
	}
	cmd := exec.Command(name, args...)
	out, err := os.OpenFile(filepath.Join(f.work, log), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	return cmd
}

// start starts cmd and watches for its exit.
func start(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stopProcess sends sig and waits up to timeout for the exit, then kills.
func stopProcess(p *process, sig os.Signal, timeout time.Duration) error {
	if p == nil {
		return nil
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v", filepath.Base(p.cmd.Path), timeout, sig)
	}
}

// run builds taskapi, starts every process, waits until the instances are
// ready, and exercises them.
func (f *fleet) run(ctx context.Context) error {
	logf("work directory %s", f.work)
	binary := filepath.Join(f.work, "taskapi")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Dir, build.Stdout, build.Stderr = f.o.repo, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build taskapi: %w", err)
	}
	if err := f.startPostgres(true); err != nil {
		return err
	}
	if err := f.startBouncer(); err != nil {
		return err
	}
	for i := range 3 {
		if err := f.startInstance(i); err != nil {
			return err
		}
	}
	if err := f.startProxy(); err != nil {
		return err
	}
	if err := f.startPrometheus(); err != nil {
		return err
	}
	for i := range 3 {
		if err := f.waitReady(i, 30*time.Second); err != nil {
			return err
		}
	}
	time.Sleep(proxyRise)
	if err := f.promtool(); err != nil {
		return err
	}
	return f.exercise(ctx)
}

// close stops everything, and removes the work directory if remove is set
// (the run passed, without -keep).
func (f *fleet) close(remove bool) {
	for _, p := range f.instances {
		stopProcess(p, syscall.SIGKILL, 5*time.Second)
	}
	stopProcess(f.proxy, syscall.SIGTERM, 5*time.Second)
	stopProcess(f.prom, syscall.SIGTERM, 10*time.Second)
	stopProcess(f.bouncer, syscall.SIGTERM, 5*time.Second)
	f.command("postgres.log", true, filepath.Join(f.pgbin, "pg_ctl"), "-D", filepath.Join(f.work, "pg"), "-m", "immediate", "-w", "stop").Run()
	if !remove {
		logf("kept %s: the logs of every process, and their configuration", f.work)
		return
	}
	os.RemoveAll(f.work)
}

// startPostgres starts PostgreSQL on its port, making the cluster first
// when initdb is set.
func (f *fleet) startPostgres(initdb bool) error {
	data := filepath.Join(f.work, "pg")
	if initdb {
		if err := f.command("postgres.log", true, filepath.Join(f.pgbin, "initdb"), "-D", data, "-U", "taskapi",
			"--auth=trust", "--no-locale", "-E", "UTF8").Run(); err != nil {
			return fmt.Errorf("initdb: %v (see %s/postgres.log)", err, f.work)
		}
	}
	// fsync is off (this is no durability test of the disk); commits are
	// still synchronous, so an acknowledged write survives a restart.
	cmd := f.command("postgres.log", true, filepath.Join(f.pgbin, "pg_ctl"), "-D", data, "-l", filepath.Join(f.work, "pg", "server.log"), "-w",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", f.pgPort, f.work), "start")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start PostgreSQL: %w (see %s/pg/server.log)", err, f.work)
	}
	return nil
}

// stopPostgres stops PostgreSQL in fast mode: it ends every session.
func (f *fleet) stopPostgres() error {
	return f.command("postgres.log", true, filepath.Join(f.pgbin, "pg_ctl"), "-D", filepath.Join(f.work, "pg"), "-m", "fast", "-w", "stop").Run()
}

// startBouncer starts PgBouncer in transaction mode in front of PostgreSQL.
func (f *fleet) startBouncer() error {
	ini := filepath.Join(f.work, "pgbouncer.ini")
	conf := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d user=taskapi

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 20
# After a failed login to PostgreSQL (it was down), try again within a
# second, not the default 15.
server_login_retry = 1
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = %s/pgbouncer.log
`, f.pgPort, f.bouncerPort, f.work)
	if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := start(f.command("pgbouncer.out", true, f.tools["pgbouncer"], ini))
	if err != nil {
		return fmt.Errorf("start PgBouncer: %w", err)
	}
	f.bouncer = p
	return waitTCP(f.bouncerPort, 10*time.Second)
}

// databaseURL is the URL of the requests' pool: through PgBouncer.
func (f *fleet) databaseURL() string {
	return fmt.Sprintf("postgres://taskapi@127.0.0.1:%d/postgres?sslmode=disable&default_query_exec_mode=exec", f.bouncerPort)
}

// listenURL is the direct URL of the LISTEN connections.
func (f *fleet) listenURL() string {
	return fmt.Sprintf("postgres://taskapi@127.0.0.1:%d/postgres?sslmode=disable", f.pgPort)
}

// startInstance starts taskapi instance i (0, 1 or 2).
func (f *fleet) startInstance(i int) error {
	cmd := f.command(fmt.Sprintf("taskapi-%d.log", i+1), false, filepath.Join(f.work, "taskapi"))
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+f.databaseURL(),
		"DATABASE_LISTEN_URL="+f.listenURL(),
		"BETTER_AUTH_SECRET="+f.secret,
		"HOST=127.0.0.1",
		"PORT="+strconv.Itoa(f.apiPorts[i]),
		fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", f.metricsPorts[i]),
		// HAProxy takes an instance out after two failed checks 500 ms
		// apart; the drain leaves room for checks that come late on a
		// busy machine.
		"SHUTDOWN_DRAIN=4s",
		"EVENTS_HEARTBEAT=5s", // under HAProxy's 60 s server timeout
		"LOG_LEVEL=warn",
	)
	p, err := start(cmd)
	if err != nil {
		return err
	}
	f.instances[i] = p
	return nil
}

// proxyRise is how long HAProxy takes to route to an instance after its
// /readyz answers 200: two checks (rise 2) 500 ms apart, and some slack.
// Two failed checks take it out, well within SHUTDOWN_DRAIN (4 s).
const proxyRise = 1500 * time.Millisecond

// waitReady waits until instance i's /readyz answers 200.
func (f *fleet) waitReady(i int, timeout time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", f.apiPorts[i])
	deadline := time.Now().Add(timeout)
	for {
		res, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case <-f.instances[i].done:
			return fmt.Errorf("instance %d exited before it was ready: %v (see %s/taskapi-%d.log)", i+1, f.instances[i].err, f.work, i+1)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("instance %d not ready within %v", i+1, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// startProxy starts HAProxy: one frontend over the three instances, and
// one over instance 1 alone, for the throughput figure.
func (f *fleet) startProxy() error {
	var servers strings.Builder
	for i, port := range f.apiPorts {
		fmt.Fprintf(&servers, "  server i%d 127.0.0.1:%d check\n", i+1, port)
	}
	conf := fmt.Sprintf(`global
  maxconn 8000
  # One line per request, on standard error (haproxy.log): the termination
  # state says which side ended a request that failed.
  log stderr format raw local0

defaults
  mode http
  log global
  option httplog
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout http-keep-alive 10s
  # A request that could not be sent to an instance (it stopped
  # listening) goes to another one, as does a GET or HEAD that an instance
  # closed the connection on without an answer; a write is never sent
  # twice (disable-l7-retry below), as its first try may have been done.
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
  option httpchk
  http-check send meth GET uri /readyz
  # Two failed checks take an instance out, two passed put it back: one
  # slow answer (a burst of streams resuming) does not.
  timeout check 2s
  default-server inter 500ms fall 2 rise 2

frontend all
  bind 127.0.0.1:%d
  http-request disable-l7-retry if !METH_GET !METH_HEAD
  default_backend all

frontend one
  bind 127.0.0.1:%d
  http-request disable-l7-retry if !METH_GET !METH_HEAD
  default_backend one

backend all
  balance roundrobin
%s
backend one
  server i1 127.0.0.1:%d check
`, f.proxyPort, f.proxyOnePort, servers.String(), f.apiPorts[0])
	cfg := filepath.Join(f.work, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := start(f.command("haproxy.log", false, f.tools["haproxy"], "-f", cfg, "-db"))
	if err != nil {
		return fmt.Errorf("start HAProxy: %w", err)
	}
	f.proxy = p
	return waitTCP(f.proxyPort, 10*time.Second)
}

// startPrometheus starts Prometheus, scraping the instances every second.
func (f *fleet) startPrometheus() error {
	var targets []string
	for _, port := range f.metricsPorts {
		targets = append(targets, fmt.Sprintf("'127.0.0.1:%d'", port))
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: taskapi
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
	cfg := filepath.Join(f.work, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := start(f.command("prometheus.log", false, f.tools["prometheus"], "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(f.work, "prometheus"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", f.promPort)))
	if err != nil {
		return fmt.Errorf("start Prometheus: %w", err)
	}
	f.prom = p
	return waitTCP(f.promPort, 20*time.Second)
}

// promtool checks each instance's /metrics with promtool check metrics.
func (f *fleet) promtool() error {
	for i, port := range f.metricsPorts {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cmd := exec.Command(f.tools["promtool"], "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("promtool check metrics on instance %d: %v\n%s", i+1, err, out)
		}
	}
	logf("promtool check metrics: the three instances' /metrics pass")
	return nil
}

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

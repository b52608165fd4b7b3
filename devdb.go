// This file runs the development database: a private PostgreSQL server in
// the data directory, started by `go run .` when DATABASE_URL is unset, and
// by the tests.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// devPostgres is a private PostgreSQL server that taskapi runs as a child
// process: the development database of `go run .` and the throwaway database
// of the tests. It listens only on a Unix socket in a fresh 0700 directory,
// trusts every connection that can reach that socket, and stops with Stop.
type devPostgres struct {
	// URL connects to the server's "postgres" database as user "taskapi".
	URL     string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the server process has exited
	sockDir string
	ownDir  bool // sockDir was made for this server
	logPath string
	dataDir string
}

// devPostgresOptions says where the server keeps its data and how durable
// it must be.
type devPostgresOptions struct {
	DataDir string // the cluster directory; initdb fills it on first use
	LogPath string // the server's own log
	// Throwaway turns off fsync and friends: for tests, whose data may be lost.
	Throwaway bool
	// SocketDir, when set, is where the server's socket goes, instead of a
	// new temporary directory; a server restarted on it keeps its URL.
	SocketDir string
}

// errNoPostgres means no PostgreSQL server binaries were found.
var errNoPostgres = errors.New("no PostgreSQL server binaries found (looked for initdb and postgres on PATH, " +
	"in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and Homebrew's locations).\n" +
	"Either install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@17) " +
	"and run again, or set DATABASE_URL to a database you already have")

// startDevPostgres initializes opts.DataDir if it is empty, starts a server on
// it and waits until it accepts connections. When taskapi runs as root, which
// PostgreSQL refuses, the server runs as the "postgres" user (or "nobody"),
// which must be able to reach opts.DataDir.
func startDevPostgres(ctx context.Context, opts devPostgresOptions) (pg *devPostgres, err error) {
	if opts.DataDir, err = filepath.Abs(opts.DataDir); err != nil {
		return nil, err
	}
	bin, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	owner, err := serverUser()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(opts.DataDir, owner); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("development database: %w", err)
	}
	defer logFile.Close() // the child keeps its own copy

	if _, err := os.Stat(filepath.Join(opts.DataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
			"--pgdata", opts.DataDir, "--username", "taskapi", "--auth", "trust",
			"--encoding", "UTF8", "--no-locale", "--no-instructions")
		initdb.Stdout, initdb.Stderr = logFile, logFile
		initdb.SysProcAttr = childProcAttr(owner)
		if err := initdb.Run(); err != nil {
			return nil, fmt.Errorf("development database: initdb in %s failed (%v); see %s%s",
				opts.DataDir, err, opts.LogPath, owner.hint(opts.DataDir))
		}
	}

	if err := stopLeftover(bin, opts.DataDir, owner, logFile); err != nil {
		return nil, err
	}

	// A short directory of its own keeps the socket path under the 107-byte
	// limit and away from other local users.
	sockDir := opts.SocketDir
	if sockDir == "" {
		if sockDir, err = os.MkdirTemp("", "taskapi-pg-"); err != nil {
			return nil, fmt.Errorf("development database: %w", err)
		}
	}
	if err := owner.chown(sockDir); err != nil {
		return nil, err
	}
	args := []string{"-D", opts.DataDir, "-k", sockDir, "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"}
	if opts.Throwaway {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// Not CommandContext: the server must outlive a cancelled ctx until
	// Stop, so that in-flight requests can finish during shutdown.
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr(owner)
	if err := cmd.Start(); err != nil {
		if opts.SocketDir == "" {
			os.RemoveAll(sockDir)
		}
		return nil, fmt.Errorf("development database: start postgres: %w", err)
	}
	pg = &devPostgres{
		URL:     "postgres:///postgres?user=taskapi&sslmode=disable&host=" + url.QueryEscape(sockDir),
		cmd:     cmd,
		exited:  make(chan struct{}),
		sockDir: sockDir,
		ownDir:  opts.SocketDir == "",
		logPath: opts.LogPath,
	}
	go func() { cmd.Wait(); close(pg.exited) }()
	// Claim the data directory, so that a second taskapi started on it can
	// tell this running server from one left behind.
	if err := os.WriteFile(ownerFile(opts.DataDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		pg.Stop()
		return nil, fmt.Errorf("development database: %w", err)
	}
	pg.dataDir = opts.DataDir

	if err := pg.waitReady(ctx, 30*time.Second); err != nil {
		pg.Stop()
		return nil, err
	}
	return pg, nil
}

// waitReady polls until the server accepts a connection, it exits, or
// timeout passes.
func (pg *devPostgres) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		connCtx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(connCtx, pg.URL)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-pg.exited:
			return fmt.Errorf("development database: postgres exited at start:\n%s\n(full log: %s)",
				tail(pg.logPath, 8), pg.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("development database: not ready after %s: %v (log: %s)", timeout, err, pg.logPath)
		}
	}
}

// offerDatabase makes the database name on the server unless it is there,
// for a program that runs beside taskapi in development (the example
// frontend keeps Better Auth's users in one), and returns its URL. Only
// processes that can reach the server's socket can use it.
func (pg *devPostgres) offerDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		return "", fmt.Errorf("development database: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("development database %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", fmt.Errorf("development database %s: %w", name, err)
		}
	}
	return "postgres:///" + url.PathEscape(name) + "?user=taskapi&sslmode=disable&host=" + url.QueryEscape(pg.sockDir), nil
}

// Stop shuts the server down (PostgreSQL's "fast" shutdown: open sessions
// are ended, committed data is kept), waits for it to exit, and removes its
// socket directory unless it was given one. It is safe to call more than
// once.
func (pg *devPostgres) Stop() {
	select {
	case <-pg.exited:
	default:
		stopProcess(pg.cmd.Process)
		select {
		case <-pg.exited:
		case <-time.After(15 * time.Second):
			pg.cmd.Process.Kill()
			<-pg.exited
		}
	}
	if pg.ownDir {
		os.RemoveAll(pg.sockDir)
	}
	if pg.dataDir != "" {
		os.Remove(ownerFile(pg.dataDir))
	}
}

// ownerFile names the file beside dataDir that holds the pid of the
// taskapi whose server runs on dataDir.
func ownerFile(dataDir string) string { return dataDir + ".owner" }

// stopLeftover stops a server still running on dataDir that no live taskapi
// owns: one left behind by a taskapi that was killed before it could stop
// it. Without this the new server would refuse to start ("lock file already
// exists"). A server that another running taskapi owns is left alone, and
// the start fails with a message that says so.
func stopLeftover(bin, dataDir string, owner osUser, log io.Writer) error {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil // none
	}
	lines := strings.Split(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || !processAlive(pid) {
		return nil // stale file: postgres removes it itself
	}
	if o, err := os.ReadFile(ownerFile(dataDir)); err == nil {
		if ownerPID, err := strconv.Atoi(strings.TrimSpace(string(o))); err == nil &&
			ownerPID != os.Getpid() && processAlive(ownerPID) {
			return fmt.Errorf("development database: another taskapi (pid %d) is running on %s; "+
				"stop it first, or give this one its own TASKAPI_DATA_DIR", ownerPID, dataDir)
		}
	}
	fmt.Fprintf(log, "taskapi: stopping a server (pid %d) left running on %s\n", pid, dataDir)
	stop := exec.Command(filepath.Join(bin, "pg_ctl"), "stop", "-D", dataDir, "-m", "fast", "-w")
	stop.Stdout, stop.Stderr = log, log
	stop.SysProcAttr = childProcAttr(owner)
	if err := stop.Run(); err != nil {
		return fmt.Errorf("development database: a server (pid %d) is still running on %s and would not stop (%v); "+
			"stop it with pg_ctl stop -D %s", pid, dataDir, err, dataDir)
	}
	// Line 5 of postmaster.pid is the socket directory; remove it if it was ours.
	if len(lines) > 4 && strings.HasPrefix(filepath.Base(lines[4]), "taskapi-pg-") {
		os.RemoveAll(lines[4])
	}
	return nil
}

// findPostgresBin returns the directory holding initdb and postgres: the one
// on PATH, else the newest of the usual install locations.
func findPostgresBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	var dirs []string
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",         // Debian, Ubuntu
		"/usr/pgsql-*/bin",                  // RHEL, Fedora (PGDG)
		"/opt/homebrew/opt/postgresql*/bin", // Homebrew, Apple silicon
		"/usr/local/opt/postgresql*/bin",    // Homebrew, Intel
		"/Applications/Postgres.app/Contents/Versions/*/bin",
	} {
		matches, _ := filepath.Glob(pattern)
		dirs = append(dirs, matches...)
	}
	// Newest major version first: compare the first number in each path.
	slices.SortStableFunc(dirs, func(a, b string) int { return majorVersion(b) - majorVersion(a) })
	for _, dir := range dirs {
		_, errInit := os.Stat(filepath.Join(dir, "initdb"))
		_, errPG := os.Stat(filepath.Join(dir, "postgres"))
		if errInit == nil && errPG == nil {
			return dir, nil
		}
	}
	return "", errNoPostgres
}

// majorVersion returns the first run of digits in path, or 0.
func majorVersion(path string) int {
	start := strings.IndexAny(path, "0123456789")
	if start < 0 {
		return 0
	}
	end := start
	for end < len(path) && '0' <= path[end] && path[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(path[start:end])
	return n
}

// osUser is the account the server runs as. A zero osUser means "as this
// process", which is the case unless taskapi runs as root.
type osUser struct {
	name     string
	uid, gid int
	set      bool
}

// serverUser picks the account the server runs as: this process's own, or,
// for root, "postgres" if it exists, else "nobody".
func serverUser() (osUser, error) {
	if os.Geteuid() != 0 {
		return osUser{}, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return osUser{name: name, uid: uid, gid: gid, set: true}, nil
		}
	}
	return osUser{}, errors.New("development database: PostgreSQL refuses to run as root, and neither a " +
		`"postgres" nor a "nobody" user exists to run it as; run taskapi as an ordinary user or set DATABASE_URL`)
}

// chown gives path to u, when u is not this process's own user.
func (u osUser) chown(path string) error {
	if !u.set {
		return nil
	}
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		return fmt.Errorf("development database: %w", err)
	}
	return nil
}

// hint explains a likely cause of failure when the server runs as another user.
func (u osUser) hint(dir string) string {
	if !u.set {
		return ""
	}
	return fmt.Sprintf("\n(taskapi runs as root, so the server runs as %q, which must be able to enter every directory above %s)", u.name, dir)
}

// prepareDir makes dir (0700) if needed and hands it to u. When u is another
// user, dir's parent is made passable (0711) so that u can reach dir.
func prepareDir(dir string, u osUser) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("development database: %w", err)
	}
	if u.set {
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			return fmt.Errorf("development database: %w", err)
		}
	}
	return u.chown(dir)
}

// tail returns up to the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLeftoverDevelopmentServer starts the development database on a data
// directory whose server was left running by a killed taskapi: the old
// server is stopped and a new one serves the same data.
func TestLeftoverDevelopmentServer(t *testing.T) {
	t.Parallel()
	dir := passableTempDir(t)
	opts := devPostgresOptions{DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "pg.log"), Throwaway: true}
	orphan, err := startDevPostgres(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(orphan.Stop) // only if the test fails before stopping it another way
	db, err := openDB(context.Background(), testDBConfig(orphan.URL), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// A new taskapi starts on the same data while the old server still runs.
	pg, err := startDevPostgres(context.Background(), opts)
	if err != nil {
		t.Fatalf("start over a leftover server: %v, want no error", err)
	}
	defer pg.Stop()
	select {
	case <-orphan.exited:
	case <-time.After(5 * time.Second):
		t.Error("the leftover server is still running")
	}
	db, err = openDB(context.Background(), testDBConfig(pg.URL), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var x int
	if err := db.QueryRow("SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Errorf("data after the takeover: %d, %v; want 42", x, err)
	}
}

// TestDevelopmentServerOfAnotherTaskapi starts the development database on
// a data directory whose server another running taskapi owns: the start
// fails with a message that says so, and the other's server keeps running.
func TestDevelopmentServerOfAnotherTaskapi(t *testing.T) {
	t.Parallel()
	dir := passableTempDir(t)
	opts := devPostgresOptions{DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "pg.log"), Throwaway: true}
	first, err := startDevPostgres(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	// Make the server look owned by another live process.
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	if err := os.WriteFile(ownerFile(opts.DataDir), []byte(fmt.Sprint(other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = startDevPostgres(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "another taskapi") {
		t.Fatalf("start on another taskapi's data: %v, want an error naming it", err)
	}
	select {
	case <-first.exited:
		t.Error("the other taskapi's server was stopped")
	case <-time.After(500 * time.Millisecond):
	}
}

// TestDatabaseStopsWithItsParent kills, with SIGKILL, a process that runs
// the development database, as a test binary past its timeout is killed,
// and checks that the server stops too instead of running on, unowned.
func TestDatabaseStopsWithItsParent(t *testing.T) {
	if dir := os.Getenv("TASKAPI_TEST_PARENT_DIR"); dir != "" {
		// The parent to be killed: start a server, say its pid, wait.
		pg, err := startDevPostgres(context.Background(), devPostgresOptions{
			DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "pg.log"), Throwaway: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("postgres", pg.cmd.Process.Pid)
		select {}
	}
	if runtime.GOOS != "linux" {
		t.Skip("only Linux stops a child with its parent; elsewhere the next start stops a leftover (TestLeftoverDevelopmentServer)")
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDatabaseStopsWithItsParent$")
	cmd.Env = append(os.Environ(), "TASKAPI_TEST_PARENT_DIR="+passableTempDir(t))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	line, _ := bufio.NewReader(out).ReadString('\n')
	if _, err := fmt.Sscanf(line, "postgres %d", &pid); err != nil {
		cmd.Process.Kill()
		t.Fatalf("the parent process said %q, want the server's pid", line)
	}
	t.Cleanup(func() { // only if the test fails
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	})
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(30 * time.Second); processAlive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server (pid %d) still runs 30 s after the process that started it was killed, want it stopped", pid)
		}
	}
}

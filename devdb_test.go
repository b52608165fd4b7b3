package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

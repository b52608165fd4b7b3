//go:build unix

// This file holds the Unix side of the development database: running the
// server as an unprivileged user when taskapi runs as root.

package main

import (
	"errors"
	"os"
	"syscall"
)

// childProcAttr puts a database child process in a process group of its own,
// so that a Ctrl-C in the terminal reaches taskapi alone and taskapi stops the
// server after its own shutdown, and runs it as u when u is set. Where the
// system can (stopWithParent), the child is also stopped when taskapi dies
// without stopping it: killed, or a test binary past its timeout.
func childProcAttr(u osUser) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if u.set {
		attr.Credential = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
	}
	stopWithParent(attr)
	return attr
}

// stopWithParent asks the system to stop the child when its parent dies;
// Linux can (devdb_linux.go). Elsewhere a server left behind is stopped by
// the next start on its data directory (stopLeftover), and a test's stays
// until it is stopped by hand.
var stopWithParent = func(*syscall.SysProcAttr) {}

// stopProcess asks PostgreSQL for a fast shutdown (SIGINT).
func stopProcess(p *os.Process) {
	p.Signal(os.Interrupt)
}

// processAlive reports whether a process with that pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

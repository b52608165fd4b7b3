//go:build !unix

// This file holds the development database's stand-ins for systems without
// Unix users.

package main

import (
	"os"
	"syscall"
)

// childProcAttr needs nothing special where there are no process groups or root.
func childProcAttr(osUser) *syscall.SysProcAttr { return nil }

// stopProcess kills the process: there is no SIGINT to send it here.
func stopProcess(p *os.Process) {
	p.Kill()
}

// processAlive cannot tell here; postgres reports a live server itself.
func processAlive(int) bool { return false }

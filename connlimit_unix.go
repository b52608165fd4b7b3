//go:build unix

// This file holds the Unix side of connlimit.go: the open-file limit.

package main

import "syscall"

// raiseOpenFileLimit raises the soft limit of open files to the hard limit,
// as Go's runtime also does at start on most Unix systems, and returns the
// limit in force, or 0 when it cannot be read.
func raiseOpenFileLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur < r.Max {
		raised := r
		raised.Cur = r.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			r = raised
		}
	}
	return r.Cur
}

// This file holds the Linux side of the development database: its server
// stops when taskapi dies without stopping it.

package main

import "syscall"

func init() {
	// The kernel sends the child SIGINT, PostgreSQL's fast shutdown, when
	// the thread that started it ends: in Go, when the process does, as
	// nothing in taskapi ends a thread of its own (go.dev/issue/27505).
	stopWithParent = func(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }
}

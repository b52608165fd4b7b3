//go:build !linux

// This file holds the side of tcp_linux.go for other systems, where a
// stream's connection keeps the kernel's own timeouts.

package main

import (
	"net"
	"time"
)

// setUserTimeout does nothing here: TCP_USER_TIMEOUT is Linux's.
func setUserTimeout(net.Conn, time.Duration) {}

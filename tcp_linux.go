// This file holds the Linux side of a stream's socket option (events.go):
// the TCP user timeout.

package main

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT (linux/tcp.h), which package syscall
// does not name.
const tcpUserTimeout = 0x12

// setUserTimeout has the kernel close c once data sent on it has gone
// unacknowledged for d, instead of retransmitting for about 15 minutes
// (tcp_retries2): a peer whose network vanished acknowledges nothing. It
// does nothing for a connection that is not TCP.
func setUserTimeout(c net.Conn, d time.Duration) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
	})
}

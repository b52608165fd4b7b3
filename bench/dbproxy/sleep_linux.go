package main

import (
	"runtime"
	"syscall"
	"time"
)

// preciseSleeper gives the calling goroutine a thread of its own, on which
// a sleep may be late by the kernel's wake-up latency but not by a timer
// slack (50 µs by default). The thread ends with the goroutine.
func preciseSleeper() {
	runtime.LockOSThread()
	const prSetTimerSlack = 29
	syscall.Syscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
}

// sleepUntil returns at t, or soon after. nanosleep blocks the thread, not
// the Go runtime's timers, which would round a sleep up to a millisecond.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(d.Nanoseconds())
		syscall.Nanosleep(&ts, nil)
	}
}

//go:build !linux

package main

import "time"

func preciseSleeper() {}

// sleepUntil returns at t, or soon after: the Go runtime's timers can be
// late by up to a millisecond.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

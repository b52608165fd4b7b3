//go:build !unix

// This file holds connlimit.go's stand-in for systems without an open-file
// limit to read.

package main

// raiseOpenFileLimit returns 0: the limit is unknown here.
func raiseOpenFileLimit() uint64 { return 0 }

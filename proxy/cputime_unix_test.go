//go:build unix

package proxy

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process used so far (user and system): the benchmark's client
// and sinks too, the same on every path, so that a path's cost is its excess over direct.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

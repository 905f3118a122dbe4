// Package memlimit sets the Go runtime's soft memory limit of a long-running mesh process from
// a flag, in the syntax of GOMEMLIMIT: an integer with an optional unit (B, KiB, MiB, GiB, TiB;
// powers of two, as the runtime reads them), or "off". Parse accepts exactly what the runtime
// accepts for GOMEMLIMIT, so a value moves between the two unchanged; a flag set wins over the
// environment, and without either the runtime's own default (no limit) stays.
//
// A soft limit makes the garbage collector run more often as the heap nears it instead of
// letting the process grow to twice its live heap (GOGC=100), and makes the scavenger return
// freed memory to the system sooner. It is soft: a live heap above it is never refused, it
// only costs CPU (the runtime caps the collector at about half of it).
//
// SetGCPercent does the same for the collector's target (GOGC): a flag set wins over GOGC, and
// without either a server runs at DefaultGCPercent rather than the runtime's 100.
package memlimit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// ErrSyntax is returned for a size Parse does not read.
var ErrSyntax = errors.New("want a size such as 512MiB, 2GiB or 1073741824 (units B, KiB, MiB, GiB, TiB), or off")

var units = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// Parse reads a memory limit in bytes; "off" is math.MaxInt64 (no limit), as for GOMEMLIMIT.
func Parse(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	num, shift := s, uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: %w", s, ErrSyntax)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: too large: %w", s, ErrSyntax)
	}
	return n << shift, nil
}

// Set applies flag (Parse's syntax) as the runtime's soft memory limit when it is not empty, and
// returns the limit in force: flag's, else GOMEMLIMIT's (the runtime applied it at start), else
// math.MaxInt64.
func Set(flag string) (int64, error) {
	if flag != "" {
		n, err := Parse(flag)
		if err != nil {
			return 0, err
		}
		debug.SetMemoryLimit(n)
	}
	return debug.SetMemoryLimit(-1), nil
}

// DefaultGCPercent is the garbage collector's target of a mesh server when neither its flag nor
// GOGC sets one. Most of a server's heap is what it keeps: the snapshot, every rendered proxy
// group and its encoded resources, the compiler's cache. At the runtime's 100 the short-lived
// garbage of requests and renders grows until it equals all of that before a collection runs,
// so the process sits near twice what it keeps. At 75, with 500 proxies of a 1,000-service
// mesh, the peak falls by about a sixth for about a tenth more CPU in changes and initial
// syncs (docs/performance.md); Prometheus made the same choice, for the same reason.
const DefaultGCPercent = 75

// ErrGCPercent is returned for a GC target ParseGCPercent does not read.
var ErrGCPercent = errors.New("want a percentage such as 50, 75 or 100, or off")

// ParseGCPercent reads a garbage collection target as GOGC does: a non-negative percentage, or
// "off" (-1: no collection but the memory limit's).
func ParseGCPercent(s string) (int, error) {
	if s == "off" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: %w", s, ErrGCPercent)
	}
	return n, nil
}

// SetGCPercent applies flag (ParseGCPercent's syntax) as the collector's target when it is not
// empty, else def when the environment does not set GOGC (the runtime applied GOGC at start),
// and returns the target in force (-1: off) and what set it: "flag", "GOGC" or "default".
func SetGCPercent(flag string, def int) (int, string, error) {
	switch {
	case flag != "":
		n, err := ParseGCPercent(flag)
		if err != nil {
			return 0, "", err
		}
		debug.SetGCPercent(n)
		return n, "flag", nil
	case os.Getenv("GOGC") != "":
		return gcPercent(), "GOGC", nil
	}
	debug.SetGCPercent(def)
	return def, "default", nil
}

// gcPercent returns the collector's target in force.
func gcPercent() int {
	n := debug.SetGCPercent(100)
	debug.SetGCPercent(n)
	return n
}

// Format returns limit as Parse reads it back, in the largest unit it is a whole number of.
func Format(limit int64) string {
	if limit == math.MaxInt64 {
		return "off"
	}
	for _, u := range units {
		if limit != 0 && limit%(1<<u.shift) == 0 {
			return strconv.FormatInt(limit>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(limit, 10) + "B"
}

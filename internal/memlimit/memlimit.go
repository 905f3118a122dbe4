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
package memlimit

import (
	"errors"
	"fmt"
	"math"
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

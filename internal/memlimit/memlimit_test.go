package memlimit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// cases are sizes Parse and the runtime (reading GOMEMLIMIT) must agree on: valid or not, and
// the same number of bytes.
var cases = []string{
	"0", "1", "1073741824", "+5", "512B", "1KiB", "64KiB", "700MiB", "2GiB", "1TiB", "off",
	"", "-1", "1.5GiB", "1MB", "1KB", "1M", "1G", "MiB", "iB", "5iB", "1mib", "1 MiB", " 1MiB", "1MiB ", "B", "0x10", "1XiB", "9223372036854775807", "9223372036854775808", "9000000TiB",
}

// TestParseAgreesWithRuntime starts this test binary with each case as GOMEMLIMIT and compares
// the limit the runtime set (or its refusal to start) with Parse's.
func TestParseAgreesWithRuntime(t *testing.T) {
	for _, c := range cases {
		want, perr := Parse(c)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+c, "MEMLIMIT_PRINT=1")
		out, err := cmd.CombinedOutput()
		if c == "" {
			// An empty GOMEMLIMIT is unset for the runtime (no limit); for a flag, "" means
			// "not given", which Set handles before Parse.
			if perr == nil {
				t.Errorf("Parse(%q) = %d, want an error", c, want)
			}
			continue
		}
		runtimeOK := err == nil
		if runtimeOK != (perr == nil) {
			t.Errorf("%q: runtime accepts it: %v (%s), Parse: %v", c, runtimeOK, firstLine(out), perr)
			continue
		}
		if perr != nil {
			if !errors.Is(perr, ErrSyntax) {
				t.Errorf("Parse(%q) = %v, want ErrSyntax", c, perr)
			}
			continue
		}
		got, ok := strings.CutPrefix(firstLine(out), "limit=")
		if !ok || got != strconv.FormatInt(want, 10) {
			t.Errorf("%q: runtime set %q, Parse = %d", c, firstLine(out), want)
		}
	}
}

// TestMain prints the limit in force and exits when started by TestParseAgreesWithRuntime.
func TestMain(m *testing.M) {
	if os.Getenv("MEMLIMIT_PRINT") != "" {
		fmt.Printf("limit=%d\n", debug.SetMemoryLimit(-1))
		os.Exit(0)
	}
	if os.Getenv("GOGC_PRINT") != "" {
		fmt.Printf("gogc=%d\n", gcPercent())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

func TestSetAndFormat(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	got, err := Set("600MiB")
	if err != nil || got != 600<<20 {
		t.Fatalf("Set(600MiB) = %d, %v", got, err)
	}
	if got, err := Set(""); err != nil || got != 600<<20 {
		t.Fatalf("Set(\"\") after 600MiB = %d, %v; want the limit kept", got, err)
	}
	if _, err := Set("6 GB"); !errors.Is(err, ErrSyntax) {
		t.Fatalf("Set(6 GB) = %v, want ErrSyntax", err)
	}
	if got := debug.SetMemoryLimit(-1); got != 600<<20 {
		t.Fatalf("a refused Set changed the limit to %d", got)
	}
	for n, want := range map[int64]string{600 << 20: "600MiB", 1 << 30: "1GiB", 1536 << 20: "1536MiB", 1000: "1000B", 0: "0B", math.MaxInt64: "off", 3 << 10: "3KiB"} {
		if s := Format(n); s != want {
			t.Errorf("Format(%d) = %q, want %q", n, s, want)
		} else if back, err := Parse(s); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}

// TestParseGCPercentAgreesWithRuntime starts this test binary with each case as GOGC: what
// ParseGCPercent accepts, the runtime reads as the same target; what it refuses, the runtime
// ignores (keeping 100), but for negative numbers, which it reads as off and the flag spells
// "off".
func TestParseGCPercentAgreesWithRuntime(t *testing.T) {
	for _, c := range []string{"0", "1", "50", "75", "100", "250", "off", "-1", "+5", "5%", "1.5", "x", " 75", "75 ", "OFF", "0x10", "99999999999999999999"} {
		want, perr := ParseGCPercent(c)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "GOGC="+c, "GOGC_PRINT=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("GOGC=%s: %v: %s", c, err, out)
		}
		got, _ := strings.CutPrefix(firstLine(out), "gogc=")
		switch {
		case perr == nil && got != strconv.Itoa(want):
			t.Errorf("GOGC=%q: runtime's target %s, ParseGCPercent = %d", c, got, want)
		case perr != nil && !errors.Is(perr, ErrGCPercent):
			t.Errorf("ParseGCPercent(%q) = %v, want ErrGCPercent", c, perr)
		case perr != nil && strings.HasPrefix(c, "-") && got != "-1":
			t.Errorf("GOGC=%q: runtime's target %s, want off", c, got)
		case perr != nil && !strings.HasPrefix(c, "-") && got != "100":
			t.Errorf("GOGC=%q: runtime's target %s, but ParseGCPercent refuses it: %v", c, got, perr)
		}
	}
}

func TestSetGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	t.Setenv("GOGC", "")
	if n, from, err := SetGCPercent("", DefaultGCPercent); err != nil || n != DefaultGCPercent || from != "default" || gcPercent() != DefaultGCPercent {
		t.Fatalf("SetGCPercent(\"\") without GOGC = %d, %s, %v; runtime %d", n, from, err, gcPercent())
	}
	if n, from, err := SetGCPercent("40", DefaultGCPercent); err != nil || n != 40 || from != "flag" || gcPercent() != 40 {
		t.Fatalf("SetGCPercent(40) = %d, %s, %v; runtime %d", n, from, err, gcPercent())
	}
	if _, _, err := SetGCPercent("forty", DefaultGCPercent); !errors.Is(err, ErrGCPercent) || gcPercent() != 40 {
		t.Fatalf("SetGCPercent(forty) = %v, runtime %d; want ErrGCPercent and 40 kept", err, gcPercent())
	}
	// GOGC set: the runtime applied it at start (here, as if it had: 120), and it stays.
	t.Setenv("GOGC", "120")
	debug.SetGCPercent(120)
	if n, from, err := SetGCPercent("", DefaultGCPercent); err != nil || n != 120 || from != "GOGC" || gcPercent() != 120 {
		t.Fatalf("SetGCPercent(\"\") with GOGC=120 = %d, %s, %v; runtime %d", n, from, err, gcPercent())
	}
	if n, _, err := SetGCPercent("off", DefaultGCPercent); err != nil || n != -1 || gcPercent() != -1 {
		t.Fatalf("SetGCPercent(off) = %d, %v; runtime %d", n, err, gcPercent())
	}
}

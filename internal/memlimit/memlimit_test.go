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

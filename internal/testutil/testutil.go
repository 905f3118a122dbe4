// Package testutil holds the helpers that tests of several packages share; only _test.go files
// import it. Its git runs with a fixed test identity and without the user's or the system's
// configuration (no signing, no hooks from ~/.gitconfig), so tests make the same commits on
// every machine.
package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/freeport"
)

// FreeAddrs returns n distinct loopback addresses that were free a moment ago.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs, err := freeport.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// FreeAddr returns one loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// Git identity of the commits tests make.
const (
	GitName  = "mesh test"
	GitEmail = "test@example.invalid"
)

// Git runs the git CLI in dir (the current directory when "") and returns its trimmed
// combined output; it fails t when git fails.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME="+GitName, "GIT_AUTHOR_EMAIL="+GitEmail,
		"GIT_COMMITTER_NAME="+GitName, "GIT_COMMITTER_EMAIL="+GitEmail,
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// SyncBuffer is a bytes.Buffer that a server's log (or a process's output) and the test can
// share: Write and String may be called from several goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor calls cond every poll until it holds; it fails t, naming what it waited for, when
// timeout passes first.
func WaitFor(t testing.TB, timeout, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(poll)
	}
}

// Package testutil holds the helpers that tests of several packages share; only _test.go files
// import it. Its git runs with a fixed test identity and without the user's or the system's
// configuration (no signing, no hooks from ~/.gitconfig), so tests make the same commits on
// every machine.
package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"

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

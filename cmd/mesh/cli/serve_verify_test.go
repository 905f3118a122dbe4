package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/commitsig/sigtest"
)

// mesh status says why nothing new is served: first a ref that does not exist yet (with the
// retry), then a commit on it that is not signed (with the commit), and once a signed commit
// arrives, it is served and the error is gone.
func TestServeStatusShowsWhyNotServed(t *testing.T) {
	sigtest.NeedSSHKeygen(t)
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(`package mesh

mesh: {name: "t", trustDomain: "t.mesh"}
services: web: {protocol: "http", port: 8080}
`), 0o644)
	git("add", "-A")
	git("commit", "-q", "-m", "unsigned")
	keys := t.TempDir()
	dev := sigtest.NewSSHKey(t, keys, "dev@example.com")
	signers := filepath.Join(keys, "allowed_signers")
	os.WriteFile(signers, []byte(dev.AllowedSigner("")), 0o644)

	addr, _, log := startServe(t, serveOptions{repo: repo, ref: "release", data: filepath.Join(t.TempDir(), "data"),
		logLevel: "info", verifyCommits: []string{signers}})
	status := func(want ...string) string {
		t.Helper()
		var out string
		deadline := time.Now().Add(10 * time.Second)
		for {
			var b, e bytes.Buffer
			code := Run([]string{"status", "--http", addr}, &b, &e)
			out = b.String()
			ok := code == 0
			for _, w := range want {
				ok = ok && strings.Contains(out, w)
			}
			if ok {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("status lacks %q:\n%s\n%s", want, out, log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	status("version:  (nothing served yet)", "the ref cannot be resolved; retrying in", "; nothing served yet", `"release"`)

	git("branch", "release")
	sha := git("rev-parse", "HEAD")
	status("Z: commit "+sha[:12]+" is refused: its signature does not verify", "  commit "+sha, "commit is not signed (--verify-commits "+signers+")")

	git(append(dev.GitArgs(), "commit", "-q", "-S", "--allow-empty", "-m", "signed")...)
	git("push", "-q", ".", "HEAD:release")
	signed := git("rev-parse", "HEAD")
	out := status("commit:   " + signed)
	if strings.Contains(out, "last error") {
		t.Errorf("the error stays after a signed commit:\n%s", out)
	}
	if !strings.Contains(log.String(), "commit signature verified") {
		t.Errorf("the log does not say the commit was verified")
	}
}

//go:build unix

package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// Helpers for tests that run mesh serve as real processes: the test binary is the mesh command
// (TestMain puts it on PATH), so a process can be killed, paused and restarted like a server.

// meshProc is one running mesh process.
type meshProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
	code int // exit status, -1 when killed by a signal
}

func startMesh(t testing.TB, args ...string) *meshProc {
	t.Helper()
	p := &meshProc{t: t, cmd: exec.Command("mesh", args...), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of mesh %s:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

func (p *meshProc) pid() int { return p.cmd.Process.Pid }

// exited waits up to d for the process to end and returns its exit status.
func (p *meshProc) exited(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(d):
		return 0, false
	}
}

func (p *meshProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *meshProc) signal(sig os.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil && p.running() {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitOutput waits up to d for s in the process's output.
func (p *meshProc) waitOutput(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), s) {
			return true
		}
		if !p.running() {
			return strings.Contains(p.out.String(), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// gitRepo makes a repository with a valid mesh at its root and returns its path and a function
// that commits a new version of it (n changes the version).
func gitRepo(t testing.TB) (string, func(n int) string) {
	t.Helper()
	repo := t.TempDir()
	git := func(args ...string) string { return testutil.Git(t, repo, args...) }
	git("init", "-q", "-b", "main")
	commit := func(n int) string {
		err := os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(fmt.Sprintf(`package mesh

mesh: {name: "t", trustDomain: "t.mesh", datacenter: "dc1", datacenters: ["dc1"], defaultIntention: "deny"}
services: web: {protocol: "http", port: %d}
`, 10000+n)), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		git("add", "-A")
		git("commit", "-q", "-m", fmt.Sprintf("version %d", n))
		return git("rev-parse", "HEAD")
	}
	commit(0)
	return repo, commit
}

// serveArgs are the arguments of a mesh serve on loopback ports.
type serveArgs struct {
	repo, data, http, xds, raft, join string
	token                             string // a token file shared by a cluster's servers; "" for DATA/token
	extra                             []string
}

func newServeArgs(t testing.TB, repo string) serveArgs {
	return serveArgs{repo: repo, data: filepath.Join(t.TempDir(), "data"), http: testutil.FreeAddr(t), xds: testutil.FreeAddr(t), raft: testutil.FreeAddr(t)}
}

func (a serveArgs) args() []string {
	out := []string{"serve", "--repo", a.repo, "--ref", "main", "--data", a.data, "--http", a.http, "--xds", a.xds, "--raft", a.raft, "--poll", "1s"}
	if a.join != "" {
		out = append(out, "--join", a.join)
	}
	if a.token != "" {
		out = append(out, "--token-file", a.token)
	}
	return append(out, a.extra...)
}

// getJSON fetches http://addr/path into v.
func getJSON(addr, path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

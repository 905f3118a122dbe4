package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/memlimit"
	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
)

// mesh serve on a real repository, driven by the status commands, then shut down cleanly.
func TestServeAndStatusCommands(t *testing.T) {
	repo := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	write := func(port string) {
		t.Helper()
		os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(`package mesh

mesh: {name: "t", trustDomain: "t.mesh", datacenter: "dc1", datacenters: ["dc1"], defaultIntention: "deny"}
services: web: {protocol: "http", port: `+port+`}
`), 0o644)
		git("add", "-A")
		git("commit", "-q", "-m", "port "+port)
	}
	git("init", "-q", "-b", "main")
	write("8080")

	data := filepath.Join(t.TempDir(), "data")
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(oldLimit) })
	oldGC := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(oldGC) })
	t.Setenv("GOGC", "")
	addr, _, log := startServe(t, serveOptions{repo: repo, data: data, logLevel: "info", memoryLimit: "3GiB"})
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Errorf("--memory-limit 3GiB: the runtime's limit is %d", got)
	}
	if !strings.Contains(log.String(), "go runtime soft memory limit") || !strings.Contains(log.String(), "limit=3GiB") {
		t.Errorf("--memory-limit 3GiB not logged:\n%s", log.String())
	}
	// Neither --gogc nor GOGC: the server's default target, logged.
	if got := debug.SetGCPercent(-1); got != memlimit.DefaultGCPercent {
		t.Errorf("without --gogc or GOGC: the collector's target is %d, want %d", got, memlimit.DefaultGCPercent)
	} else {
		debug.SetGCPercent(got)
	}
	if want := fmt.Sprintf("gogc=%d from=default", memlimit.DefaultGCPercent); !strings.Contains(log.String(), want) {
		t.Errorf("the GC target not logged as %q:\n%s", want, log.String())
	}
	if strings.Contains(log.String(), "WARNING") {
		t.Errorf("a warning for plaintext xDS on loopback:\n%s", log.String())
	}

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(append(args, "--http", addr), &out, &errb)
		return code, out.String(), errb.String()
	}
	var first string
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ := run("status", "--format", "json")
		if code == 0 && strings.Contains(out, `"version": "`) && !strings.Contains(out, `"version": ""`) {
			first = out
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no version served: %s\n%s", out, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out, _ := run("status"); code != 0 || !strings.Contains(out, "leader:") || !strings.Contains(out, "Leader") || !strings.Contains(out, "ready:    yes") {
		t.Errorf("status: %d\n%s", code, out)
	}
	checkRootPage(t, addr)

	write("8081")
	var versions string
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, versions, _ = run("versions")
		if strings.Count(versions, "\n") == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second commit not applied:\n%s", versions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	old := strings.Fields(strings.Split(versions, "\n")[2])[0]

	if code, _, errOut := run("pin", old, "--token-file", filepath.Join(t.TempDir(), "missing")); code != ExitError || errOut == "" {
		t.Errorf("pin with a missing token file: exit %d %q", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	if code, _, errOut := run("pin", old, "--token-file", bad); code != ExitError || !strings.Contains(errOut, "token") {
		t.Errorf("pin with a wrong token: exit %d %q", code, errOut)
	}
	tok := filepath.Join(data, "token")
	if code, out, errOut := run("pin", old, "--token-file", tok); code != 0 {
		t.Fatalf("pin: exit %d %s %s", code, out, errOut)
	}
	if _, out, _ := run("status"); !strings.Contains(out, "pinned:   "+old) || !strings.Contains(out, "version:  "+old) || !strings.Contains(out, "by server token at ") {
		t.Errorf("status while pinned:\n%s", out)
	}
	if code, _, errOut := run("unpin", "--token-file", tok); code != 0 {
		t.Fatalf("unpin: exit %d %s", code, errOut)
	}
	// GET /v1/tokens on the server: the server's token lists (none made yet); a wrong one is 401.
	if code, out, errOut := run("token", "list", "--token-file", tok); code != 0 || out != "no tokens (mesh token create makes one)\n" {
		t.Errorf("token list: exit %d %q %s", code, out, errOut)
	}
	if code, out, errOut := run("token", "list", "--token-file", bad); code != ExitError || out != "" || !strings.Contains(errOut, "401") {
		t.Errorf("token list with a wrong token: exit %d %q %s", code, out, errOut)
	}
	if code, out, _ := run("servers", "list"); code != 0 || !strings.Contains(out, "Voter") {
		t.Errorf("servers list: %d\n%s", code, out)
	}
	_ = first
}

// Plaintext xDS on anything but loopback is warned about (checked without binding such an address).
func TestPlaintextWarning(t *testing.T) {
	for addr, warn := range map[string]bool{"127.0.0.1:8502": false, "[::1]:8502": false, "0.0.0.0:8502": true, "[::]:8502": true, "10.1.2.3:8502": true} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := plaintextWarning(a) != ""; got != warn {
			t.Errorf("%s: warning %v, want %v", addr, got, warn)
		}
	}
}

// startServe runs mesh serve with o on loopback ports until the test ends, and returns its HTTP
// and xDS addresses and its log. At the end it must have stopped cleanly and never logged key
// material.
func startServe(t *testing.T, o serveOptions) (httpAddr, xdsAddr string, log *testutil.SyncBuffer) {
	t.Helper()
	httpAddr, xdsAddr, log, _ = startServeStoppable(t, o)
	return httpAddr, xdsAddr, log
}

// startServeStoppable is startServe that also returns a function stopping the server before the
// test ends (with the same checks); it is idempotent.
func startServeStoppable(t *testing.T, o serveOptions) (httpAddr, xdsAddr string, log *testutil.SyncBuffer, stop func()) {
	t.Helper()
	log = &testutil.SyncBuffer{}
	type addrs struct{ http, xds string }
	ready := make(chan addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o.http, o.xds, o.raft = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	o.poll, o.history = time.Minute, 20
	o.ready = func(s *reconciler.Server, xdsAddr string) { ready <- addrs{s.HTTPAddr(), xdsAddr} }
	go func() { done <- runServe(ctx, o, log) }()
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve returned %v", err)
			}
			if !strings.Contains(log.String(), "mesh server stopped") {
				t.Errorf("no clean shutdown in the log:\n%s", log.String())
			}
			if strings.Contains(log.String(), "PRIVATE KEY") {
				t.Errorf("the server log contains private key material")
			}
		})
	}
	t.Cleanup(stop)
	return a.http, a.xds, log, stop
}

// checkRootPage: GET / answers browsers with a page linking /v1/status (and the UI to come), and
// curl with the same as text; other unknown paths stay 404.
func checkRootPage(t *testing.T, addr string) {
	t.Helper()
	get := func(path, accept string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	code, ct, body := get("/", "text/html,application/xhtml+xml")
	if code != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, `<a href="/v1/status">/v1/status</a>`) ||
		!strings.Contains(body, "/ui/") || !strings.Contains(body, "Serving version <code>") {
		t.Errorf("GET / (browser): %d %s\n%s", code, ct, body)
	}
	code, ct, body = get("/", "")
	if code != 200 || !strings.HasPrefix(ct, "text/plain") || !strings.Contains(body, "/v1/status") || !strings.Contains(body, ": serving ") {
		t.Errorf("GET / (curl): %d %s\n%s", code, ct, body)
	}
	if code, _, _ := get("/nosuch", ""); code != http.StatusNotFound {
		t.Errorf("GET /nosuch: %d, want 404", code)
	}
}

// mesh status shows what keeps a server from serving or from storing.
func TestPrintStatusHealth(t *testing.T) {
	now := time.Now().UTC()
	var b bytes.Buffer
	printStatus(&b, &reconciler.Status{Version: "v", Node: "n1",
		NotServing:      "removed from the cluster: this server is not in the cluster's Raft configuration",
		ClusterConflict: &reconciler.ClusterConflict{Peer: "127.0.0.1:8300", PeerCluster: "c2", Incoming: true, Time: now},
		StorageErrors:   []reconciler.StorageError{{Op: "raft-log", Error: "write raft.db: no space left on device", Time: now}}})
	for _, want := range []string{"NOT SERVING xDS: removed from the cluster", "refused a connection from 127.0.0.1:8300 of another cluster (c2)",
		"STORAGE ERROR (raft-log, since", "no space left on device"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

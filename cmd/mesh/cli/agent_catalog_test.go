package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// healthOf returns the instances of service on the server at addr: ID → aggregated status.
func healthOf(t *testing.T, addr, service string) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/health/service/" + service)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entries []struct {
		Service struct{ ID string }
		Checks  []struct{ Status string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		st := "passing"
		for _, c := range e.Checks {
			if c.Status == "critical" || c.Status == "warning" && st == "passing" {
				st = c.Status
			}
		}
		out[e.Service.ID] = st
	}
	return out
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestAgentKilled runs `mesh agent` as a real process with a service definition and a TCP
// check against a real listener: its instance turns passing; SIGKILLed, the instance turns
// critical within 3 sync intervals (plus the leader's 1s tick); restarted, it is passing again;
// killed again, DeregisterCriticalServiceAfter removes it.
func TestAgentKilled(t *testing.T) {
	repo := gitRepo(t, `package mesh

mesh: {name: "t", trustDomain: "t.mesh", datacenter: "dc1", datacenters: ["dc1"], defaultIntention: "deny"}
services: web: {protocol: "tcp", port: 8080}
`)
	data := filepath.Join(t.TempDir(), "data")
	addr, _, _ := startServe(t, serveOptions{repo: repo, data: data, logLevel: "info"})
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	conf := t.TempDir()
	def := fmt.Sprintf(`{"service": {"name": "web", "id": "web-1", "port": %d,
  "check": {"tcp": %q, "interval": "200ms", "DeregisterCriticalServiceAfter": "4s"}}}`,
		app.Addr().(*net.TCPAddr).Port, app.Addr().String())
	if err := os.WriteFile(filepath.Join(conf, "web.json"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	const sync = 300 * time.Millisecond
	start := func() *exec.Cmd {
		t.Helper()
		listen := testutil.FreeAddr(t)
		cmd := exec.Command("mesh", "agent", "--http", addr, "--token-file", filepath.Join(data, "token"), "--listen", listen,
			"--node", "host-1", "--config-dir", conf, "--sync-interval", sync.String(), "--log-level", "warn")
		var errb testutil.SyncBuffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitUntil(t, 20*time.Second, "web-1 passing", func() bool {
			if cmd.ProcessState != nil {
				t.Fatalf("agent exited: %s", errb.String())
			}
			return healthOf(t, addr, "web")["web-1"] == "passing"
		})
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}

	agent := start()
	kill(agent)
	took := waitUntil(t, 10*time.Second, "web-1 critical after SIGKILL", func() bool { return healthOf(t, addr, "web")["web-1"] == "critical" })
	if limit := 3*sync + time.Second + 2*time.Second; took > limit { // the leader checks every second; slack for a busy machine
		t.Errorf("critical %v after the kill, want within 3 sync intervals and the leader's tick (%v)", took, limit)
	}
	agent = start()
	kill(agent)
	waitUntil(t, 20*time.Second, "DeregisterCriticalServiceAfter to remove web-1", func() bool {
		_, ok := healthOf(t, addr, "web")["web-1"]
		return !ok
	})
	if out := healthOf(t, addr, "web"); len(out) != 0 {
		t.Fatalf("instances left: %v", out)
	}
}

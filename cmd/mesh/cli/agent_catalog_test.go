package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// check against a real listener, and registers a second instance through the agent's own API:
// both turn passing; SIGKILLed, they turn critical within 3 sync intervals (plus the leader's
// tick); restarted, both are passing again (the API registration restored from the agent's data
// directory, kept owner-only); killed again, DeregisterCriticalServiceAfter removes them.
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
	agentData := filepath.Join(t.TempDir(), "agent-data")
	var listen string
	start := func() *exec.Cmd {
		t.Helper()
		listen = testutil.FreeAddr(t)
		cmd := exec.Command("mesh", "agent", "--http", addr, "--token-file", filepath.Join(data, "token"), "--listen", listen,
			"--node", "host-1", "--config-dir", conf, "--sync-interval", sync.String(), "--log-level", "warn", "--data", agentData)
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
	registerThroughAgent(t, listen, filepath.Join(data, "token"), fmt.Sprintf(`{"Name": "web", "ID": "web-2", "Port": %d,
  "Check": {"TCP": %q, "Interval": "200ms", "DeregisterCriticalServiceAfter": "4s"}}`, app.Addr().(*net.TCPAddr).Port, app.Addr().String()))
	waitUntil(t, 20*time.Second, "web-2 passing", func() bool { return healthOf(t, addr, "web")["web-2"] == "passing" })
	files, err := filepath.Glob(filepath.Join(agentData, "*.json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("the agent's data directory holds %v (%v), want the one API registration", files, err)
	}
	for _, p := range []string{agentData, files[0]} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: %v, %v: want owner-only", p, fi.Mode(), err)
		}
	}
	kill(agent)
	bothCritical := func() bool {
		h := healthOf(t, addr, "web")
		return h["web-1"] == "critical" && h["web-2"] == "critical"
	}
	took := waitUntil(t, 10*time.Second, "web-1 and web-2 critical after SIGKILL", bothCritical)
	if limit := 3*sync + time.Second + 2*time.Second; took > limit { // the leader checks every second; slack for a busy machine
		t.Errorf("critical %v after the kill, want within 3 sync intervals and the leader's tick (%v)", took, limit)
	}
	agent = start()
	waitUntil(t, 20*time.Second, "web-2 passing again after the restart", func() bool { return healthOf(t, addr, "web")["web-2"] == "passing" })
	time.Sleep(3 * sync) // a few anti-entropy syncs of the restarted agent: they keep web-2
	if h := healthOf(t, addr, "web"); h["web-1"] != "passing" || h["web-2"] != "passing" {
		t.Fatalf("after the restart and a few syncs: %v, want web-1 and web-2 passing", h)
	}
	kill(agent)
	waitUntil(t, 20*time.Second, "DeregisterCriticalServiceAfter to remove web-1 and web-2", func() bool {
		return len(healthOf(t, addr, "web")) == 0
	})
	if out := healthOf(t, addr, "web"); len(out) != 0 {
		t.Fatalf("instances left: %v", out)
	}
}

// registerThroughAgent registers def (Consul's service definition) through the agent's API at
// listen with the token in tokenFile.
func registerThroughAgent(t *testing.T, listen, tokenFile, def string) {
	t.Helper()
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+listen+"/v1/agent/service/register", strings.NewReader(def))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Consul-Token", strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("register through the agent: %s: %s", resp.Status, b)
	}
}

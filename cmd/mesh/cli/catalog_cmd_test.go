package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCatalogCommands: mesh services register and deregister, mesh catalog services, nodes and
// instances, and the catalog lines of mesh status, against a running server.
func TestCatalogCommands(t *testing.T) {
	repo := gitRepo(t, clusterMesh)
	data := filepath.Join(t.TempDir(), "data")
	addr, _, _ := startServe(t, serveOptions{repo: repo, data: data, logLevel: "info"})
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(append(args, "--http", addr), &out, &errb)
		return code, out.String(), errb.String()
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "svc.json")
	os.WriteFile(file, []byte(`{"services": [
  {"id": "api-1", "name": "api", "address": "127.0.0.1", "port": 9001, "check": {"ttl": "1h", "status": "passing"}},
  {"id": "api-2", "name": "api", "address": "127.0.0.1", "port": 9002, "check": {"ttl": "1h"}},
  {"id": "ghost-1", "name": "ghost", "address": "127.0.0.1", "port": 7000}
]}`), 0o644)
	if code, _, errb := run("services", "register", file); code != 2 || !strings.Contains(errb, "X-Consul-Token") {
		t.Fatalf("register without a token: exit %d, %s", code, errb)
	}
	tok := filepath.Join(data, "token")
	// Whether a service is declared is read from the served snapshot: register once it is served.
	eventually(t, "a snapshot served", func() (int, string, string) { return run("status") },
		func(code int, out string) bool {
			return code == 0 && strings.HasPrefix(out, "version:  ") && !strings.Contains(out, "nothing served")
		})
	eventually(t, "services register (once there is a leader)", func() (int, string, string) {
		return run("services", "register", file, "--token-file", tok)
	}, func(code int, out string) bool { return code == 0 && strings.Contains(out, "registered 3") })
	code, out, _ := run("catalog", "services")
	if code != 0 || !regexpMatch(`api\s+1\s+0\s+1\s+\n`, out) || !regexpMatch(`ghost\s+1\s+0\s+0\s+undeclared`, out) {
		t.Fatalf("catalog services: %d\n%s", code, out)
	}
	code, out, _ = run("catalog", "instances", "api")
	if code != 0 || !regexpMatch(`api-1\s+\S+\s+127.0.0.1:9001\s+passing`, out) || !regexpMatch(`api-2\s+\S+\s+127.0.0.1:9002\s+critical`, out) {
		t.Fatalf("catalog instances: %d\n%s", code, out)
	}
	if code, out, _ = run("catalog", "instances", "api", "--format", "json"); code != 0 || !strings.Contains(out, `"ServiceID": "api-1"`) && !strings.Contains(out, `"ID": "api-1"`) {
		t.Fatalf("catalog instances --format json: %d\n%s", code, out)
	}
	if code, out, _ = run("catalog", "nodes"); code != 0 || !regexpMatch(`\S+\s+127.0.0.1\s+passing`, out) {
		t.Fatalf("catalog nodes: %d\n%s", code, out)
	}
	code, out, _ = run("status")
	if code != 0 || !strings.Contains(out, "catalog:  3 instances of 2 services on 1 nodes: 2 passing, 0 warning, 1 critical") ||
		!strings.Contains(out, "undeclared services (routed to nobody until Git declares them): ghost") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if code, out, errb := run("services", "deregister", "ghost-1", "--token-file", tok); code != 0 || !strings.Contains(out, "deregistered ghost-1") {
		t.Fatalf("deregister: %d %s %s", code, out, errb)
	}
	if code, out, _ = run("catalog", "services", "--format", "json"); code != 0 || strings.Contains(out, "ghost") {
		t.Fatalf("after deregister: %s", out)
	}
}

package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hcService is the service of im whose two instances (a and b, servers of im) come only from
// the catalog, registered with TTL checks.
func hcService(im impl) string { return im.short + "-hc" }

// healthMeshCUE declares each implementation's hc service without endpoints (the catalog
// supplies them) and lets web call it.
func healthMeshCUE(ims []impl) string {
	var b strings.Builder
	for _, im := range ims {
		fmt.Fprintf(&b, "services: %[1]q: {protocol: \"grpc\", port: 8080}\nintentions: %[1]q: web: action: \"allow\"\n", hcService(im))
	}
	return b.String()
}

// startHealth starts the two servers of each implementation's hc service and registers them
// in the catalog of mesh serve, each with a passing TTL check "<instance>-ttl".
func startHealth(e *env, ims []impl, ports map[string][2]string) {
	e.t.Helper()
	for _, im := range ims {
		s := hcService(im)
		certs := e.identity(s)
		for i, inst := range []string{"a", "b"} {
			id := s + "-" + inst
			env := append([]string{"GRPC_XDS_BOOTSTRAP=" + e.bootstrap(s, id, certs), roleEnv + "=go-server"}, im.env...)
			e.start(id, nil, nil, env, im.server(ports[s][i], id)...)
			p, _ := strconv.Atoi(port(ports[s][i]))
			e.catalogPUT("/v1/agent/service/register", map[string]any{
				"ID": id, "Name": s, "Address": "127.0.0.1", "Port": p,
				"Checks": []map[string]any{{"CheckID": id + "-ttl", "TTL": "1h", "Status": "passing"}},
			})
		}
	}
}

// catalogPUT sends one PUT to the Consul-compatible API of mesh serve with the admin token
// (body as JSON when non-nil) and fails the test unless it answers 200.
func (e *env) catalogPUT(path string, body any) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+e.http+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := os.ReadFile(e.token)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("PUT %s: %s: %s", path, resp.Status, b)
	}
}

// instanceStatus returns the aggregated status of instance id of service in the catalog
// (/v1/health/service/{name}): passing, warning, critical, or "" when it is not there.
func (e *env) instanceStatus(service, id string) string {
	resp, err := http.Get("http://" + e.http + "/v1/health/service/" + service)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var entries []struct {
		Service struct{ ID string }
		Checks  []struct{ Status string }
	}
	if json.NewDecoder(resp.Body).Decode(&entries) != nil {
		return ""
	}
	for _, en := range entries {
		if en.Service.ID != id {
			continue
		}
		worst := "passing"
		for _, c := range en.Checks {
			switch {
			case c.Status == "critical":
				worst = "critical"
			case c.Status == "warning" && worst == "passing":
				worst = "warning"
			}
		}
		return worst
	}
	return ""
}

// waitStatus waits (10s at most) until every implementation's instance inst has status want.
func waitStatus(t *testing.T, e *env, ims []impl, inst, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, im := range ims {
		s := hcService(im)
		for e.instanceStatus(s, s+"-"+inst) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s-%s: catalog status %q, want %q within 10s", s, inst, e.instanceStatus(s, s+"-"+inst), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// spread makes n calls to c's hc service and counts the answers by instance ("a", "b", or
// the status of a failed call).
func spread(t *testing.T, c *client, s string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, r := range c.callsWithin(t, 3*time.Second, s, "/test.Greeter/Hello", n) {
		if r.Code != codeOK {
			got[r.Status]++
			continue
		}
		got[strings.TrimPrefix(replyOf(r).Server, s+"-")]++
	}
	return got
}

// until calls cond every 200ms until it holds, for bound at most, and reports whether it did.
func until(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// health checks that every client implementation honours the health status of EDS: both
// catalog instances take traffic; once a's TTL check fails (critical → UNHEALTHY in EDS),
// every following RPC goes to b; once it passes again, traffic returns to both.
func health(t *testing.T, e *env, ims []impl, clients map[string]*client) {
	for _, im := range ims {
		c, s := clients[im.name], hcService(im)
		if !until(20*time.Second, func() bool { g := spread(t, c, s, 10); return g["a"] > 0 && g["b"] > 0 }) {
			t.Fatalf("%s web → %s: both passing instances never both took traffic: %v", im.name, s, spread(t, c, s, 10))
		}
	}
	for _, im := range ims {
		s := hcService(im)
		e.catalogPUT("/v1/agent/check/fail/"+s+"-a-ttl?note=down+for+maintenance", nil)
	}
	waitStatus(t, e, ims, "a", "critical")
	for _, im := range ims {
		c, s := clients[im.name], hcService(im)
		// The new EDS reaches the client within moments; then a never gets another RPC.
		if !until(10*time.Second, func() bool { return spread(t, c, s, 5)["a"] == 0 }) {
			t.Errorf("%s web → %s: traffic still reaches the critical instance a after 10s", im.name, s)
			continue
		}
		if got := spread(t, c, s, 50); got["b"] != 50 {
			t.Errorf("%s web → %s: after a turned critical, RPCs went %v, want all 50 to b", im.name, s, got)
		}
	}
	for _, im := range ims {
		s := hcService(im)
		e.catalogPUT("/v1/agent/check/pass/"+s+"-a-ttl?note=back", nil)
	}
	waitStatus(t, e, ims, "a", "passing")
	for _, im := range ims {
		c, s := clients[im.name], hcService(im)
		if !until(20*time.Second, func() bool { g := spread(t, c, s, 10); return g["a"] > 0 && g["b"] > 0 }) {
			t.Errorf("%s web → %s: traffic did not return to a after it passed again: %v", im.name, s, spread(t, c, s, 10))
		}
	}
}

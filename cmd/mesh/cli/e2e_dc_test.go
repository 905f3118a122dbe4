//go:build unix

package cli_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
)

const twoDCClusterMesh = `package mesh

mesh: {name: "t", trustDomain: "t.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"], defaultIntention: "deny", meshGateway: mode: "local"}
services: api: {protocol: "tcp", port: 9090, endpoints: [{address: "127.0.0.1", port: 21000, datacenter: "dc1"}]}
services: web: {protocol: "tcp", port: 8080, upstreams: api: localPort: 9191}
resolvers: api: failover: "*": datacenters: ["dc2"]
intentions: api: web: action: "allow"
`

// TestTwoDatacenterClusters: two datacenters of three mesh serve processes each, every server
// federated with all three of the other datacenter's (--federate dc2=URL,URL,URL). dc2's
// leader is killed (SIGKILL): dc2 elects another, dc1's servers keep their view and follow
// dc2's other servers (a gateway registered after the kill reaches all of them), ?dc=dc2
// through dc1 keeps answering, and the killed server, restarted, follows dc1 again.
//
// `make test` runs one round (about 6 s on 2 cores); `make e2e` (MESH_E2E=1) three.
func TestTwoDatacenterClusters(t *testing.T) {
	rounds := 1
	if os.Getenv("MESH_E2E") != "" {
		rounds = 3
	}
	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(twoDCClusterMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Git(t, repo, "init", "-q", "-b", "main")
	testutil.Git(t, repo, "add", "-A")
	testutil.Git(t, repo, "commit", "-q", "-m", "two datacenters")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var dcs [2][3]serveArgs
	urls := [2][]string{}
	addrs := testutil.FreeAddrs(t, 18) // distinct
	for d := range dcs {
		for i := range dcs[d] {
			k := 3 * (3*d + i)
			dcs[d][i] = serveArgs{repo: repo, data: filepath.Join(t.TempDir(), "data"), http: addrs[k], xds: addrs[k+1], raft: addrs[k+2], token: token}
			urls[d] = append(urls[d], "http://"+dcs[d][i].http)
		}
	}
	for i := range 3 {
		dcs[0][i].extra = []string{"--federate", "dc2=" + strings.Join(urls[1], ",")}
		dcs[1][i].extra = []string{"--datacenter", "dc2", "--federate", "dc1=" + strings.Join(urls[0], ",")}
	}
	var procs [2][3]*meshProc
	start := func(d, i int, join string) {
		a := dcs[d][i]
		a.join = join
		procs[d][i] = startMesh(t, a.args()...)
		waitStatus(t, a.http, 60*time.Second, "to answer", func(reconciler.Status) bool { return true })
	}
	begin := time.Now()
	for d := range dcs {
		start(d, 0, "")
		start(d, 1, dcs[d][0].http)
		start(d, 2, dcs[d][0].http)
	}
	connected := func(d, gateways int) func(reconciler.Status) bool {
		return func(st reconciler.Status) bool {
			return st.Version != "" && voters(st) == 3 && len(st.Federation) == 1 && st.Federation[0].State == reconciler.PeerConnected &&
				st.Federation[0].Gateways == gateways
		}
	}
	register(t, dcs[1][clusterLeader(t, dcs[1][:])].http, token, "gw-a", 19443)
	for d := range dcs {
		for i := range dcs[d] {
			want := 0
			if d == 0 {
				want = 1
			}
			waitStatus(t, dcs[d][i].http, 60*time.Second, "federated", connected(d, want))
		}
	}
	t.Logf("two datacenters of three servers, federated, in %v", time.Since(begin).Round(time.Millisecond))

	for r := range rounds {
		leader := clusterLeader(t, dcs[1][:])
		procs[1][leader].signal(syscall.SIGKILL)
		procs[1][leader].exited(10 * time.Second)
		killed := time.Now()
		var alive []serveArgs
		for i := range dcs[1] {
			if i != leader {
				alive = append(alive, dcs[1][i])
			}
		}
		next := clusterLeader(t, alive)
		register(t, alive[next].http, token, fmt.Sprintf("gw-%d", r), 19444+r)
		for i := range dcs[0] {
			waitStatus(t, dcs[0][i].http, 30*time.Second, "following dc2's other servers", connected(0, 2+r))
			var es []map[string]any
			if err := getJSON(dcs[0][i].http, "/v1/health/service/gateway?dc=dc2", &es); err != nil || len(es) != 2+r {
				t.Fatalf("dc1 server %d: ?dc=dc2 after dc2's leader died: %d entries, %v", i, len(es), err)
			}
		}
		t.Logf("round %d: dc1 follows dc2's new gateway %v after dc2's leader was killed", r+1, time.Since(killed).Round(time.Millisecond))

		start(1, leader, "")
		waitStatus(t, dcs[1][leader].http, 60*time.Second, "back, federated with dc1", connected(1, 0))
		for i := range dcs[0] {
			waitStatus(t, dcs[0][i].http, 10*time.Second, "still connected", connected(0, 2+r))
		}
	}
}

// voters counts the voters of a server's cluster.
func voters(st reconciler.Status) int {
	n := 0
	for _, s := range st.Servers {
		if s.Suffrage == "Voter" {
			n++
		}
	}
	return n
}

// clusterLeader returns the index of the server of servers that leads, waiting for one.
func clusterLeader(t *testing.T, servers []serveArgs) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, a := range servers {
			var st reconciler.Status
			if getJSON(a.http, "/v1/status", &st) == nil && st.RaftState == "Leader" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader")
	return -1
}

// waitStatus waits until the status of the server at addr satisfies cond.
func waitStatus(t *testing.T, addr string, d time.Duration, what string, cond func(reconciler.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var st reconciler.Status
		err := getJSON(addr, "/v1/status", &st)
		if err == nil && cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s did not come %s within %v: %+v, %v", addr, what, d, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// register registers a mesh gateway through the agent API of the server at addr.
func register(t *testing.T, addr, tokenFile, id string, port int) {
	t.Helper()
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"Kind": "mesh-gateway", "ID": %q, "Name": "gateway", "Port": %d, "Address": "127.0.0.1",
		"TaggedAddresses": {"wan": {"Address": "127.0.0.1", "Port": %d}}}`, id, port, port)
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/agent/service/register", strings.NewReader(body))
	req.Header.Set("X-Consul-Token", strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register %s on %s: %s", id, addr, resp.Status)
	}
}

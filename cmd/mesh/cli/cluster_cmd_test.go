package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgit/mesh/reconciler"
	"github.com/meshgit/mesh/xds"
)

// gitRepo makes a Git repository with one commit of mesh.cue.
func gitRepo(t *testing.T, meshCUE string) string {
	t.Helper()
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "mesh"}} {
		if args[0] == "add" {
			os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(meshCUE), 0o644)
		}
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return repo
}

const clusterMesh = `package mesh

mesh: {name: "t", trustDomain: "t.mesh", datacenter: "dc1", datacenters: ["dc1"], defaultIntention: "deny"}
services: web: {protocol: "http", port: 8080, upstreams: api: localPort: 9001}
services: api: {protocol: "http", port: 8080, endpoints: [{address: "127.0.0.1", port: 8080}]}
intentions: api: web: action: "allow"
`

// rawEnvoy is one ADS stream of an Envoy-shaped node.
type rawEnvoy struct {
	t  *testing.T
	st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func dialEnvoy(t *testing.T, addr string) *rawEnvoy {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rawEnvoy{t, st}
}

// request sends req and returns the response of its type (other types are skipped), within 10s.
func (e *rawEnvoy) request(req *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryResponse {
	e.t.Helper()
	if err := e.st.Send(req); err != nil {
		e.t.Fatal(err)
	}
	got := make(chan *discoveryv3.DiscoveryResponse, 1)
	go func() {
		for {
			r, err := e.st.Recv()
			if err != nil {
				close(got)
				return
			}
			if r.TypeUrl == req.TypeUrl {
				got <- r
				return
			}
		}
	}()
	select {
	case r, ok := <-got:
		if !ok {
			e.t.Fatal("xDS stream failed")
		}
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatalf("no %s response", req.TypeUrl)
		return nil
	}
}

func (e *rawEnvoy) reply(r *discoveryv3.DiscoveryResponse, nack string) {
	e.t.Helper()
	req := &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce, VersionInfo: r.VersionInfo}
	if nack != "" {
		req.VersionInfo = ""
		req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: nack}
	}
	if err := e.st.Send(req); err != nil {
		e.t.Fatal(err)
	}
}

// eventually runs the command until check accepts its result, for up to 20s.
func eventually(t *testing.T, what string, run func() (int, string, string), check func(code int, out string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := run()
		if check(code, out) {
			return code, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last exit %d\nstdout:\n%s\nstderr:\n%s", what, code, out, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterCommands runs a real three-server cluster and checks mesh members, mesh proxies
// and mesh proxy-config asked of one server about a proxy connected to another, mesh servers
// remove with an unknown id, and members after a server stopped.
func TestClusterCommands(t *testing.T) {
	repo := gitRepo(t, clusterMesh)
	dataA := filepath.Join(t.TempDir(), "a")
	httpA, _, _ := startServe(t, serveOptions{repo: repo, data: dataA, nodeID: "a", logLevel: "info"})
	token := filepath.Join(dataA, "token")
	_, xdsB, _ := startServe(t, serveOptions{repo: repo, data: filepath.Join(t.TempDir(), "b"), nodeID: "b", join: httpA, tokenFile: token, logLevel: "info"})
	_, _, _, stopC := startServeStoppable(t, serveOptions{repo: repo, data: filepath.Join(t.TempDir(), "c"), nodeID: "c", join: httpA, tokenFile: token, logLevel: "info"})

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(append(args, "--http", httpA), &out, &errb)
		return code, out.String(), errb.String()
	}
	members := func() (int, string, string) { return run("members") }
	eventually(t, "three alive members", members, func(code int, out string) bool {
		return code == 0 && strings.Count(out, " alive ") == 3 && strings.Contains(out, "quorum: 3 of 3 voters alive, 2 needed")
	})
	// Every member reports itself once it has heard from the leader and applied the log.
	var mv reconciler.MembersView
	eventually(t, "three members in contact with the leader", func() (int, string, string) { return run("members", "--format", "json") },
		func(code int, out string) bool {
			mv = reconciler.MembersView{}
			if json.Unmarshal([]byte(out), &mv) != nil || len(mv.Members) != 3 || mv.Leader == "" {
				return false
			}
			for _, m := range mv.Members {
				if !m.Alive || m.RaftState == "" || m.AppliedIndex == 0 || m.Term == 0 || m.LastContact == "never" || m.Suffrage != "Voter" {
					return false
				}
			}
			return true
		})

	// A proxy on server b, seen from server a. Wait until b serves the snapshot.
	eventually(t, "a snapshot served by b", func() (int, string, string) {
		var o, e bytes.Buffer
		c := Run([]string{"status", "--format", "json", "--http", memberHTTP(mv, "b")}, &o, &e)
		return c, o.String(), e.String()
	}, func(code int, out string) bool { return code == 0 && !strings.Contains(out, `"version": ""`) })
	env := dialEnvoy(t, xdsB)
	meta, _ := structpb.NewStruct(map[string]any{xds.CertDirMetadataKey: "/var/run/mesh/web"})
	node := &corev3.Node{Id: "web-1", Cluster: "web", UserAgentName: "envoy", Metadata: meta}
	cds := env.request(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	env.reply(cds, "")
	lds := env.request(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	env.reply(lds, "listener outbound: unsupported filter")
	_, out := eventually(t, "web-1 listed with CDS SYNCED and LDS NACK", func() (int, string, string) { return run("proxies") },
		func(code int, out string) bool {
			return code == 0 && regexpMatch(`(?m)^web-1\s+web\s+b\s+SYNCED\s+NACK\s+-\s+-\s+-\s+`, out)
		})
	if !strings.Contains(out, "web-1 LDS NACK of "+lds.VersionInfo+": listener outbound: unsupported filter") {
		t.Errorf("proxies: no NACK error line:\n%s", out)
	}
	_, out, _ = run("proxies", "--format", "json")
	var pv reconciler.ProxiesView
	if err := json.Unmarshal([]byte(out), &pv); err != nil || len(pv.Proxies) != 1 || pv.Proxies[0].Server != "b" ||
		pv.Proxies[0].Types["clusters"].Acked != cds.VersionInfo || pv.Proxies[0].Sync != xds.SyncNack || len(pv.Unreachable) != 0 {
		t.Fatalf("proxies --format json: %v\n%s", err, out)
	}

	code, out, errOut := run("proxy-config", "web-1", "--type", "clusters")
	var cv reconciler.ProxyConfigView
	if code != 0 || json.Unmarshal([]byte(out), &cv) != nil || cv.Server != "b" || len(cv.Resources["clusters"]) == 0 || len(cv.Resources) != 1 {
		t.Fatalf("proxy-config --type clusters: %d %s\n%s", code, errOut, out)
	}
	code, out, errOut = run("proxy-config", "web-1", "--format", "table")
	if code != 0 || !strings.Contains(out, "node web-1 (service web, envoy) on server b") || !strings.Contains(out, "CLUSTERS (") ||
		!strings.Contains(out, "default  certificate /var/run/mesh/web/cert.pem, key /var/run/mesh/web/key.pem") ||
		!strings.Contains(out, "public_listener") {
		t.Fatalf("proxy-config --format table: %d %s\n%s", code, errOut, out)
	}
	// The inbound RBAC is an extension config (ECDS), shown with its policies.
	if !strings.Contains(out, "EXTENSIONS (2)") || !regexpMatch(`rbac:public_listener:(http|network)\s+envoy\.extensions\.filters\.(http|network)\.rbac\.v3\.RBAC (ALLOW|DENY) policies: `, out) {
		t.Fatalf("proxy-config --format table shows no RBAC extension config:\n%s", out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Fatal("proxy-config printed a private key")
	}
	if code, _, errOut := run("proxy-config", "nosuch"); code != ExitError || !strings.Contains(errOut, `proxy "nosuch" is not connected to any server`) {
		t.Fatalf("proxy-config nosuch: %d %s", code, errOut)
	}
	if code, _, errOut := run("proxy-config", "web-1", "--type", "bogus"); code != ExitError || !strings.Contains(errOut, `--type "bogus"`) {
		t.Fatalf("proxy-config --type bogus: %d %s", code, errOut)
	}

	// An unknown server id is an error, and changes nothing.
	code, out, errOut = run("servers", "remove", "nosuch", "--token-file", token)
	if code != ExitError || out != "" || !strings.Contains(errOut, `no such server in the cluster: "nosuch" (the servers are a, b, c)`) || !strings.Contains(errOut, "404") {
		t.Fatalf("servers remove nosuch: %d %q %q", code, out, errOut)
	}

	// A stopped server is failed, not a plain voter; the quorum holds with two of three.
	stopC()
	code, out = eventually(t, "c failed", members, func(code int, out string) bool {
		return regexpMatch(`(?m)^c\s+\S+\s+\S+\s+failed\s+-\s+yes, failed\s+`, out)
	})
	if code != ExitInvalid || !strings.Contains(out, "quorum: 2 of 3 voters alive, 2 needed") || !strings.Contains(out, "failed c: ") {
		t.Fatalf("members with c stopped: exit %d\n%s", code, out)
	}
	// The proxies of the servers that answer are listed; the one that does not is named.
	code, out, errOut = run("proxies")
	if code != 0 || !strings.Contains(out, "web-1") || !strings.Contains(errOut, "warning: server c (") || !strings.Contains(errOut, "its proxies are not listed") {
		t.Fatalf("proxies with c stopped: exit %d\n%s\n%s", code, out, errOut)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func memberHTTP(v reconciler.MembersView, id string) string {
	for _, m := range v.Members {
		if m.ID == id {
			return m.HTTPAddress
		}
	}
	return ""
}

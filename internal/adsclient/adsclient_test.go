package adsclient_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/adsclient"
	"github.com/meshgit/mesh/internal/freeport"
	"github.com/meshgit/mesh/xds"
)

// compile compiles a transparent mesh of three HTTP services whose intention into api denies
// prefix to web.
func compile(t *testing.T, prefix string) *mesh.Snapshot {
	t.Helper()
	dir := t.TempDir()
	src := `package mesh

mesh: {name: "t", trustDomain: "t.mesh", mode: "transparent"}
intentions: "*": "*": action: "allow"
intentions: api: web: permissions: [{action: "deny", http: pathPrefix: "` + prefix + `"}, {action: "allow", http: methods: ["GET"]}]
`
	for i, name := range []string{"web", "api", "db"} {
		src += fmt.Sprintf("services: %s: {protocol: \"http\", port: 8080, endpoints: [{address: \"10.0.0.%d\", port: 21000}]}\n", name, i+1)
	}
	if err := os.WriteFile(filepath.Join(dir, "mesh.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := compiler.CompileDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// A client syncs against mesh's xDS server in every mode, following routes, endpoints and the
// RBAC extension config by name when asked to, ACKs (the server has every proxy SYNCED), and
// sees a marker carried by the change of an intention. Clients with Retry opened before the
// server listens reopen their streams until it does.
func TestClient(t *testing.T) {
	addrs, err := freeport.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	modes := []adsclient.Options{
		{Delta: true, Follow: true, Retry: true, Backoff: 50 * time.Millisecond},
		{Follow: true, Retry: true, Backoff: 50 * time.Millisecond},
		{Delta: true, Extensions: []string{xds.PublicHTTPRBAC}},
		{Extensions: []string{xds.PublicHTTPRBAC}},
	}
	var clients []*adsclient.Client
	open := func(cc *grpc.ClientConn, i int) {
		node := &corev3.Node{Id: fmt.Sprintf("api-%d", i), Cluster: "api", UserAgentName: "envoy"}
		c, err := adsclient.Open(ctx, cc, node, modes[i])
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	open(cc, 0)
	open(cc, 1)
	time.Sleep(300 * time.Millisecond) // the Retry clients' first streams fail: nothing listens

	xs := xds.NewServer(nil)
	l, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	xs.Register(g)
	go g.Serve(l)
	t.Cleanup(func() { xs.Close(); g.Stop() })
	if err := xs.SetSnapshot(compile(t, "/admin/")); err != nil {
		t.Fatal(err)
	}
	// The others on a connection of their own (the first one is backing off from its failed dials).
	cc2, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	open(cc2, 2)
	open(cc2, 3)

	for i, c := range clients {
		select {
		case <-c.Synced():
		case <-c.Done():
			t.Fatalf("%v: stream ended: %v", modes[i], c.Err())
		case <-ctx.Done():
			t.Fatalf("%v: not synced", modes[i])
		}
		if v := c.Version(resourcev3.ExtensionConfigType); v == "" {
			t.Errorf("%v: no extension config received", modes[i])
		}
		if modes[i].Retry && c.Retries() == 0 {
			t.Errorf("%v: synced without reopening its stream", modes[i])
		}
		c.Expect([]byte("/internal/"))
	}
	if err := xs.SetSnapshot(compile(t, "/internal/")); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		for c.MarkerAt().IsZero() {
			if ctx.Err() != nil {
				t.Fatalf("%v: the change never arrived", modes[i])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Every proxy ends up having acked everything it was sent.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pending []string
		proxies := xs.Proxies()
		for _, p := range proxies {
			if p.Sync != "SYNCED" {
				pending = append(pending, p.NodeID+" "+p.Sync)
			}
		}
		if len(pending) == 0 && len(proxies) == len(modes) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d proxies, not synced: %s", len(proxies), strings.Join(pending, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

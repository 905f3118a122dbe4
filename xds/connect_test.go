package xds

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	mesh "github.com/meshgit/mesh"
)

// TestConnectingProxiesRenderGroupOnce: proxies of one service and shape that connect together
// (over real ADS streams) render their group once; the others wait for that rendering and are
// served the same configuration. The first rendering is held until every node is registered,
// so that all of them ask for the group while it is being rendered.
func TestConnectingProxiesRenderGroupOnce(t *testing.T) {
	const n = 6
	snap := seal(t, randomTransparentMesh(rand.New(rand.NewPCG(5, 9)), 4))
	svc := snap.ServiceNames()[0]
	srv := NewServer(testLogger(t))
	release := make(chan struct{})
	var hooked atomic.Int64
	srv.testHookResources = func(p Proxy, _ *Resources) {
		if hooked.Add(1) == 1 {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
	}
	if err := srv.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	addr := startXDS(t, srv)
	before := testutil.ToFloat64(srv.metrics.renders)
	clients := make([]*rawADS, n)
	for i := range clients {
		clients[i] = newRawADS(t, dialRaw(t, addr))
		clients[i].send(&discoveryv3.DiscoveryRequest{Node: envoyNode(fmt.Sprintf("%s-%d", svc, i), svc), TypeUrl: resourcev3.ClusterType})
	}
	waitFor(t, 5*time.Second, "every node registered", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.nodes) == n
	})
	close(release)
	var version string
	for i, c := range clients {
		r := c.mustRecv(resourcev3.ClusterType)
		if i == 0 {
			version = r.VersionInfo
		} else if r.VersionInfo != version {
			t.Fatalf("node %d got clusters version %s, node 0 %s", i, r.VersionInfo, version)
		}
	}
	if got := testutil.ToFloat64(srv.metrics.renders) - before; got != 1 {
		t.Fatalf("%d proxies of one group connecting together rendered it %v times, want once", n, got)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.rendering) != 0 {
		t.Fatalf("%d renderings left in flight", len(srv.rendering))
	}
	p, err := ProxyFromNode(envoyNode("x", svc))
	if err != nil {
		t.Fatal(err)
	}
	if g := srv.groups[p]; g == nil || g.snap != snap {
		t.Fatal("the group rendered is not kept")
	}
}

// TestRefusedSnapshotChangesNothing: when one proxy's configuration of a new snapshot fails
// validation, no proxy is sent anything of it, not even those whose configuration rendered
// fine (rendering runs in parallel, but nothing is handed to the cache before every group
// passed); the served snapshot and the versions reported stay as they were. The same change
// without the bad intention is pushed.
func TestRefusedSnapshotChangesNothing(t *testing.T) {
	srv, addr := servingServer(t)
	old := srv.Snapshot()
	streams := map[string]*rawADS{}
	for _, svc := range []string{"web", "api"} {
		a := newRawADS(t, dialRaw(t, addr))
		a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(svc+"-1", svc), TypeUrl: resourcev3.ExtensionConfigType,
			ResourceNames: []string{PublicHTTPRBAC}})
		a.ack(a.mustRecv(resourcev3.ExtensionConfigType), PublicHTTPRBAC)
		streams[svc] = a
	}
	waitFor(t, 5*time.Second, "both proxies up to date", func() bool { return upToDate(srv, "web-1") && upToDate(srv, "api-1") })
	versions := map[string]string{}
	for _, p := range srv.Proxies() {
		versions[p.NodeID] = p.Version
	}

	flipped := richMesh()
	flipped.Mesh.DefaultIntention = mesh.Allow // every service's RBAC
	bad := richMesh()
	bad.Mesh.DefaultIntention = mesh.Allow
	addIntention(bad, &mesh.Intention{Source: "db", Destination: "api", Permissions: []mesh.Permission{
		{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{Header: []mesh.HeaderMatch{{Name: "", Kind: mesh.MatchExact, Value: "x"}}}},
	}})
	if err := srv.SetSnapshot(seal(t, bad)); !errors.Is(err, ErrInvalidResource) {
		t.Fatalf("got %v, want ErrInvalidResource", err)
	}
	for svc, a := range streams {
		if r, err := a.recv(300 * time.Millisecond); r != nil || err != nil {
			t.Fatalf("%s was sent %v (err %v) of a refused snapshot", svc, r, err)
		}
	}
	if srv.Snapshot() != old {
		t.Fatal("a refused snapshot is served")
	}
	for _, p := range srv.Proxies() {
		if p.Version != versions[p.NodeID] || p.Sync != "SYNCED" {
			t.Fatalf("%s: version %s (%s) after a refused snapshot, was %s", p.NodeID, p.Version, p.Sync, versions[p.NodeID])
		}
	}
	if err := srv.SetSnapshot(seal(t, flipped)); err != nil {
		t.Fatal(err)
	}
	for _, a := range streams {
		a.mustRecv(resourcev3.ExtensionConfigType)
	}
}

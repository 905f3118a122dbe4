package xds

import (
	"context"
	"sync/atomic"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// TestProxyJoiningDuringPublish: a proxy of a new group whose node connects while a snapshot is
// being rendered (here: from inside the rendering of another proxy) gets its configuration
// under that snapshot once SetSnapshot returns, not under the one before; a snapshot during
// which nobody connects renders only the proxies known at its start.
func TestProxyJoiningDuringPublish(t *testing.T) {
	base := richMesh()
	first := seal(t, base)
	base.Mesh.DefaultIntention = map[mesh.Action]mesh.Action{mesh.Allow: mesh.Deny, mesh.Deny: mesh.Allow, "": mesh.Allow}[base.Mesh.DefaultIntention]
	second := seal(t, base)
	s := NewServer(testLogger(t))
	defer s.Close()
	cb := (*callbacks)(s)
	join := func(id int64, node, service string) {
		t.Helper()
		if err := cb.OnStreamOpen(context.Background(), id, ""); err != nil {
			t.Fatal(err)
		}
		if err := cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: envoyNode(node, service), TypeUrl: resourcev3.ListenerType}); err != nil {
			t.Fatal(err)
		}
	}
	join(1, "web-1", "web")
	if err := s.SetSnapshot(first); err != nil {
		t.Fatal(err)
	}
	var joined atomic.Bool
	s.testHookResources = func(p Proxy, _ *Resources) {
		if p.Service == "web" && s.Snapshot() == first && joined.CompareAndSwap(false, true) {
			join(2, "api-1", "api") // renders api under first: publish must render it again
		}
	}
	if err := s.SetSnapshot(second); err != nil {
		t.Fatal(err)
	}
	if !joined.Load() {
		t.Fatal("the hook did not run during publish")
	}
	api, err := ProxyFromNode(envoyNode("api-1", "api"))
	if err != nil {
		t.Fatal(err)
	}
	if g := s.groupOf(api); g == nil || g.snap != second {
		t.Fatal("a proxy that joined during publish is not served the new snapshot")
	}
}

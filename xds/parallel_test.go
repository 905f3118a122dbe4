package xds

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// TestParallelRenderingIdentical holds rendering a snapshot's groups on many goroutines
// against rendering them one by one: over random meshes (transparent and direct, Envoy and
// gRPC proxies) and meshgen's repositories, through intention changes and flips of the default
// intention, both servers serve the same versions, hashes and bytes for every proxy. Shared
// resources are built by whichever goroutine needs them first, so a memo key that missed an
// input, or a shared message altered after it was shared, shows up as a difference.
func TestParallelRenderingIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 5))
	var bases []*mesh.Snapshot
	for range 5 {
		bases = append(bases, randomTransparentMesh(r, 4+r.IntN(8)))
	}
	gen := meshgenSnaps(t, 40, 3)
	bases = append(bases, gen[0])
	for i, base := range bases {
		serial, parallel := NewServer(testLogger(t)), NewServer(testLogger(t))
		serial.renderWorkers, parallel.renderWorkers = 1, 8
		var proxies []Proxy
		for _, srv := range []*Server{serial, parallel} {
			proxies = registerAll(t, srv, base.ServiceNames())
		}
		cur := seal(t, base)
		for step := range 8 {
			next := mutateIntentions(r, cur)
			if step%3 == 2 {
				next.Mesh.DefaultIntention = map[mesh.Action]mesh.Action{mesh.Allow: mesh.Deny, mesh.Deny: mesh.Allow, "": mesh.Allow}[next.Mesh.DefaultIntention]
			}
			snap := seal(t, next)
			for _, srv := range []*Server{serial, parallel} {
				if err := srv.SetSnapshot(snap); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range proxies {
				a, b := serial.groupOf(p), parallel.groupOf(p)
				if a == nil || b == nil || a.res == nil || b.res == nil {
					t.Fatalf("mesh %d step %d: %s has no group", i, step, p)
				}
				if a.hash != b.hash || fmt.Sprint(a.typeVersion) != fmt.Sprint(b.typeVersion) {
					t.Fatalf("mesh %d step %d, %s: serial versions %v (%s), parallel %v (%s)", i, step, p, a.typeVersion, a.hash, b.typeVersion, b.hash)
				}
				ra, rb := a.res.byType(), b.res.byType()
				for _, typ := range resourceTypes {
					if !sameBytes(t, ra[typ], rb[typ]) {
						t.Fatalf("mesh %d step %d, %s: %s differ between serial and parallel rendering", i, step, p, shortType(typ))
					}
					if fmt.Sprint(a.cs.VersionMap[typ]) != fmt.Sprint(b.cs.VersionMap[typ]) {
						t.Fatalf("mesh %d step %d, %s: %s resource versions differ", i, step, p, shortType(typ))
					}
				}
			}
			if !slices.EqualFunc(serial.Proxies(), parallel.Proxies(), func(x, y ProxyStatus) bool {
				return x.NodeID == y.NodeID && x.Version == y.Version && x.Error == y.Error
			}) {
				t.Fatalf("mesh %d step %d: /v1/proxies versions differ", i, step)
			}
			cur = next
		}
		serial.Close()
		parallel.Close()
	}
}

// registerAll registers an Envoy and a gRPC node of every service with srv, as if each had
// opened a stream, and returns their proxies.
func registerAll(t *testing.T, srv *Server, services []string) []Proxy {
	t.Helper()
	cb := (*callbacks)(srv)
	var proxies []Proxy
	for i, svc := range services {
		for k, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
			id := int64(2*i + k + 1)
			if err := cb.OnStreamOpen(context.Background(), id, ""); err != nil {
				t.Fatal(err)
			}
			n := envoyNode(fmt.Sprintf("%s-%s", svc, shape), svc)
			if shape == ShapeGRPC {
				n.UserAgentName = "gRPC Go"
			}
			if err := cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resourcev3.ListenerType}); err != nil {
				t.Fatal(err)
			}
			p, err := ProxyFromNode(n)
			if err != nil {
				t.Fatal(err)
			}
			proxies = append(proxies, p)
		}
	}
	return proxies
}

// TestDepsShared: in a dense transparent mesh (every service reaches every service) the
// groups of a snapshot share one set of upstream deps, equal to what dependencies computes
// alone; and the reach digest changes with each thing a transparent proxy's listeners read of
// its reach (a virtual IP, a service added), and only then.
func TestDepsShared(t *testing.T) {
	s := newSnap(mesh.Allow)
	for _, name := range []string{"a", "b", "c"} {
		addService(s, name, mesh.ProtocolHTTP, 8080, ep("10.0.0.1", 21000, "dc1")).Mode = mesh.ModeTransparent
	}
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	snap := seal(t, s)
	m := newMemo(snap, nil)
	da, db := m.dependencies(snap, "a"), m.dependencies(snap, "b")
	if da.up != db.up {
		t.Fatal("services with the same upstreams do not share their deps")
	}
	alone := dependencies(snap, "a")
	if !slices.Equal(alone.up.chains, da.up.chains) || !slices.Equal(alone.up.targets, da.up.targets) || alone.up.reach != da.up.reach || da.service != "a" {
		t.Fatalf("shared deps %+v differ from dependencies' %+v", *da.up, *alone.up)
	}
	if da.up.reach == "" || len(da.up.chains) != 3 {
		t.Fatalf("transparent deps: %d chains, reach %q", len(da.up.chains), da.up.reach)
	}
	same := seal(t, s)
	if diff(snap, same).reachChanged("a", da.up.reach) {
		t.Fatal("the same reach reported changed")
	}
	moved := seal(t, s)
	moved.VirtualIPs = map[string]string{}
	for k, v := range snap.VirtualIPs {
		moved.VirtualIPs[k] = v
	}
	moved.VirtualIPs["c"] = "240.0.0.99"
	if !diff(snap, moved).reachChanged("a", da.up.reach) {
		t.Fatal("a virtual IP change is not a reach change")
	}
	addService(s, "d", mesh.ProtocolHTTP, 8080, ep("10.0.0.4", 21000, "dc1"))
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	if !diff(snap, seal(t, s)).reachChanged("a", da.up.reach) {
		t.Fatal("a service added is not a reach change")
	}
}

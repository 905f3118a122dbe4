package xds

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// TestSharedRenderingIdentical renders every proxy of random meshes (direct and transparent,
// both shapes, several certificate directories) twice: each alone, and all of them through one
// memo shared in the order a server would meet them, in parallel. Every resource must be byte
// for byte the same (deterministic encoding), and the content hashes too.
func TestSharedRenderingIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 13))
	meshes := []*mesh.Snapshot{seal(t, richMesh()), seal(t, transparentMesh()), seal(t, greeterMesh(1, 2))}
	for range 30 {
		meshes = append(meshes, seal(t, randomTransparentMesh(r, 2+r.IntN(8))))
		direct := randomMesh(r, 1000+r.IntN(1000))
		meshes = append(meshes, seal(t, direct))
	}
	for i, snap := range meshes {
		var proxies []Proxy
		for _, svc := range snap.ServiceNames() {
			proxies = append(proxies, Proxy{Service: svc, Shape: ShapeGRPC},
				Proxy{Service: svc, Shape: ShapeEnvoy, CertDir: "/certs/" + svc},
				Proxy{Service: svc, Shape: ShapeEnvoy, CertDir: "/other/" + svc})
		}
		r.Shuffle(len(proxies), func(a, b int) { proxies[a], proxies[b] = proxies[b], proxies[a] })
		m := newMemo(snap, nil)
		shared := make([]*Resources, len(proxies))
		done := make(chan int)
		for j, p := range proxies {
			go func() {
				res, err := renderShared(snap, p, []byte("bundle"), m)
				if err != nil {
					t.Error(err)
				}
				shared[j] = res
				done <- j
			}()
		}
		for range proxies {
			<-done
		}
		if t.Failed() {
			t.FailNow()
		}
		for j, p := range proxies {
			alone, err := RenderWithBundle(snap, p, []byte("bundle"))
			if err != nil {
				t.Fatal(err)
			}
			a, b := alone.byType(), shared[j].byType()
			for _, typ := range resourceTypes {
				if !sameBytes(t, a[typ], b[typ]) {
					t.Fatalf("mesh %d, %s: shared %s differ from rendering alone", i, p, shortType(typ))
				}
			}
			ha, _, _, err := alone.hashTypes(nil)
			if err != nil {
				t.Fatal(err)
			}
			hb, _, _, err := shared[j].hashTypes(m)
			if err != nil {
				t.Fatal(err)
			}
			for k, h := range ha {
				if typ := resourceTypes[k]; hb[k] != h {
					t.Fatalf("mesh %d, %s: %s hash %s shared, %s alone", i, p, shortType(typ), hb[k], h)
				}
			}
		}
	}
}

func sameBytes(t *testing.T, a, b []types.Resource) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for i := range a {
		x, err := opts.Marshal(a[i])
		if err != nil {
			t.Fatal(err)
		}
		y, err := opts.Marshal(b[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) || !proto.Equal(a[i], b[i]) || cachev3.GetResourceName(a[i]) != cachev3.GetResourceName(b[i]) {
			return false
		}
	}
	return true
}

// TestSharedAcrossProxies: proxies of different services that reach the same upstream get the
// very same cluster, route and load assignment messages, built once.
func TestSharedAcrossProxies(t *testing.T) {
	snap := seal(t, transparentMesh())
	m := newMemo(snap, nil)
	web, err := renderShared(snap, Proxy{Service: "web", Shape: ShapeEnvoy}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := renderShared(snap, Proxy{Service: "ops", Shape: ShapeEnvoy}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	const authSNI = "auth.default.dc1.internal.test.mesh"
	find := func(r *Resources) (c, e, rt proto.Message) {
		for _, x := range r.Clusters {
			if x.Name == authSNI {
				c = x
			}
		}
		for _, x := range r.Endpoints {
			if x.ClusterName == authSNI {
				e = x
			}
		}
		for _, x := range r.Routes {
			if x.Name == "auth" {
				rt = x
			}
		}
		return
	}
	wc, we, wr := find(web)
	oc, oe, or := find(ops)
	if wc == nil || we == nil || wr == nil || wc != oc || we != oe || wr != or {
		t.Fatalf("web and ops do not share auth's cluster, endpoints and route: %p/%p %p/%p %p/%p", wc, oc, we, oe, wr, or)
	}
}

// TestIncrementalRenderingIdentical serves random transparent and direct meshes to a proxy of
// every service in both shapes, then changes intentions and the default intention at random
// (some changes only RBAC, some what services reach) and services' modes: after each change every proxy's served
// resources are byte for byte a fresh rendering of the new snapshot, whether the server
// re-rendered the proxy, its listeners alone, or nothing.
func TestIncrementalRenderingIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 13))
	var listenerOnly int64
	for iter := range 8 {
		base := randomTransparentMesh(r, 3+r.IntN(6))
		srv := NewServer(testLogger(t))
		if err := srv.SetSnapshot(seal(t, base)); err != nil {
			t.Fatal(err)
		}
		cb := (*callbacks)(srv)
		var proxies []Proxy
		for i, svc := range base.ServiceNames() {
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
		cur := base
		for step := range 12 {
			next := mutateIntentions(r, cur)
			snap := seal(t, next)
			if err := srv.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			for _, p := range proxies {
				srv.mu.Lock()
				g := srv.groups[p]
				srv.mu.Unlock()
				if g == nil || g.res == nil {
					t.Fatalf("mesh %d step %d: %s has no group", iter, step, p)
				}
				fresh, err := Render(snap, p)
				if err != nil {
					t.Fatal(err)
				}
				a, b := fresh.byType(), g.res.byType()
				for _, typ := range resourceTypes {
					if typ == resourcev3.SecretType {
						continue // no bundle either way
					}
					if !sameBytes(t, a[typ], b[typ]) {
						t.Fatalf("mesh %d step %d, %s: served %s differ from a fresh rendering", iter, step, p, shortType(typ))
					}
				}
			}
			cur = next
		}
		listenerOnly += srv.listenerOnly.Load()
		srv.Close()
	}
	// The path under test was taken.
	if listenerOnly == 0 {
		t.Error("no proxy had its listeners alone re-rendered")
	}
}

// mutateIntentions returns a copy of s with a few intentions added, removed or changed.
func mutateIntentions(r *rand.Rand, s *mesh.Snapshot) *mesh.Snapshot {
	b, err := s.Encode()
	if err != nil {
		panic(err)
	}
	next, err := mesh.Decode(b)
	if err != nil {
		panic(err)
	}
	names := append([]string{mesh.Wildcard}, next.ServiceNames()...)
	for range 1 + r.IntN(2) {
		switch r.IntN(4) {
		case 3: // the mesh-wide default: every service's RBAC, and what transparent ones reach
			next.Mesh.DefaultIntention = map[mesh.Action]mesh.Action{mesh.Allow: mesh.Deny, mesh.Deny: mesh.Allow}[next.Mesh.DefaultIntention]
		case 0:
			if len(next.Intentions) > 0 {
				i := r.IntN(len(next.Intentions))
				next.Intentions = append(next.Intentions[:i], next.Intentions[i+1:]...)
			}
		default:
			src, dst := names[r.IntN(len(names))], names[1+r.IntN(len(names)-1)]
			in := &mesh.Intention{Source: src, Destination: dst, Action: []mesh.Action{mesh.Allow, mesh.Deny}[r.IntN(2)]}
			if mesh.IsHTTP(next.Services[dst].Protocol) && r.IntN(2) == 0 {
				in.Action = ""
				in.Permissions = []mesh.Permission{{Action: []mesh.Action{mesh.Allow, mesh.Deny}[r.IntN(2)], HTTP: randomMatch(r)}}
			}
			addIntention(next, in)
		}
	}
	next.Version = ""
	return next
}

// TestTransparentNewServiceNotEDSOnly: a commit that adds a service the default allows and
// changes another's endpoints re-renders a transparent proxy fully (its new filter chain),
// not only its EDS.
func TestTransparentNewServiceNotEDSOnly(t *testing.T) {
	base := newSnap(mesh.Allow)
	addService(base, "web", mesh.ProtocolHTTP, 8080, ep("10.0.0.1", 21000, "dc1")).Mode = mesh.ModeTransparent
	addService(base, "api", mesh.ProtocolHTTP, 8080, ep("10.0.0.2", 21000, "dc1"))
	next := newSnap(mesh.Allow)
	addService(next, "web", mesh.ProtocolHTTP, 8080, ep("10.0.0.1", 21000, "dc1")).Mode = mesh.ModeTransparent
	addService(next, "api", mesh.ProtocolHTTP, 8080, ep("10.0.0.2", 21000, "dc1"), ep("10.0.0.3", 21000, "dc1"))
	addService(next, "new", mesh.ProtocolHTTP, 8080, ep("10.0.0.4", 21000, "dc1"))
	a, b := seal(t, base), seal(t, next)
	d := dependencies(a, "web")
	ch := diff(a, b)
	if !ch.affects("web", d) {
		t.Fatal("a new reachable service does not affect a transparent proxy")
	}
	if ch.edsOnly("web", d) || ch.inboundOnly("web", d) {
		t.Fatal("a new reachable service is taken for an EDS-only or RBAC-only change")
	}
}

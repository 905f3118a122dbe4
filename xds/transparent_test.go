package xds

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/grpc/codes"

	mesh "github.com/meshgit/mesh"
)

// randomTransparentMesh returns n services of random protocols, all transparent (some through
// the mesh's mode, some through upstreams "*"), some declaring explicit upstreams too, with
// random intentions (actions and L7 permissions) at every precedence and a random default.
func randomTransparentMesh(r *rand.Rand, n int) *mesh.Snapshot {
	def := mesh.Deny
	if r.IntN(3) == 0 {
		def = mesh.Allow
	}
	s := newSnap(def)
	s.Mesh.TransparentProxy.MeshDestinationsOnly = r.IntN(2) == 0
	names := []string{mesh.Wildcard}
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		names = append(names, name)
		proto := []string{mesh.ProtocolTCP, mesh.ProtocolHTTP, mesh.ProtocolGRPC}[r.IntN(3)]
		addService(s, name, proto, 8080, ep(fmt.Sprintf("10.0.0.%d", i+1), 21000, "dc1")).Mode = mesh.ModeTransparent
	}
	for i := range n {
		if r.IntN(3) == 0 {
			addUpstream(s, fmt.Sprintf("s%d", i), fmt.Sprintf("s%d", r.IntN(n)), 9000+i)
		}
	}
	for range r.IntN(3 * n) {
		src, dst := names[r.IntN(len(names))], names[r.IntN(len(names))]
		if s.Intention(src, dst) != nil {
			continue
		}
		in := &mesh.Intention{Source: src, Destination: dst, Action: []mesh.Action{mesh.Allow, mesh.Deny}[r.IntN(2)]}
		if dst != mesh.Wildcard && mesh.IsHTTP(s.Services[dst].Protocol) && r.IntN(2) == 0 {
			in.Action = ""
			in.Permissions = []mesh.Permission{{Action: []mesh.Action{mesh.Allow, mesh.Deny}[r.IntN(2)], HTTP: randomMatch(r)}}
		}
		addIntention(s, in)
	}
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	return s
}

// TestTransparentReachDifferential renders every proxy of random transparent meshes and checks
// that what a sidecar can reach (the filter chains of its transparent listener, matched by the
// destinations' virtual IPs; the API listeners of a gRPC client) is exactly the declared
// upstreams plus the services to which AllowsSome says Authorize allows some request; that a
// request Authorize allows (among sampled ones) is always to a reachable service; and that
// every rendering passes ValidateAll and the consistency checks.
func TestTransparentReachDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 13))
	for iter := range 60 {
		snap := seal(t, randomTransparentMesh(r, 2+r.IntN(6)))
		for _, src := range snap.ServiceNames() {
			want := map[string]bool{}
			for u := range snap.Services[src].Upstreams {
				want[u] = true
			}
			for _, dst := range snap.ServiceNames() {
				d := mesh.AllowsSome(snap, src, dst, 0)
				if d.Differs || d.Undecided != "" {
					want[dst] = true
				}
				for range 4 {
					q := randomRequest(r)
					req := mesh.Request{Source: src, Destination: dst, Method: "POST", Path: q.path, Headers: q.headers}
					if mesh.Authorize(snap, req).Allowed() && !want[dst] {
						t.Fatalf("mesh %d: Authorize allows %s → %s %s, but it is not reachable", iter, src, dst, q.path)
					}
				}
			}
			wantList := sortedSet(want)
			for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
				res, err := Render(snap, Proxy{Service: src, Shape: shape})
				if err != nil {
					t.Fatal(err)
				}
				if err := res.Validate(); err != nil {
					t.Fatalf("mesh %d, %s/%s: ValidateAll: %v", iter, src, shape, err)
				}
				if err := res.Consistent(); err != nil {
					t.Fatalf("mesh %d, %s/%s: %v", iter, src, shape, err)
				}
				got := reachedBy(t, snap, res, shape)
				if !slices.Equal(got, wantList) {
					t.Fatalf("mesh %d, %s/%s reaches %v, want %v\n%s", iter, src, shape, got, wantList, describeIntentions(snap))
				}
			}
		}
	}
}

func sortedSet(m map[string]bool) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// reachedBy lists the services a rendered proxy can reach: for Envoy, the services whose
// virtual IP a filter chain of the transparent listener matches (each named after it, declared
// upstreams included); for gRPC, its API listeners.
func reachedBy(t *testing.T, snap *mesh.Snapshot, res *Resources, shape Shape) []string {
	t.Helper()
	set := map[string]bool{}
	byVIP := map[string]string{}
	for name, ip := range snap.VirtualIPs {
		byVIP[ip] = name
	}
	for _, l := range res.Listeners {
		switch {
		case shape == ShapeGRPC && l.GetApiListener() != nil:
			h := &hcmv3.HttpConnectionManager{}
			if err := l.GetApiListener().GetApiListener().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			set[h.GetRds().GetRouteConfigName()] = true
		case l.Name == TransparentListener:
			for _, fc := range l.FilterChains {
				ranges := fc.GetFilterChainMatch().GetPrefixRanges()
				if len(ranges) != 1 || ranges[0].GetPrefixLen().GetValue() != 32 || byVIP[ranges[0].AddressPrefix] != fc.Name {
					t.Fatalf("filter chain %s matches %v, not its virtual IP", fc.Name, ranges)
				}
				set[fc.Name] = true
			}
			if (l.DefaultFilterChain != nil) == snap.Mesh.TransparentProxy.MeshDestinationsOnly {
				t.Fatalf("passthrough %v with meshDestinationsOnly %v", l.DefaultFilterChain != nil, snap.Mesh.TransparentProxy.MeshDestinationsOnly)
			}
		}
	}
	return sortedSet(set)
}

// TestEndToEndTransparentGRPC: grpc-go clients of transparent services reach greeter, which
// they declare nowhere, as soon as an intention allows them, over real xDS and mTLS.
func TestEndToEndTransparentGRPC(t *testing.T) {
	ca := newTestCA(t)
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	lis, port := listenLoopback(t)
	build := func(batchAllowed bool) *mesh.Snapshot {
		m := newSnap(mesh.Deny)
		addService(m, "greeter", mesh.ProtocolGRPC, 8080, ep("127.0.0.1", port, "dc1"))
		addService(m, "web", mesh.ProtocolGRPC, 8080).Mode = mesh.ModeTransparent
		addService(m, "batch", mesh.ProtocolGRPC, 8080).Mode = mesh.ModeTransparent
		allow(m, "web", "greeter")
		if batchAllowed {
			allow(m, "batch", "greeter")
		}
		m.VirtualIPs = mesh.AssignVirtualIPs(m.ServiceNames())
		return seal(t, m)
	}
	if err := srv.SetSnapshot(build(false)); err != nil {
		t.Fatal(err)
	}
	startGreeter(t, lis, addr, "greeter", "greeter-1", "v1", ca.issue(t, "greeter"))
	web := dialService(t, addr, "web", "web-1", "greeter", ca.issue(t, "web"))
	if got, code, err := call(web, "/test.Greeter/Hello"); code != codes.OK || got != "v1" {
		t.Fatalf("web → greeter, declared nowhere: %q %v %v", got, code, err)
	}
	if res, err := Render(srv.Snapshot(), Proxy{Service: "batch", Shape: ShapeGRPC}); err != nil || len(res.Listeners) != 0 {
		t.Fatalf("batch, allowed nothing, gets listeners %v (%v)", res.Listeners, err)
	}
	if err := srv.SetSnapshot(build(true)); err != nil {
		t.Fatal(err)
	}
	batch := dialService(t, addr, "batch", "batch-1", "greeter", ca.issue(t, "batch"))
	if got, code, err := call(batch, "/test.Greeter/Hello"); code != codes.OK || got != "v1" {
		t.Fatalf("batch → greeter once an intention allows it: %q %v %v", got, code, err)
	}
}

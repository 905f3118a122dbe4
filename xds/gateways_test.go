package xds

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/structpb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// gatewayMesh: api runs only in dc2; web in dc1 calls it there.
const gatewayMesh = `package mesh
mesh: {name: "gw", trustDomain: "shop.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2", "dc3"], meshGateway: mode: "%s"}
services: api: {port: 8080, endpoints: [{address: "10.2.0.7", port: 21000, datacenter: "dc2"}]}
services: web: {port: 8080, endpoints: [{address: "10.1.0.5", port: 21000, datacenter: "dc1"}], upstreams: api: {localPort: 9191, datacenter: "dc2"}}
intentions: api: web: action: "allow"
`

func gatewaySnapshot(t *testing.T, mode string) *mesh.Snapshot {
	t.Helper()
	snap, err := compiler.Compile(context.Background(), []compiler.File{{Name: "m.cue", Data: []byte(fmt.Sprintf(gatewayMesh, mode))}})
	if err != nil {
		t.Fatal(err)
	}
	return snap.WithMeshGateways(map[string][]mesh.Gateway{
		"dc1": {{Service: "gateway", Address: "10.1.0.2", Port: 8443, WANAddress: "198.51.100.1", WANPort: 443, Health: mesh.HealthPassing}},
		"dc2": {{Service: "gateway", Address: "10.2.0.2", Port: 8443, WANAddress: "198.51.100.2", WANPort: 443, Health: mesh.HealthPassing}},
		"dc3": {{Service: "gateway", Address: "10.3.0.2", Port: 8443, Health: mesh.HealthCritical}},
	})
}

// inDC is snap seen from datacenter dc.
func inDC(snap *mesh.Snapshot, dc string) *mesh.Snapshot {
	c := snap.WithServices(snap.Services)
	c.Mesh.Datacenter = dc
	return c
}

// TestRenderGatewayGolden: the gateway's resources (Consul's shapes) and a sidecar's endpoints
// for an upstream in another datacenter in each mode pass ValidateAll, are consistent, and match
// the golden files.
func TestRenderGatewayGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden", "gateways")
	check := func(t *testing.T, name string, snap *mesh.Snapshot, p Proxy) *Resources {
		t.Helper()
		res, err := RenderWithBundle(snap, p, goldenBundle(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Validate(); err != nil {
			t.Errorf("ValidateAll: %v", err)
		}
		if err := res.Consistent(); err != nil {
			t.Errorf("consistency: %v", err)
		}
		cs, err := cachev3.NewSnapshot("1", res.byType())
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.Consistent(); err != nil {
			t.Errorf("go-control-plane Consistent: %v", err)
		}
		checkGolden(t, filepath.Join(dir, name+".listeners.json"), goldenJSON(t, messages(res.Listeners)))
		checkGolden(t, filepath.Join(dir, name+".clusters.json"), goldenJSON(t, messages(res.Clusters)))
		checkGolden(t, filepath.Join(dir, name+".endpoints.json"), goldenJSON(t, messages(res.Endpoints)))
		checkGolden(t, filepath.Join(dir, name+".extensions.json"), goldenJSON(t, messages(res.Extensions)))
		if p.Kind == mesh.KindMeshGateway && len(res.Extensions) != 0 {
			t.Errorf("a gateway got %d extension configs; it has no RBAC", len(res.Extensions))
		}
		return res
	}
	gw := Proxy{Service: "gateway", Shape: ShapeEnvoy, Kind: mesh.KindMeshGateway}
	local := gatewaySnapshot(t, mesh.MeshGatewayLocal)
	res := check(t, "gateway-dc1", local, gw)
	if len(res.Secrets) != 0 {
		t.Errorf("a gateway got %d secrets; it must hold no certificate", len(res.Secrets))
	}
	l := res.Listeners[0]
	if len(l.ListenerFilters) != 1 || l.ListenerFilters[0].Name != tlsInspectorName {
		t.Errorf("gateway listener filters %v, want tls_inspector", l.ListenerFilters)
	}
	if l.FilterChains[0].TransportSocket != nil {
		t.Error("the gateway terminates TLS")
	}
	// dc2 and dc3 have gateways: a chain each, then the local one.
	if n := len(l.FilterChains); n != 3 {
		t.Fatalf("%d filter chains, want 3", n)
	}
	if got := l.FilterChains[0].FilterChainMatch.GetServerNames(); len(got) != 1 || got[0] != "*.dc2.internal.shop.mesh" {
		t.Errorf("first chain matches %v", got)
	}
	assertTCPCluster(t, l.FilterChains[0], "dc2.internal.shop.mesh")
	if last := l.FilterChains[2]; last.FilterChainMatch != nil || last.Filters[0].Name != sniClusterName {
		t.Errorf("last chain: %v", last)
	}
	check(t, "gateway-dc2", inDC(local, "dc2"), gw)

	for _, mode := range []string{mesh.MeshGatewayLocal, mesh.MeshGatewayRemote, mesh.MeshGatewayNone} {
		snap := gatewaySnapshot(t, mode)
		res := check(t, "web-"+mode, snap, Proxy{Service: "web", Shape: ShapeEnvoy, CertDir: "/certs/web"})
		want := map[string]string{mesh.MeshGatewayLocal: "10.1.0.2", mesh.MeshGatewayRemote: "198.51.100.2", mesh.MeshGatewayNone: "10.2.0.7"}[mode]
		got := res.Endpoints[0].Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
		if got != want || res.Endpoints[0].ClusterName != "api.default.dc2.internal.shop.mesh" {
			t.Errorf("mode %s: web dials %s for %s, want %s", mode, got, res.Endpoints[0].ClusterName, want)
		}
	}
}

func assertTCPCluster(t *testing.T, fc *listenerv3.FilterChain, want string) {
	t.Helper()
	var tp tcpproxyv3.TcpProxy
	if err := fc.Filters[len(fc.Filters)-1].GetTypedConfig().UnmarshalTo(&tp); err != nil {
		t.Fatal(err)
	}
	if tp.GetCluster() != want {
		t.Errorf("tcp_proxy to %q, want %q", tp.GetCluster(), want)
	}
}

// TestGatewayNode: node metadata mesh.kind makes a proxy a gateway, and nothing else is accepted.
func TestGatewayNode(t *testing.T) {
	md := func(kind string) *structpb.Struct {
		s, _ := structpb.NewStruct(map[string]any{KindMetadataKey: kind})
		return s
	}
	p, err := ProxyFromNode(&corev3.Node{Id: "gw-1", Cluster: "gateway", Metadata: md(mesh.KindMeshGateway)})
	if err != nil || p.Kind != mesh.KindMeshGateway {
		t.Fatalf("got %+v, %v", p, err)
	}
	if _, err := ProxyFromNode(&corev3.Node{Id: "gw-1", Cluster: "gateway", Metadata: md("ingress-gateway")}); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
}

// failoverMesh: api runs in dc1 and dc2 and fails over from dc1 to dc2; web calls it in dc1.
const failoverMesh = `package mesh
mesh: {name: "fo", trustDomain: "shop.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"], meshGateway: mode: "local"}
services: api: {protocol: "grpc", port: 8080, endpoints: [{address: "10.1.0.7", port: 21000, datacenter: "dc1"}, {address: "10.2.0.7", port: 21000, datacenter: "dc2"}]}
services: web: {protocol: "grpc", port: 8080, upstreams: api: localPort: 9191}
resolvers: api: failover: "*": datacenters: ["dc2"]
intentions: api: web: action: "allow"
`

// TestFailoverByRemoteHealth: a failover target in another datacenter is a priority only while
// federation counts a healthy instance there; for proxyless gRPC, which does not weigh
// priorities by health, a local target whose endpoints are all critical gives way to it.
func TestFailoverByRemoteHealth(t *testing.T) {
	base, err := compiler.Compile(context.Background(), []compiler.File{{Name: "m.cue", Data: []byte(failoverMesh)}})
	if err != nil {
		t.Fatal(err)
	}
	gws := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "10.1.0.2", Port: 8443}}, "dc2": {{Service: "gateway", Address: "10.2.0.2", Port: 8443}}}
	critical := func(s *mesh.Snapshot) *mesh.Snapshot {
		svcs := maps.Clone(s.Services)
		api := *svcs["api"]
		api.Endpoints = slices.Clone(api.Endpoints)
		api.Endpoints[0].Health = mesh.HealthCritical
		svcs["api"] = &api
		return s.WithServices(svcs)
	}
	priorities := func(snap *mesh.Snapshot, shape Shape) []string {
		res, err := Render(snap, Proxy{Service: "web", Shape: shape})
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Validate(); err != nil {
			t.Fatalf("ValidateAll: %v", err)
		}
		// Envoy reaches dc2 through the gateways: its endpoints select dc2's SNI.
		if ms := res.Clusters[0].TransportSocketMatches; shape == ShapeEnvoy && (len(ms) != 1 || ms[0].Name != "api.dc2") {
			t.Fatalf("transport socket matches %v, want one for api.dc2", ms)
		}
		var out []string
		for _, loc := range res.Endpoints[0].Endpoints {
			out = append(out, fmt.Sprintf("%d:%s", loc.Priority, loc.LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()))
		}
		return out
	}
	for name, tc := range map[string]struct {
		snap  *mesh.Snapshot
		shape Shape
		want  string
	}{
		"envoy, dc2 healthy":              {critical(base).WithRemote(gws, map[string]map[string]int{"dc2": {"api": 1}}), ShapeEnvoy, "[0:10.1.0.7 1:10.1.0.2]"},
		"envoy, dc2 down":                 {critical(base).WithRemote(gws, map[string]map[string]int{"dc2": {"api": 0}}), ShapeEnvoy, "[0:10.1.0.7]"},
		"envoy, dc2 unknown":              {critical(base).WithRemote(gws, nil), ShapeEnvoy, "[0:10.1.0.7 1:10.1.0.2]"},
		"grpc, dc1 critical":              {critical(base).WithRemote(gws, map[string]map[string]int{"dc2": {"api": 1}}), ShapeGRPC, "[0:10.2.0.7]"},
		"grpc, dc1 healthy":               {base.WithRemote(gws, map[string]map[string]int{"dc2": {"api": 1}}), ShapeGRPC, "[0:10.1.0.7 1:10.2.0.7]"},
		"grpc, dc1 critical and dc2 down": {critical(base).WithRemote(gws, map[string]map[string]int{"dc2": {"api": 0}}), ShapeGRPC, "[0:10.1.0.7]"},
	} {
		if got := fmt.Sprint(priorities(tc.snap, tc.shape)); got != tc.want {
			t.Errorf("%s: priorities %s, want %s", name, got, tc.want)
		}
	}
}

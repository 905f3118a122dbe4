package xds

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// denseMesh is n transparent HTTP services that may all call each other ("*" → "*" allow):
// every proxy reaches every service. extraPerm adds an L7 intention s1 → s0 allowing one path
// prefix: a change of s0's RBAC only, which leaves what everyone reaches as it was.
func denseMesh(n int, extraPerm string) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	s.Mesh.Mode = mesh.ModeTransparent
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		addService(s, name, mesh.ProtocolHTTP, 8080, ep(fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), 21000, "dc1")).Mode = mesh.ModeTransparent
	}
	allow(s, "*", "*")
	if extraPerm != "" {
		addIntention(s, &mesh.Intention{Source: "s1", Destination: "s0", Permissions: []mesh.Permission{
			{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{PathPrefix: extraPerm}},
		}})
	}
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	return s
}

var envoyTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.EndpointType}

// TestPushOnlyWhatChanged: when one service's RBAC changes in a dense transparent mesh, a
// stream of a proxy of that service, state of the world or delta, gets the RBAC extension
// configuration of its public listener (ECDS) and nothing else: no listeners (SotW LDS would
// carry the transparent outbound listener, a filter chain per reachable service, again), no
// clusters, routes or endpoints; a proxy of another service gets nothing.
func TestPushOnlyWhatChanged(t *testing.T) {
	const n = 40
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, denseMesh(n, "/a"))); err != nil {
		t.Fatal(err)
	}
	cc := dialRaw(t, addr)

	sotw := newRawADS(t, cc)
	initial := map[string]int{}
	for i, typ := range envoyTypes {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = envoyNode("s0-sotw", "s0")
		}
		sotw.send(req)
		r := sotw.mustRecv(typ)
		initial[shortType(typ)] = proto.Size(r)
		if typ != resourcev3.ListenerType && len(r.Resources) < n {
			t.Fatalf("%s: %d resources, want one per reachable service (%d)", shortType(typ), len(r.Resources), n)
		}
		sotw.ack(r)
	}
	// As Envoy does on seeing public_listener's RBAC filter: subscribe to its configuration.
	sotw.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{PublicHTTPRBAC}})
	if r := sotw.mustRecv(resourcev3.ExtensionConfigType); len(r.Resources) != 1 {
		t.Fatalf("extension configs: %d, want the public listener's RBAC", len(r.Resources))
	} else {
		sotw.ack(r, PublicHTTPRBAC)
	}
	s0 := openDelta(t, cc, "s0-delta", "s0")
	s5 := openDelta(t, cc, "s5-delta", "s5")
	waitFor(t, 15*time.Second, "every stream ACKed", func() bool {
		return upToDate(srv, "s0-sotw") && upToDate(srv, "s0-delta") && upToDate(srv, "s5-delta")
	})

	if err := srv.SetSnapshot(seal(t, denseMesh(n, "/b"))); err != nil {
		t.Fatal(err)
	}
	r, err := sotw.recv(15 * time.Second)
	if err != nil || r.GetTypeUrl() != resourcev3.ExtensionConfigType || len(r.Resources) != 1 {
		t.Fatalf("SotW stream got %s with %d resources (err %v), want the RBAC extension config alone",
			shortType(r.GetTypeUrl()), len(r.GetResources()), err)
	}
	sotw.ack(r, PublicHTTPRBAC)
	if extra, _ := sotw.recv(300 * time.Millisecond); extra != nil {
		t.Errorf("SotW stream also got %s: %d resources", shortType(extra.TypeUrl), len(extra.Resources))
	}
	t.Logf("SotW: %d bytes initially (%v), %d bytes for the RBAC change", sum(initial), initial, proto.Size(r))

	d := s0.recv(t, 15*time.Second)
	if d == nil || d.TypeUrl != resourcev3.ExtensionConfigType || len(d.Resources) != 1 || d.Resources[0].Name != PublicHTTPRBAC || len(d.RemovedResources) != 0 {
		t.Fatalf("delta stream of s0 got %v, want %s alone", d, PublicHTTPRBAC)
	}
	s0.ack(t, d)
	if extra := s0.recv(t, 300*time.Millisecond); extra != nil {
		t.Errorf("delta stream of s0 also got %s: %d resources", shortType(extra.TypeUrl), len(extra.Resources))
	}
	if extra := s5.recv(t, 300*time.Millisecond); extra != nil {
		t.Errorf("delta stream of s5, whose configuration did not change, got %s: %d resources", shortType(extra.TypeUrl), len(extra.Resources))
	}
	t.Logf("delta: %d bytes for the RBAC change", proto.Size(d))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

type deltaADS struct {
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
}

// openDelta opens a delta ADS stream subscribing to every Envoy type (wildcard) and to the HTTP
// public listener's RBAC extension config (by name), and ACKs the initial responses.
func openDelta(t *testing.T, cc *grpc.ClientConn, id, service string) *deltaADS {
	t.Helper()
	return openDeltaRBAC(t, cc, id, service, PublicHTTPRBAC)
}

// openDeltaRBAC is openDelta subscribing to the extension config rbac.
func openDeltaRBAC(t *testing.T, cc *grpc.ClientConn, id, service, rbac string) *deltaADS {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := &deltaADS{stream: st, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 16)}
	go func() {
		defer close(d.resps)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			d.resps <- r
		}
	}()
	for i, typ := range append(envoyTypes[:len(envoyTypes):len(envoyTypes)], resourcev3.ExtensionConfigType) {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = envoyNode(id, service)
		}
		if typ == resourcev3.ExtensionConfigType {
			req.ResourceNamesSubscribe = []string{rbac} // as Envoy subscribes: by name
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		r := d.recv(t, 15*time.Second)
		if r == nil || r.TypeUrl != typ {
			t.Fatalf("%s: no initial %s response: %v", id, shortType(typ), r)
		}
		d.ack(t, r)
	}
	return d
}

func (d *deltaADS) recv(t *testing.T, timeout time.Duration) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case r := <-d.resps:
		return r
	case <-time.After(timeout):
		return nil
	}
}

func (d *deltaADS) ack(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) {
	t.Helper()
	if err := d.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
}

// TestProtocolChangeKeepsRBAC: when a tcp service becomes an http one, its sidecar's new
// public_listener names the HTTP RBAC extension config, and the network one that the running
// listener uses is not removed (make before break): a delta stream gets the new listener and
// no removal, and then the HTTP rules it subscribes to.
func TestProtocolChangeKeepsRBAC(t *testing.T) {
	mk := func(protocol string) *mesh.Snapshot {
		s := newSnap(mesh.Deny)
		addService(s, "api", protocol, 8080, ep("10.0.0.1", 21000, "dc1"))
		addService(s, "web", mesh.ProtocolTCP, 8080, ep("10.0.0.2", 21000, "dc1"))
		allow(s, "web", "api")
		return s
	}
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, mk(mesh.ProtocolTCP))); err != nil {
		t.Fatal(err)
	}
	d := openDeltaRBAC(t, dialRaw(t, addr), "api-1", "api", PublicNetworkRBAC)
	if err := srv.SetSnapshot(seal(t, mk(mesh.ProtocolHTTP))); err != nil {
		t.Fatal(err)
	}
	sawListener := false
	for r := d.recv(t, 5*time.Second); r != nil; r = d.recv(t, 500*time.Millisecond) {
		if slices.Contains(r.RemovedResources, PublicNetworkRBAC) {
			t.Fatalf("the network RBAC that the running listener uses was removed (%s response)", shortType(r.TypeUrl))
		}
		sawListener = sawListener || r.TypeUrl == resourcev3.ListenerType
		d.ack(t, r)
	}
	if !sawListener {
		t.Fatal("no new public_listener")
	}
	// The new listener names the HTTP RBAC: Envoy subscribes to it.
	if err := d.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ExtensionConfigType, ResourceNamesSubscribe: []string{PublicHTTPRBAC}}); err != nil {
		t.Fatal(err)
	}
	r := d.recv(t, 5*time.Second)
	if r == nil || r.TypeUrl != resourcev3.ExtensionConfigType || len(r.Resources) != 1 || r.Resources[0].Name != PublicHTTPRBAC {
		t.Fatalf("after subscribing to %s: %v", PublicHTTPRBAC, r)
	}
}

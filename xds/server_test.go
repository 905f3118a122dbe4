package xds

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/xds"

	mesh "github.com/meshgit/mesh"
)

func TestProxyFromNode(t *testing.T) {
	for _, c := range []struct {
		node *corev3.Node
		want Proxy
		err  bool
	}{
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "envoy"}, Proxy{Service: "web", Shape: ShapeEnvoy}, false},
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "gRPC Go"}, Proxy{Service: "web", Shape: ShapeGRPC}, false},
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "gRPC Java"}, Proxy{Service: "web", Shape: ShapeGRPC}, false},
		{&corev3.Node{Id: "a", Cluster: "web"}, Proxy{Service: "web", Shape: ShapeEnvoy}, false},
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "envoy", Metadata: mustStruct(map[string]any{ShapeMetadataKey: "grpc"})}, Proxy{Service: "web", Shape: ShapeGRPC}, false},
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "gRPC Go", Metadata: mustStruct(map[string]any{ShapeMetadataKey: "envoy"})}, Proxy{Service: "web", Shape: ShapeEnvoy}, false},
		{&corev3.Node{Id: "a", Cluster: "web", Metadata: mustStruct(map[string]any{ShapeMetadataKey: 3})}, Proxy{}, true},
		{&corev3.Node{Id: "a", Cluster: "web", Metadata: mustStruct(map[string]any{CertDirMetadataKey: "/run/mesh/web"})}, Proxy{Service: "web", Shape: ShapeEnvoy, CertDir: "/run/mesh/web"}, false},
		{&corev3.Node{Id: "a", Cluster: "web", UserAgentName: "gRPC Go", Metadata: mustStruct(map[string]any{CertDirMetadataKey: "/run/mesh/web"})}, Proxy{Service: "web", Shape: ShapeGRPC}, false},
		{&corev3.Node{Id: "a", Cluster: "web", Metadata: mustStruct(map[string]any{CertDirMetadataKey: "certs"})}, Proxy{}, true},
		{&corev3.Node{Id: "a", Cluster: "web", Metadata: mustStruct(map[string]any{CertDirMetadataKey: "/run/../etc"})}, Proxy{}, true},
		{&corev3.Node{Id: "a", Cluster: "web", Metadata: mustStruct(map[string]any{CertDirMetadataKey: 7})}, Proxy{}, true},
		{&corev3.Node{Id: "a"}, Proxy{}, true},
		{&corev3.Node{Cluster: "web"}, Proxy{}, true},
		{nil, Proxy{}, true},
	} {
		got, err := ProxyFromNode(c.node)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ProxyFromNode(%v) = %v, %v; want %v, error %v", c.node, got, err, c.want, c.err)
		}
	}
}

// TestNodeBeforeFirstSnapshot: a node that connects before there is any snapshot gets its
// configuration when the first one is set; a node that connects after gets it on its first
// request.
func TestNodeBeforeFirstSnapshot(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	cc := dialRaw(t, addr)
	early := newRawADS(t, cc)
	early.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("early", "web"), TypeUrl: resourcev3.ClusterType})
	if r, err := early.recv(200 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("before any snapshot: got %v, %v", r, err)
	}
	waitFor(t, 5*time.Second, "early node registered", func() bool { _, ok := proxyStatus(srv, "early"); return ok })
	if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	r := early.mustRecv(resourcev3.ClusterType)
	if len(r.Resources) == 0 {
		t.Fatal("early node got no clusters")
	}
	early.ack(r)
	late := newRawADS(t, cc)
	late.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("late", "api"), TypeUrl: resourcev3.ClusterType})
	late.ack(late.mustRecv(resourcev3.ClusterType))
	waitFor(t, 5*time.Second, "both up to date", func() bool { return upToDate(srv, "early") && upToDate(srv, "late") })
	b, err := json.Marshal(srv.Proxies())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("proxies: %s", b)
}

// TestUnchangedProxyNotPushed: a change that affects api's proxies only is not sent to web's.
// An RBAC change reaches the proxies of its service as their RBAC extension configuration
// alone: their listeners do not change.
func TestUnchangedProxyNotPushed(t *testing.T) {
	srv, addr := servingServer(t)
	cc := dialRaw(t, addr)
	web := newRawADS(t, cc)
	db := newRawADS(t, cc)
	for _, c := range []struct {
		a        *rawADS
		id, svc  string
		ecdsName string
	}{{web, "web-1", "web", PublicHTTPRBAC}, {db, "db-1", "db", PublicNetworkRBAC}} {
		c.a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(c.id, c.svc), TypeUrl: resourcev3.ListenerType})
		c.a.ack(c.a.mustRecv(resourcev3.ListenerType))
		c.a.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{c.ecdsName}})
		if r := c.a.mustRecv(resourcev3.ExtensionConfigType); len(r.Resources) != 1 {
			t.Fatalf("%s: %d extension configs, want its RBAC (%s)", c.id, len(r.Resources), c.ecdsName)
		} else {
			c.a.ack(r, c.ecdsName)
		}
	}
	next := richMesh()
	allow(next, "auth", "db") // changes db's RBAC, nothing of web's
	if err := srv.SetSnapshot(seal(t, next)); err != nil {
		t.Fatal(err)
	}
	r, err := db.recv(5 * time.Second)
	if err != nil || r.GetTypeUrl() != resourcev3.ExtensionConfigType || len(r.Resources) != 1 {
		t.Fatalf("db got %s (err %v), want its RBAC extension config alone", shortType(r.GetTypeUrl()), err)
	}
	db.ack(r, PublicNetworkRBAC)
	if r, err := db.recv(300 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("db was also pushed %s (err %v): only its RBAC changed", shortType(r.GetTypeUrl()), err)
	}
	if r, err := web.recv(300 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("web was pushed %v (err %v) although its resources did not change", r, err)
	}
}

// TestInvalidSnapshotChangesNothing: a snapshot that cannot be rendered consistently is
// refused as a whole.
func TestInvalidSnapshotChangesNothing(t *testing.T) {
	srv, addr := servingServer(t)
	cc := dialRaw(t, addr)
	web := newRawADS(t, cc)
	web.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType})
	web.ack(web.mustRecv(resourcev3.ClusterType))
	before := srv.Snapshot()
	bad := richMesh()
	bad.Chains["api"].Routes[1].Splits[0].Target = "nowhere" // a split naming no target
	err := srv.SetSnapshot(seal(t, bad))
	if err == nil {
		t.Fatal("SetSnapshot accepted a snapshot whose routes name a missing cluster")
	}
	t.Logf("refused: %v", err)
	if srv.Snapshot() != before {
		t.Fatal("the served snapshot changed")
	}
	if r, _ := web.recv(200 * time.Millisecond); r != nil {
		t.Fatalf("web was pushed %v", r)
	}
}

// TestDeltaADS: a delta (incremental) ADS client gets its resources and its ACK is recorded.
func TestDeltaADS(t *testing.T) {
	srv, addr := servingServer(t)
	cc := dialRaw(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode("delta-1", "web"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Resources) == 0 {
		t.Fatal("no clusters")
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "delta ACK recorded", func() bool {
		p, _ := proxyStatus(srv, "delta-1")
		return p.Acked["clusters"] != ""
	})
	// A change reaches the delta stream too.
	next := richMesh()
	addService(next, "extra", "http", 80, ep("10.9.9.9", 21000, "dc1"))
	addUpstream(next, "web", "extra", 9999)
	if err := srv.SetSnapshot(seal(t, next)); err != nil {
		t.Fatal(err)
	}
	r, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.String(), "extra.default.dc1") {
		t.Fatalf("delta update lacks the new cluster: %v", r)
	}
}

func TestBootstraps(t *testing.T) {
	b, err := EnvoyBootstrap(EnvoyBootstrapOptions{Service: "web", ProxyID: "web-1", XDSAddr: "127.0.0.1:8502"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if b.Node.Cluster != "web" || b.Node.Id != "web-1" {
		t.Fatalf("node %v", b.Node)
	}
	if _, err := EnvoyBootstrap(EnvoyBootstrapOptions{Service: "web", ProxyID: "web-1", XDSAddr: "nonsense"}); err == nil {
		t.Fatal("bad xds address accepted")
	}
	g, err := GRPCBootstrap(GRPCBootstrapOptions{Service: "web", XDSAddr: "127.0.0.1:8502", CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	// gRPC's own parser accepts it (and the e2e tests run real clients and servers on it).
	if _, err := xds.NewXDSResolverWithConfigForTesting(g); err != nil {
		t.Fatalf("gRPC rejects the bootstrap: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(g, &v); err != nil {
		t.Fatal(err)
	}
	if v["server_listener_resource_name_template"] != GRPCServerListenerTemplate {
		t.Fatalf("template %v", v["server_listener_resource_name_template"])
	}
}

func TestCloseEndsStreams(t *testing.T) {
	srv, addr := servingServer(t)
	a := newRawADS(t, dialRaw(t, addr))
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ListenerType})
	a.ack(a.mustRecv(resourcev3.ListenerType))
	srv.Close()
	srv.Close() // idempotent
	if _, err := a.recv(5 * time.Second); err == nil {
		t.Fatal("stream still open 5s after Close")
	}
	if err := srv.SetSnapshot(seal(t, richMesh())); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetSnapshot after Close: %v, want ErrClosed", err)
	}
}

// TestUnknownServiceLater: a node that connected before the first snapshot naming a service the
// snapshot lacks, and a node whose service is removed, both get NotFound on their streams.
func TestUnknownServiceLater(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	cc := dialRaw(t, addr)
	ghost := newRawADS(t, cc)
	ghost.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("ghost-1", "ghost"), TypeUrl: resourcev3.ListenerType})
	web := newRawADS(t, cc)
	web.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ListenerType})
	waitFor(t, 5*time.Second, "both registered", func() bool {
		_, a := proxyStatus(srv, "ghost-1")
		_, b := proxyStatus(srv, "web-1")
		return a && b
	})
	if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	if st := ghost.expectError(); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "ghost") {
		t.Fatalf("ghost: got %v, want NotFound naming the service", st)
	}
	web.ack(web.mustRecv(resourcev3.ListenerType))
	without := richMesh()
	delete(without.Services, "web")
	delete(without.Chains, "web")
	if err := srv.SetSnapshot(seal(t, without)); err != nil {
		t.Fatal(err)
	}
	if st := web.expectError(); st.Code() != codes.NotFound {
		t.Fatalf("web after its removal: got %v, want NotFound", st)
	}
}

// TestInvalidTypedConfigRefused: a resource whose typed config (here an RBAC header matcher
// inside the HTTP connection manager) fails validation refuses the snapshot.
func TestInvalidTypedConfigRefused(t *testing.T) {
	srv, _ := servingServer(t)
	srv.mu.Lock()
	nd := &node{id: "api-1", proxy: Proxy{Service: "api", Shape: ShapeEnvoy}, streams: map[int64]bool{}}
	srv.nodes["api-1"] = nd
	srv.addStream(nd, 99)
	srv.mu.Unlock()
	bad := richMesh()
	addIntention(bad, &mesh.Intention{Source: "db", Destination: "api", Permissions: []mesh.Permission{
		{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Header: []mesh.HeaderMatch{{Name: "", Kind: mesh.MatchExact, Value: "x"}}}},
	}})
	err := srv.SetSnapshot(seal(t, bad))
	if !errors.Is(err, ErrInvalidResource) {
		t.Fatalf("got %v, want ErrInvalidResource", err)
	}
	t.Logf("refused: %v", err)
}

// TestReconnectAfterChange: a node that disconnected, missed a change that affects it and
// reconnects (within the time its status is kept) gets the new configuration, not the one it
// had.
func TestReconnectAfterChange(t *testing.T) {
	srv, addr := servingServer(t)
	cc1 := dialRaw(t, addr)
	a := newRawADS(t, cc1)
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType})
	before := a.mustRecv(resourcev3.ClusterType)
	a.ack(before)
	cc1.Close()
	waitFor(t, 5*time.Second, "web-1 disconnected", func() bool { p, _ := proxyStatus(srv, "web-1"); return !p.Connected })

	next := richMesh()
	delete(next.Services["web"].Upstreams, "auth")
	if err := srv.SetSnapshot(seal(t, next)); err != nil {
		t.Fatal(err)
	}
	b := newRawADS(t, dialRaw(t, addr))
	b.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType})
	after := b.mustRecv(resourcev3.ClusterType)
	if len(after.Resources) >= len(before.Resources) {
		t.Fatalf("after dropping an upstream, web got %d clusters (had %d): stale configuration", len(after.Resources), len(before.Resources))
	}
}

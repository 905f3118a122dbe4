package xds

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	mesh "github.com/meshgit/mesh"
)

// TestProxyThatStopsReadingBlocksNoOther holds that a proxy which opens its streams and never
// reads a response (so that gRPC's flow control stops the server's sends to it) holds up
// nobody else: SetSnapshot returns, another proxy of the same service is sent every new
// version, and /v1/proxies answers, over state-of-the-world and delta streams alike. The
// responses (hundreds of clusters and endpoints) are far larger than the stuck stream's
// 64 KiB flow-control window.
func TestProxyThatStopsReadingBlocksNoOther(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			testStuckProxy(t, delta)
		})
	}
}

// stuckMesh is web with explicit upstreams to n services of eps endpoints each; gen changes
// every endpoint's port and the mesh's minimum TLS version, so every endpoint set and every
// cluster changes (two large responses at once for a state-of-the-world stream).
func stuckMesh(t *testing.T, n, eps, gen int) *mesh.Snapshot {
	s := newSnap(mesh.Allow)
	s.Mesh.TLS.MinVersion = []string{"TLSv1_2", "TLSv1_3"}[gen%2]
	addService(s, "web", mesh.ProtocolHTTP, 8080, ep("10.0.0.1", 21000, "dc1"))
	for i := range n {
		name := fmt.Sprintf("svc-%03d", i)
		var list []mesh.Endpoint
		for j := range eps {
			list = append(list, ep(fmt.Sprintf("10.1.%d.%d", i, j+1), 20000+gen, "dc1"))
		}
		addService(s, name, mesh.ProtocolHTTP, 8080, list...)
		addUpstream(s, "web", name, 10000+i)
	}
	return seal(t, s)
}

var stuckTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.EndpointType}

// openADS opens an ADS stream for an Envoy node of web subscribing to stuckTypes, and reads
// and ACKs every response until seen (given each response's type and version; a delta
// response's version is its first resource's) returns false: then it reads no more.
func openADS(t *testing.T, ctx context.Context, cc *grpc.ClientConn, delta bool, id string, seen func(typeURL, version string) bool) {
	send, recv := sotwClient(t, ctx, cc)
	if delta {
		send, recv = deltaClient(t, ctx, cc)
	}
	node := &corev3.Node{Id: id, Cluster: "web", UserAgentName: "envoy"}
	for _, typ := range stuckTypes {
		if err := send(typ, node, "", ""); err != nil {
			t.Fatal(err)
		}
		node = nil // on the first request only
	}
	go func() {
		for {
			typ, version, nonce, err := recv()
			if err != nil || send(typ, nil, version, nonce) != nil || !seen(typ, version) {
				return
			}
		}
	}()
}

// adsSend sends a request of typ (with node, when not nil), ACKing version and nonce;
// adsRecv returns a response's type, version and nonce.
type (
	adsSend func(typ string, node *corev3.Node, version, nonce string) error
	adsRecv func() (typ, version, nonce string, err error)
)

func sotwClient(t *testing.T, ctx context.Context, cc *grpc.ClientConn) (adsSend, adsRecv) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func(typ string, node *corev3.Node, version, nonce string) error {
			return st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, Node: node, VersionInfo: version, ResponseNonce: nonce})
		}, func() (string, string, string, error) {
			r, err := st.Recv()
			if err != nil {
				return "", "", "", err
			}
			return r.TypeUrl, r.VersionInfo, r.Nonce, nil
		}
}

func deltaClient(t *testing.T, ctx context.Context, cc *grpc.ClientConn) (adsSend, adsRecv) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func(typ string, node *corev3.Node, _, nonce string) error {
			return st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, Node: node, ResponseNonce: nonce})
		}, func() (string, string, string, error) {
			r, err := st.Recv()
			if err != nil {
				return "", "", "", err
			}
			version := ""
			if len(r.Resources) > 0 {
				version = r.Resources[0].Version
			}
			return r.TypeUrl, version, r.Nonce, nil
		}
}

func testStuckProxy(t *testing.T, delta bool) {
	s := NewServer(testLogger(t))
	if err := s.SetSnapshot(stuckMesh(t, 300, 20, 0)); err != nil {
		t.Fatal(err)
	}
	addr := startXDS(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dial := func() *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	// The stuck proxy reads and ACKs its first response of every type (so the server answers
	// its changes), then never reads again.
	var mu sync.Mutex
	stuckSeen := map[string]bool{}
	openADS(t, ctx, dial(), delta, "stuck", func(typeURL, version string) bool {
		mu.Lock()
		defer mu.Unlock()
		stuckSeen[typeURL] = true
		return len(stuckSeen) < len(stuckTypes)
	})
	// The good proxy reads and ACKs everything, recording the endpoints' latest version.
	edsVersion := ""
	openADS(t, ctx, dial(), delta, "good", func(typeURL, version string) bool {
		if typeURL == resourcev3.EndpointType {
			mu.Lock()
			edsVersion = version
			mu.Unlock()
		}
		return true
	})
	latest := func() string {
		mu.Lock()
		defer mu.Unlock()
		return edsVersion
	}
	waitFor(t, 10*time.Second, "the stuck proxy's first responses", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stuckSeen) == len(stuckTypes)
	})
	waitFor(t, 10*time.Second, "the good proxy's first endpoints", func() bool { return latest() != "" })

	for gen := 1; gen <= 4; gen++ {
		before := latest()
		done := make(chan error, 1)
		go func() { done <- s.SetSnapshot(stuckMesh(t, 300, 20, gen)) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d: SetSnapshot blocked by the proxy that stopped reading", gen)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("change %d to reach the good proxy", gen), func() bool { return latest() != before })
		listed := make(chan int, 1)
		go func() { listed <- len(s.Proxies()) }()
		select {
		case n := <-listed:
			if n != 2 {
				t.Fatalf("change %d: /v1/proxies lists %d proxies, want 2 (stuck and good)", gen, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d: Proxies blocked by the proxy that stopped reading", gen)
		}
	}
}

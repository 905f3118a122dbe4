package xds

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgit/mesh/internal/adsclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// go-control-plane numbers state-of-the-world and delta streams with separate counters: on a
// fresh server the first stream of each kind is stream 1. A delta proxy and a
// state-of-the-world proxy connected at the same time must both be registered and configured,
// and each keeps its own stream state when the other closes.
func TestSotWAndDeltaStreamsWithTheSameNumber(t *testing.T) {
	s := NewServer(nil)
	addr := startXDS(t, s)
	if err := s.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dctx, dcancel := context.WithCancel(ctx)
	delta, err := ads.DeltaAggregatedResources(dctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if r, err := delta.Recv(); err != nil || len(r.Resources) == 0 {
		t.Fatalf("delta proxy: %v %v", r, err)
	}

	sotw, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sotw.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("api-1", "api"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := sotw.Recv()
	if err != nil || len(r.Resources) == 0 {
		t.Fatalf("state-of-the-world proxy, whose stream has the delta stream's number, got no clusters: %v %v", r, err)
	}
	if err := sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}

	// Both nodes are registered, each with its own ACK; closing the delta stream leaves api-1.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		web, api := s.nodes["web-1"], s.nodes["api-1"]
		acked := api != nil && len(api.streams) == 1
		s.mu.Unlock()
		if web != nil && acked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes not both registered: web-1 %v, api-1 %v", web != nil, api != nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dcancel()
	deadline = time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		web, api := s.nodes["web-1"], s.nodes["api-1"]
		webGone := web == nil || len(web.streams) == 0
		apiUp := api != nil && len(api.streams) == 1
		s.mu.Unlock()
		if webGone && apiUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the delta stream closed: web-1 disconnected %v, api-1 still connected %v", webGone, apiUp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNodeUpToDateWhenLaggingStreamCloses: a node with two streams, one of which never ACKs
// the latest configuration (an old stream of a proxy that reconnected, still open on the server
// for a moment), becomes up to date when that stream closes, if the other has ACKed everything.
// Before, its acked version stayed the old one until some later ACK.
func TestNodeUpToDateWhenLaggingStreamCloses(t *testing.T) {
	s := NewServer(testLogger(t))
	if err := s.SetSnapshot(seal(t, denseMesh(3, ""))); err != nil {
		t.Fatal(err)
	}
	cc := dialRaw(t, startXDS(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The lagging stream: listeners only, ACKed once, then never again.
	lagCtx, lagCancel := context.WithCancel(ctx)
	defer lagCancel()
	lag, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(lagCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("n", "s0"), TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	r, err := lag.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	c, err := adsclient.Open(ctx, cc, envoyNode("n", "s0"), adsclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clientHolds := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		g := s.groups[Proxy{Service: "s0", Shape: ShapeEnvoy}]
		for _, typ := range adsclient.Types {
			if g == nil || c.Version(typ) != g.typeVersion.get(typ) {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "the node up to date with two streams", func() bool { return clientHolds() && upToDate(s, "n") })

	// A change of s0's listeners (a new service to reach): the lagging stream receives it and
	// does not ACK; the other ACKs everything.
	if err := s.SetSnapshot(seal(t, denseMesh(4, ""))); err != nil {
		t.Fatal(err)
	}
	r2, err := lag.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r2.VersionInfo == r.VersionInfo {
		t.Fatal("the change did not change s0's listeners")
	}
	waitFor(t, 10*time.Second, "the other stream to hold the new configuration", clientHolds)
	time.Sleep(50 * time.Millisecond) // its last ACK processed
	if upToDate(s, "n") {
		t.Fatal("up to date while a stream has not ACKed the new listeners")
	}
	lagCancel()
	waitFor(t, 10*time.Second, "the node up to date once the lagging stream closed", func() bool { return upToDate(s, "n") })
}

package xds

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// The dense mesh of issue 13: 1,000 HTTP services, each proxy able to reach every service
// ("*" → "*" allow), in two models: "explicit" (the old one: every service lists the 999
// others as upstreams, one local port each) and "transparent" (mode "transparent", nothing
// listed). The authorization change edits one L7 intention into every proxied service (an
// RBAC change of each, leaving what anyone reaches as it was).

const denseServices = 1000

func denseName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func denseBenchMesh(transparent bool, variant int) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	if transparent {
		s.Mesh.Mode = mesh.ModeTransparent
	}
	for i := range denseServices {
		svc := addService(s, denseName(i), mesh.ProtocolHTTP, 8080,
			ep(fmt.Sprintf("10.%d.%d.1", i/250, i%250), 21000, "dc1"), ep(fmt.Sprintf("10.%d.%d.2", i/250, i%250), 21000, "dc1"))
		if transparent {
			svc.Mode = mesh.ModeTransparent
			continue
		}
		for j := range denseServices {
			if j != i {
				addUpstream(s, denseName(i), denseName(j), 10000+j)
			}
		}
	}
	prefix := []string{"/admin/", "/internal/"}[variant%2]
	for i := range denseServices {
		s.Intentions = append(s.Intentions, &mesh.Intention{Source: denseName(denseServices - 1 - i), Destination: denseName(i),
			Precedence: mesh.PrecedenceExact, Permissions: []mesh.Permission{
				{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: prefix}},
				{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Methods: []string{"GET", "HEAD"}}},
			}})
	}
	s.Intentions = append(s.Intentions, &mesh.Intention{Source: mesh.Wildcard, Destination: mesh.Wildcard,
		Precedence: mesh.PrecedenceWildcardBoth, Action: mesh.Allow})
	mesh.SortIntentions(s.Intentions)
	if transparent {
		s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	}
	return s
}

// BenchmarkDenseMesh measures, per model, protocol (state of the world or delta) and number
// of raw ADS streams (one node per service, each subscribing to listeners, clusters, routes
// and endpoints, and by name to its public listener's RBAC extension config, as Envoy does,
// and ACKing everything): the authorization change until every stream has received its new
// RBAC and ACKed it (ns/op, and the CPU time it took), the bytes pushed
// per proxy for it, and once per run the initial sync of every stream and the bytes per proxy
// it took.
func BenchmarkDenseMesh(b *testing.B) {
	for _, model := range []string{"explicit", "transparent"} {
		var snaps [2]*mesh.Snapshot
		for _, proto := range []string{"sotw", "delta"} {
			for _, streams := range []int{100, 500} {
				b.Run(fmt.Sprintf("model=%s/xds=%s/streams=%d", model, proto, streams), func(b *testing.B) {
					if snaps[0] == nil {
						for v := range snaps {
							snaps[v] = seal(b, denseBenchMesh(model == "transparent", v))
						}
					}
					benchDense(b, snaps, streams, proto == "delta")
				})
			}
		}
	}
}

// denseClient is one raw ADS stream.
type denseClient struct {
	bytes atomic.Int64 // received
	types atomic.Int32 // types received at least once
	rbac  atomic.Value // version of the last RBAC extension config received
}

// denseTypes are what a dense client subscribes to: the Envoy types and the RBAC of its
// public listener (by name).
var denseTypes = append(envoyTypes[:len(envoyTypes):len(envoyTypes)], resourcev3.ExtensionConfigType)

func benchDense(b *testing.B, snaps [2]*mesh.Snapshot, streams int, delta bool) {
	s := NewServer(nil)
	addr := startXDS(b, s)
	if err := s.SetSnapshot(snaps[0]); err != nil {
		b.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		conns[i] = cc
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*denseClient, streams)
	var synced sync.WaitGroup
	start := time.Now()
	for i := range streams {
		c := &denseClient{}
		c.rbac.Store("")
		clients[i] = c
		synced.Add(1)
		cc := conns[i%len(conns)]
		node := envoyNode(fmt.Sprintf("dense-%d", i), denseName(i))
		if delta {
			openDenseDelta(b, ctx, cc, node, c, &synced)
		} else {
			openDenseSotW(b, ctx, cc, node, c, &synced)
		}
	}
	synced.Wait()
	initial := time.Since(start)
	var initialBytes int64
	for _, c := range clients {
		initialBytes += c.bytes.Swap(0)
	}

	i, cpu := 1, cpuTime()
	for b.Loop() {
		want := snaps[i%2].Version
		if err := s.SetSnapshot(snaps[i%2]); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(120 * time.Second)
		for _, c := range clients {
			for !strings.HasPrefix(c.rbac.Load().(string), want) {
				if time.Now().After(deadline) {
					b.Fatalf("not every stream got version %s within 120s", want)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		i++
	}
	reportCPU(b, cpu, i-1)
	var changeBytes int64
	for _, c := range clients {
		changeBytes += c.bytes.Load()
	}
	b.ReportMetric(initial.Seconds()*1000, "initial-sync-ms")
	b.ReportMetric(float64(initialBytes)/float64(streams)/1024, "initial-KB/proxy")
	b.ReportMetric(float64(changeBytes)/float64(streams)/float64(i-1)/1024, "change-KB/proxy")
}

// openDenseSotW opens a state-of-the-world stream for node and answers it in the background.
func openDenseSotW(b *testing.B, ctx context.Context, cc *grpc.ClientConn, node *corev3.Node, c *denseClient, synced *sync.WaitGroup) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for k, typ := range denseTypes {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
		if k == 0 {
			req.Node = node
		}
		if typ == resourcev3.ExtensionConfigType {
			req.ResourceNames = []string{PublicHTTPRBAC}
		}
		if err := st.Send(req); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		seen := map[string]bool{}
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.bytes.Add(int64(proto.Size(r)))
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}
			if r.TypeUrl == resourcev3.ExtensionConfigType {
				ack.ResourceNames = []string{PublicHTTPRBAC}
			}
			if err := st.Send(ack); err != nil {
				return
			}
			c.received(r.TypeUrl, r.VersionInfo, seen, synced)
		}
	}()
}

// openDenseDelta opens a delta stream for node and answers it in the background.
func openDenseDelta(b *testing.B, ctx context.Context, cc *grpc.ClientConn, node *corev3.Node, c *denseClient, synced *sync.WaitGroup) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for k, typ := range denseTypes {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
		if k == 0 {
			req.Node = node
		}
		if typ == resourcev3.ExtensionConfigType {
			req.ResourceNamesSubscribe = []string{PublicHTTPRBAC}
		}
		if err := st.Send(req); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		seen := map[string]bool{}
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.bytes.Add(int64(proto.Size(r)))
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
				return
			}
			c.received(r.TypeUrl, r.SystemVersionInfo, seen, synced)
		}
	}()
}

// received records a response (already ACKed).
func (c *denseClient) received(typeURL, version string, seen map[string]bool, synced *sync.WaitGroup) {
	if typeURL == resourcev3.ExtensionConfigType {
		c.rbac.Store(version)
	}
	if !seen[typeURL] {
		seen[typeURL] = true
		if c.types.Add(1) == int32(len(denseTypes)) {
			synced.Done()
		}
	}
}

package xds

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawADS is a hand-driven ADS client, for requests no well-behaved client would send.
type rawADS struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discoveryv3.DiscoveryResponse
	errc   chan error
}

func dialRaw(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func newRawADS(t testing.TB, cc *grpc.ClientConn) *rawADS {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &rawADS{t: t, stream: st, resps: make(chan *discoveryv3.DiscoveryResponse, 64), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				a.errc <- err
				return
			}
			a.resps <- r
		}
	}()
	return a
}

func envoyNode(id, cluster string) *corev3.Node {
	return &corev3.Node{Id: id, Cluster: cluster, UserAgentName: "envoy"}
}

func (a *rawADS) send(r *discoveryv3.DiscoveryRequest) {
	a.t.Helper()
	if err := a.stream.Send(r); err != nil {
		a.t.Fatalf("send: %v", err)
	}
}

// recv waits up to d for a response, or returns the stream's error.
func (a *rawADS) recv(d time.Duration) (*discoveryv3.DiscoveryResponse, error) {
	select {
	case r := <-a.resps:
		return r, nil
	case err := <-a.errc:
		a.errc <- err
		return nil, err
	case <-time.After(d):
		return nil, nil
	}
}

func (a *rawADS) mustRecv(typeURL string) *discoveryv3.DiscoveryResponse {
	a.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r, err := a.recv(time.Until(deadline))
		if err != nil {
			a.t.Fatalf("stream failed: %v", err)
		}
		if r != nil && r.TypeUrl == typeURL {
			return r
		}
	}
	a.t.Fatalf("no %s response within 5s", typeURL)
	return nil
}

func (a *rawADS) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	a.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

// expectError waits for the stream to fail and returns its status.
func (a *rawADS) expectError() *status.Status {
	a.t.Helper()
	for i := 0; i < 10; i++ {
		r, err := a.recv(5 * time.Second)
		if err != nil {
			return status.Convert(err)
		}
		if r == nil {
			break
		}
	}
	a.t.Fatal("stream did not fail")
	return nil
}

func servingServer(t *testing.T) (*Server, string) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	return srv, addr
}

func TestMalformedRequests(t *testing.T) {
	srv, addr := servingServer(t)
	cc := dialRaw(t, addr)

	// A healthy stream that must be unaffected by everything below.
	good := newRawADS(t, cc)
	good.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType})
	good.ack(good.mustRecv(resourcev3.ClusterType))

	t.Run("unknown service", func(t *testing.T) {
		a := newRawADS(t, cc)
		a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("x-1", "nope"), TypeUrl: resourcev3.ListenerType})
		st := a.expectError()
		if st.Code() != codes.NotFound || !strings.Contains(st.Message(), `"nope"`) {
			t.Fatalf("got %v, want NotFound naming the service", st)
		}
	})
	t.Run("no node", func(t *testing.T) {
		a := newRawADS(t, cc)
		a.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
		if st := a.expectError(); st.Code() != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", st)
		}
	})
	t.Run("node without cluster", func(t *testing.T) {
		a := newRawADS(t, cc)
		a.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "y"}, TypeUrl: resourcev3.ListenerType})
		if st := a.expectError(); st.Code() != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", st)
		}
	})
	t.Run("bad shape override", func(t *testing.T) {
		a := newRawADS(t, cc)
		n := envoyNode("z", "web")
		n.Metadata = mustStruct(map[string]any{ShapeMetadataKey: "istio"})
		a.send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resourcev3.ListenerType})
		if st := a.expectError(); st.Code() != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", st)
		}
	})
	t.Run("unknown type URL and bogus names", func(t *testing.T) {
		a := newRawADS(t, cc)
		a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-2", "web"), TypeUrl: "type.googleapis.com/no.such.Type"})
		a.send(&discoveryv3.DiscoveryRequest{TypeUrl: "", ResourceNames: []string{"x"}})
		// An empty type URL on ADS is a protocol error: the stream ends, others go on.
		if st := a.expectError(); st.Code() != codes.InvalidArgument {
			t.Fatalf("empty type URL: got %v", st)
		}
		b := newRawADS(t, cc)
		b.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-3", "web"), TypeUrl: "type.googleapis.com/no.such.Type", VersionInfo: "bogus", ResponseNonce: "42"})
		b.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.RouteType, ResourceNames: []string{"\x00", strings.Repeat("n", 10000), "api"}})
		r := b.mustRecv(resourcev3.RouteType)
		if len(r.Resources) != 1 {
			t.Fatalf("asked for 3 names of which 1 exists, got %d resources", len(r.Resources))
		}
	})
	t.Run("NACK storm", func(t *testing.T) {
		a := newRawADS(t, cc)
		a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("storm-1", "web"), TypeUrl: resourcev3.ListenerType})
		r := a.mustRecv(resourcev3.ListenerType)
		for i := 0; i < 500; i++ {
			a.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce,
				ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "storm"}})
		}
		// The rejected configuration is not resent.
		if extra, err := a.recv(300 * time.Millisecond); extra != nil || err != nil {
			t.Fatalf("after NACKs got response %v / error %v, want silence", extra, err)
		}
		p, _ := proxyStatus(srv, "storm-1")
		if p.LastNack == nil || p.LastNack.Error != "storm" || p.LastNack.Version != r.VersionInfo {
			t.Fatalf("last NACK = %+v, want version %s error storm", p.LastNack, r.VersionInfo)
		}
		if n := testutil.ToFloat64(srv.metrics.nacks.WithLabelValues("listeners")); n < 1 {
			t.Fatalf("mesh_xds_nacks_total{type=listeners} = %v", n)
		}
	})

	// The healthy stream still gets updates.
	next := richMesh()
	addService(next, "extra", "http", 80, ep("10.9.9.9", 21000, "dc1"))
	addUpstream(next, "web", "extra", 9999)
	if err := srv.SetSnapshot(seal(t, next)); err != nil {
		t.Fatal(err)
	}
	r := good.mustRecv(resourcev3.ClusterType)
	if !strings.Contains(r.String(), "extra.default.dc1") {
		t.Fatalf("healthy stream got clusters without the new upstream")
	}
}

// TestConcurrentStreamsAndSnapshots runs streams connecting, NACKing and closing while
// snapshots change (run with -race).
func TestConcurrentStreamsAndSnapshots(t *testing.T) {
	srv, addr := servingServer(t)
	cc := dialRaw(t, addr)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
			if err != nil {
				return
			}
			svc := []string{"web", "api", "db", "auth", "nope"}[i%5]
			st.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("c-"+svc, svc), TypeUrl: resourcev3.ClusterType})
			for j := 0; j < 5; j++ {
				r, err := st.Recv()
				if err != nil {
					return
				}
				var detail *rpcstatus.Status
				if j%2 == 1 {
					detail = &rpcstatus.Status{Message: "no"}
				}
				st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ErrorDetail: detail})
			}
		}(i)
	}
	for i := 0; i < 10; i++ {
		m := richMesh()
		addService(m, "extra", "http", 80+i, ep("10.9.9.9", 21000+i, "dc1"))
		addUpstream(m, "web", "extra", 9999)
		if err := srv.SetSnapshot(seal(t, m)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	_ = srv.Proxies()
}

package xds

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	mesh "github.com/meshgit/mesh"
)

// Suspend ends the open ADS streams and refuses new ones with Unavailable; Resume serves again.
func TestSuspendResume(t *testing.T) {
	s := NewServer(testLogger(t))
	snap := newSnap(mesh.Deny)
	addService(snap, "web", "grpc", 8080, ep("127.0.0.1", 8080, "dc1"))
	if err := s.SetSnapshot(seal(t, snap)); err != nil {
		t.Fatal(err)
	}
	addr := startXDS(t, s)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	open := func(node string) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		err = st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node, Cluster: "web"},
			TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		_, err = st.Recv()
		return st, err
	}
	st, err := open("web-1")
	if err != nil {
		t.Fatalf("before Suspend: %v", err)
	}
	s.Suspend("removed from the cluster")
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("open stream after Suspend: %v, want Unavailable", err)
	}
	if _, err := open("web-2"); status.Code(err) != codes.Unavailable {
		t.Errorf("new stream while suspended: %v, want Unavailable", err)
	}
	s.Resume()
	if _, err := open("web-3"); err != nil {
		t.Errorf("after Resume: %v", err)
	}
}

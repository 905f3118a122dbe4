package xds

import (
	"context"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// fuzzTypes are the type URLs a fuzzed request names: the served ones, one nobody serves, none.
var fuzzTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType,
	resourcev3.EndpointType, resourcev3.ExtensionConfigType, "type.googleapis.com/bogus", ""}

// fuzzNames are the resource names a fuzzed request subscribes to: some the mesh has, some not.
var fuzzNames = []string{"*", "api", "web", "outbound_listener:127.0.0.1:15001", "rbac:public_listener:http", "nope"}

// fuzzStreams serves richMesh over loopback gRPC, as mesh serve does, for the stream fuzzers.
func fuzzStreams(f *testing.F) *grpc.ClientConn {
	s := NewServer(nil)
	if err := s.SetSnapshot(seal(f, richMesh())); err != nil {
		f.Fatal(err)
	}
	return dialRaw(f, startXDS(f, s))
}

// drain receives on a stream until it ends, keeping the last nonce and version seen.
type drain struct {
	nonce, version chan string
	done           chan struct{}
}

func newDrain(recv func() (string, string, error)) *drain {
	d := &drain{nonce: make(chan string, 1), version: make(chan string, 1), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for {
			n, v, err := recv()
			if err != nil {
				return
			}
			select {
			case <-d.nonce:
			default:
			}
			d.nonce <- n
			select {
			case <-d.version:
			default:
			}
			d.version <- v
		}
	}()
	return d
}

func (d *drain) last() (string, string) {
	n, v := "", ""
	select {
	case n = <-d.nonce:
	default:
	}
	select {
	case v = <-d.version:
	default:
	}
	return n, v
}

// FuzzDeltaStreamRequests sends arbitrary sequences of delta requests on a real ADS stream of the
// server's own delta server: subscriptions and unsubscriptions by name and to "*", initial
// versions, ACKs and NACKs of the last response or of nonces it never sent, unknown and empty
// type URLs, in any order. The server must not panic, must end a stream it refuses with a status
// rather than hang, and must still serve a well-behaved proxy afterwards.
func FuzzDeltaStreamRequests(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Add([]byte{16, 33, 50, 67, 84, 101, 118, 7, 255})
	f.Add([]byte{2, 2, 3, 3, 1, 0, 5, 4})
	cc := fuzzStreams(f)
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := newDrain(func() (string, string, error) {
			r, err := st.Recv()
			return r.GetNonce(), r.GetSystemVersionInfo(), err
		})
		for i, op := range ops {
			typ := fuzzTypes[int(op>>3)%len(fuzzTypes)]
			name := fuzzNames[int(op>>5)%len(fuzzNames)]
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
			if i == 0 {
				req.Node = envoyNode("fuzz-delta", "web")
			}
			switch op % 7 {
			case 0:
				req.ResourceNamesSubscribe = []string{name}
			case 1:
				req.ResourceNamesUnsubscribe = []string{name}
			case 2:
				req.ResourceNamesSubscribe, req.InitialResourceVersions = []string{name}, map[string]string{name: strconv.Itoa(int(op))}
			case 3:
				req.ResponseNonce, _ = d.last()
			case 4:
				req.ResponseNonce, _ = d.last()
				req.ErrorDetail = &rpcstatus.Status{Message: "rejected"}
			case 5:
				req.ResponseNonce = strconv.Itoa(int(op))
			case 6:
				req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe = []string{name, name}, []string{name}
			}
			if st.Send(req) != nil {
				break // the server ended the stream; its status is for Recv
			}
		}
		st.CloseSend()
		cancel()
		<-d.done
		if n, err := serveOnce(cc, "fuzz-after", "web"); err != nil || n == 0 {
			t.Fatalf("the server no longer serves a proxy after %v: %d clusters, %v", ops, n, err)
		}
	})
}

// FuzzSotwStreamRequests does the same with state-of-the-world requests on the server's own SotW
// server: resource names (duplicates, "*", absent ones), versions and nonces of the last response
// or made up, NACKs, unknown and empty type URLs.
func FuzzSotwStreamRequests(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Add([]byte{16, 33, 50, 67, 84, 101, 118, 7, 255})
	f.Add([]byte{8, 8, 9, 9, 10, 11, 12})
	cc := fuzzStreams(f)
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := newDrain(func() (string, string, error) {
			r, err := st.Recv()
			return r.GetNonce(), r.GetVersionInfo(), err
		})
		for i, op := range ops {
			typ := fuzzTypes[int(op>>3)%len(fuzzTypes)]
			name := fuzzNames[int(op>>5)%len(fuzzNames)]
			req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
			if i == 0 {
				req.Node = envoyNode("fuzz-sotw", "web")
			}
			switch op % 6 {
			case 0:
				req.ResourceNames = []string{name}
			case 1:
				req.ResourceNames = []string{name, name, "*"}
			case 2:
				req.ResponseNonce, req.VersionInfo = d.last()
			case 3:
				req.ResponseNonce, req.VersionInfo = d.last()
				req.ErrorDetail = &rpcstatus.Status{Message: "rejected"}
			case 4:
				req.ResponseNonce, req.VersionInfo = strconv.Itoa(int(op)), "made-up"
			case 5:
				req.ResourceNames = nil
			}
			if st.Send(req) != nil {
				break
			}
		}
		st.CloseSend()
		cancel()
		<-d.done
		if n, err := serveOnce(cc, "fuzz-after", "web"); err != nil || n == 0 {
			t.Fatalf("the server no longer serves a proxy after %v: %d clusters, %v", ops, n, err)
		}
	})
}

// serveOnce opens a well-behaved SotW stream as node (id, service) and returns the clusters of
// its first response.
func serveOnce(cc *grpc.ClientConn, id, service string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return 0, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode(id, service), TypeUrl: resourcev3.ClusterType}); err != nil {
		return 0, err
	}
	r, err := st.Recv()
	if err != nil {
		return 0, err
	}
	return len(r.Resources), nil
}

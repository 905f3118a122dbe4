package xds

import (
	"context"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// ads serves the aggregated discovery service: state of the world with the server's own
// (sotwserver.go; go-control-plane's with WithControlPlaneSotW or WithSnapshotCache), delta
// likewise (deltaserver.go; go-control-plane's with WithControlPlaneDeltaServer). Either way the Server can end one stream with an error of its
// choosing (go-control-plane has no such hook; killable below): a node whose
// service disappears from the mesh, or that connected before the first snapshot and names a
// service the snapshot does not have, gets a NotFound on its stream, as a node that names an
// unknown service on its first request does.
type ads struct{ s *Server }

type killKey struct{}

// killable returns a context for a stream that the server can cancel with a cause, and a
// function that waits for either the handler or the cancellation.
func killable(parent context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	return context.WithValue(ctx, killKey{}, cancel), cancel
}

// streamKiller returns the cancel function killable put in ctx, or nil.
func streamKiller(ctx context.Context) context.CancelCauseFunc {
	if ctx == nil {
		return nil
	}
	k, _ := ctx.Value(killKey{}).(context.CancelCauseFunc)
	return k
}

type sotwStream struct {
	grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	ctx context.Context
}

func (w sotwStream) Context() context.Context { return w.ctx }

type deltaStream struct {
	grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	ctx context.Context
}

func (w deltaStream) Context() context.Context { return w.ctx }

func (a ads) StreamAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	if a.s.sotw != nil {
		return a.s.sotw.serve(st) // sotwserver.go
	}
	ctx, cancel := killable(st.Context())
	defer cancel(nil)
	return run(ctx, func() error { return a.s.xds.StreamAggregatedResources(sotwStream{st, ctx}) })
}

func (a ads) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	if a.s.delta != nil {
		return a.s.delta.serve(st) // deltaserver.go
	}
	ctx, cancel := killable(st.Context())
	defer cancel(nil)
	return run(ctx, func() error { return a.s.xds.DeltaAggregatedResources(deltaStream{st, ctx}) })
}

// run runs handler until it returns or ctx is cancelled. When the server kills the stream, run
// returns the cause; returning ends the gRPC stream, and the handler's goroutine then ends on
// its failing Recv.
func run(ctx context.Context, handler func() error) error {
	done := make(chan error, 1)
	go func() { done <- handler() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

package xds

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// GRPCServerOptions are the options of the gRPC server that Register serves on, for what an
// xDS server sends: a proxy's first responses are large (in a dense mesh a delta response of
// clusters or endpoints is 0.3–1 MB, 1.4 MB in all per proxy), everything after is small, and
// what proxies send is small.
//
//   - Messages are encoded into buffers that are garbage once written, not into gRPC's pool:
//     the pool rounds each up to a power of two (a 600 KB response takes 1 MB) and keeps what
//     hundreds of streams' initial syncs had in flight alive through the next garbage
//     collections, which the Go runtime then counts as live heap and doubles (GOGC).
//   - Each connection reads through a small buffer: requests (subscriptions, ACKs) are a few
//     hundred bytes, and a proxy holds its connection for as long as it runs.
//
// Writes keep gRPC's default, a write buffer shared between connections while idle.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		experimental.BufferPool(mem.NopBufferPool{}),
		grpc.ReadBufferSize(4 << 10),
	}
}

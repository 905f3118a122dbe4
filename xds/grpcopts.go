package xds

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// GRPCServerOptions are the options of the gRPC server that Register serves on, for what an
// xDS server sends: a proxy's first responses are large (in a dense mesh a delta response of
// clusters or endpoints is 0.3–1 MB, 1.4 MB in all per proxy), everything after is small, and
// what proxies send is small.
//
//   - Responses are encoded into buffers of their exact size that are garbage once written
//     (unpooledCodec): gRPC's own proto codec takes every message over 1 KB from its buffer
//     pool, whose tiers round a 40 KB–1 MB response up to 1 MB, and a server holds one encoded
//     response per stream until the proxy has read it (gRPC's write quota of a stream is 64 KB
//     and always lets one message through). With 500 proxies in their initial sync that was
//     800 MB of 1 MB buffers at the peak of the heap, for 250 MB of responses.
//   - Each connection reads through a small buffer: requests (subscriptions, ACKs) are a few
//     hundred bytes, and a proxy holds its connection for as long as it runs.
//
// Writes keep gRPC's default, a write buffer shared between connections while idle.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(unpooledCodec{}),
		grpc.ReadBufferSize(4 << 10),
	}
}

// unpooledCodec is gRPC's proto codec encoding into a buffer of the message's size, owned by
// nobody once written. It decodes as gRPC's codec does. A message that carries its own wire
// encoding (preEncoded) is sent as that encoding, unchanged and uncopied; one that decodes
// itself (preDecoded, decode.go) is handed the received bytes, which it must not keep.
type unpooledCodec struct{}

// preEncoded is a message whose wire encoding is already made, and may be shared by every
// stream that sends it: its buffers must never be freed or altered (mem.SliceBuffer's Free is a
// no-op). It must also be a proto.Message encoding to the same bytes, for gRPC servers without
// GRPCServerOptions, whose codec ignores preEncoded.
type preEncoded interface {
	proto.Message
	wire() mem.BufferSlice
}

func (unpooledCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(preEncoded); ok {
		return p.wire(), nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto: cannot marshal %T, want proto.Message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (unpooledCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if p, ok := v.(preDecoded); ok { // decode.go
		if len(data) == 1 {
			return p.decodeWire(data[0].ReadOnlyData())
		}
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return p.decodeWire(buf.ReadOnlyData())
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto: cannot unmarshal into %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Name is gRPC's proto codec's: it serves the content subtype "proto" (and none given).
func (unpooledCodec) Name() string { return "proto" }

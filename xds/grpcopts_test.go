package xds

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// unpooledCodec encodes a message into one buffer of exactly its encoding, which no pool owns
// (freeing it returns nothing anywhere), and decodes it back; anything but a message is an error.
func TestUnpooledCodec(t *testing.T) {
	big := make([]byte, 300<<10) // over gRPC's pooling threshold, under its 1 MB tier
	for i := range big {
		big[i] = byte(i)
	}
	in := &discoveryv3.DeltaDiscoveryResponse{Nonce: "7", TypeUrl: "t", Resources: []*discoveryv3.Resource{
		{Name: "a", Version: "1", Resource: &anypb.Any{TypeUrl: "x", Value: big}}}}
	var c unpooledCodec
	data, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(in)
	if len(data) != 1 || data.Len() != len(want) || cap(data[0].ReadOnlyData()) != len(want) {
		t.Fatalf("encoded into %d buffers of %d bytes (capacity %d), want one of %d", len(data), data.Len(), cap(data[0].ReadOnlyData()), len(want))
	}
	if _, ok := data[0].(mem.SliceBuffer); !ok {
		t.Fatalf("encoded into a %T, want a mem.SliceBuffer (owned by no pool)", data[0])
	}
	out := &discoveryv3.DeltaDiscoveryResponse{}
	if err := c.Unmarshal(data, out); err != nil || !proto.Equal(in, out) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("marshalled a string")
	}
	if err := c.Unmarshal(data, new(int)); err == nil {
		t.Fatal("unmarshalled into an int")
	}
	if c.Name() != "proto" {
		t.Fatalf("name %q", c.Name())
	}
}

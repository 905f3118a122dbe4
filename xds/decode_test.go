package xds

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// fuzzExpect is what the decoders are told the stream expects, in FuzzRequestDecoding.
var fuzzExpect = ackExpect{version: "v1", nonce: "7", names: []string{"a", "b"}}

// FuzzRequestDecoding holds the own servers' request decoding (decode.go) to proto.Unmarshal:
// for any bytes, both fail or both decode the same DiscoveryRequest (and
// DeltaDiscoveryRequest), and the names the stream expects are never modified.
func FuzzRequestDecoding(f *testing.F) {
	must := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	node := &corev3.Node{Id: "n", Cluster: "api"}
	for _, m := range []proto.Message{
		&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: "v1", ResponseNonce: "7", ResourceNames: []string{"a", "b"}},
		&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, Node: node},
		&discoveryv3.DiscoveryRequest{TypeUrl: "x", VersionInfo: "v0", ResponseNonce: "7", ResourceNames: []string{"a", "c", "*"},
			ErrorDetail: &rpcstatus.Status{Code: 3, Message: "bad"}},
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "7"},
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, Node: node, ResourceNamesSubscribe: []string{"a"},
			ResourceNamesUnsubscribe: []string{"b"}, InitialResourceVersions: map[string]string{"a": "1"}},
	} {
		f.Add(must(m))
	}
	f.Add(protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), "\xff"))
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3))
	f.Add(protowire.AppendString(protowire.AppendTag(must(&discoveryv3.DiscoveryRequest{TypeUrl: "t"}), 4, protowire.BytesType), "u"))
	f.Fuzz(func(t *testing.T, b []byte) {
		names := slices.Clone(fuzzExpect.names)
		exp := func(string) ackExpect {
			return ackExpect{version: fuzzExpect.version, nonce: fuzzExpect.nonce, names: names}
		}

		want := &discoveryv3.DiscoveryRequest{}
		werr := proto.Unmarshal(b, want)
		got := &sotwRequest{expect: exp}
		gerr := got.decodeWire(b)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("DiscoveryRequest: proto.Unmarshal: %v, decodeWire: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(want, &got.DiscoveryRequest) {
			t.Fatalf("DiscoveryRequest: decoded %v, want %v", &got.DiscoveryRequest, want)
		}

		dwant := &discoveryv3.DeltaDiscoveryRequest{}
		werr = proto.Unmarshal(b, dwant)
		dgot := &deltaRequest{expect: exp}
		gerr = dgot.decodeWire(b)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("DeltaDiscoveryRequest: proto.Unmarshal: %v, decodeWire: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(dwant, &dgot.DeltaDiscoveryRequest) {
			t.Fatalf("DeltaDiscoveryRequest: decoded %v, want %v", &dgot.DeltaDiscoveryRequest, dwant)
		}
		if !slices.Equal(names, fuzzExpect.names) {
			t.Fatalf("the expected names were modified: %q", names)
		}
	})
}

// An ACK as the stream expects it is decoded without allocating, into the stream's message.
func TestAckDecodingAllocatesNothing(t *testing.T) {
	names := []string{"a", "b"}
	exp := func(string) ackExpect { return ackExpect{version: "v1", nonce: "7", names: names} }
	sotwACK, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ExtensionConfigType, VersionInfo: "v1",
		ResponseNonce: "7", ResourceNames: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	deltaACK, err := proto.Marshal(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ExtensionConfigType, ResponseNonce: "7"})
	if err != nil {
		t.Fatal(err)
	}
	s, d := &sotwRequest{expect: exp}, &deltaRequest{expect: exp}
	if n := testing.AllocsPerRun(100, func() {
		if err := s.decodeWire(sotwACK); err != nil {
			t.Fatal(err)
		}
		if err := d.decodeWire(deltaACK); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per ACK", n)
	}
	if s.GetVersionInfo() != "v1" || s.GetResponseNonce() != "7" || &s.GetResourceNames()[0] != &names[0] ||
		d.GetResponseNonce() != "7" || d.GetTypeUrl() != resourcev3.ExtensionConfigType {
		t.Fatalf("decoded %v and %v", &s.DiscoveryRequest, &d.DeltaDiscoveryRequest)
	}
}

package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Outbound listeners written straight to bytes.
//
// An Envoy sidecar has an outbound listener per upstream, and the listeners of a mesh differ
// only in their name and local port: their filter is the upstream's (shared by every listener
// of that upstream) and their address the local port's (shared by every listener on it). The
// memo marshals each filter and address once; an outbound listener's deterministic encoding is
// then its name, those two encodings and its traffic direction, in field number order, which
// is what protobuf-go's deterministic marshal writes (a message's set fields in field number
// order, each nested message as its own encoding). TestOutboundListenerEncoding holds the two
// together on every outbound listener of random and generated meshes, and the shared
// rendering tests hold every served byte to rendering without a memo (which marshals).

// Field numbers of the messages an outbound listener is made of.
const (
	listenerNameField             = 1  // Listener.name
	listenerAddressField          = 2  // Listener.address
	listenerFilterChainsField     = 3  // Listener.filter_chains
	listenerTrafficDirectionField = 16 // Listener.traffic_direction
	filterChainFiltersField       = 3  // FilterChain.filters
)

// learnOutboundEncoding tells m the content hash and wire of l, an outbound listener
// {name, address: addr, filter_chains: [{filters: [filter]}], traffic_direction}, encoded from
// the encodings of addr and filter (each marshalled once per memo). A nil m learns nothing.
func learnOutboundEncoding(m *memo, l *listenerv3.Listener, addr *corev3.Address, filter *listenerv3.Filter) error {
	if m == nil {
		return nil
	}
	addrEnc, err := m.encodingOf(addr)
	if err != nil {
		return err
	}
	filterEnc, err := m.encodingOf(filter)
	if err != nil {
		return err
	}
	enc := appendOutboundListener(nil, l.Name, addrEnc, filterEnc, l.TrafficDirection)
	m.learnEncoded(l, enc, listenerTypeURL, l.Name)
	return nil
}

// appendOutboundListener appends to b the deterministic encoding of a Listener whose name is
// name, whose address and only filter chain's only filter are encoded as addr and filter, and
// whose traffic direction is dir. A nil b is allocated to the size of the encoding.
func appendOutboundListener(b []byte, name string, addr, filter []byte, dir corev3.TrafficDirection) []byte {
	chainLen := protowire.SizeTag(filterChainFiltersField) + protowire.SizeBytes(len(filter))
	if b == nil {
		n := protowire.SizeTag(listenerNameField) + protowire.SizeBytes(len(name)) +
			protowire.SizeTag(listenerAddressField) + protowire.SizeBytes(len(addr)) +
			protowire.SizeTag(listenerFilterChainsField) + protowire.SizeBytes(chainLen) +
			protowire.SizeTag(listenerTrafficDirectionField) + protowire.SizeVarint(uint64(dir))
		b = make([]byte, 0, n)
	}
	if name != "" { // proto3: an empty string is not written
		b = protowire.AppendTag(b, listenerNameField, protowire.BytesType)
		b = protowire.AppendString(b, name)
	}
	b = protowire.AppendTag(b, listenerAddressField, protowire.BytesType)
	b = protowire.AppendBytes(b, addr)
	b = protowire.AppendTag(b, listenerFilterChainsField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(chainLen))
	b = protowire.AppendTag(b, filterChainFiltersField, protowire.BytesType)
	b = protowire.AppendBytes(b, filter)
	if dir != 0 { // proto3: a zero enum is not written
		b = protowire.AppendTag(b, listenerTrafficDirectionField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(dir))
	}
	return b
}

// listenerTypeURL is the type URL of a Listener.
var listenerTypeURL = typeURL(&listenerv3.Listener{})

// encodingOf returns the deterministic encoding of x, a shared message (never modified),
// marshalled once per memo.
func (m *memo) encodingOf(x proto.Message) ([]byte, error) {
	if b := learnt(m, x, rawOf); b != nil {
		return *b, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(x)
	if err != nil {
		return nil, err
	}
	return *learn(m, x, rawOf, &b), nil
}

package xds

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// Load assignments written straight to bytes.
//
// A target's ClusterLoadAssignment is built once per memo and marshalled once, to hash it and
// to send it; protobuf-go's marshal walks it by reflection twice (size, then bytes). What
// loadAssignment builds has few fields: the cluster name, and per priority a locality, its
// weight and its endpoints (address, port, health, weight). appendLoadAssignment writes them
// in the order protobuf-go's deterministic marshal does: a message's set fields outside
// oneofs in field number order, then its oneofs' in declaration order (protobuf-go's
// order.LegacyFieldOrder); each nested message as its own encoding; a oneof member, and a
// message, written even when empty; a proto3 scalar only when not zero.
// TestLoadAssignmentEncoding holds the two together on every load assignment of random,
// transparent, failover and generated meshes and on edge cases, and checks the field numbers
// against the descriptors. A load assignment with anything else set (endpoint metadata, which
// a failover through mesh gateways adds) is left to protobuf-go: loadAssignmentEncodable.

// learnLoadAssignmentEncoding tells m the content hash and wire of cla, written by
// appendLoadAssignment, when it is loadAssignmentEncodable (else hashing marshals it). A nil m
// learns nothing.
func learnLoadAssignmentEncoding(m *memo, cla *endpointv3.ClusterLoadAssignment) {
	if m == nil || !loadAssignmentEncodable(cla) {
		return
	}
	m.learnEncoded(cla, appendLoadAssignment(nil, cla), loadAssignmentTypeURL, cla.ClusterName)
}

// loadAssignmentTypeURL is the type URL of a ClusterLoadAssignment.
var loadAssignmentTypeURL = typeURL(&endpointv3.ClusterLoadAssignment{})

// Field numbers of the messages a load assignment is made of.
const (
	claClusterNameField  = 1 // ClusterLoadAssignment.cluster_name
	claEndpointsField    = 2 // ClusterLoadAssignment.endpoints
	llbLocalityField     = 1 // LocalityLbEndpoints.locality
	llbLbEndpointsField  = 2 // LocalityLbEndpoints.lb_endpoints
	llbWeightField       = 3 // LocalityLbEndpoints.load_balancing_weight
	llbPriorityField     = 5 // LocalityLbEndpoints.priority
	localityRegionField  = 1 // Locality.region
	localityZoneField    = 2 // Locality.zone
	localitySubZoneField = 3 // Locality.sub_zone
	lbeEndpointField     = 1 // LbEndpoint.endpoint
	lbeHealthField       = 2 // LbEndpoint.health_status
	lbeWeightField       = 4 // LbEndpoint.load_balancing_weight
	endpointAddressField = 1 // Endpoint.address
	addressSocketField   = 1 // Address.socket_address
	socketProtocolField  = 1 // SocketAddress.protocol
	socketAddressField   = 2 // SocketAddress.address
	socketPortValueField = 3 // SocketAddress.port_value
)

// loadAssignmentEncodable reports whether appendLoadAssignment writes cla exactly: it has
// only the fields loadAssignment sets (no policy, named endpoints, proximity, locality
// metadata, endpoint metadata, health check configuration, hostname, additional addresses,
// observability name or endpoint name; every address a socket address with a port value and no resolver).
func loadAssignmentEncodable(cla *endpointv3.ClusterLoadAssignment) bool {
	if cla.Policy != nil || len(cla.NamedEndpoints) > 0 || !utf8.ValidString(cla.ClusterName) {
		return false
	}
	for _, loc := range cla.Endpoints {
		if loc == nil || loc.Proximity != nil || loc.LbConfig != nil || loc.Metadata != nil {
			return false
		}
		if l := loc.Locality; l != nil && !(utf8.ValidString(l.Region) && utf8.ValidString(l.Zone) && utf8.ValidString(l.SubZone)) {
			return false
		}
		for _, le := range loc.LbEndpoints {
			if le == nil || le.Metadata != nil {
				return false
			}
			h, ok := le.HostIdentifier.(*endpointv3.LbEndpoint_Endpoint)
			if !ok || h.Endpoint == nil {
				return false
			}
			ep := h.Endpoint
			if ep.HealthCheckConfig != nil || ep.Hostname != "" || len(ep.AdditionalAddresses) > 0 || ep.ObservabilityName != "" {
				return false
			}
			if !socketAddressEncodable(ep.Address) {
				return false
			}
		}
	}
	return true
}

// socketAddressEncodable reports whether a is a socket address with a port value and nothing
// but its protocol, address and port set (or nil).
func socketAddressEncodable(a *corev3.Address) bool {
	if a == nil {
		return true
	}
	s, ok := a.Address.(*corev3.Address_SocketAddress)
	if !ok || s.SocketAddress == nil {
		return false
	}
	sa := s.SocketAddress
	_, port := sa.PortSpecifier.(*corev3.SocketAddress_PortValue)
	return port && sa.ResolverName == "" && !sa.Ipv4Compat && sa.NetworkNamespaceFilepath == "" && utf8.ValidString(sa.Address)
}

// loadAssignmentSize is the size of cla's deterministic encoding.
func loadAssignmentSize(cla *endpointv3.ClusterLoadAssignment) int {
	n := stringFieldSize(claClusterNameField, cla.ClusterName)
	for _, loc := range cla.Endpoints {
		n += messageFieldSize(claEndpointsField, localityLbSize(loc))
	}
	return n
}

// appendLoadAssignment appends the deterministic encoding of cla, which must be
// loadAssignmentEncodable, to b. A nil b is allocated to the size of the encoding.
func appendLoadAssignment(b []byte, cla *endpointv3.ClusterLoadAssignment) []byte {
	if b == nil {
		b = make([]byte, 0, loadAssignmentSize(cla))
	}
	b = appendStringField(b, claClusterNameField, cla.ClusterName)
	for _, loc := range cla.Endpoints {
		b = protowire.AppendTag(b, claEndpointsField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(localityLbSize(loc)))
		b = appendLocalityLb(b, loc)
	}
	return b
}

func localityLbSize(loc *endpointv3.LocalityLbEndpoints) int {
	n := 0
	if loc.Locality != nil {
		n += messageFieldSize(llbLocalityField, localitySize(loc.Locality))
	}
	for _, le := range loc.LbEndpoints {
		n += messageFieldSize(llbLbEndpointsField, lbEndpointSize(le))
	}
	if loc.LoadBalancingWeight != nil {
		n += messageFieldSize(llbWeightField, uint32ValueSize(loc.LoadBalancingWeight))
	}
	return n + varintFieldSize(llbPriorityField, uint64(loc.Priority))
}

func appendLocalityLb(b []byte, loc *endpointv3.LocalityLbEndpoints) []byte {
	if l := loc.Locality; l != nil {
		b = protowire.AppendTag(b, llbLocalityField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(localitySize(l)))
		b = appendStringField(b, localityRegionField, l.Region)
		b = appendStringField(b, localityZoneField, l.Zone)
		b = appendStringField(b, localitySubZoneField, l.SubZone)
	}
	for _, le := range loc.LbEndpoints {
		b = protowire.AppendTag(b, llbLbEndpointsField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(lbEndpointSize(le)))
		b = appendLbEndpoint(b, le)
	}
	b = appendUInt32ValueField(b, llbWeightField, loc.LoadBalancingWeight)
	return appendVarintField(b, llbPriorityField, uint64(loc.Priority))
}

func localitySize(l *corev3.Locality) int {
	return stringFieldSize(localityRegionField, l.Region) + stringFieldSize(localityZoneField, l.Zone) +
		stringFieldSize(localitySubZoneField, l.SubZone)
}

func lbEndpointSize(le *endpointv3.LbEndpoint) int {
	ep := le.GetEndpoint()
	n := messageFieldSize(lbeEndpointField, endpointSize(ep)) + varintFieldSize(lbeHealthField, uint64(le.HealthStatus))
	if le.LoadBalancingWeight != nil {
		n += messageFieldSize(lbeWeightField, uint32ValueSize(le.LoadBalancingWeight))
	}
	return n
}

// appendLbEndpoint appends le's encoding: its endpoint, a member of the host_identifier
// oneof, after its other fields.
func appendLbEndpoint(b []byte, le *endpointv3.LbEndpoint) []byte {
	b = appendVarintField(b, lbeHealthField, uint64(le.HealthStatus))
	b = appendUInt32ValueField(b, lbeWeightField, le.LoadBalancingWeight)
	ep := le.GetEndpoint()
	b = protowire.AppendTag(b, lbeEndpointField, protowire.BytesType) // a oneof member: written even when empty
	b = protowire.AppendVarint(b, uint64(endpointSize(ep)))
	if ep.Address != nil {
		b = protowire.AppendTag(b, endpointAddressField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(addressSize(ep.Address)))
		b = appendSocketAddress(b, ep.Address)
	}
	return b
}

func endpointSize(ep *endpointv3.Endpoint) int {
	if ep.Address == nil {
		return 0
	}
	return messageFieldSize(endpointAddressField, addressSize(ep.Address))
}

// addressSize is the size of the encoding of an Address holding a socket address
// (socketAddressEncodable).
func addressSize(a *corev3.Address) int {
	return messageFieldSize(addressSocketField, socketAddressSize(a.GetSocketAddress()))
}

func socketAddressSize(sa *corev3.SocketAddress) int {
	return varintFieldSize(socketProtocolField, uint64(sa.Protocol)) + stringFieldSize(socketAddressField, sa.Address) +
		protowire.SizeTag(socketPortValueField) + protowire.SizeVarint(uint64(sa.GetPortValue()))
}

// appendSocketAddress appends the encoding of an Address holding a socket address
// (socketAddressEncodable).
func appendSocketAddress(b []byte, a *corev3.Address) []byte {
	sa := a.GetSocketAddress()
	b = protowire.AppendTag(b, addressSocketField, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(socketAddressSize(sa)))
	b = appendVarintField(b, socketProtocolField, uint64(sa.Protocol))
	b = appendStringField(b, socketAddressField, sa.Address)
	b = protowire.AppendTag(b, socketPortValueField, protowire.VarintType) // a oneof member: even 0
	return protowire.AppendVarint(b, uint64(sa.GetPortValue()))
}

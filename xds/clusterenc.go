package xds

import (
	"sort"
	"sync"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Target clusters written straight to bytes.
//
// A target's cluster (buildTargetCluster) is built once per memo and marshalled once; its
// largest part, the TLS context, is already bytes (upstreamtlsenc.go), and the rest is a
// handful of fields: name, EDS configuration (the constant ADS config source, marshalled once
// per process, and the service name), connect timeout, load-balancing policy, transport socket,
// protocol options and, in the cluster_discovery_type and lb_config oneofs, the discovery type
// and a ring hash configuration. appendTargetCluster writes them as protobuf-go's
// deterministic marshal does (fields outside oneofs in field number order, then the oneofs in
// declaration order: endpointenc.go). TestTargetClusterEncoding holds the two together on every
// target cluster of random, transparent, failover and generated meshes and both shapes,
// requires every field those clusters set to be one the encoder writes, and checks the field
// numbers against the descriptors; TestTargetClusterEncodingEdges covers the edges. A cluster
// with transport socket matches (a failover through mesh gateways) is left to protobuf-go.

// Field numbers of the messages a target cluster is made of.
const (
	clusterNameField          = 1  // Cluster.name
	clusterTypeField          = 2  // Cluster.type (oneof cluster_discovery_type)
	clusterEDSConfigField     = 3  // Cluster.eds_cluster_config
	clusterConnectTimeout     = 4  // Cluster.connect_timeout
	clusterLbPolicyField      = 6  // Cluster.lb_policy
	clusterRingHashField      = 23 // Cluster.ring_hash_lb_config (oneof lb_config)
	clusterTransportSocket    = 24 // Cluster.transport_socket
	clusterProtocolOptions    = 36 // Cluster.typed_extension_protocol_options
	edsConfigSourceField      = 1  // Cluster.EdsClusterConfig.eds_config
	edsServiceNameField       = 2  // Cluster.EdsClusterConfig.service_name
	ringHashFunctionField     = 3  // Cluster.RingHashLbConfig.hash_function
	transportSocketNameField  = 1  // TransportSocket.name
	transportSocketTypedField = 3  // TransportSocket.typed_config (oneof config_type)
)

// learnTargetClusterEncoding tells m the content hash and wire of c, written by
// appendTargetCluster, when it is targetClusterEncodable (else hashing marshals it). A nil m
// learns nothing.
func learnTargetClusterEncoding(m *memo, c *clusterv3.Cluster) {
	if m == nil || !targetClusterEncodable(c) {
		return
	}
	m.learnEncoded(c, appendTargetCluster(nil, c), clusterTypeURL, c.Name)
}

// clusterTypeURL is the type URL of a Cluster.
var clusterTypeURL = typeURL(&clusterv3.Cluster{})

// targetClusterEncodable reports whether appendTargetCluster writes c, a cluster
// buildTargetCluster built, exactly: no transport socket matches, a discovery type, ring hash
// configuration, EDS config source and transport socket of the shapes it writes, and every
// string valid UTF-8 (protobuf-go refuses to marshal one that is not: the marshal then reports
// it).
// (buildTargetCluster sets no other field: TestTargetClusterEncoding.)
func targetClusterEncodable(c *clusterv3.Cluster) bool {
	if len(c.TransportSocketMatches) > 0 || !utf8.ValidString(c.Name) || !utf8.ValidString(c.GetEdsClusterConfig().GetServiceName()) {
		return false
	}
	switch c.ClusterDiscoveryType.(type) {
	case nil, *clusterv3.Cluster_Type:
	default:
		return false
	}
	switch lb := c.LbConfig.(type) {
	case nil:
	case *clusterv3.Cluster_RingHashLbConfig_:
		if r := lb.RingHashLbConfig; r != nil && (r.MinimumRingSize != nil || r.MaximumRingSize != nil) {
			return false
		}
	default:
		return false
	}
	if e := c.EdsClusterConfig; e != nil && e.EdsConfig != nil && e.EdsConfig != adsConfigSource() {
		return false
	}
	if ts := c.TransportSocket; ts != nil {
		if _, ok := ts.ConfigType.(*corev3.TransportSocket_TypedConfig); !ok && ts.ConfigType != nil {
			return false
		}
		if !utf8.ValidString(ts.Name) || !utf8.ValidString(ts.GetTypedConfig().GetTypeUrl()) {
			return false
		}
	}
	for k, v := range c.TypedExtensionProtocolOptions {
		if !utf8.ValidString(k) || !utf8.ValidString(v.GetTypeUrl()) {
			return false
		}
	}
	return true
}

// adsConfigSourceEncoding is the deterministic encoding of adsConfigSource(), a constant.
var adsConfigSourceEncoding = sync.OnceValues(func() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(adsConfigSource())
})

// targetClusterSize is the size of c's deterministic encoding (targetClusterEncodable).
func targetClusterSize(c *clusterv3.Cluster, ads []byte) int {
	n := stringFieldSize(clusterNameField, c.Name)
	if c.EdsClusterConfig != nil {
		n += messageFieldSize(clusterEDSConfigField, edsClusterConfigSize(c.EdsClusterConfig, ads))
	}
	if c.ConnectTimeout != nil {
		n += messageFieldSize(clusterConnectTimeout, durationSize(c.ConnectTimeout))
	}
	n += varintFieldSize(clusterLbPolicyField, uint64(c.LbPolicy))
	if c.TransportSocket != nil {
		n += messageFieldSize(clusterTransportSocket, transportSocketSize(c.TransportSocket))
	}
	for k, v := range c.TypedExtensionProtocolOptions {
		n += messageFieldSize(clusterProtocolOptions, anyMapEntrySize(k, v))
	}
	if t, ok := c.ClusterDiscoveryType.(*clusterv3.Cluster_Type); ok {
		n += protowire.SizeTag(clusterTypeField) + protowire.SizeVarint(uint64(t.Type))
	}
	if r, ok := c.LbConfig.(*clusterv3.Cluster_RingHashLbConfig_); ok {
		n += messageFieldSize(clusterRingHashField, varintFieldSize(ringHashFunctionField, uint64(r.RingHashLbConfig.GetHashFunction())))
	}
	return n
}

// appendTargetCluster appends the deterministic encoding of c, which must be
// targetClusterEncodable, to b. A nil b is allocated to the size of the encoding.
func appendTargetCluster(b []byte, c *clusterv3.Cluster) []byte {
	ads, err := adsConfigSourceEncoding()
	if err != nil {
		panic(err) // a constant message: it marshals
	}
	if b == nil {
		b = make([]byte, 0, targetClusterSize(c, ads))
	}
	b = appendStringField(b, clusterNameField, c.Name)
	if e := c.EdsClusterConfig; e != nil {
		b = protowire.AppendTag(b, clusterEDSConfigField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(edsClusterConfigSize(e, ads)))
		if e.EdsConfig != nil {
			b = appendBytesField(b, edsConfigSourceField, ads)
		}
		b = appendStringField(b, edsServiceNameField, e.ServiceName)
	}
	if d := c.ConnectTimeout; d != nil {
		b = protowire.AppendTag(b, clusterConnectTimeout, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(durationSize(d)))
		b = appendVarintField(b, durationSecondsField, uint64(d.Seconds))
		b = appendVarintField(b, durationNanosField, uint64(int64(d.Nanos)))
	}
	b = appendVarintField(b, clusterLbPolicyField, uint64(c.LbPolicy))
	if ts := c.TransportSocket; ts != nil {
		b = protowire.AppendTag(b, clusterTransportSocket, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(transportSocketSize(ts)))
		b = appendStringField(b, transportSocketNameField, ts.Name)
		if tc, ok := ts.ConfigType.(*corev3.TransportSocket_TypedConfig); ok {
			b = protowire.AppendTag(b, transportSocketTypedField, protowire.BytesType) // a oneof member
			b = protowire.AppendVarint(b, uint64(anySize(tc.TypedConfig)))
			b = appendAny(b, tc.TypedConfig)
		}
	}
	b = appendAnyMap(b, clusterProtocolOptions, c.TypedExtensionProtocolOptions)
	if t, ok := c.ClusterDiscoveryType.(*clusterv3.Cluster_Type); ok {
		b = protowire.AppendTag(b, clusterTypeField, protowire.VarintType) // a oneof member: even 0 (STATIC)
		b = protowire.AppendVarint(b, uint64(t.Type))
	}
	if r, ok := c.LbConfig.(*clusterv3.Cluster_RingHashLbConfig_); ok {
		h := uint64(r.RingHashLbConfig.GetHashFunction())
		b = protowire.AppendTag(b, clusterRingHashField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(varintFieldSize(ringHashFunctionField, h)))
		b = appendVarintField(b, ringHashFunctionField, h)
	}
	return b
}

func edsClusterConfigSize(e *clusterv3.Cluster_EdsClusterConfig, ads []byte) int {
	n := stringFieldSize(edsServiceNameField, e.ServiceName)
	if e.EdsConfig != nil {
		n += messageFieldSize(edsConfigSourceField, len(ads))
	}
	return n
}

func durationSize(d *durationpb.Duration) int {
	return varintFieldSize(durationSecondsField, uint64(d.Seconds)) + varintFieldSize(durationNanosField, uint64(int64(d.Nanos)))
}

func transportSocketSize(ts *corev3.TransportSocket) int {
	n := stringFieldSize(transportSocketNameField, ts.Name)
	if tc, ok := ts.ConfigType.(*corev3.TransportSocket_TypedConfig); ok {
		n += messageFieldSize(transportSocketTypedField, anySize(tc.TypedConfig))
	}
	return n
}

func appendAny(b []byte, a *anypb.Any) []byte {
	b = appendStringField(b, fAnyTypeURL, a.GetTypeUrl())
	if v := a.GetValue(); len(v) > 0 {
		b = appendBytesField(b, fAnyValue, v)
	}
	return b
}

// anyMapEntrySize is the size of the map entry {key: k, value: v}: protobuf-go writes both,
// even when empty.
func anyMapEntrySize(k string, v *anypb.Any) int {
	return protowire.SizeTag(mapEntryKeyField) + protowire.SizeBytes(len(k)) +
		protowire.SizeTag(mapEntryValueField) + protowire.SizeBytes(anySize(v))
}

// appendAnyMap appends a map<string, Any> field, its entries sorted by key as the
// deterministic marshal sorts them.
func appendAnyMap(b []byte, num protowire.Number, m map[string]*anypb.Any) []byte {
	if len(m) == 0 {
		return b
	}
	var one [1]string
	keys := one[:0]
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(anyMapEntrySize(k, v)))
		b = protowire.AppendTag(b, mapEntryKeyField, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, mapEntryValueField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(anySize(v)))
		b = appendAny(b, v)
	}
	return b
}

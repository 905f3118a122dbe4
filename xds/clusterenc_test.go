package xds

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// targetClusterFields are the fields of a Cluster that appendTargetCluster writes, by name,
// with the field number it writes each with.
var targetClusterFields = map[string]int{
	"name": clusterNameField, "type": clusterTypeField, "eds_cluster_config": clusterEDSConfigField,
	"connect_timeout": clusterConnectTimeout, "lb_policy": clusterLbPolicyField, "ring_hash_lb_config": clusterRingHashField,
	"transport_socket": clusterTransportSocket, "typed_extension_protocol_options": clusterProtocolOptions,
}

// TestTargetClusterEncoding holds the encoding the memo learns of every target cluster
// (appendTargetCluster) to a fresh deterministic marshal of a copy of it, over random,
// transparent, failover and generated meshes and both shapes, and its content hash and wire
// to that encoding. Every field such a cluster sets must be one the encoder writes; a cluster
// it cannot write (transport socket matches) is left to protobuf-go and hashes as a fresh
// marshal.
func TestTargetClusterEncoding(t *testing.T) {
	written, left, ringHash := 0, 0, 0
	for i, snap := range encoderSnaps(t, 4) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
				cs, err := clusters(snap, Proxy{Service: name, Shape: shape}, m)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					if c.Name == localAppCluster || c.Name == PassthroughCluster {
						continue
					}
					c.ProtoReflect().Range(func(f protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
						if _, ok := targetClusterFields[string(f.Name())]; !ok && f.Name() != "transport_socket_matches" {
							t.Fatalf("mesh %d, %s %s: cluster %s sets %s, which appendTargetCluster does not write", i, shape, name, c.Name, f.Name())
						}
						return true
					})
					what := fmt.Sprintf("mesh %d, %s %s: cluster %s", i, shape, name, c.Name)
					if !targetClusterEncodable(c) {
						checkLeftWhole(t, m, c, what)
						left++
						continue
					}
					checkWritten(t, m, c, c.Name, "type.googleapis.com/envoy.config.cluster.v3.Cluster", what)
					if c.GetRingHashLbConfig() != nil {
						ringHash++
					}
					written++
				}
			}
		}
	}
	if written < 200 || left == 0 || ringHash == 0 {
		t.Fatalf("%d target clusters written (%d with a ring hash), %d left to protobuf-go: want at least 200, 1 and 1", written, ringHash, left)
	}
}

// TestTargetClusterEncodingEdges holds appendTargetCluster to protobuf-go where the encoding
// has edges (empty and long strings, zero, negative and fractional timeouts, the STATIC
// discovery type, which is 0, every load-balancing policy, a ring hash without a hash function,
// no EDS config source, a transport socket without a config, empty Anys, several protocol
// options), and targetClusterEncodable to what it cannot write.
func TestTargetClusterEncodingEdges(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	long := strings.Repeat("c", 300)
	opts, err := http2Options()
	if err != nil {
		t.Fatal(err)
	}
	eds := &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: "svc"}
	ts := &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "u", Value: []byte(long)}}}
	cases := []*clusterv3.Cluster{
		{},
		{Name: long, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}},
		{Name: "a", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, EdsClusterConfig: eds,
			ConnectTimeout: durationpb.New(5 * time.Second), LbPolicy: clusterv3.Cluster_LEAST_REQUEST, TransportSocket: ts,
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}},
		{Name: "b", EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{}, ConnectTimeout: &durationpb.Duration{},
			LbPolicy: clusterv3.Cluster_RING_HASH, LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{}}},
		{Name: "c", EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: long}, ConnectTimeout: durationpb.New(-1500 * time.Millisecond),
			LbPolicy: clusterv3.Cluster_MAGLEV, TransportSocket: &corev3.TransportSocket{},
			LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}}},
		{Name: "d", ConnectTimeout: &durationpb.Duration{Seconds: 1 << 40, Nanos: 999999999}, LbPolicy: clusterv3.Cluster_RANDOM,
			TransportSocket:               &corev3.TransportSocket{ConfigType: &corev3.TransportSocket_TypedConfig{}},
			LbConfig:                      &clusterv3.Cluster_RingHashLbConfig_{},
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"z": opts, "a": {}, "": nil, long: {TypeUrl: long}}},
	}
	for i, c := range cases {
		if !targetClusterEncodable(c) {
			t.Fatalf("case %d: not encodable", i)
		}
		want, err := det.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendTargetCluster(nil, c); !bytes.Equal(got, want) {
			t.Fatalf("case %d: got %x\nwant %x", i, got, want)
		}
		if got := appendTargetCluster([]byte{7}, c); !bytes.Equal(got, append([]byte{7}, want...)) {
			t.Fatalf("case %d: appendTargetCluster does not append", i)
		}
	}
	for i, c := range []*clusterv3.Cluster{
		{TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{}}},
		{ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{}},
		{LbConfig: &clusterv3.Cluster_MaglevLbConfig_{}},
		{LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(1)}}},
		{LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MaximumRingSize: wrapperspb.UInt64(1)}}},
		{EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{}}},
		{Name: "\xff"},
		{EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "\xff"}},
		{TransportSocket: &corev3.TransportSocket{Name: "\xff"}},
		{TransportSocket: &corev3.TransportSocket{ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "\xff"}}}},
		{TypedExtensionProtocolOptions: map[string]*anypb.Any{"\xff": {}}},
		{TypedExtensionProtocolOptions: map[string]*anypb.Any{"k": {TypeUrl: "\xff"}}},
	} {
		if targetClusterEncodable(c) {
			t.Fatalf("case %d: encodable, but appendTargetCluster does not write what it has", i)
		}
	}
}

// TestTargetClusterFieldNumbers holds the field numbers appendTargetCluster writes to the
// descriptors.
func TestTargetClusterFieldNumbers(t *testing.T) {
	check := func(m proto.Message, name string, want int) {
		t.Helper()
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil || int(f.Number()) != want {
			t.Fatalf("%s.%s: descriptor says %v, the encoder writes %d", m.ProtoReflect().Descriptor().FullName(), name, f, want)
		}
	}
	for name, num := range targetClusterFields {
		check(&clusterv3.Cluster{}, name, num)
	}
	check(&clusterv3.Cluster_EdsClusterConfig{}, "eds_config", edsConfigSourceField)
	check(&clusterv3.Cluster_EdsClusterConfig{}, "service_name", edsServiceNameField)
	check(&clusterv3.Cluster_RingHashLbConfig{}, "hash_function", ringHashFunctionField)
	check(&corev3.TransportSocket{}, "name", transportSocketNameField)
	check(&corev3.TransportSocket{}, "typed_config", transportSocketTypedField)
	check(&durationpb.Duration{}, "seconds", durationSecondsField)
	check(&durationpb.Duration{}, "nanos", durationNanosField)
	check(&anypb.Any{}, "type_url", fAnyTypeURL)
	check(&anypb.Any{}, "value", fAnyValue)
	entry := (&clusterv3.Cluster{}).ProtoReflect().Descriptor().Fields().ByName("typed_extension_protocol_options").Message()
	if k, v := entry.Fields().ByName("key"), entry.Fields().ByName("value"); int(k.Number()) != mapEntryKeyField || int(v.Number()) != mapEntryValueField {
		t.Fatalf("map entry fields %v %v", k, v)
	}
	for _, f := range []string{"eds_cluster_config", "connect_timeout", "transport_socket", "typed_extension_protocol_options", "ring_hash_lb_config"} {
		if ff := (&clusterv3.Cluster{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(f)); ff.Kind() != protoreflect.MessageKind {
			t.Fatalf("Cluster.%s is a %v", f, ff.Kind())
		}
	}
}

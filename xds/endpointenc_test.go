package xds

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestLoadAssignmentEncoding holds the encoding the memo learns of every load assignment
// (appendLoadAssignment) to a fresh deterministic marshal of a copy of it, over random,
// transparent, failover and generated meshes and both shapes, and its content hash and wire
// to that encoding; a load assignment it cannot write (endpoint metadata) is left to
// protobuf-go, and hashes as a fresh marshal.
func TestLoadAssignmentEncoding(t *testing.T) {
	written, left := 0, 0
	for i, snap := range encoderSnaps(t, 3) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
				for _, cla := range endpoints(snap, Proxy{Service: name, Shape: shape}, m) {
					what := fmt.Sprintf("mesh %d, %s %s: load assignment %s", i, shape, name, cla.ClusterName)
					if !loadAssignmentEncodable(cla) {
						checkLeftWhole(t, m, cla, what)
						left++
						continue
					}
					checkWritten(t, m, cla, cla.ClusterName, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", what)
					written++
				}
			}
		}
	}
	if written < 200 || left == 0 {
		t.Fatalf("%d load assignments written, %d left to protobuf-go: want at least 200 and 1", written, left)
	}
}

// TestLoadAssignmentEncodingEdges holds appendLoadAssignment to protobuf-go where the
// encoding has edges: empty and long strings (two-byte lengths), zero and large ports,
// priorities and weights, weights set to 0, every health status, a protocol, nil and empty
// localities and addresses, no endpoints, many endpoints; and loadAssignmentEncodable to the
// fields it cannot write.
func TestLoadAssignmentEncodingEdges(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	long := strings.Repeat("z", 200)
	sock := func(addr string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	le := func(a *corev3.Address, h corev3.HealthStatus, w *wrapperspb.UInt32Value) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}},
			HealthStatus: h, LoadBalancingWeight: w}
	}
	var many []*endpointv3.LbEndpoint
	for i := range 300 {
		many = append(many, le(sock("10.0.0.1", uint32(i*200)), corev3.HealthStatus(i%6), wrapperspb.UInt32(uint32(i))))
	}
	udp := sock("::1", 53)
	udp.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	cases := []*endpointv3.ClusterLoadAssignment{
		{},
		{ClusterName: long},
		{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}},
		{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{Locality: &corev3.Locality{}, LoadBalancingWeight: wrapperspb.UInt32(0), Priority: 0}}},
		{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality: &corev3.Locality{Region: long, Zone: "z", SubZone: "s"}, LoadBalancingWeight: wrapperspb.UInt32(1 << 31), Priority: 128,
			LbEndpoints: []*endpointv3.LbEndpoint{
				le(sock("10.0.0.1", 0), corev3.HealthStatus_UNKNOWN, nil),
				le(sock("", 65535), corev3.HealthStatus_HEALTHY, wrapperspb.UInt32(0)),
				le(sock(long, 8080), corev3.HealthStatus_UNHEALTHY, wrapperspb.UInt32(1)),
				le(udp, corev3.HealthStatus_DEGRADED, wrapperspb.UInt32(300)),
				le(nil, corev3.HealthStatus_DRAINING, nil),
				le(&corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_PortValue{}}}}, 0, nil),
			}}}},
		{ClusterName: "many", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: many, Priority: 1}, {LbEndpoints: many[:3], Priority: 2}}},
	}
	for i, cla := range cases {
		if !loadAssignmentEncodable(cla) {
			t.Fatalf("case %d: not encodable", i)
		}
		want, err := det.Marshal(cla)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendLoadAssignment(nil, cla); !bytes.Equal(got, want) {
			t.Fatalf("case %d: got %x\nwant %x", i, got, want)
		}
		if got := appendLoadAssignment([]byte{7}, cla); !bytes.Equal(got, append([]byte{7}, want...)) {
			t.Fatalf("case %d: appendLoadAssignment does not append", i)
		}
		if n := loadAssignmentSize(cla); n != len(want) {
			t.Fatalf("case %d: size %d, want %d", i, n, len(want))
		}
	}
	meta := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"k": {}}}
	named := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "p"}}}}
	pipe := &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}}
	one := func(f func(l *endpointv3.LbEndpoint)) *endpointv3.ClusterLoadAssignment {
		l := le(sock("10.0.0.1", 1), 0, nil)
		f(l)
		return &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{l}}}}
	}
	for i, cla := range []*endpointv3.ClusterLoadAssignment{
		{Policy: &endpointv3.ClusterLoadAssignment_Policy{}},
		{NamedEndpoints: map[string]*endpointv3.Endpoint{"a": {}}},
		{Endpoints: []*endpointv3.LocalityLbEndpoints{{Proximity: wrapperspb.UInt32(1)}}},
		{Endpoints: []*endpointv3.LocalityLbEndpoints{{Metadata: meta}}},
		{Endpoints: []*endpointv3.LocalityLbEndpoints{{LbConfig: &endpointv3.LocalityLbEndpoints_LoadBalancerEndpoints{}}}},
		one(func(l *endpointv3.LbEndpoint) { l.Metadata = meta }),
		one(func(l *endpointv3.LbEndpoint) {
			l.HostIdentifier = &endpointv3.LbEndpoint_EndpointName{EndpointName: "n"}
		}),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Hostname = "h" }),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().ObservabilityName = "o" }),
		one(func(l *endpointv3.LbEndpoint) {
			l.GetEndpoint().HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{}
		}),
		one(func(l *endpointv3.LbEndpoint) {
			l.GetEndpoint().AdditionalAddresses = []*endpointv3.Endpoint_AdditionalAddress{{}}
		}),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Address = named }),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Address = pipe }),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Address.GetSocketAddress().ResolverName = "r" }),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Address.GetSocketAddress().Ipv4Compat = true }),
		one(func(l *endpointv3.LbEndpoint) {
			l.GetEndpoint().Address.GetSocketAddress().NetworkNamespaceFilepath = "/n"
		}),
		one(func(l *endpointv3.LbEndpoint) { l.GetEndpoint().Address.GetSocketAddress().Address = "10.0.0.\xff" }),
		{ClusterName: "\xc3"},
		{Endpoints: []*endpointv3.LocalityLbEndpoints{{Locality: &corev3.Locality{Zone: "\xff"}}}},
	} {
		if loadAssignmentEncodable(cla) {
			t.Fatalf("case %d: encodable, but appendLoadAssignment does not write what it has", i)
		}
	}
}

// TestLoadAssignmentEncoderCoversEveryField holds the field numbers appendLoadAssignment
// writes to the descriptors, and requires every other field of each message it writes to be
// one that loadAssignmentEncodable refuses (a field added to one of them by a go-control-plane
// upgrade fails here until the encoder writes or refuses it).
func TestLoadAssignmentEncoderCoversEveryField(t *testing.T) {
	for _, c := range []struct {
		m       proto.Message
		written map[string]int
		refused []string
	}{
		{&endpointv3.ClusterLoadAssignment{}, map[string]int{"cluster_name": claClusterNameField, "endpoints": claEndpointsField}, []string{"policy", "named_endpoints"}},
		{&endpointv3.LocalityLbEndpoints{}, map[string]int{"locality": llbLocalityField, "lb_endpoints": llbLbEndpointsField, "load_balancing_weight": llbWeightField, "priority": llbPriorityField},
			[]string{"metadata", "load_balancer_endpoints", "leds_cluster_locality_config", "proximity"}},
		{&corev3.Locality{}, map[string]int{"region": localityRegionField, "zone": localityZoneField, "sub_zone": localitySubZoneField}, nil},
		{&endpointv3.LbEndpoint{}, map[string]int{"endpoint": lbeEndpointField, "health_status": lbeHealthField, "load_balancing_weight": lbeWeightField}, []string{"endpoint_name", "metadata"}},
		{&endpointv3.Endpoint{}, map[string]int{"address": endpointAddressField}, []string{"health_check_config", "hostname", "additional_addresses", "observability_name"}},
		{&corev3.Address{}, map[string]int{"socket_address": addressSocketField}, []string{"pipe", "envoy_internal_address"}},
		{&corev3.SocketAddress{}, map[string]int{"protocol": socketProtocolField, "address": socketAddressField, "port_value": socketPortValueField},
			[]string{"named_port", "resolver_name", "ipv4_compat", "network_namespace_filepath"}},
		{&wrapperspb.UInt32Value{}, map[string]int{"value": wrapperValueField}, nil},
	} {
		fields := c.m.ProtoReflect().Descriptor().Fields()
		seen := map[string]bool{}
		for name, num := range c.written {
			f := fields.ByName(protoreflect.Name(name))
			if f == nil || int(f.Number()) != num {
				t.Fatalf("%s.%s: descriptor says %v, the encoder writes field %d", c.m.ProtoReflect().Descriptor().FullName(), name, f, num)
			}
			seen[name] = true
		}
		for _, name := range c.refused {
			if fields.ByName(protoreflect.Name(name)) == nil {
				t.Fatalf("%s has no field %s", c.m.ProtoReflect().Descriptor().FullName(), name)
			}
			seen[name] = true
		}
		for i := range fields.Len() {
			if f := fields.Get(i); !seen[string(f.Name())] {
				t.Fatalf("%s.%s is neither written nor refused by the load assignment encoder", c.m.ProtoReflect().Descriptor().FullName(), f.Name())
			}
		}
	}
}

// FuzzEncodersMatchMarshal feeds the load assignment, target cluster and route configuration
// encoders arbitrary strings (names, addresses, localities, type URLs, paths, header names:
// what users and the catalog control, valid UTF-8 or not) and numbers: each either writes
// exactly what a deterministic marshal writes, or refuses the message (loadAssignmentEncodable,
// targetClusterEncodable, encodeRouteConfig), which is then marshalled, and refuses it
// whenever the marshal fails.
func FuzzEncodersMatchMarshal(f *testing.F) {
	f.Add("api.default.dc1.internal.shop.mesh", "10.0.0.1", "dc1", "api", uint32(8080), uint32(1), int64(5), int32(0), uint8(3))
	f.Add("", "", "", "", uint32(0), uint32(0), int64(0), int32(0), uint8(0))
	f.Add("\xff", "::1", "\xc3", "z\x00", uint32(65536), uint32(1<<31), int64(-1), int32(-7), uint8(255))
	det := proto.MarshalOptions{Deterministic: true}
	f.Fuzz(func(t *testing.T, name, addr, region, zone string, port, weight uint32, secs int64, nanos int32, flags uint8) {
		ep := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
					Protocol: corev3.SocketAddress_Protocol(flags & 1)}}}}},
			HealthStatus: corev3.HealthStatus(flags % 6),
		}
		if flags&2 != 0 {
			ep.LoadBalancingWeight = wrapperspb.UInt32(weight)
		}
		loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: region, Zone: zone, SubZone: name},
			LbEndpoints: []*endpointv3.LbEndpoint{ep, ep}, Priority: weight % 130}
		if flags&4 != 0 {
			loc.LoadBalancingWeight = wrapperspb.UInt32(port)
		}
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{loc, {}}}
		want, err := det.Marshal(cla)
		if !loadAssignmentEncodable(cla) {
			if err == nil && utf8Valid(name, addr, region, zone) {
				t.Fatalf("load assignment refused, but it marshals and its strings are valid")
			}
		} else if err != nil {
			t.Fatalf("load assignment encodable, but marshal fails: %v", err)
		} else if got := appendLoadAssignment(nil, cla); !bytes.Equal(got, want) {
			t.Fatalf("load assignment: got %x\nwant %x", got, want)
		}
		c := &clusterv3.Cluster{
			Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_DiscoveryType(flags % 5)},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: addr},
			ConnectTimeout:   &durationpb.Duration{Seconds: secs, Nanos: nanos}, LbPolicy: clusterv3.Cluster_LbPolicy(flags % 9),
			TransportSocket: &corev3.TransportSocket{Name: region, ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: zone, Value: []byte(name)}}},
		}
		if flags&8 != 0 {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{region: {TypeUrl: addr}, zone: nil}
		}
		if flags&16 != 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				HashFunction: clusterv3.Cluster_RingHashLbConfig_HashFunction(flags >> 5 & 1)}}
		}
		want, err = det.Marshal(c)
		if !targetClusterEncodable(c) {
			if err == nil && utf8Valid(name, addr, region, zone) {
				t.Fatalf("cluster refused, but it marshals and its strings are valid")
			}
		} else if err != nil {
			t.Fatalf("cluster encodable, but marshal fails: %v", err)
		} else if got := appendTargetCluster(nil, c); !bytes.Equal(got, want) {
			t.Fatalf("cluster: got %x\nwant %x", got, want)
		}
		rc := fuzzRouteConfig(name, addr, region, zone, weight, secs, nanos, flags)
		want, err = det.Marshal(rc)
		got, ok := encodeRouteConfig(rc)
		switch {
		case ok && err != nil:
			t.Fatalf("route configuration written, but marshal fails: %v", err)
		case !ok && err == nil:
			t.Fatalf("route configuration refused, but it marshals")
		case ok && !bytes.Equal(got, want):
			t.Fatalf("route configuration: got %x\nwant %x", got, want)
		}
	})
}

// fuzzRouteConfig is a route configuration of the shape routeConfig builds, made of the
// fuzzer's strings and numbers: a prefix or path match, or one with a header and a query
// parameter (marshalled by protobuf-go), and a cluster or weighted clusters with a rewrite,
// timeout, retry policy and maximum stream duration.
func fuzzRouteConfig(name, addr, region, zone string, weight uint32, secs int64, nanos int32, flags uint8) *routev3.RouteConfiguration {
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: addr}}
	switch flags % 3 {
	case 1:
		match.PathSpecifier = &routev3.RouteMatch_Path{Path: addr}
	case 2:
		match.Headers = []*routev3.HeaderMatcher{{Name: region, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactString(zone)}}}
		match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: zone}}
	}
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}, PrefixRewrite: zone,
		Timeout: &durationpb.Duration{Seconds: secs, Nanos: nanos}, RetryPolicy: &routev3.RetryPolicy{RetryOn: region, NumRetries: wrapperspb.UInt32(weight)}}
	if flags&8 != 0 {
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters:    []*routev3.WeightedCluster_ClusterWeight{{Name: name, Weight: wrapperspb.UInt32(weight)}, {Name: addr}},
			TotalWeight: wrapperspb.UInt32(weight)}}
		action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: &durationpb.Duration{Seconds: -secs}}
	}
	return &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(flags&16 != 0), VirtualHosts: []*routev3.VirtualHost{{
		Name: region, Domains: []string{"*", zone}, Routes: []*routev3.Route{{Match: match, Action: &routev3.Route_Route{Route: action}}}}}}
}

func utf8Valid(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

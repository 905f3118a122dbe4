package xds

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// routeFields are the fields appendRouteConfig writes of each message (by full name), with
// their numbers. A RouteMatch is written whatever it holds (marshalled when it holds more than
// a prefix or path).
var routeFields = map[protoreflect.FullName]map[string]int{
	"envoy.config.route.v3.RouteConfiguration": {"name": rcNameField, "virtual_hosts": rcVirtualHostsField, "validate_clusters": rcValidateClustersField},
	"envoy.config.route.v3.VirtualHost":        {"name": vhNameField, "domains": vhDomainsField, "routes": vhRoutesField},
	"envoy.config.route.v3.Route":              {"match": routeMatchField, "route": routeRouteField},
	"envoy.config.route.v3.RouteMatch":         {"prefix": matchPrefixField, "path": matchPathField},
	"envoy.config.route.v3.RouteAction": {"cluster": actionClusterField, "weighted_clusters": actionWeightedField, "prefix_rewrite": actionPrefixRewrite,
		"timeout": actionTimeoutField, "retry_policy": actionRetryPolicyField, "max_stream_duration": actionMaxStreamDuration},
	"envoy.config.route.v3.WeightedCluster":               {"clusters": weightedClustersField, "total_weight": weightedTotalField},
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": {"name": clusterWeightNameField, "weight": clusterWeightField},
	"envoy.config.route.v3.RetryPolicy":                   {"retry_on": retryOnField, "num_retries": retryNumField},
	"envoy.config.route.v3.RouteAction.MaxStreamDuration": {"max_stream_duration": maxStreamDurationField},
	"google.protobuf.Duration":                            {"seconds": durationSecondsField, "nanos": durationNanosField},
	"google.protobuf.UInt32Value":                         {"value": wrapperValueField},
	"google.protobuf.BoolValue":                           {"value": wrapperValueField},
}

// checkRouteFields fails when m, or a message under it, sets a field appendRouteConfig does
// not write (a RouteMatch's are marshalled: not looked into).
func checkRouteFields(t *testing.T, where string, m protoreflect.Message) {
	t.Helper()
	name := m.Descriptor().FullName()
	if name == "envoy.config.route.v3.RouteMatch" {
		return
	}
	fields, ok := routeFields[name]
	if !ok {
		t.Fatalf("%s: holds a %s, which appendRouteConfig does not write", where, name)
	}
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if _, ok := fields[string(f.Name())]; !ok {
			t.Fatalf("%s: %s sets %s, which appendRouteConfig does not write", where, name, f.Name())
		}
		switch {
		case f.IsList() && f.Kind() == protoreflect.MessageKind:
			for i := range v.List().Len() {
				checkRouteFields(t, where, v.List().Get(i).Message())
			}
		case f.Kind() == protoreflect.MessageKind && !f.IsMap():
			checkRouteFields(t, where, v.Message())
		}
		return true
	})
}

// TestRouteConfigEncoding holds the encoding the memo learns of every route configuration
// (appendRouteConfig) to a fresh deterministic marshal of a copy of it, over random,
// transparent and generated meshes and both shapes, and its content hash and wire to that
// encoding; every field those configurations set is one the encoder writes, and both kinds of
// match (written, and marshalled because it has headers, query parameters or a regex) occur.
func TestRouteConfigEncoding(t *testing.T) {
	written, simple, marshalled := 0, 0, 0
	for i, snap := range encoderSnaps(t, 5) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
				for _, rc := range routes(snap, Proxy{Service: name, Shape: shape}, m) {
					checkRouteFields(t, rc.Name, rc.ProtoReflect())
					checkWritten(t, m, rc, rc.Name, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
						fmt.Sprintf("mesh %d, %s %s: route configuration %s", i, shape, name, rc.Name))
					for _, vh := range rc.VirtualHosts {
						for _, r := range vh.Routes {
							if mm := r.GetMatch(); len(mm.Headers) > 0 || len(mm.QueryParameters) > 0 || mm.GetSafeRegex() != nil {
								marshalled++
							} else {
								simple++
							}
						}
					}
					written++
				}
			}
		}
	}
	if written < 200 || simple == 0 || marshalled == 0 {
		t.Fatalf("%d route configurations written (%d matches written, %d marshalled): want at least 200, 1 and 1", written, simple, marshalled)
	}
}

// TestRouteConfigEncodingEdges holds appendRouteConfig to protobuf-go where the encoding has
// edges (empty and long strings, so two-byte lengths of nested messages, empty domains, routes
// without a match or an action, an empty route action and cluster, weighted clusters with
// unset and zero weights, empty retry policies, negative and unset durations, validate_clusters
// false, matches with headers, query parameters and regexes), gives up where it must (another
// action, invalid UTF-8, which protobuf-go refuses to marshal), and holds the field numbers
// it writes to the descriptors.
func TestRouteConfigEncodingEdges(t *testing.T) {
	for name, fields := range routeFields {
		desc, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Fatal(err)
		}
		d := desc.(protoreflect.MessageDescriptor)
		for f, num := range fields {
			if fd := d.Fields().ByName(protoreflect.Name(f)); fd == nil || int(fd.Number()) != num {
				t.Fatalf("%s.%s: descriptor says %v, the encoder writes %d", name, f, fd, num)
			}
		}
	}
	det := proto.MarshalOptions{Deterministic: true}
	long := strings.Repeat("r", 200)
	route := func(m *routev3.RouteMatch, a *routev3.RouteAction) *routev3.Route {
		return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: a}}
	}
	prefix := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	var many []*routev3.Route
	for range 40 {
		many = append(many, route(prefix, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: long}}))
	}
	weighted := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters:    []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(90)}, {Name: "", Weight: wrapperspb.UInt32(0)}, {Name: long}},
		TotalWeight: wrapperspb.UInt32(100)}},
		PrefixRewrite: "/v2/", Timeout: durationpb.New(-1500 * time.Millisecond),
		RetryPolicy:       &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)},
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(3 * time.Second)}}
	complexMatch := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]+/.*"}},
		Headers:         []*routev3.HeaderMatcher{methodsMatcher([]string{"GET", "POST"}), {Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}},
		QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exactString("1")}}}}
	cases := []*routev3.RouteConfiguration{
		{},
		{Name: long, ValidateClusters: wrapperspb.Bool(false)},
		{Name: "a", VirtualHosts: []*routev3.VirtualHost{{}}, ValidateClusters: wrapperspb.Bool(true)},
		{Name: "b", VirtualHosts: []*routev3.VirtualHost{{Name: "b", Domains: []string{"*", "", long}, Routes: []*routev3.Route{
			{}, {Match: &routev3.RouteMatch{}}, {Action: &routev3.Route_Route{}}, route(nil, &routev3.RouteAction{}),
			route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: ""}}, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{}}),
			route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: long}}, weighted),
			route(complexMatch, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{}},
				RetryPolicy: &routev3.RetryPolicy{}, MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{}, Timeout: &durationpb.Duration{}}),
			route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, CaseSensitive: wrapperspb.Bool(false)}, nil),
			route(prefix, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{}}),
		}}, {Name: "many", Routes: many}}},
	}
	for i, rc := range cases {
		want, err := det.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendRouteConfig([]byte{7}, rc)
		if !ok || !bytes.Equal(got, append([]byte{7}, want...)) {
			t.Fatalf("case %d (ok %v): got %x\nwant 07%x", i, ok, got, want)
		}
		if enc, ok := encodeRouteConfig(rc); !ok || !bytes.Equal(enc, want) || cap(enc) != len(want) {
			t.Fatalf("case %d: encodeRouteConfig %x (ok %v, cap %d)", i, enc, ok, cap(enc))
		}
	}
	bad := "x\xff"
	for i, rc := range []*routev3.RouteConfiguration{
		{Name: bad},
		{VirtualHosts: []*routev3.VirtualHost{{Domains: []string{bad}}}},
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: bad}}, nil)}}}},
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{{Name: bad}}}, nil)}}}},
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{route(prefix, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: bad}})}}}},
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{route(prefix, &routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{RetryOn: bad}})}}}},
	} {
		if _, ok := appendRouteConfig(nil, rc); ok {
			t.Fatalf("invalid UTF-8 case %d: written", i)
		}
		if _, err := det.Marshal(rc); err == nil {
			t.Fatalf("invalid UTF-8 case %d: protobuf-go marshals it", i)
		}
	}
	for i, rc := range []*routev3.RouteConfiguration{
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{{Action: &routev3.Route_Redirect{}}}}}},
		{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{route(prefix, &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{}})}}}},
	} {
		if _, ok := appendRouteConfig(nil, rc); ok {
			t.Fatalf("case %d: written, though the encoder does not write what it holds", i)
		}
	}
}

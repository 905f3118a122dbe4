package xds

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	mesh "github.com/meshgit/mesh"
)

// TestOutboundListenerEncoding holds the encoding the memo learns of every outbound listener
// (written from its parts: listenerenc.go) to a fresh deterministic marshal of a copy of the
// listener, over random meshes, transparent ones and meshgen's, and holds its content hash and
// wire to that encoding.
func TestOutboundListenerEncoding(t *testing.T) {
	checked := 0
	for i, snap := range encoderSnaps(t, 7) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			ls, err := listeners(snap, Proxy{Service: name, Shape: ShapeEnvoy}, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls {
				if l.TrafficDirection != corev3.TrafficDirection_OUTBOUND || l.Name == TransparentListener {
					continue
				}
				checkWritten(t, m, l, l.Name, listenerTypeURL, fmt.Sprintf("mesh %d, service %s: listener %s", i, name, l.Name))
				checked++
			}
		}
	}
	if checked < 100 {
		t.Fatalf("checked %d outbound listeners, want at least 100", checked)
	}
}

// TestAppendOutboundListenerZeroFields holds appendOutboundListener to protobuf-go for the
// fields proto3 leaves out when zero (an empty name, no traffic direction).
func TestAppendOutboundListenerZeroFields(t *testing.T) {
	m := newMemo(seal(t, richMesh()), nil)
	addr := socketAddress("127.0.0.1", 9001)
	filter, err := typedNetworkFilter(tcpProxyFilterName, &tcpproxyv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	addrEnc, _ := m.encodingOf(addr)
	filterEnc, _ := m.encodingOf(filter)
	for _, c := range []struct {
		name string
		dir  corev3.TrafficDirection
	}{{"", 0}, {"x:127.0.0.1:9001", 0}, {"", corev3.TrafficDirection_OUTBOUND}, {"y", corev3.TrafficDirection_INBOUND}} {
		l := outboundShape(c.name, addr, filter, c.dir)
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendOutboundListener(nil, c.name, addrEnc, filterEnc, c.dir); !bytes.Equal(got, want) {
			t.Fatalf("%+v: got %x, want %x", c, got, want)
		}
	}
}

func outboundShape(name string, addr *corev3.Address, filter *listenerv3.Filter, dir corev3.TrafficDirection) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: name, Address: addr, TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}},
	}
}

// TestOutboundHCMEncoding holds an HTTP upstream's outbound filter written straight to bytes
// (outboundHCMFilter) to the filter knownFilter builds of the same connection manager: the
// packed connection manager to toAny's bytes, the filter's encoding to a fresh deterministic
// marshal, and the references the memo learns to filterRefs of the packed bytes; over empty,
// long (two-byte lengths) and invalid UTF-8 names, and every HTTP upstream of random,
// transparent and generated meshes; and the field numbers it writes to the descriptors.
func TestOutboundHCMEncoding(t *testing.T) {
	for _, c := range []struct {
		m     proto.Message
		field string
		num   int
	}{
		{&hcmv3.HttpConnectionManager{}, "stat_prefix", hcmStatPrefixField}, {&hcmv3.HttpConnectionManager{}, "rds", hcmRdsField},
		{&hcmv3.HttpConnectionManager{}, "http_filters", hcmHTTPFiltersField}, {&hcmv3.HttpConnectionManager{}, "normalize_path", hcmNormalizePathField},
		{&hcmv3.HttpConnectionManager{}, "merge_slashes", hcmMergeSlashesField}, {&hcmv3.Rds{}, "config_source", rdsConfigSourceField},
		{&hcmv3.Rds{}, "route_config_name", rdsRouteConfigField}, {&listenerv3.Filter{}, "name", filterNameField},
		{&listenerv3.Filter{}, "typed_config", filterTypedField},
	} {
		if f := c.m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(c.field)); f == nil || int(f.Number()) != c.num {
			t.Fatalf("%s.%s is not field %d", c.m.ProtoReflect().Descriptor().FullName(), c.field, c.num)
		}
	}
	det := proto.MarshalOptions{Deterministic: true}
	check := func(prefix, route string) {
		t.Helper()
		hcm, err := outboundHCM(prefix, route)
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := typedNetworkFilter(hcmFilterName, hcm)
		f, enc, ok, err := outboundHCMFilter(prefix, route)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if wantErr == nil && prefix != "" && utf8Valid(prefix, route) {
				t.Fatalf("prefix %q, route %q: refused, but toAny packs it", prefix, route)
			}
			return
		}
		if wantErr != nil {
			t.Fatalf("prefix %q, route %q: written, but toAny fails: %v", prefix, route, wantErr)
		}
		if !bytes.Equal(f.GetTypedConfig().GetValue(), want.GetTypedConfig().GetValue()) || f.GetTypedConfig().GetTypeUrl() != want.GetTypedConfig().GetTypeUrl() {
			t.Fatalf("prefix %q, route %q: packed connection manager differs from toAny's:\n got %x\nwant %x", prefix, route, f.GetTypedConfig().GetValue(), want.GetTypedConfig().GetValue())
		}
		fresh, err := det.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, fresh) || !proto.Equal(f, want) {
			t.Fatalf("prefix %q, route %q: filter encoding differs from a fresh marshal:\n got %x\nwant %x", prefix, route, enc, fresh)
		}
	}
	long := strings.Repeat("u", 200)
	for _, prefix := range []string{"upstream.api", "upstream." + long, "", "x", "upstream.\xff"} {
		for _, route := range []string{"api", "", long, "r\xc3"} {
			check(prefix, route)
		}
	}
	checked := 0
	for _, snap := range encoderSnaps(t, 6) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			for _, u := range upstreams(snap, name) {
				chain := snap.UpstreamChain(u)
				if chain == nil || !mesh.IsHTTP(chain.Protocol) {
					continue
				}
				check("upstream."+u.Service, chain.Service)
				f, err := outboundFilter(u, chain, m)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := m.refsOf(f, func() refs { t.Fatal("refs not learnt"); return refs{} }), filterRefs(f); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s -> %s: learnt refs %+v, filterRefs reads %+v", name, u.Service, got, want)
				}
				if enc, err := m.encodingOf(f); err != nil || !bytes.Equal(enc, mustMarshal(t, f)) {
					t.Fatalf("%s -> %s: learnt encoding differs from a fresh marshal (%v)", name, u.Service, err)
				}
				checked++
			}
		}
	}
	if checked < 100 {
		t.Fatalf("checked %d HTTP upstreams, want at least 100", checked)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

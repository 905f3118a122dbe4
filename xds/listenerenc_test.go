package xds

import (
	"bytes"
	"math/rand/v2"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// TestOutboundListenerEncoding holds the encoding the memo learns of every outbound listener
// (written from its parts: listenerenc.go) to a fresh deterministic marshal of a copy of the
// listener, over random meshes, transparent ones and meshgen's, and holds its content hash and
// wire to that encoding.
func TestOutboundListenerEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 23))
	snaps := []*mesh.Snapshot{seal(t, richMesh()), seal(t, transparentMesh())}
	for range 10 {
		snaps = append(snaps, seal(t, randomTransparentMesh(r, 3+r.IntN(8))), seal(t, randomMesh(r, 1000+r.IntN(1000))))
	}
	ms := meshgenSnaps(t, 60, 5)
	snaps = append(snaps, ms[0], ms[1])
	checked := 0
	for i, snap := range snaps {
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
				e := learnt(m, l, encOf)
				if e == nil {
					t.Fatalf("mesh %d, service %s: listener %s: the memo was not told its encoding", i, name, l.Name)
				}
				fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(proto.Clone(l))
				if err != nil {
					t.Fatal(err)
				}
				if got := e.wire.ProtoReflect().GetUnknown(); !bytes.Equal(got, fresh) {
					t.Fatalf("mesh %d, service %s: listener %s: written encoding differs from a fresh marshal:\n got %x\nwant %x", i, name, l.Name, got, fresh)
				}
				if e.hash != hashOf(fresh) || e.wire.msg != l || e.wire.name != l.Name || e.wire.any.TypeUrl != listenerTypeURL {
					t.Fatalf("mesh %d, service %s: listener %s: hash or wire differs from the listener's", i, name, l.Name)
				}
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

package xds

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// TestServedBytesAreFreshMarshal: what the server sends over real ADS streams, marshalled once
// and shared across streams (wire.go), is byte for byte go-control-plane's own marshal of a
// fresh rendering of each resource, for every type, both shapes, random direct and transparent
// meshes; also after changes, when a proxy's configuration mixes resources kept from the
// previous snapshot with new ones (earlier streams stay open, so the server re-renders their
// groups in part).
func TestServedBytesAreFreshMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 17))
	bundle := testRootPEM(t, "wire root")
	var listenerOnly int64
	for iter := range 4 {
		base := randomTransparentMesh(r, 3+r.IntN(5))
		if iter%2 == 1 {
			base = randomMesh(r, 1000+r.IntN(1000))
		}
		srv := NewServer(testLogger(t))
		addr := startXDS(t, srv)
		if err := srv.SetTrustBundle(bundle); err != nil {
			t.Fatal(err)
		}
		cc := dialRaw(t, addr)
		cur := base
		for step := range 4 {
			snap := seal(t, cur)
			if err := srv.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			for _, svc := range snap.ServiceNames() {
				for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
					p := Proxy{Service: svc, Shape: shape}
					n := envoyNode(fmt.Sprintf("%s-%s-%d", svc, shape, step), svc)
					if shape == ShapeGRPC {
						n.UserAgentName = "gRPC Go"
					}
					fresh, err := RenderWithBundle(snap, p, bundle)
					if err != nil {
						t.Fatal(err)
					}
					want := fresh.byType()
					a := newRawADS(t, cc)
					for k, typ := range resourceTypes {
						req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
						if k == 0 {
							req.Node = n
						}
						if typ == resourcev3.SecretType {
							req.ResourceNames = secretNames(want[typ])
						}
						a.send(req)
					}
					got := map[string]*discoveryv3.DiscoveryResponse{}
					deadline := time.Now().Add(10 * time.Second)
					for len(got) < len(resourceTypes) && time.Now().Before(deadline) {
						resp, err := a.recv(time.Until(deadline))
						if err != nil {
							t.Fatal(err)
						}
						if resp != nil {
							got[resp.TypeUrl] = resp
						}
					}
					for _, typ := range resourceTypes {
						if len(want[typ]) == 0 && got[typ] == nil {
							continue
						}
						if got[typ] == nil {
							t.Fatalf("mesh %d step %d, %s: no %s response", iter, step, p, shortType(typ))
						}
						sameWire(t, fmt.Sprintf("mesh %d step %d, %s %s", iter, step, p, shortType(typ)), typ, want[typ], got[typ])
					}
				}
			}
			cur = mutateIntentions(r, cur)
		}
		listenerOnly += srv.listenerOnly.Load()
	}
	if listenerOnly == 0 {
		t.Error("no group was re-rendered in part: kept resources were not checked")
	}
}

func secretNames(l []types.Resource) []string {
	var out []string
	for _, r := range l {
		out = append(out, cachev3.GetResourceName(r))
	}
	return out
}

// sameWire fails unless resp holds exactly want's resources, each as go-control-plane's
// marshal of it.
func sameWire(t *testing.T, what string, typ string, want []types.Resource, resp *discoveryv3.DiscoveryResponse) {
	t.Helper()
	if len(resp.Resources) != len(want) {
		t.Fatalf("%s: %d resources sent, want %d", what, len(resp.Resources), len(want))
	}
	byName := map[string][]byte{}
	for _, w := range want {
		b, err := cachev3.MarshalResource(w)
		if err != nil {
			t.Fatal(err)
		}
		byName[cachev3.GetResourceName(w)] = b
	}
	var names []string
	for _, a := range resp.Resources {
		if a.TypeUrl != typ {
			t.Fatalf("%s: a resource of type %s", what, a.TypeUrl)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		name := cachev3.GetResourceName(m)
		names = append(names, name)
		if !bytes.Equal(a.Value, byName[name]) {
			t.Fatalf("%s: %q sent as %d bytes that are not a fresh marshal (%d bytes)", what, name, len(a.Value), len(byName[name]))
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(want) {
		t.Fatalf("%s: resources sent twice: %v", what, names)
	}
}

// TestWireIsMarshalledOnce: every stream is sent the very bytes the server marshalled when it
// hashed a resource; the cache holds wires, and ProxyConfig reports the typed messages.
func TestWireIsMarshalledOnce(t *testing.T) {
	snap := seal(t, richMesh())
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	cc := dialRaw(t, addr)
	a := newRawADS(t, cc)
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ListenerType})
	a.mustRecv(resourcev3.ListenerType)
	srv.mu.Lock()
	g := srv.groups[Proxy{Service: "web", Shape: ShapeEnvoy}]
	m := srv.memo
	srv.mu.Unlock()
	items := g.cs.Resources[types.Listener].Items
	if len(items) == 0 {
		t.Fatal("no listeners in the cache")
	}
	for name, it := range items {
		w, ok := it.Resource.(*wire)
		if !ok {
			t.Fatalf("listener %q is held as %T, not as its wire", name, it.Resource)
		}
		if m.wired(w.msg) != w {
			t.Fatalf("listener %q: the cache holds another wire than the memo's", name)
		}
		b, err := cachev3.MarshalResource(w)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(w.msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, fresh) || cachev3.GetResourceName(w) != name {
			t.Fatalf("listener %q: the wire marshals to other bytes or another name", name)
		}
	}
	pc, err := srv.ProxyConfig("web-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range pc.Resources["listeners"] {
		if _, ok := l.(*wire); ok {
			t.Fatal("ProxyConfig reports a wire, not the listener")
		}
	}
}

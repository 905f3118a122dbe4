package xds

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// TestSharedRenderingIdentical renders every proxy of random meshes (direct and transparent,
// both shapes, several certificate directories) twice: each alone, and all of them through one
// memo shared in the order a server would meet them, in parallel. Every resource must be byte
// for byte the same (deterministic encoding), and the content hashes too.
func TestSharedRenderingIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 13))
	meshes := []*mesh.Snapshot{seal(t, richMesh()), seal(t, transparentMesh()), seal(t, greeterMesh(1, 2))}
	for range 30 {
		meshes = append(meshes, seal(t, randomTransparentMesh(r, 2+r.IntN(8))))
		direct := randomMesh(r, 1000+r.IntN(1000))
		meshes = append(meshes, seal(t, direct))
	}
	for i, snap := range meshes {
		var proxies []Proxy
		for _, svc := range snap.ServiceNames() {
			proxies = append(proxies, Proxy{Service: svc, Shape: ShapeGRPC},
				Proxy{Service: svc, Shape: ShapeEnvoy, CertDir: "/certs/" + svc},
				Proxy{Service: svc, Shape: ShapeEnvoy, CertDir: "/other/" + svc})
		}
		r.Shuffle(len(proxies), func(a, b int) { proxies[a], proxies[b] = proxies[b], proxies[a] })
		m := newMemo(snap)
		shared := make([]*Resources, len(proxies))
		done := make(chan int)
		for j, p := range proxies {
			go func() {
				res, err := renderShared(snap, p, []byte("bundle"), m)
				if err != nil {
					t.Error(err)
				}
				shared[j] = res
				done <- j
			}()
		}
		for range proxies {
			<-done
		}
		if t.Failed() {
			t.FailNow()
		}
		for j, p := range proxies {
			alone, err := RenderWithBundle(snap, p, []byte("bundle"))
			if err != nil {
				t.Fatal(err)
			}
			a, b := alone.byType(), shared[j].byType()
			for _, typ := range resourceTypes {
				if !sameBytes(t, a[typ], b[typ]) {
					t.Fatalf("mesh %d, %s: shared %s differ from rendering alone", i, p, shortType(typ))
				}
			}
			ha, _, _, err := alone.hashTypes(nil)
			if err != nil {
				t.Fatal(err)
			}
			hb, _, _, err := shared[j].hashTypes(m)
			if err != nil {
				t.Fatal(err)
			}
			for typ, h := range ha {
				if hb[typ] != h {
					t.Fatalf("mesh %d, %s: %s hash %s shared, %s alone", i, p, shortType(typ), hb[typ], h)
				}
			}
		}
	}
}

func sameBytes(t *testing.T, a, b []types.Resource) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for i := range a {
		x, err := opts.Marshal(a[i])
		if err != nil {
			t.Fatal(err)
		}
		y, err := opts.Marshal(b[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) || !proto.Equal(a[i], b[i]) || cachev3.GetResourceName(a[i]) != cachev3.GetResourceName(b[i]) {
			return false
		}
	}
	return true
}

// TestSharedAcrossProxies: proxies of different services that reach the same upstream get the
// very same cluster, route and load assignment messages, built once.
func TestSharedAcrossProxies(t *testing.T) {
	snap := seal(t, transparentMesh())
	m := newMemo(snap)
	web, err := renderShared(snap, Proxy{Service: "web", Shape: ShapeEnvoy}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := renderShared(snap, Proxy{Service: "ops", Shape: ShapeEnvoy}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	const authSNI = "auth.default.dc1.internal.test.mesh"
	find := func(r *Resources) (c, e, rt proto.Message) {
		for _, x := range r.Clusters {
			if x.Name == authSNI {
				c = x
			}
		}
		for _, x := range r.Endpoints {
			if x.ClusterName == authSNI {
				e = x
			}
		}
		for _, x := range r.Routes {
			if x.Name == "auth" {
				rt = x
			}
		}
		return
	}
	wc, we, wr := find(web)
	oc, oe, or := find(ops)
	if wc == nil || we == nil || wr == nil || wc != oc || we != oe || wr != or {
		t.Fatalf("web and ops do not share auth's cluster, endpoints and route: %p/%p %p/%p %p/%p", wc, oc, we, oe, wr, or)
	}
}

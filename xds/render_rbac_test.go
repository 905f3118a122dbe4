package xds

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"testing"
	"weak"

	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// TestRenderRBACMatchesRender holds renderRBAC, which replaces an Envoy sidecar's extension
// configurations alone, to render's re-rendering of its RBAC (each with a memo of its own): over
// random meshes and meshgen's, through intention changes and flips of the default intention,
// every Envoy proxy that the change affects in its RBAC alone gets the same content hash,
// versions (per type and per resource) and cache resources byte for byte both ways, and what
// the server serves is renderRBAC's.
func TestRenderRBACMatchesRender(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 7))
	var bases []*mesh.Snapshot
	for range 6 {
		bases = append(bases, randomTransparentMesh(r, 4+r.IntN(8)))
	}
	gen := meshgenSnaps(t, 40, 3)
	bases = append(bases, gen[0])
	compared, changed := 0, 0
	for i, base := range bases {
		s := NewServer(testLogger(t))
		proxies := registerAll(t, s, base.ServiceNames())
		cur := seal(t, base)
		if err := s.SetSnapshot(cur); err != nil {
			t.Fatal(err)
		}
		for step := range 6 {
			next := mutateIntentions(r, cur)
			if step%2 == 1 {
				next.Mesh.DefaultIntention = map[mesh.Action]mesh.Action{mesh.Allow: mesh.Deny, mesh.Deny: mesh.Allow, "": mesh.Allow}[next.Mesh.DefaultIntention]
			}
			snap := seal(t, next)
			prev := s.Snapshot()
			olds := map[Proxy]*group{}
			for _, p := range proxies {
				olds[p] = s.groupOf(p)
			}
			if err := s.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			ch := diff(prev, snap)
			for _, p := range proxies {
				old := olds[p]
				if p.Shape != ShapeEnvoy || scopeOf(ch, p, old, prev, nil) != scopeListeners {
					continue
				}
				fast, ok, err := s.renderRBAC(snap, nil, newMemo(snap, nil), p, old)
				if err != nil || !ok {
					t.Fatalf("mesh %d step %d, %s: renderRBAC: %v, %v", i, step, p, ok, err)
				}
				full, err := s.render(snap, nil, newMemo(snap, nil), p, old, true)
				if err != nil {
					t.Fatal(err)
				}
				where := fmt.Sprintf("mesh %d step %d, %s", i, step, p)
				sameGroup(t, where, fast, full)
				sameGroup(t, where+" (served)", s.groupOf(p), fast)
				compared++
				if fast.hash != old.hash {
					changed++
				}
			}
			cur = next
		}
		s.Close()
	}
	t.Logf("%d proxies compared, %d of them changed", compared, changed)
	if compared < 100 || changed < 50 {
		t.Fatalf("only %d proxies compared, %d of them changed", compared, changed)
	}
}

// sameGroup fails unless a and b have the same content hash, versions and cache resources
// (each resource's bytes).
func sameGroup(t *testing.T, where string, a, b *group) {
	t.Helper()
	if a.hash != b.hash || a.typeHash != b.typeHash || a.typeVersion != b.typeVersion {
		t.Fatalf("%s: hashes %s %v, versions %v; want %s %v, %v", where, a.hash, a.typeHash, a.typeVersion, b.hash, b.typeHash, b.typeVersion)
	}
	if len(a.cs.VersionMap) != len(b.cs.VersionMap) {
		t.Fatalf("%s: version maps of %d and %d types", where, len(a.cs.VersionMap), len(b.cs.VersionMap))
	}
	for typ, vm := range a.cs.VersionMap {
		if !maps.Equal(vm, b.cs.VersionMap[typ]) {
			t.Fatalf("%s: %s resource versions %v, want %v", where, shortType(typ), vm, b.cs.VersionMap[typ])
		}
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for k := range a.cs.Resources {
		x, y := a.cs.Resources[k], b.cs.Resources[k]
		if x.Version != y.Version || len(x.Items) != len(y.Items) {
			t.Fatalf("%s: resources %d: version %q (%d), want %q (%d)", where, k, x.Version, len(x.Items), y.Version, len(y.Items))
		}
		for name, it := range x.Items {
			jt, ok := y.Items[name]
			if !ok {
				t.Fatalf("%s: resource %q missing", where, name)
			}
			xb, err := opts.Marshal(it.Resource)
			if err != nil {
				t.Fatal(err)
			}
			yb, err := opts.Marshal(jt.Resource)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(xb, yb) {
				t.Fatalf("%s: resource %q differs", where, name)
			}
		}
	}
}

// TestMeshWideChangeAllocs guards what a mesh-wide change allocates per service, which the
// garbage collector pays for a thousand times a change (main before this test: 8, 15, 8, 9):
// renderRBAC of a sidecar whose RBAC pair is made already (the group, its resources with its
// cache snapshot, the cache's version map, the group's hash); the pair itself (publicRBAC: its
// encodings, its stat prefix, one allocation for the set and its messages, one for its four
// strings, the version map and the cache's index); and the state-of-the-world body of the
// pair (its bytes, the body with its list of buffers, a box per buffer; sotwBody adds its weak
// handle).
func TestMeshWideChangeAllocs(t *testing.T) {
	snaps := meshgenSnaps(t, 40, 1)
	s := NewServer(testLogger(t))
	defer s.Close()
	proxies := registerAll(t, s, snaps[0].ServiceNames())
	if err := s.SetSnapshot(snaps[0]); err != nil {
		t.Fatal(err)
	}
	var p Proxy
	for _, x := range proxies {
		if x.Shape == ShapeEnvoy && x.Kind == "" {
			p = x
			break
		}
	}
	old, snap := s.groupOf(p), snaps[1]
	m := newMemo(snap, nil)
	if g, ok, err := s.renderRBAC(snap, nil, m, p, old); err != nil || !ok || g.hash == old.hash {
		t.Fatalf("renderRBAC of %s: %v, %v (a change: %v)", p, ok, err, g != nil && g.hash != old.hash)
	}
	check := func(what string, limit float64, f func()) {
		t.Helper()
		if n := testing.AllocsPerRun(50, f); n > limit {
			t.Errorf("%s: %v allocations, want at most %v", what, n, limit)
		}
	}
	check("renderRBAC", 5, func() {
		if _, _, err := s.renderRBAC(snap, nil, m, p, old); err != nil {
			t.Fatal(err)
		}
	})
	svc, pr := snap.Services[p.Service], m.principals()
	check("publicRBAC", 7, func() {
		if _, err := publicRBAC(snap, svc, pr); err != nil {
			t.Fatal(err)
		}
	})
	set, err := publicRBAC(snap, svc, pr)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := newTypeSet(responseType(extensionConfigTypeURL), set.res, map[string]map[string]string{extensionConfigTypeURL: set.versions}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sub := newSotwSub(nil)
	check("encodeSotw", 7, func() { ts.encodeSotw([]string{PublicHTTPRBAC, PublicNetworkRBAC}) })
	check("sotwBody", 8, func() {
		ts.sotw.all = weak.Pointer[sotwBody]{} // not shared: built again
		runtime.KeepAlive(ts.sotwBody(&sub))
	})
}

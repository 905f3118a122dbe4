package xds

import (
	"math/rand/v2"
	"slices"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestKnownFilterRefs holds the references that knownFilter tells the memo of each filter it
// builds (read from the message) to what filterRefs reads of the filter's packed bytes, over
// the Envoy sidecars of random meshes (transparent and direct, tcp and http, with and without
// passthrough) and meshgen's.
func TestKnownFilterRefs(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 29))
	var snaps []*mesh.Snapshot
	for range 20 {
		s := randomTransparentMesh(r, 3+r.IntN(8))
		for _, svc := range s.Services {
			if r.IntN(2) == 0 {
				svc.Mode = ""
			}
		}
		snaps = append(snaps, seal(t, s))
	}
	snaps = append(snaps, meshgenSnaps(t, 40, 7)[0])
	checked := 0
	for i, snap := range snaps {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			res, err := renderShared(snap, Proxy{Service: name, Shape: ShapeEnvoy}, nil, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range res.Listeners {
				chains := slices.Clone(l.FilterChains)
				if l.DefaultFilterChain != nil {
					chains = append(chains, l.DefaultFilterChain)
				}
				for _, fc := range chains {
					for _, f := range fc.Filters {
						v := learnt(m, f, refsOf)
						if v == nil {
							continue
						}
						got, want := *v, filterRefs(f)
						if want.err != nil || !slices.Equal(got.routes, want.routes) || !slices.Equal(got.clusters, want.clusters) ||
							!slices.EqualFunc(got.extensions, want.extensions, func(a, b extensionRef) bool {
								return a.name == b.name && slices.Equal(a.typeURLs, b.typeURLs)
							}) {
							t.Fatalf("mesh %d, %s, listener %s, filter %s: told %+v, the bytes say %+v", i, name, l.Name, f.Name, got, want)
						}
						checked++
					}
				}
			}
		}
	}
	if checked < 200 {
		t.Fatalf("only %d filters checked", checked)
	}
}

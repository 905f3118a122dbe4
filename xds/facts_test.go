package xds

import (
	"bytes"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// TestGroupFactsShareWhatMemosLearnt: the facts a group's resources are validated, hashed and
// put in the cache through (factsOf, one look-up each) are the memo's: each resource's wire is
// its fresh deterministic encoding, its hash is the one of the version map, and the cache holds
// that wire. A later memo reads what the previous one learnt of the same messages (the same
// wire and validity, never marshalled again), also where it had learnt something else of a
// message first; a type left out has no facts.
func TestGroupFactsShareWhatMemosLearnt(t *testing.T) {
	snap := seal(t, richMesh())
	srv := NewServer(testLogger(t))
	m1 := newMemo(snap, nil)
	g, err := srv.render(snap, nil, m1, Proxy{Service: "web", Shape: ShapeEnvoy}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	byType := g.res.byType()
	var gf groupFacts
	m1.factsOf(&gf, byType, nil)
	n := 0
	for i, typ := range resourceTypes {
		for j, res := range byType[typ] {
			n++
			name := cachev3.GetResourceName(res)
			ft := gf[i][j]
			if ft == nil || ft != m1.facts.get(res) {
				t.Fatalf("%s %q: its fact is not the memo's", shortType(typ), name)
			}
			e, v := ft.enc.Load(), ft.valid.Load()
			if e == nil || v == nil || v.err != nil {
				t.Fatalf("%s %q: rendering left it unhashed or unvalidated (%v)", shortType(typ), name, v)
			}
			fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.wire.any.Value, fresh) || e.hash != hashOf(fresh) {
				t.Fatalf("%s %q: the wire is not its fresh encoding", shortType(typ), name)
			}
			if got := g.cs.VersionMap[typ][name]; got != e.hash {
				t.Fatalf("%s %q: version %q, hash %q", shortType(typ), name, got, e.hash)
			}
			if got := g.cs.Resources[cachev3.GetResponseType(typ)].Items[name].Resource; got != e.wire {
				t.Fatalf("%s %q: the cache holds %T, not the memo's wire", shortType(typ), name, got)
			}
		}
	}
	if n < 5 {
		t.Fatalf("web's group has %d resources", n)
	}

	m2 := newMemo(snap, m1)
	first := byType[resourcev3.ListenerType][0]
	m2.facts.of(first) // as if m2 had learnt its references first
	var gf2 groupFacts
	m2.factsOf(&gf2, byType, nil)
	for i, typ := range resourceTypes {
		for j, res := range byType[typ] {
			prev := m1.facts.get(res)
			if ft := gf2[i][j]; ft.enc.Load() != prev.enc.Load() || ft.valid.Load() != prev.valid.Load() {
				t.Fatalf("%s %q: the later memo does not read what the previous one learnt", shortType(typ), cachev3.GetResourceName(res))
			}
		}
	}
	if gf2[0][0] != m2.facts.get(first) {
		t.Fatal("a message the later memo knew is not read through its own fact")
	}
	var gf3 groupFacts
	m2.factsOf(&gf3, byType, map[resourcev3.Type]bool{resourcev3.ClusterType: true})
	if gf3[typeIndex(resourcev3.ClusterType)] != nil || gf3.list(typeIndex(resourcev3.ListenerType)) == nil {
		t.Fatal("factsOf looked up a type it was told to leave out, or left out another")
	}
	if (*memo)(nil).factsOf(&gf3, byType, nil) != nil {
		t.Fatal("a nil memo has facts")
	}
}

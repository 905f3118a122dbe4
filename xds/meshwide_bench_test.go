package xds

import (
	"context"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
)

// meshgenSnaps compiles meshgen's repository of n services (seed) twice, with
// defaultIntention "deny" and "allow": the mesh-wide change of reconciler's
// BenchmarkMeshWideChange.
func meshgenSnaps(tb testing.TB, n int, seed uint64) [2]*mesh.Snapshot {
	tb.Helper()
	files, _, err := meshgen.Generate(meshgen.Options{Services: n, Seed: seed})
	if err != nil {
		tb.Fatal(err)
	}
	var out [2]*mesh.Snapshot
	for v, def := range []string{"deny", "allow"} {
		var list []compiler.File
		for _, f := range files {
			data := f.Data
			if f.Name == "mesh.cue" {
				data = []byte(strings.Replace(string(data), `defaultIntention: "deny"`, `defaultIntention: "`+def+`"`, 1))
			}
			list = append(list, compiler.File{Name: f.Name, Data: data})
		}
		snap, err := compiler.Compile(context.Background(), list)
		if err != nil {
			tb.Fatal(err)
		}
		out[v] = snap
	}
	return out
}

// BenchmarkSetSnapshotMeshWide flips defaultIntention in meshgen's 1,000-service mesh with one
// registered Envoy node per service (no client): the rendering side of reconciler's
// BenchmarkMeshWideChange, every service's RBAC rendered again.
func BenchmarkSetSnapshotMeshWide(b *testing.B) {
	snaps := meshgenSnaps(b, 1000, 1)
	s := NewServer(nil)
	b.Cleanup(s.Close)
	cb := (*callbacks)(s)
	i := 0
	for name := range snaps[0].Services {
		i++
		registerNode(b, cb, int64(i), name)
	}
	if err := s.SetSnapshot(snaps[1]); err != nil {
		b.Fatal(err)
	}
	alternate(b, s, snaps[:])
}

// BenchmarkInitialRenderMeshgen is the rendering side of reconciler's initial sync: a server
// serving meshgen's 1,000-service mesh, and one Envoy node per service connecting (registered
// without a client), each rendering its group in full (groupFor: listeners, clusters, routes,
// endpoints, extension configs, validation, consistency, hashing, cache snapshot), on a fresh
// server each time, sharing what proxies share.
func BenchmarkInitialRenderMeshgen(b *testing.B) {
	snap := meshgenSnaps(b, 1000, 1)[0]
	names := snap.ServiceNames()
	b.ReportAllocs()
	n, cpu := 0, cpuTime()
	for b.Loop() {
		b.StopTimer()
		s := NewServer(nil)
		if err := s.SetSnapshot(snap); err != nil {
			b.Fatal(err)
		}
		cb := (*callbacks)(s)
		b.StartTimer()
		for i, name := range names {
			registerNode(b, cb, int64(i+1), name)
		}
		n++
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	reportCPU(b, cpu, n)
}

package compiler

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/policies"
)

var benchGuardSizes = []int{1000, 10000}

// BenchmarkGuard measures what the guardrails add to a compilation, on meshes from
// internal/meshgen: the analysis, and the policies (all built-in ones, then each alone).
//
//	go test -tags hashicorpmetrics -run '^$' -bench Guard -benchtime 3x ./compiler/
func BenchmarkGuard(b *testing.B) {
	for _, n := range benchGuardSizes {
		gen, _, err := meshgen.Generate(meshgen.Options{Services: n, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		files := make([]File, len(gen))
		for i, f := range gen {
			files[i] = File{Name: f.Name, Data: f.Data}
		}
		snap, err := Compile(context.Background(), files)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("services=%d/analysis", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				analyze(snap)
			}
		})
		for _, set := range append([][]string{policies.Names()}, splitNames()...) {
			name := "all"
			if len(set) == 1 {
				name = set[0]
			}
			b.Run(fmt.Sprintf("services=%d/policies=%s", n, name), func(b *testing.B) {
				snap.Mesh.Policies = set
				defer func() { snap.Mesh.Policies = nil }()
				var found int
				for i := 0; i < b.N; i++ {
					v, err := evalPolicies(snap, nil)
					if err != nil {
						b.Fatal(err)
					}
					found = len(v)
				}
				b.ReportMetric(float64(found), "violations/op")
			})
		}
	}
}

func splitNames() [][]string {
	var out [][]string
	for _, n := range policies.Names() {
		out = append(out, []string{n})
	}
	return out
}

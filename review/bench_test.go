package review_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/review"
)

// The review's benchmarks, on meshes from internal/meshgen (about five intentions per service),
// compiled once per size. Run them with `make bench`, or only these:
//
//	go test -tags hashicorpmetrics -run '^$' -bench . -benchmem ./review/
//
// Head is base with intentions edited in the compiled snapshot, as a commit that differs by
// those intentions compiles to: exact=K flips the verdict of K exact intentions; wildcard=1
// flips one "*" → D intention (every source without its own intention into D changes);
// default-flip flips mesh.defaultIntention (every pair without an intention, and every pair
// decided by L7 permissions, is evaluated). Each reports pairs/op, the pairs the review reports.
//
// BenchmarkNaiveAllPairs is the reference: it times Authorize in both versions over every
// source into one destination, and reports naive-s, that time extrapolated to all N² pairs
// (one request per pair; L7 probes would multiply it).

var (
	snapsMu sync.Mutex
	snaps   = map[int]*mesh.Snapshot{}
)

func compiled(b *testing.B, n int) *mesh.Snapshot {
	b.Helper()
	snapsMu.Lock()
	defer snapsMu.Unlock()
	if s := snaps[n]; s != nil {
		return s
	}
	gen, _, err := meshgen.Generate(meshgen.Options{Services: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	files := make([]compiler.File, len(gen))
	for i, f := range gen {
		files[i] = compiler.File{Name: f.Name, Data: f.Data}
	}
	start := time.Now()
	s, err := compiler.Compile(context.Background(), files)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("compiled %d services, %d intentions in %s", len(s.Services), len(s.Intentions), time.Since(start).Round(time.Millisecond))
	snaps[n] = s
	return s
}

// edited returns a deep copy of s (as a second compilation would give: no pointer shared
// with s) whose intentions pass through edit.
func edited(s *mesh.Snapshot, def mesh.Action, edit func(i int, in *mesh.Intention) *mesh.Intention) *mesh.Snapshot {
	raw, err := s.Encode()
	if err != nil {
		panic(err)
	}
	h, err := mesh.Decode(raw)
	if err != nil {
		panic(err)
	}
	if def != "" {
		h.Mesh.DefaultIntention = def
	}
	for i, in := range h.Intentions {
		h.Intentions[i] = edit(i, in)
	}
	return h
}

func flip(in *mesh.Intention) *mesh.Intention {
	out := *in
	out.Permissions = nil
	out.Action = mesh.Deny
	if in.Action == mesh.Deny {
		out.Action = mesh.Allow
	}
	return &out
}

// exactEdits flips k exact intentions spread evenly over the mesh.
func exactEdits(s *mesh.Snapshot, k int) *mesh.Snapshot {
	var exact []int
	for i, in := range s.Intentions {
		if in.Precedence == mesh.PrecedenceExact {
			exact = append(exact, i)
		}
	}
	pick := map[int]bool{}
	for j := 0; j < k && j < len(exact); j++ {
		pick[exact[j*len(exact)/k]] = true
	}
	return edited(s, "", func(i int, in *mesh.Intention) *mesh.Intention {
		if pick[i] {
			return flip(in)
		}
		return in
	})
}

func BenchmarkReview(b *testing.B) {
	type bench struct {
		name string
		n    int
		head func(*mesh.Snapshot) *mesh.Snapshot
	}
	var cases []bench
	for _, n := range []int{1000, 10000} {
		cases = append(cases, bench{"exact=1", n, func(s *mesh.Snapshot) *mesh.Snapshot { return exactEdits(s, 1) }})
	}
	for _, k := range []int{10, 100, 1000} {
		cases = append(cases, bench{fmt.Sprintf("exact=%d", k), 10000, func(s *mesh.Snapshot) *mesh.Snapshot { return exactEdits(s, k) }})
	}
	cases = append(cases,
		bench{"wildcard=1", 10000, func(s *mesh.Snapshot) *mesh.Snapshot {
			done := false
			return edited(s, "", func(i int, in *mesh.Intention) *mesh.Intention {
				if !done && in.Precedence == mesh.PrecedenceWildcardSource {
					done = true
					return flip(in)
				}
				return in
			})
		}},
		bench{"default-flip", 10000, func(s *mesh.Snapshot) *mesh.Snapshot {
			return edited(s, mesh.Allow, func(i int, in *mesh.Intention) *mesh.Intention { return in })
		}},
	)
	for _, c := range cases {
		b.Run(fmt.Sprintf("services=%d/%s", c.n, c.name), func(b *testing.B) {
			base := compiled(b, c.n)
			head := c.head(base)
			b.ReportAllocs()
			b.ResetTimer()
			var pairs int
			for i := 0; i < b.N; i++ {
				r := review.Review(base, head)
				pairs = 0
				for _, a := range r.Access {
					pairs += a.Pairs
				}
			}
			b.ReportMetric(float64(pairs), "pairs/op")
		})
	}
}

func BenchmarkNaiveAllPairs(b *testing.B) {
	base := compiled(b, 10000)
	head := exactEdits(base, 1)
	names := base.ServiceNames()
	dst := names[len(names)/2]
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for _, src := range names {
			r := mesh.Request{Source: src, Destination: dst, Method: "GET", Path: "/"}
			if mesh.Authorize(base, r).Verdict != mesh.Authorize(head, r).Verdict {
				_ = src
			}
		}
	}
	perDst := time.Since(start) / time.Duration(b.N)
	b.ReportMetric((perDst * time.Duration(len(names))).Seconds(), "naive-s")
}

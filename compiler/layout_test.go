package compiler

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"

	mesh "github.com/meshgit/mesh"
)

// TestLayoutDoesNotMatter is the property test of the issue: shuffling the declarations of a
// mesh and re-splitting them over other files (down to one field per declaration) never changes
// the Version or any verdict of Authorize.
func TestLayoutDoesNotMatter(t *testing.T) {
	ctx := context.Background()
	files, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := Compile(ctx, files)
	if err != nil {
		t.Fatalf("repo-example: %v", err)
	}
	decls := explodeAll(t, files)
	requests := sampleRequests(base)
	want := verdicts(base, requests)
	for seed := int64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewSource(seed))
		layout := relayout(t, rng, decls)
		s, err := Compile(ctx, layout)
		if err != nil {
			t.Fatalf("seed %d: layout of %d files does not compile: %v", seed, len(layout), err)
		}
		if s.Version != base.Version {
			t.Fatalf("seed %d: version %s, want %s", seed, s.Version, base.Version)
		}
		got := verdicts(s, requests)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d: request %+v: verdict %s, want %s", seed, requests[i], got[i], want[i])
			}
		}
	}
}

// explodeAll parses files and splits every top-level field into one declaration per leaf-ish
// field, up to three labels deep (e.g. intentions: api: web: {...}).
func explodeAll(t *testing.T, files []File) []ast.Decl {
	t.Helper()
	var out []ast.Decl
	for _, f := range files {
		af, err := parser.ParseFile(f.Name, f.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if _, ok := d.(*ast.Package); ok {
				continue
			}
			out = append(out, explode(d, 3)...)
		}
	}
	return out
}

func explode(d ast.Decl, depth int) []ast.Decl {
	f, ok := d.(*ast.Field)
	if !ok || depth == 0 {
		return []ast.Decl{d}
	}
	st, ok := f.Value.(*ast.StructLit)
	if !ok || len(st.Elts) == 0 {
		return []ast.Decl{d}
	}
	var out []ast.Decl
	for _, e := range st.Elts {
		sub, ok := e.(*ast.Field)
		if !ok {
			return []ast.Decl{d}
		}
		for _, inner := range explode(sub, depth-1) {
			out = append(out, &ast.Field{Label: f.Label, Value: &ast.StructLit{Elts: []ast.Decl{inner}}})
		}
	}
	return out
}

// relayout shuffles decls into between 1 and 8 files in random directories.
func relayout(t *testing.T, rng *rand.Rand, decls []ast.Decl) []File {
	t.Helper()
	n := 1 + rng.Intn(8)
	buckets := make([][]ast.Decl, n)
	for _, i := range rng.Perm(len(decls)) {
		b := rng.Intn(n)
		buckets[b] = append(buckets[b], decls[i])
	}
	var files []File
	for i, b := range buckets {
		f := &ast.File{Decls: append([]ast.Decl{&ast.Package{Name: ast.NewIdent("mesh")}}, b...)}
		src, err := format.Node(f)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("f%d.cue", i)
		if rng.Intn(2) == 0 {
			name = fmt.Sprintf("team%d/%s", rng.Intn(3), name)
		}
		files = append(files, File{Name: name, Data: src})
	}
	return files
}

// sampleRequests covers every ordered pair of services with and without L7 attributes.
func sampleRequests(s *mesh.Snapshot) []mesh.Request {
	var out []mesh.Request
	names := s.ServiceNames()
	for _, src := range names {
		for _, dst := range names {
			out = append(out,
				mesh.Request{Source: src, Destination: dst},
				mesh.Request{Source: src, Destination: dst, Method: "GET", Path: "/v1/items"},
				mesh.Request{Source: src, Destination: dst, Method: "POST", Path: "/admin/users", Headers: map[string]string{"x-canary": "1"}},
			)
		}
	}
	return out
}

func verdicts(s *mesh.Snapshot, reqs []mesh.Request) []mesh.Action {
	out := make([]mesh.Action, len(reqs))
	for i, r := range reqs {
		out[i] = mesh.Authorize(s, r).Verdict
	}
	return out
}

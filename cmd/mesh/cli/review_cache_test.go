package cli

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
)

// TestReviewCacheFaithful stores compiled snapshots in the review cache and reads them back:
// the same canonical content (so the same version), positions and commit, for repo-example, a
// generated mesh and a mesh without any service.
func TestReviewCacheFaithful(t *testing.T) {
	example, err := compiler.ReadDir("../../../repo-example")
	if err != nil {
		t.Fatal(err)
	}
	gen, _, err := meshgen.Generate(meshgen.Options{Services: 200, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	var generated []compiler.File
	for _, f := range gen {
		generated = append(generated, compiler.File{Name: f.Name, Data: f.Data})
	}
	empty := []compiler.File{{Name: "mesh.cue", Data: []byte("package mesh\n\nmesh: {name: \"m\", trustDomain: \"m.mesh\"}\n")}}
	for name, files := range map[string][]compiler.File{"repo-example": example, "generated": generated, "empty": empty} {
		t.Run(name, func(t *testing.T) {
			snap, rep, err := compiler.CompileWithReport(context.Background(), files, compiler.Options{ReportViolations: true})
			if err != nil {
				t.Fatal(err)
			}
			snap.Commit = "0123456789abcdef0123456789abcdef01234567"
			dir := t.TempDir()
			if err := storeCached(dir, "k", snap, rep); err != nil {
				t.Fatal(err)
			}
			got, gotRep := loadCached(dir, "k")
			if got == nil {
				t.Fatal("the entry did not load")
			}
			want, _ := snap.Canonical()
			have, _ := got.Canonical()
			if !bytes.Equal(want, have) {
				t.Errorf("canonical content differs:\n%.500s\n%.500s", have, want)
			}
			if v, _ := got.ComputeVersion(); v != snap.Version || got.Version != snap.Version {
				t.Errorf("version %s (content hashes to %s), want %s", got.Version, v, snap.Version)
			}
			if got.Commit != snap.Commit || !reflect.DeepEqual(got.Positions, snap.Positions) {
				t.Error("commit or positions differ")
			}
			if len(gotRep.Warnings) != len(rep.Warnings) || len(gotRep.Violations) != len(rep.Violations) {
				t.Errorf("report %+v, want %+v", gotRep, rep)
			}
		})
	}
}

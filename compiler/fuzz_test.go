package compiler

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// FuzzCompile feeds arbitrary text to the loader as one mesh file next to a valid one. The
// compiler must never panic, must return either a snapshot or configuration errors with
// positions, and must compile the same input to the same version twice.
func FuzzCompile(f *testing.F) {
	base := File{Name: "base.cue", Data: []byte("package mesh\n\nmesh: {name: \"shop\", trustDomain: \"shop.mesh\"}\nservices: api: {protocol: \"http\", port: 8080}\n")}
	seeds, _ := filepath.Glob("testdata/errors/*.txtar")
	for _, p := range seeds {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if file.Name != "want" {
				f.Add(file.Data)
			}
		}
	}
	examples, _ := filepath.Glob("../repo-example/teams/*.cue")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("package mesh\nintentions: api: api: permissions: [{action: \"allow\", http: pathRegex: \"(\"}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		files := []File{base, {Name: "fuzz.cue", Data: data}}
		s1, err1 := Compile(context.Background(), files)
		if err1 != nil {
			var list Errors
			if !errors.As(err1, &list) {
				t.Fatalf("not a configuration error: %v", err1)
			}
			return
		}
		s2, err2 := Compile(context.Background(), files)
		if err2 != nil || s2.Version != s1.Version {
			t.Fatalf("recompile: %v, version %s then %v", err2, s1.Version, s2)
		}
	})
}

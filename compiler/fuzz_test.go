package compiler

import (
	"bytes"
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

// FuzzReadElements: reading a review cache's elements file never panics, and accepts exactly
// the magic line followed by whole 32-byte keys.
func FuzzReadElements(f *testing.F) {
	f.Add([]byte(elementsMagic))
	f.Add(append([]byte(elementsMagic), make([]byte, 64)...))
	f.Add([]byte("mesh compiler elements 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewCache()
		err := c.ReadElements(bytes.NewReader(data))
		rest, ok := bytes.CutPrefix(data, []byte(elementsMagic))
		if want := ok && len(rest)%32 == 0; (err == nil) != want {
			t.Fatalf("ReadElements(%q) = %v", data, err)
		}
		if err == nil && len(c.elems) > len(rest)/32 {
			t.Fatalf("%d keys from %d bytes", len(c.elems), len(rest))
		}
	})
}

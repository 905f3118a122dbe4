package compiler

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// TestErrors compiles every testdata/errors/*.txtar archive and compares the complete list of
// errors with its "want" section, positions included, on the fast path and on the full path.
// MESH_UPDATE=1 rewrites the want sections.
func TestErrors(t *testing.T) {
	paths, err := filepath.Glob("testdata/errors/*.txtar")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no test archives: %v", err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var files []File
			want := ""
			wantIdx := -1
			for i, f := range ar.Files {
				if f.Name == "want" {
					want, wantIdx = string(f.Data), i
					continue
				}
				files = append(files, File{Name: f.Name, Data: f.Data})
			}
			_, err = Compile(context.Background(), files)
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("Compile: got %v, want configuration errors", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
			got := list.Error() + "\n"
			// The full path (CUE evaluates the schema as written) gives the same errors.
			fastPath = false
			_, fullErr := Compile(context.Background(), files)
			fastPath = true
			if fullErr == nil || fullErr.Error()+"\n" != got {
				t.Errorf("the full path's errors differ from the fast path's:\nfull:\n%v\nfast:\n%s", fullErr, got)
			}
			if os.Getenv("MESH_UPDATE") != "" && wantIdx >= 0 {
				ar.Files[wantIdx].Data = []byte(got)
				if err := os.WriteFile(p, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
			for _, e := range list {
				if !e.Pos.IsValid() {
					t.Errorf("error without a position: %s", e.Msg)
				}
			}
		})
	}
}

package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshgit/mesh/cmd/mesh/cli"
	"github.com/meshgit/mesh/internal/docgen"
)

// TestDocs fails when a generated file of docs/ differs from what the code generates now: the
// command reference (docs/cli.md, from the command tree) and the repository format
// (docs/reference.md, from the schema and internal/docgen/prose.txtar). After changing a
// command, a flag or the schema, regenerate them with
//
//	MESH_UPDATE=1 go test -tags hashicorpmetrics ./cmd/mesh/cli -run TestDocs
//
// and review the diff.
func TestDocs(t *testing.T) {
	// Flag defaults may come from the environment; the docs show them without it.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "MESH_") && k != "MESH_UPDATE" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	ref, err := docgen.Reference()
	if err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join("..", "..", "..", "docs")
	for name, want := range map[string][]byte{"cli.md": cli.CLIDocs(), "reference.md": ref} {
		path := filepath.Join(docs, name)
		want = append(want, '\n')
		if os.Getenv("MESH_UPDATE") != "" {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/%s is out of date: regenerate it with\n\tMESH_UPDATE=1 go test -tags hashicorpmetrics ./cmd/mesh/cli -run TestDocs\n%s",
				name, firstDifference(got, want))
		}
	}
}

// TestCLIDocsCoverEveryCommand: every command that is not hidden, at every level, has its
// section, with each of its flags.
func TestCLIDocsCoverEveryCommand(t *testing.T) {
	doc := string(cli.CLIDocs())
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			n++
			if !strings.Contains(doc, "\n## "+sub.CommandPath()+"\n") {
				t.Errorf("no section for %s", sub.CommandPath())
			}
			sub.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if !f.Hidden && f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
					t.Errorf("%s --%s is not in the docs", sub.CommandPath(), f.Name)
				}
			})
			walk(sub)
		}
	}
	walk(cli.NewRoot(nil, nil))
	if n < 20 {
		t.Errorf("only %d commands", n)
	}
}

func firstDifference(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "first difference at line " + strconv.Itoa(i+1) + ":\n\tcommitted: " + gl + "\n\tgenerated: " + wl
		}
	}
	return ""
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/redact"
)

// source is where a command reads its mesh: a directory, or a directory of a Git commit.
type source struct {
	dir    string
	repo   string
	ref    string
	strict bool // analysis warnings are errors
}

// addSourceFlags adds --repo and --ref; DIR comes from the command's arguments or --dir.
func (s *source) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.repo, "repo", "", "read the mesh from a commit of this Git repository (path or URL) instead of the working tree")
	cmd.Flags().StringVar(&s.ref, "ref", "HEAD", "with --repo: the branch, tag or commit to read")
	cmd.Flags().BoolVar(&s.strict, "strict", false, "treat analysis warnings as errors")
}

func (s *source) String() string {
	if s.repo == "" {
		return s.dir
	}
	return fmt.Sprintf("%s@%s:%s", redact.URL(s.repo), s.ref, s.dir)
}

// compile compiles the mesh the source names. Configuration errors are printed to stderr, one
// per line, and returned as an exit status of 1.
func (s *source) compile(ctx context.Context, stderr io.Writer) (*mesh.Snapshot, error) {
	var (
		snap *mesh.Snapshot
		rep  *compiler.Report
		err  error
	)
	// Policies (the mesh's policies/ folder included) and analysis run with the compilation.
	opts := compiler.Options{Strict: s.strict}
	if s.repo != "" {
		dir := s.dir
		if dir == "." {
			dir = ""
		}
		snap, rep, err = compiler.CompileGitWithReport(ctx, s.repo, s.ref, dir, opts)
	} else {
		snap, rep, err = compiler.CompileDirWithReport(ctx, s.dir, opts)
	}
	if rep != nil {
		printWarnings(stderr, rep.Warnings)
	}
	var list compiler.Errors
	if errors.As(err, &list) {
		fmt.Fprintln(stderr, list.Error())
		fmt.Fprintf(stderr, "%d error%s in %s\n", len(list), plural(len(list)), s)
		return nil, exitWith(ExitInvalid)
	}
	return snap, err
}

// printWarnings prints analysis warnings as file:line:col: warning: message.
func printWarnings(w io.Writer, list compiler.Errors) {
	for _, e := range list {
		if e.Pos.IsValid() {
			fmt.Fprintf(w, "%s: warning: %s\n", e.Pos, e.Msg)
		} else {
			fmt.Fprintf(w, "warning: %s\n", e.Msg)
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// dirArg returns the optional DIR argument, defaulting to ".".
func dirArg(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return "."
}

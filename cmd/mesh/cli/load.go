package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/redact"
)

// source is where a command reads its mesh: a directory, or a directory of a Git commit.
type source struct {
	dir    string
	repo   string
	ref    string
	strict bool // analysis warnings are errors
	// verify lists the files of trusted keys (--verify-commits): with --repo, the commit must
	// be signed by one of them.
	verify []string
}

// addSourceFlags adds --repo and --ref; DIR comes from the command's arguments or --dir.
func (s *source) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.repo, "repo", "", "read the mesh from a commit of this Git repository (path or URL) instead of the working tree")
	cmd.Flags().StringVar(&s.ref, "ref", "HEAD", "with --repo: the branch, tag or commit to read")
	cmd.Flags().BoolVar(&s.strict, "strict", false, "treat analysis warnings as errors")
	cmd.Flags().StringSliceVar(&s.verify, "verify-commits", nil, "with --repo: refuse the commit (exit 1) unless it is signed by a key of these files: SSH allowed_signers or armored OpenPGP keyrings (repeatable or comma-separated)")
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
		snap, rep, err = s.compileCommit(ctx, dir, opts, stderr)
	} else {
		if len(s.verify) > 0 {
			return nil, usageError{errors.New("--verify-commits needs --repo: a directory has no commit to verify")}
		}
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

// compileCommit compiles the commit s.ref of s.repo, after checking its signature when
// --verify-commits is given: a commit that is not signed by a trusted key is reported on stderr
// and exits with status 1, without being compiled.
func (s *source) compileCommit(ctx context.Context, dir string, opts compiler.Options, stderr io.Writer) (*mesh.Snapshot, *compiler.Report, error) {
	var keys *commitsig.Keys
	if len(s.verify) > 0 {
		var err error
		if keys, err = commitsig.Load(s.verify...); err != nil {
			return nil, nil, err
		}
	}
	r, err := compiler.OpenRepo(ctx, s.repo)
	if err != nil {
		return nil, nil, err
	}
	h, err := compiler.Resolve(r, s.ref)
	if err != nil {
		return nil, nil, err
	}
	if keys != nil {
		c, err := r.CommitObject(h)
		if err != nil {
			return nil, nil, err
		}
		signer, err := keys.Verify(c)
		if err != nil {
			fmt.Fprintf(stderr, "%s@%s: commit %s refused: %v (--verify-commits %s)\n", redact.URL(s.repo), s.ref, h.String()[:12], err, keys)
			return nil, nil, exitWith(ExitInvalid)
		}
		fmt.Fprintf(stderr, "commit %s: signed by %s\n", h.String()[:12], signer)
	}
	return compiler.CompileCommitWithReport(ctx, r, h, dir, opts)
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

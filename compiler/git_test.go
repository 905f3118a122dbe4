package compiler

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/meshgit/mesh/internal/testutil"
)

const gitMeshV1 = `package mesh

mesh: {name: "shop", trustDomain: "shop.mesh"}
services: api: {protocol: "http", port: 8080}
services: web: {protocol: "http", port: 8080}
`

const gitIntention = `package mesh

intentions: api: web: {action: "allow"}
`

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newGitRepo makes a repository with two commits of a mesh in mesh/: the first without
// intentions, the second with one. It returns the repository and both SHAs.
func newGitRepo(t *testing.T) (dir, first, second string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("these tests need the git CLI (.ci/run installs it): %v", err)
	}
	dir = t.TempDir()
	testutil.Git(t, dir, "init", "-q", "-b", "main")
	writeFile(t, filepath.Join(dir, "mesh", "mesh.cue"), gitMeshV1)
	testutil.Git(t, dir, "add", ".")
	testutil.Git(t, dir, "commit", "-q", "-m", "first")
	first = testutil.Git(t, dir, "rev-parse", "HEAD")
	writeFile(t, filepath.Join(dir, "mesh", "teams", "api.cue"), gitIntention)
	testutil.Git(t, dir, "add", ".")
	testutil.Git(t, dir, "commit", "-q", "-m", "second")
	second = testutil.Git(t, dir, "rev-parse", "HEAD")
	return dir, first, second
}

func TestCompileGitReadsTheCommitNotTheWorkTree(t *testing.T) {
	ctx := context.Background()
	dir, first, second := newGitRepo(t)
	// An uncommitted edit that breaks the mesh, and an untracked file: neither is read.
	writeFile(t, filepath.Join(dir, "mesh", "mesh.cue"), "package mesh\nthis is not cue\n")
	writeFile(t, filepath.Join(dir, "mesh", "untracked.cue"), "package mesh\nintentions: web: api: {action: \"allow\"}\n")

	head, err := CompileGit(ctx, dir, "main", "mesh")
	if err != nil {
		t.Fatalf("CompileGit(main): %v", err)
	}
	if head.Commit != second {
		t.Errorf("Commit = %s, want %s", head.Commit, second)
	}
	if len(head.Intentions) != 1 || head.Intentions[0].Source != "web" {
		t.Errorf("intentions at main = %+v, want only web → api", head.Intentions)
	}
	if got := head.Pos("intentions.api.web").File; got != "teams/api.cue" {
		t.Errorf("position file = %q, want teams/api.cue (relative to the mesh directory)", got)
	}

	old, err := CompileGit(ctx, dir, first[:10], "mesh")
	if err != nil {
		t.Fatalf("CompileGit(%s): %v", first[:10], err)
	}
	if old.Commit != first || len(old.Intentions) != 0 {
		t.Errorf("first commit: commit %s, %d intentions; want %s, 0", old.Commit, len(old.Intentions), first)
	}
	if old.Version == head.Version {
		t.Errorf("different content, same version %s", old.Version)
	}
	prev, err := CompileGit(ctx, dir, "HEAD~1", "mesh/")
	if err != nil || prev.Version != old.Version {
		t.Errorf("HEAD~1: %v, version %v; want %s", err, prev, old.Version)
	}

	// The same content from a plain directory has the same version and no commit.
	tmp := t.TempDir()
	writeFile(t, filepath.Join(tmp, "all.cue"), gitMeshV1+strings.TrimPrefix(gitIntention, "package mesh\n"))
	plain, err := CompileDir(ctx, tmp)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Version != head.Version || plain.Commit != "" {
		t.Errorf("directory: version %s commit %q; want %s and no commit", plain.Version, plain.Commit, head.Version)
	}
}

func TestCompileGitErrors(t *testing.T) {
	ctx := context.Background()
	dir, _, _ := newGitRepo(t)
	_, err := CompileGit(ctx, dir, "no-such-branch", "mesh")
	if !errors.Is(err, ErrRef) || !strings.Contains(err.Error(), `"no-such-branch"`) {
		t.Errorf("missing ref: got %v, want ErrRef naming the ref", err)
	}
	_, err = CompileGit(ctx, dir, "main", "nowhere")
	if err == nil || !strings.Contains(err.Error(), `no directory "nowhere"`) {
		t.Errorf("missing directory: got %v", err)
	}
	_, err = CompileGit(ctx, filepath.Join(t.TempDir(), "absent"), "main", "")
	if err == nil || !strings.Contains(err.Error(), "open git repository") {
		t.Errorf("missing repository: got %v", err)
	}
	// A commit whose mesh is broken reports positions relative to the mesh directory.
	writeFile(t, filepath.Join(dir, "mesh", "teams", "api.cue"), "package mesh\n\nintentions: api: ghost: {action: \"allow\"}\n")
	testutil.Git(t, dir, "commit", "-q", "-am", "broken")
	_, err = CompileGit(ctx, dir, "main", "mesh")
	var list Errors
	if !errors.As(err, &list) || list.Error() != "teams/api.cue:3:18: intention ghost → api: source ghost: no such service" {
		t.Errorf("broken commit: got %v", err)
	}
}

func TestCompileGitBareAndURL(t *testing.T) {
	ctx := context.Background()
	dir, _, second := newGitRepo(t)
	bare := filepath.Join(t.TempDir(), "mesh.git")
	testutil.Git(t, dir, "clone", "-q", "--bare", dir, bare)
	for _, repo := range []string{bare, "file://" + bare} {
		s, err := CompileGit(ctx, repo, "main", "mesh")
		if err != nil {
			t.Fatalf("%s: %v", repo, err)
		}
		if s.Commit != second {
			t.Errorf("%s: commit %s, want %s", repo, s.Commit, second)
		}
	}
}

// TestCompileGoGitCommit reads a commit made with go-git rather than the git CLI.
func TestCompileGoGitCommit(t *testing.T) {
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "mesh.cue"), gitMeshV1)
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add("mesh.cue"); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "test", Email: "test@example.invalid", When: time.Unix(1700000000, 0)}
	h, err := wt.Commit("mesh", &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		t.Fatal(err)
	}
	s, err := CompileGit(context.Background(), dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Commit != h.String() || len(s.Services) != 2 {
		t.Errorf("commit %s with %d services; want %s with 2", s.Commit, len(s.Services), h)
	}
}

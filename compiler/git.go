package compiler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/meshgit/mesh/internal/redact"
)

// skipDir reports whether a directory of a mesh tree holds no mesh definitions: hidden and
// underscore directories, CUE module metadata, and policies/ (the mesh's own guardrails, which
// are CUE of another package).
func skipDir(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
		name == "cue.mod" || name == "policies" || name == "testdata"
}

// ReadDir reads every .cue file under dir (recursively, see skipDir) with names relative to dir.
func ReadDir(dir string) ([]File, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("mesh directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mesh directory %s: not a directory", dir)
	}
	var files []File
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), ".cue") || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, File{Name: filepath.ToSlash(rel), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read mesh directory: %w", err)
	}
	return files, nil
}

// IsRemote reports whether a repository argument is a URL rather than a local path.
func IsRemote(repo string) bool {
	return strings.Contains(repo, "://") || (strings.Contains(repo, "@") && strings.Contains(repo, ":") && !filepath.IsAbs(repo))
}

// OpenRepo opens a local repository (a work tree or a bare repository) or clones a remote one
// into memory.
func OpenRepo(ctx context.Context, repo string) (*git.Repository, error) {
	if IsRemote(repo) {
		r, err := git.CloneContext(ctx, memory.NewStorage(), nil, &git.CloneOptions{URL: repo, Tags: git.AllTags})
		if err != nil {
			return nil, redact.Error(fmt.Errorf("clone %s: %w", repo, err))
		}
		return r, nil
	}
	// A bare repository or a work tree's root opens as it is; a path inside a work tree finds
	// the .git above it.
	r, err := git.PlainOpenWithOptions(repo, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		r, err = git.PlainOpenWithOptions(repo, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	}
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", repo, err)
	}
	return r, nil
}

// Resolve resolves ref (a branch, tag, remote branch, full or abbreviated SHA, or any revision
// go-git understands; "" means HEAD) to a commit hash.
func Resolve(r *git.Repository, ref string) (plumbing.Hash, error) {
	if ref == "" {
		ref = "HEAD"
	}
	h, err := r.ResolveRevision(plumbing.Revision(ref))
	if err != nil {
		// A remote clone has only remote-tracking branches for names other than its HEAD.
		if h2, err2 := r.ResolveRevision(plumbing.Revision("refs/remotes/origin/" + ref)); err2 == nil {
			return *h2, nil
		}
		return plumbing.ZeroHash, fmt.Errorf("%w: %q: %v", ErrRef, ref, err)
	}
	return *h, nil
}

// ReadGit reads the mesh in directory dir of the commit ref resolves to in repo, and returns its
// files and the commit's SHA.
func ReadGit(ctx context.Context, repo, ref, dir string) ([]File, string, error) {
	r, err := OpenRepo(ctx, repo)
	if err != nil {
		return nil, "", err
	}
	h, err := Resolve(r, ref)
	if err != nil {
		return nil, "", err
	}
	files, err := ReadCommit(r, h, dir)
	if err != nil {
		return nil, "", err
	}
	return files, h.String(), nil
}

// ReadCommit reads every .cue file under dir in the tree of commit hash, without a checkout.
func ReadCommit(r *git.Repository, hash plumbing.Hash, dir string) ([]File, error) {
	tree, err := MeshTree(r, hash, dir)
	if err != nil {
		return nil, err
	}
	var files []File
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("commit %s: walk tree: %w", hash.String()[:12], err)
		}
		if !entry.Mode.IsFile() || !strings.HasSuffix(name, ".cue") || skippedPath(name) {
			continue
		}
		b, err := readEntry(tree, &entry)
		if err != nil {
			return nil, fmt.Errorf("commit %s: %s: %w", hash.String()[:12], name, err)
		}
		files = append(files, File{Name: name, Data: b})
	}
	return files, nil
}

// MeshTree is the tree of directory dir (relative to the repository's root, "" or "." for the
// root) in commit hash.
func MeshTree(r *git.Repository, hash plumbing.Hash, dir string) (*object.Tree, error) {
	c, err := r.CommitObject(hash)
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s: %v", ErrRef, hash, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("commit %s: tree: %w", hash, err)
	}
	dir = repoPath(dir)
	if dir == "" {
		return tree, nil
	}
	sub, err := tree.Tree(dir)
	if errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, fmt.Errorf("commit %s has no directory %q", hash.String()[:12], dir)
	}
	if err != nil {
		return nil, fmt.Errorf("commit %s: directory %q: %w", hash.String()[:12], dir, err)
	}
	return sub, nil
}

// repoPath is dir as a slash path relative to the repository's root, "" for the root.
func repoPath(dir string) string {
	return strings.Trim(path.Clean("/"+filepath.ToSlash(dir)), "/")
}

// readEntry reads the file of a tree entry.
func readEntry(tree *object.Tree, e *object.TreeEntry) ([]byte, error) {
	f, err := tree.TreeEntryFile(e)
	if err != nil {
		return nil, err
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// skippedPath reports whether a slash path lies in a directory skipDir excludes.
func skippedPath(name string) bool {
	parts := strings.Split(name, "/")
	for _, p := range parts[:len(parts)-1] {
		if skipDir(p) {
			return true
		}
	}
	return false
}

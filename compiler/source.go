package compiler

import (
	"context"

	mesh "github.com/meshgit/mesh"
)

// File is one source file of a mesh: its path relative to the mesh directory (slash-separated)
// and its content.
type File struct {
	Name string
	Data []byte
}

// CompileDir compiles the mesh in directory dir of the file system.
func CompileDir(ctx context.Context, dir string) (*mesh.Snapshot, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return Compile(ctx, files)
}

// CompileGit compiles the mesh in directory dir (slash-separated, "" or "." for the root) of the
// commit that ref resolves to in the Git repository at repo, a local path or a URL. It reads the
// commit's tree with go-git; the working tree, if any, is never read. The snapshot's Commit is the
// commit's SHA.
func CompileGit(ctx context.Context, repo, ref, dir string) (*mesh.Snapshot, error) {
	files, commit, err := ReadGit(ctx, repo, ref, dir)
	if err != nil {
		return nil, err
	}
	s, err := Compile(ctx, files)
	if err != nil {
		return nil, err
	}
	s.Commit = commit
	return s, nil
}

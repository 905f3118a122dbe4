// Package schema holds the CUE definitions of the mesh repository format, embedded in the binary.
// The compiler unifies a user's files with them; `mesh schema` prints them for editors and
// `cue vet`.
package schema

import "embed"

//go:embed *.cue
var files embed.FS

// File is one schema file.
type File struct {
	Name string
	Data []byte
}

// Files returns the schema's CUE files, in name order.
func Files() []File {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	out := make([]File, 0, len(entries))
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, File{Name: e.Name(), Data: b})
	}
	return out
}

// Package policies is the built-in guardrail library: policies written in CUE against the
// compiled snapshot as data, embedded in the binary. A mesh enables them by name in
// mesh.policies; the compiler evaluates the enabled ones (and the mesh's own, from its
// policies/ folder) after every compilation, so validate, compile, review and the server all
// enforce the same guardrails.
//
// The contract of a policy file, built-in or the mesh's own: it belongs to package policies and
// defines, for each policy name, a list of violations computed from `input`:
//
//	policy: "owners-required": {
//		doc: "every service lists its owners"
//		violations: [for name, s in input.services if len(s.owners) == 0 {
//			path:    "services.\(name)"
//			message: "service \(name) lists no owners"
//		}]
//	}
//
// `input` is the view of the snapshot declared in input.cue (#Input): the mesh settings, the
// services, the intentions as destination → source → intention, the access each service gets
// from sources without an intention of their own, and the routes. Verdicts in it (`allows`,
// `decidedBy`) come from the one evaluator, mesh.Authorize: a policy reads them and never
// re-encodes precedence or the meaning of permissions. Every element
// carries its `path`; a violation names the path of the element that violates the policy, and
// the compiler turns it into that element's file:line:col.
package policies

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.cue
var files embed.FS

// File is one embedded CUE file.
type File struct {
	Name string
	Data []byte
}

// Files returns the library's CUE files, sorted by name.
func Files() []File {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	var out []File
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, File{Name: e.Name(), Data: b})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns the names of the built-in policies, sorted: the files other than input.cue,
// each named after the policy it defines.
func Names() []string {
	var out []string
	for _, f := range Files() {
		if f.Name != "input.cue" {
			out = append(out, strings.TrimSuffix(f.Name, ".cue"))
		}
	}
	return out
}

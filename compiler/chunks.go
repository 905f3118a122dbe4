package compiler

import (
	"hash/fnv"
	"sync/atomic"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
)

// Chunked evaluation, the fast path for large meshes.
//
// CUE's evaluation of one value grows faster than the mesh: at 10k services one evaluation held
// 2.7 GiB and spent a third of its time collecting garbage. But plain data (the only input of
// the fast path) has no references, so unification is independent per key: the value of
// services.api is the unification of what the files write at services.api and nothing else.
// So the declarations of the five maps are split by their key (services.api, intentions.api,
// ...) into chunks, each evaluated with the schema on its own; everything else (mesh, and the
// user's hidden fields and definitions) goes into every chunk, so each chunk sees the same mesh
// settings as a single evaluation would. Every key lands in exactly one chunk, so each element
// is unified from the same conjuncts as in one evaluation, and the mesh is valid exactly when
// every chunk is. A chunk that fails any check sends the whole mesh down the full path, which
// reports the errors.

// chunkDecls is about how many declarations a chunk holds; a mesh with fewer is evaluated in one
// piece. Tests lower it to exercise the split on small meshes.
var chunkDecls = 1000

// chunkedSections are the top-level maps whose entries are independent.
var chunkedSections = map[string]bool{
	"services": true, "intentions": true, "routers": true, "splitters": true, "resolvers": true,
}

// splitDecls splits the declarations of plain-data userFiles into those of the keys of
// chunkedSections (see splitSection), in the order of the files, and the others. It reports
// false when a declaration of those sections cannot be split by key.
func splitDecls(userFiles []*ast.File) (shared []ast.Decl, keyed []keyedDecl, ok bool) {
	for _, f := range userFiles {
		s, k, ok := splitFile(f)
		if !ok {
			return nil, nil, false
		}
		shared, keyed = append(shared, s...), append(keyed, k...)
	}
	return shared, keyed, true
}

// splitFile is splitDecls of one file.
func splitFile(f *ast.File) (shared []ast.Decl, keyed []keyedDecl, ok bool) {
	for _, d := range f.Decls {
		switch d.(type) {
		case *ast.Package, *ast.ImportDecl, *ast.CommentGroup:
			continue
		}
		if parts, ok := splitSection(d); ok {
			keyed = append(keyed, parts...)
		} else if isSection(d) {
			return nil, nil, false
		} else {
			shared = append(shared, d)
		}
	}
	return shared, keyed, true
}

func isSection(d ast.Decl) bool {
	f, ok := d.(*ast.Field)
	if !ok {
		return false
	}
	name, _, err := ast.LabelName(f.Label)
	return err == nil && chunkedSections[name]
}

// validChunks evaluates the declarations shared and keyed with the fast path's schema
// (fastschema.go) in chunks (see above), and reports whether every chunk is valid, and how many
// there were. The evaluated values are dropped as soon as each chunk is validated.
func validChunks(shared []ast.Decl, keyed []keyedDecl) (int, bool) {
	k := max(1, len(keyed)/chunkDecls)
	buckets := make([][]ast.Decl, k)
	for _, kd := range keyed {
		h := fnv.New32a()
		h.Write([]byte(kd.key))
		b := int(h.Sum32() % uint32(k))
		buckets[b] = append(buckets[b], kd.decl)
	}
	// The chunks are evaluated on every core. Each has its own cue.Context, and the syntax they
	// share is only read: building an instance resolves identifiers, which plain data has none
	// of in its values, and the schema and the package clause are each chunk's own.
	var invalid atomic.Bool
	parallel(k, invalid.Load, func(i int) {
		if !validChunk(shared, buckets[i]) {
			invalid.Store(true)
		}
	})
	return k, !invalid.Load()
}

// validChunk evaluates the declarations shared and keyed, with the fast path's schema.
func validChunk(shared, keyed []ast.Decl) bool {
	inst := build.NewContext().NewInstance("mesh", nil)
	inst.PkgName = "mesh"
	sfs, err := fastSchemaFiles()
	if err != nil {
		return false
	}
	for _, af := range sfs {
		if err := inst.AddSyntax(af); err != nil {
			return false
		}
	}
	decls := make([]ast.Decl, 0, len(shared)+len(keyed)+1)
	decls = append(decls, &ast.Package{Name: ast.NewIdent("mesh")})
	decls = append(decls, shared...)
	decls = append(decls, keyed...)
	if err := inst.AddSyntax(&ast.File{Decls: decls}); err != nil {
		return false
	}
	v := cuecontext.New().BuildInstance(inst)
	return v.Validate(cue.Concrete(true), cue.All()) == nil
}

type keyedDecl struct {
	key  string // section.key, e.g. "services.api"
	decl ast.Decl
	sub  *ast.Field // the field of the key in the files' syntax
	sum  [32]byte   // SHA-256 of sub's text (fileSplit)
	// where sub starts (fileSplit)
	file      string
	line, col int
}

// splitSection splits a declaration of one of chunkedSections into one declaration per key:
// `services: {a: A, b: B}` into `services: a: A` and `services: b: B`. Field nodes are reused,
// so positions stay those of the files. It reports false for anything else.
func splitSection(d ast.Decl) ([]keyedDecl, bool) {
	f, ok := d.(*ast.Field)
	if !ok {
		return nil, false
	}
	name, _, err := ast.LabelName(f.Label)
	if err != nil || !chunkedSections[name] {
		return nil, false
	}
	st, ok := f.Value.(*ast.StructLit)
	if !ok {
		return nil, false
	}
	var out []keyedDecl
	for _, e := range st.Elts {
		sub, ok := e.(*ast.Field)
		if !ok {
			return nil, false
		}
		key, _, err := ast.LabelName(sub.Label)
		if err != nil {
			return nil, false
		}
		out = append(out, keyedDecl{
			key:  name + "." + key,
			decl: &ast.Field{Label: f.Label, Value: &ast.StructLit{Elts: []ast.Decl{sub}}},
			sub:  sub,
		})
	}
	return out, true
}

package compiler

import (
	"hash/fnv"

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
// is unified from the same conjuncts, at the same positions, as in one evaluation; the compiler
// then reads the chunks one after the other. A chunk that fails any check sends the whole mesh
// down the full path, which reports the errors.

// chunkDecls is about how many declarations a chunk holds; a mesh with fewer is evaluated in one
// piece. Tests lower it to exercise the split on small meshes.
var chunkDecls = 1000

// chunkedSections are the top-level maps whose entries are independent.
var chunkedSections = map[string]bool{
	"services": true, "intentions": true, "routers": true, "splitters": true, "resolvers": true,
}

// loadFastChunked evaluates plain-data userFiles in chunks (see above). It reports false when the
// mesh is not plain data, is small enough for one piece, or has any error.
func loadFastChunked(userFiles []*ast.File) ([]cue.Value, map[string]any, bool) {
	if !fastPath {
		return nil, nil, false
	}
	for _, f := range userFiles {
		if !isPlainData(f) {
			return nil, nil, false
		}
	}
	var shared []ast.Decl
	var keyed []keyedDecl
	for _, f := range userFiles {
		for _, d := range f.Decls {
			switch d.(type) {
			case *ast.Package, *ast.ImportDecl, *ast.CommentGroup:
				continue
			}
			if parts, ok := splitSection(d); ok {
				keyed = append(keyed, parts...)
			} else {
				shared = append(shared, d)
			}
		}
	}
	k := len(keyed) / chunkDecls
	if k < 2 {
		return nil, nil, false
	}
	// The one-ofs the stripped schema no longer checks are checked on the data, read from the
	// syntax (plaindata.go), once; data this cannot read takes the full path.
	data, ok := plainData(userFiles)
	if !ok || !oneOfsHoldData(data) {
		return nil, nil, false
	}
	buckets := make([][]ast.Decl, k)
	for _, kd := range keyed {
		h := fnv.New32a()
		h.Write([]byte(kd.key))
		b := int(h.Sum32() % uint32(k))
		buckets[b] = append(buckets[b], kd.decl)
	}
	idx := buildPositions(userFiles)
	vals := make([]cue.Value, 0, k)
	for _, b := range buckets {
		inst := build.NewContext().NewInstance("mesh", nil)
		inst.PkgName = "mesh"
		sfs, err := fastSchemaFiles()
		if err != nil {
			return nil, nil, false
		}
		for _, af := range sfs {
			if err := inst.AddSyntax(af); err != nil {
				return nil, nil, false
			}
		}
		decls := make([]ast.Decl, 0, len(shared)+len(b)+1)
		decls = append(decls, &ast.Package{Name: ast.NewIdent("mesh")})
		decls = append(decls, shared...)
		decls = append(decls, b...)
		if err := inst.AddSyntax(&ast.File{Decls: decls}); err != nil {
			return nil, nil, false
		}
		ctx := cuecontext.New()
		v := ctx.BuildInstance(inst)
		if v.Validate(cue.Concrete(true), cue.All()) != nil {
			return nil, nil, false
		}
		storePositions(ctx, idx)
		vals = append(vals, v)
	}
	return vals, data, true
}

type keyedDecl struct {
	key  string // section.key, e.g. "services.api"
	decl ast.Decl
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
		})
	}
	return out, true
}

package compiler

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"weak"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/token"

	mesh "github.com/meshgit/mesh"
)

// The fast path of load.
//
// The schema's matchN validators ("exactly one of action and permissions", "at most one of path,
// pathPrefix and pathRegex", the header, queryParam and health check one-ofs) are most of the
// cost of a compilation: CUE checks each one by copying the value and unifying the copy with
// every alternative, on every intention, permission, header and health check. At 10k services
// they took more than half of the CPU time and of the memory.
//
// So a valid mesh is first evaluated with those validators taken out of the schema, and the
// one-ofs are checked here by counting fields, which is what the validators decide for a value
// with no other error. When that evaluation has no error and every one-of holds, the full schema
// would have accepted the mesh too and produced the same value (the validators add no field,
// default or position), so its result is used. In every other case the fast path's result is
// thrown away and load evaluates the schema as written, so every error message and position is
// the one the full schema gives.
//
// The fast path applies only to files of plain data: no references, comprehensions, lets,
// imports or computed labels. A reference could put a schema definition, and so a validator, at a
// path the counting below does not visit (a user's `_x: #HTTPMatch & {...}`). Mesh repositories
// are plain data in practice; anything else takes the full path.

// fastPath can be turned off by tests, to compare with the full path.
var fastPath = true

// strippedOneOfs are the validators the fast path removes, by definition, in the exact form it
// checks; a validator written differently is left in place. TestFastPathSchema keeps this list,
// the schema and oneOfsHoldData in step.
var strippedOneOfs = map[string]string{
	"#HealthCheck": `matchN(1, [{http!: _}, {tcp!: _}, {grpc!: _}])`,
	"#Intention":   `matchN(1, [{action!: _}, {permissions!: _}])`,
	"#HTTPMatch":   `matchN(<=1, [{path!: _}, {pathPrefix!: _}, {pathRegex!: _}])`,
	"#HeaderMatch": `matchN(1, [{exact!: _}, {prefix!: _}, {suffix!: _}, {regex!: _}, {present!: _}])`,
	"#QueryMatch":  `matchN(1, [{exact!: _}, {regex!: _}, {present!: _}])`,
}

// loadFast evaluates userFiles, already parsed and known to be package mesh, with the one-ofs
// checked here instead of by CUE. It reports false when the mesh is not plain data, or has any
// error. Evaluating the files twice is safe: CUE's build does not change their syntax trees, and
// resolving the identifiers of plain data again changes nothing. (files, their text, is unused.)
func loadFast(files []File, userFiles []*ast.File) (cue.Value, map[string]any, bool) {
	if !fastPath {
		return cue.Value{}, nil, false
	}
	for _, f := range userFiles {
		if !isPlainData(f) {
			return cue.Value{}, nil, false
		}
	}
	// The one-ofs the stripped schema no longer checks are checked on the data, read from the
	// syntax (plaindata.go); data this cannot read takes the full path.
	data, ok := plainData(userFiles)
	if !ok || !oneOfsHoldData(data) {
		return cue.Value{}, nil, false
	}
	inst := build.NewContext().NewInstance("mesh", nil)
	inst.PkgName = "mesh"
	sfs, err := fastSchemaFiles()
	if err != nil {
		return cue.Value{}, nil, false
	}
	for _, af := range sfs {
		if err := inst.AddSyntax(af); err != nil {
			return cue.Value{}, nil, false
		}
	}
	for _, af := range userFiles {
		if err := inst.AddSyntax(af); err != nil {
			return cue.Value{}, nil, false
		}
	}
	ctx := cuecontext.New()
	v := ctx.BuildInstance(inst)
	if v.Validate(cue.Concrete(true), cue.All()) != nil {
		return cue.Value{}, nil, false
	}
	registerPositions(ctx, userFiles)
	return v, data, true
}

// stripOneOfs removes the validators of strippedOneOfs from the schema file f.
func stripOneOfs(f *ast.File) {
	for _, d := range f.Decls {
		field, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, err := ast.LabelName(field.Label)
		want, known := strippedOneOfs[name]
		if err != nil || !known {
			continue
		}
		st, ok := field.Value.(*ast.StructLit)
		if !ok {
			continue
		}
		elts := st.Elts[:0:0]
		for _, e := range st.Elts {
			if emb, ok := e.(*ast.EmbedDecl); ok && formatNode(emb.Expr) == want {
				continue
			}
			elts = append(elts, e)
		}
		st.Elts = elts
	}
}

func formatNode(n ast.Node) string {
	b, err := format.Node(n)
	if err != nil {
		return ""
	}
	return string(b)
}

// isPlainData reports whether f is data only: fields with literal labels whose values are
// literals, structs, lists and operators on them, without any identifier in a value.
func isPlainData(f *ast.File) bool {
	plain := true
	var visit func(n ast.Node) bool
	visit = func(n ast.Node) bool {
		if !plain {
			return false
		}
		switch x := n.(type) {
		case *ast.Package:
			return false // its name
		case *ast.File, *ast.CommentGroup, *ast.Comment, *ast.Attribute,
			*ast.StructLit, *ast.ListLit, *ast.BasicLit, *ast.BinaryExpr, *ast.UnaryExpr,
			*ast.ParenExpr, *ast.Ellipsis, *ast.BottomLit:
			return true
		case *ast.Field:
			switch x.Label.(type) {
			case *ast.Ident, *ast.BasicLit:
			default:
				plain = false
				return false
			}
			if x.Value != nil {
				ast.Walk(x.Value, visit, nil)
			}
			return false
		}
		plain = false // identifiers, selectors, calls, comprehensions, lets, imports, aliases...
		return false
	}
	ast.Walk(f, visit, nil)
	return plain
}

// Positions on the fast path.
//
// When a value's own position is the schema's, valuePos asks CUE for its conjuncts
// (Value.Expr), which evaluates each conjunct on its own: at 10k services that was a fifth of
// the CPU time. For plain data the user's conjuncts at a path are exactly the fields (or list
// elements) written at that path in the files, and Expr places each at its field's label (or
// the element's start). So when a path is written in one place only, posIndex has the answer
// Expr would give; paths written in several places (a struct spread over files, lists unified
// element by element) are left to Expr.

// posIndex maps a path (see pathKey) to the position of the one value written at it.
type posIndex map[string]mesh.Pos

// ambiguous marks a path written in several places.
var ambiguous = mesh.Pos{Line: -1}

// fastPositions holds the posIndex of each fast-path evaluation, by its cue.Context, for as long
// as that context is alive.
var fastPositions sync.Map // weak.Pointer[cue.Context] → posIndex

func registerPositions(ctx *cue.Context, userFiles []*ast.File) {
	storePositions(ctx, buildPositions(userFiles))
}

// buildPositions indexes where each path of plain-data files is written.
func buildPositions(userFiles []*ast.File) posIndex {
	idx := posIndex{}
	for _, f := range userFiles {
		for _, d := range f.Decls {
			if field, ok := d.(*ast.Field); ok {
				idx.addField("", field)
			}
		}
	}
	return idx
}

// storePositions makes idx the position index of the values of ctx, for as long as it lives.
func storePositions(ctx *cue.Context, idx posIndex) {
	key := weak.Make(ctx)
	fastPositions.Store(key, idx)
	runtime.AddCleanup(ctx, func(k weak.Pointer[cue.Context]) { fastPositions.Delete(k) }, key)
}

// indexedPos returns the position of v when its path is written in one place of plain data.
func indexedPos(v cue.Value) (mesh.Pos, bool) {
	idx, ok := fastPositions.Load(weak.Make(v.Context()))
	if !ok {
		return mesh.Pos{}, false
	}
	key, ok := pathKey(v.Path())
	if !ok {
		return mesh.Pos{}, false
	}
	p, ok := idx.(posIndex)[key]
	if !ok || p == ambiguous {
		return mesh.Pos{}, false
	}
	return p, true
}

// pathKey encodes a path of regular fields and list indexes: each field as "\x00", the length of
// its name, ":" and the name; each index as "\x01" and its digits. Other paths have no key.
func pathKey(p cue.Path) (string, bool) {
	var b strings.Builder
	for _, sel := range p.Selectors() {
		switch sel.LabelType() {
		case cue.StringLabel:
			name := sel.Unquoted()
			b.WriteByte(0)
			b.WriteString(strconv.Itoa(len(name)))
			b.WriteByte(':')
			b.WriteString(name)
		case cue.IndexLabel:
			b.WriteByte(1)
			b.WriteString(strconv.Itoa(sel.Index()))
		default:
			return "", false
		}
	}
	return b.String(), true
}

func (idx posIndex) addField(key string, f *ast.Field) {
	var name string
	switch l := f.Label.(type) {
	case *ast.Ident:
		if strings.HasPrefix(l.Name, "#") || strings.HasPrefix(l.Name, "_") {
			return // the user's definitions and hidden fields: never asked for
		}
		name = l.Name
	case *ast.BasicLit:
		n, _, err := ast.LabelName(l)
		if err != nil {
			return
		}
		name = n
	default:
		return
	}
	if f.Constraint != token.ILLEGAL {
		return // optional or required markers: no value of the user's own
	}
	idx.addValue(key+"\x00"+strconv.Itoa(len(name))+":"+name, f.Pos(), f.Value)
}

// addValue records x, written at the path key, at pos: a field's label, or a list element's
// start, which is where CUE places the conjunct.
func (idx posIndex) addValue(key string, pos token.Pos, x ast.Expr) {
	if _, seen := idx[key]; seen {
		idx[key] = ambiguous
	} else {
		idx[key] = posOf(pos)
	}
	switch x := x.(type) {
	case *ast.StructLit:
		for _, d := range x.Elts {
			if field, ok := d.(*ast.Field); ok {
				idx.addField(key, field)
			}
		}
	case *ast.ListLit:
		for i, e := range x.Elts {
			if _, ok := e.(*ast.Ellipsis); ok {
				continue
			}
			idx.addValue(key+"\x01"+strconv.Itoa(i), e.Pos(), e)
		}
	}
}

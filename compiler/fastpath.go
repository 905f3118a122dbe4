package compiler

import (
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
)

// The fast path of load.
//
// The schema's matchN validators ("exactly one of action and permissions", "at most one of path,
// pathPrefix and pathRegex", the header, queryParam and health check one-ofs) are most of the
// cost of a compilation: CUE checks each one by copying the value and unifying the copy with
// every alternative, on every intention, permission, header and health check. At 10k services
// they took more than half of the CPU time and of the memory.
//
// So a valid mesh is first evaluated with those validators taken out of the schema (and its
// enumerations simplified, fastschema.go), and the one-ofs are checked here by counting fields,
// which is what the validators decide for a value with no other error. When that evaluation has
// no error and every one-of holds, the full schema would have accepted the mesh too, and the
// mesh's data, read from its syntax with the schema's defaults (plaindata.go, elements.go), is
// what the full schema's value would have been. In every other case the fast path's result is
// thrown away and load evaluates the schema as written, so every error message is the one the
// full schema gives.
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

// fastMesh is what the fast path gives the compilation: the mesh's data read from its syntax,
// decoded into raw forms, and where each part of it is written. CUE has validated the mesh; its
// evaluated values are not kept.
type fastMesh struct {
	data       map[string]any
	idx        *posIndex
	mesh       rawMesh
	services   map[string]rawService
	intentions map[string]map[string]rawIntention
	routers    map[string]rawRouter
	splitters  map[string]rawSplitter
	resolvers  map[string]rawResolver
	// dkeys are the elements' derived keys (derivedKey), by section and name.
	dkeys map[elemKey][32]byte
}

// root is the node of the whole mesh.
func (f *fastMesh) root() node { return node{idx: f.idx, fast: true, data: f.data} }

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

package compiler

import (
	"strings"
	"sync"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"

	mesh "github.com/meshgit/mesh"
)

// posIndex says where the files write a path: the first place in the order of the files, at the
// value of a scalar field, the label of any other field, the start of a list element (see
// node). It indexes the fields of the top-level structs by section and key and walks the syntax
// below them on demand: a compilation asks for a few positions per element, far fewer than the
// paths the files write.
type posIndex struct {
	sections map[string][]*ast.Field  // the top-level fields, by label, in file order
	elements map[elemKey][]*ast.Field // the fields of the top-level structs, in file order
	// wide indexes, on first use, the fields of each struct literal of more than wideStruct
	// fields (*ast.StructLit → map[string][]*ast.Field, in order): a service with a thousand
	// upstreams asks for each one's position, and scanning the struct for each would make
	// compiling quadratic in upstreams per service.
	wide sync.Map
}

// wideStruct is the size above which a struct literal's fields are indexed by name.
const wideStruct = 16

type elemKey struct{ section, name string }

// pathSel is one step of a path: a field, or a list index when index >= 0.
type pathSel struct {
	name  string
	index int
}

func fieldSel(name string) pathSel { return pathSel{name: name, index: -1} }

// buildPositions indexes files.
func buildPositions(files []*ast.File) *posIndex { return buildPositionsCached(files, nil) }

// buildPositionsCached indexes files, taking each file's fields from cache (nil: none).
func buildPositionsCached(files []*ast.File, cache *Cache) *posIndex {
	n := 0
	frags := make([]*posFragment, len(files))
	for i, f := range files {
		frags[i] = cache.positions(f)
		n += len(frags[i].elements)
	}
	idx := &posIndex{sections: map[string][]*ast.Field{}, elements: make(map[elemKey][]*ast.Field, n)}
	for _, fr := range frags {
		for _, s := range fr.sections {
			idx.sections[s.name] = append(idx.sections[s.name], s.f)
		}
		for _, e := range fr.elements {
			idx.elements[e.k] = append(idx.elements[e.k], e.f)
		}
	}
	return idx
}

// posFragment is what one file adds to a posIndex, in order.
type posFragment struct {
	sections []sectionField
	elements []elementField
}

type sectionField struct {
	name string
	f    *ast.Field
}

type elementField struct {
	k elemKey
	f *ast.Field
}

// filePositions lists the top-level fields of f and the fields of its top-level structs.
func filePositions(f *ast.File) *posFragment {
	fr := &posFragment{}
	for _, d := range f.Decls {
		field, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		section, ok := fieldName(field)
		if !ok {
			continue
		}
		fr.sections = append(fr.sections, sectionField{section, field})
		st, ok := field.Value.(*ast.StructLit)
		if !ok {
			continue
		}
		for _, e := range st.Elts {
			if ef, ok := e.(*ast.Field); ok {
				if name, ok := fieldName(ef); ok {
					fr.elements = append(fr.elements, elementField{elemKey{section, name}, ef})
				}
			}
		}
	}
	return fr
}

// pos is where path is first written, if it is.
func (idx *posIndex) pos(path []pathSel) (mesh.Pos, bool) {
	if idx == nil || len(path) == 0 || path[0].index >= 0 {
		return mesh.Pos{}, false
	}
	if len(path) == 1 {
		if fs := idx.sections[path[0].name]; len(fs) > 0 {
			return fieldPos(fs[0]), true
		}
		return mesh.Pos{}, false
	}
	if path[1].index >= 0 {
		for _, f := range idx.sections[path[0].name] {
			if p, ok := idx.walkExpr(f.Value, path[1:]); ok {
				return p, true
			}
		}
		return mesh.Pos{}, false
	}
	for _, f := range idx.elements[elemKey{path[0].name, path[1].name}] {
		if p, ok := idx.walkField(f, path[2:]); ok {
			return p, true
		}
	}
	return mesh.Pos{}, false
}

// walkField finds rest below the field f.
func (idx *posIndex) walkField(f *ast.Field, rest []pathSel) (mesh.Pos, bool) {
	if len(rest) == 0 {
		return fieldPos(f), true
	}
	return idx.walkExpr(f.Value, rest)
}

// walkExpr finds rest, which is not empty, below the value x.
func (idx *posIndex) walkExpr(x ast.Expr, rest []pathSel) (mesh.Pos, bool) {
	sel := rest[0]
	if sel.index < 0 {
		st, ok := x.(*ast.StructLit)
		if !ok {
			return mesh.Pos{}, false
		}
		if len(st.Elts) > wideStruct {
			for _, f := range idx.fieldsOf(st)[sel.name] {
				if p, ok := idx.walkField(f, rest[1:]); ok {
					return p, true
				}
			}
			return mesh.Pos{}, false
		}
		for _, e := range st.Elts {
			f, ok := e.(*ast.Field)
			if !ok {
				continue
			}
			if name, ok := fieldName(f); ok && name == sel.name {
				if p, ok := idx.walkField(f, rest[1:]); ok {
					return p, true
				}
			}
		}
		return mesh.Pos{}, false
	}
	l, ok := x.(*ast.ListLit)
	if !ok || sel.index >= len(l.Elts) {
		return mesh.Pos{}, false
	}
	e := l.Elts[sel.index]
	if _, ok := e.(*ast.Ellipsis); ok {
		return mesh.Pos{}, false
	}
	if len(rest) == 1 {
		return posOf(e.Pos()), true
	}
	return idx.walkExpr(e, rest[1:])
}

// fieldsOf returns the regular fields of a wide struct literal by name, in order.
func (idx *posIndex) fieldsOf(st *ast.StructLit) map[string][]*ast.Field {
	if m, ok := idx.wide.Load(st); ok {
		return m.(map[string][]*ast.Field)
	}
	m := make(map[string][]*ast.Field, len(st.Elts))
	for _, e := range st.Elts {
		if f, ok := e.(*ast.Field); ok {
			if name, ok := fieldName(f); ok {
				m[name] = append(m[name], f)
			}
		}
	}
	v, _ := idx.wide.LoadOrStore(st, m)
	return v.(map[string][]*ast.Field)
}

// fieldName is the name of a regular field with a literal label. Definitions, hidden fields,
// optional and required fields, and computed labels have none: they hold no value of the user's
// data.
func fieldName(f *ast.Field) (string, bool) {
	if f.Constraint != token.ILLEGAL {
		return "", false
	}
	switch l := f.Label.(type) {
	case *ast.Ident:
		if strings.HasPrefix(l.Name, "#") || strings.HasPrefix(l.Name, "_") {
			return "", false
		}
		return l.Name, true
	case *ast.BasicLit:
		// A plain "name" is its own text; ast.LabelName unquotes (and allocates) otherwise.
		if v := l.Value; l.Kind == token.STRING && len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && !strings.ContainsAny(v[1:len(v)-1], `"\\`) {
			return v[1 : len(v)-1], true
		}
		n, _, err := ast.LabelName(l)
		return n, err == nil
	}
	return "", false
}

// fieldPos is where a field is shown: at its value when that is a scalar, else at its label.
func fieldPos(f *ast.Field) mesh.Pos {
	if isScalar(f.Value) {
		return posOf(f.Value.Pos())
	}
	return posOf(f.Pos())
}

// isScalar reports whether x is a literal scalar: a string, number, bool or null, maybe negated.
func isScalar(x ast.Expr) bool {
	switch x := x.(type) {
	case *ast.BasicLit:
		return true
	case *ast.UnaryExpr:
		_, ok := x.X.(*ast.BasicLit)
		return ok && (x.Op == token.SUB || x.Op == token.ADD)
	}
	return false
}

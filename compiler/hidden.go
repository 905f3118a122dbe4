package compiler

import (
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/ast/astutil"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	mesh "github.com/meshgit/mesh"
)

// addHiddenErrors reports the errors that CUE's first report hides: a value in conflict with
// the schema (a string where a port goes) makes CUE skip the closedness check of the struct
// around it, so an unknown field beside it went unreported. The files are parsed again with
// every conflicting value replaced by _ (any value), and the elements holding a conflict
// (services.NAME, intentions.DST.SRC, mesh...) are evaluated and validated once more; each
// error that is not at, under or around a path already reported is added.
//
// Files of plain data are cut down to those elements first, so that on a large mesh the second
// evaluation costs as much as the elements in error, not as much as the mesh. Files with
// references are evaluated whole: cutting them could break a reference.
func addHiddenErrors(files []File, userFiles []*ast.File, first error, errs *errorList) {
	firstList := cueerrors.Errors(first)
	conflicts := map[mesh.Pos]bool{}
	var reported []string
	elements := map[string][]string{}
	for _, e := range firstList {
		reported = append(reported, strings.Join(e.Path(), "."))
		el := elementOf(e.Path())
		elements[strings.Join(el, "\x00")] = el
		for _, p := range append([]token.Pos{e.Position()}, e.InputPositions()...) {
			if mp := posOf(p); mp.IsValid() && !isSchemaPos(mp) {
				conflicts[mp] = true
			}
		}
	}
	var keys []string
	for k := range elements {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	data := map[string][]byte{}
	for _, f := range files {
		data[f.Name] = f.Data
	}
	replaced := 0
	plain := true
	again := make([]*ast.File, 0, len(userFiles))
	for _, uf := range userFiles {
		af, err := parser.ParseFile(uf.Filename, data[uf.Filename])
		if err != nil {
			return // it parsed the first time
		}
		plain = plain && isPlainData(af)
		astutil.Apply(af, func(c astutil.Cursor) bool {
			if f, ok := c.Node().(*ast.Field); ok && f.Value != nil && conflicts[posOf(f.Value.Pos())] {
				f.Value = ast.NewIdent("_")
				replaced++
			}
			return true
		}, nil)
		again = append(again, af)
	}
	if replaced == 0 {
		return
	}
	if plain {
		var paths [][]string
		for _, k := range keys {
			paths = append(paths, elements[k])
		}
		for _, af := range again {
			af.Decls = pruneDecls(af.Decls, paths)
		}
	}
	var scratch errorList
	v, ok := evaluate(again, &scratch)
	if !ok {
		return
	}
	checkOneOfsClosed(node{v: v, idx: buildPositions(again)}, errs)
	var hidden []cueerrors.Error
	for _, k := range keys {
		var sels []cue.Selector
		for _, l := range elements[k] {
			sels = append(sels, cue.Str(l))
		}
		for _, e := range cueerrors.Errors(v.LookupPath(cue.MakePath(sels...)).Validate(cue.Concrete(true), cue.All())) {
			if !related(strings.Join(e.Path(), "."), reported) {
				hidden = append(hidden, e)
			}
		}
	}
	addCUEErrorList(errs, hidden)
}

// elementOf returns the labels of the element an error path is in: mesh, services.NAME,
// intentions.DST.SRC and so on, or the path's parent when that is shorter.
func elementOf(path []string) []string {
	n := 2
	switch {
	case len(path) > 0 && path[0] == "mesh":
		n = 1
	case len(path) > 0 && path[0] == "intentions":
		n = 3
	}
	n = max(min(n, len(path)-1), 0)
	out := make([]string, 0, n)
	for _, p := range path[:n] {
		if u, err := strconv.Unquote(p); err == nil {
			p = u
		}
		out = append(out, p)
	}
	return out
}

// pruneDecls keeps, of the fields among decls, those on the way to one of paths (and all of a
// field that a path ends at or goes through without a struct); everything that is not a regular
// field (package, imports, definitions, hidden fields) is kept.
func pruneDecls(decls []ast.Decl, paths [][]string) []ast.Decl {
	for _, p := range paths {
		if len(p) == 0 {
			return decls // the whole value is an element
		}
	}
	out := decls[:0:0]
	for _, d := range decls {
		f, ok := d.(*ast.Field)
		if !ok {
			out = append(out, d)
			continue
		}
		name, _, err := ast.LabelName(f.Label)
		if err != nil || strings.HasPrefix(name, "#") || strings.HasPrefix(name, "_") {
			out = append(out, d)
			continue
		}
		var rest [][]string
		for _, p := range paths {
			if p[0] == name {
				rest = append(rest, p[1:])
			}
		}
		if len(rest) == 0 {
			continue
		}
		if st, ok := f.Value.(*ast.StructLit); ok {
			st.Elts = pruneDecls(st.Elts, rest)
		}
		out = append(out, f)
	}
	return out
}

// related reports whether path is one of paths, inside one of them or around one of them: an
// error there is one already reported, seen again.
func related(path string, paths []string) bool {
	for _, p := range paths {
		if path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(p, path+".") {
			return true
		}
	}
	return false
}

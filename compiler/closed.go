package compiler

import (
	"strconv"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"

	"github.com/meshgit/mesh/schema"
)

// CUE does not close a definition that embeds a validator, and the schema's one-of validators
// (matchN, strippedOneOfs) are embedded in theirs: on the full path an unknown field of an
// intention, an HTTP, header or query match, or a health check would pass unnoticed, so that a
// misspelt `methds: ["GET"]` would leave a permission open to every method. The fast path's
// schema has those validators taken out, so CUE closes these definitions there; on the full path
// checkOneOfsClosed checks their fields against the fields the schema gives them.

// oneOfFields returns the fields the schema defines for each definition of strippedOneOfs.
var oneOfFields = sync.OnceValue(func() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, sf := range schema.Files() {
		f, err := parser.ParseFile(sf.Name, sf.Data)
		if err != nil {
			continue // the schema parses: evaluate reports it otherwise
		}
		for _, d := range f.Decls {
			field, ok := d.(*ast.Field)
			if !ok {
				continue
			}
			name, _, _ := ast.LabelName(field.Label)
			st, ok := field.Value.(*ast.StructLit)
			if _, oneOf := strippedOneOfs[name]; !oneOf || !ok {
				continue
			}
			labels := map[string]bool{}
			for _, e := range st.Elts {
				if ff, ok := e.(*ast.Field); ok {
					if l, _, err := ast.LabelName(ff.Label); err == nil {
						labels[l] = true
					}
				}
			}
			out[name] = labels
		}
	}
	return out
})

// checkOneOfsClosed reports the unknown fields of the definitions with a one-of validator in
// the mesh at root, a full path's value (see above). A struct in conflict with the schema has no
// fields to check; addHiddenErrors checks it again once the conflicts are taken out.
func checkOneOfsClosed(root node, errs *errorList) {
	c := closedCheck{errs}
	dests, _ := root.at(cue.Str("intentions")).fields()
	for _, d := range dests {
		srcs, _ := d.node.fields()
		for _, s := range srcs {
			c.checkClosed(s.node, "#Intention")
			for _, p := range elems(s.node.at(cue.Str("permissions"))) {
				c.checkMatchClosed(p.at(cue.Str("http")))
			}
		}
	}
	routers, _ := root.at(cue.Str("routers")).fields()
	for _, r := range routers {
		for _, rt := range elems(r.node.at(cue.Str("routes"))) {
			c.checkMatchClosed(rt.at(cue.Str("match"), cue.Str("http")))
		}
	}
	services, _ := root.at(cue.Str("services")).fields()
	for _, s := range services {
		c.checkClosed(s.node.at(cue.Str("healthCheck")), "#HealthCheck")
	}
}

type closedCheck struct{ errs *errorList }

func (c closedCheck) checkMatchClosed(n node) {
	c.checkClosed(n, "#HTTPMatch")
	for _, h := range elems(n.at(cue.Str("header"))) {
		c.checkClosed(h, "#HeaderMatch")
	}
	for _, q := range elems(n.at(cue.Str("queryParam"))) {
		c.checkClosed(q, "#QueryMatch")
	}
}

// checkClosed reports the regular fields of the struct n that definition def does not have.
func (c closedCheck) checkClosed(n node, def string) {
	if !n.v.Exists() || n.v.IncompleteKind() != cue.StructKind {
		return
	}
	fields, _ := n.fields()
	allowed := oneOfFields()[def]
	for _, f := range fields {
		if !allowed[f.name] {
			c.errs.add(f.node.pos(), "%s: field not allowed", pathString(f.node.path))
		}
	}
}

// elems lists the elements of a list node; none when it is not a list.
func elems(n node) []node {
	if !n.v.Exists() || n.v.IncompleteKind() != cue.ListKind {
		return nil
	}
	it, err := n.v.List()
	if err != nil {
		return nil
	}
	var out []node
	for i := 0; it.Next(); i++ {
		out = append(out, n.at(cue.Index(i)))
	}
	return out
}

// pathString writes a path as CUE's error messages do: services."accounts-auth".port.
func pathString(path []pathSel) string {
	parts := make([]string, len(path))
	for i, s := range path {
		switch {
		case s.index >= 0:
			parts[i] = strconv.Itoa(s.index)
		case ast.IsValidIdent(s.name):
			parts[i] = s.name
		default:
			parts[i] = strconv.Quote(s.name)
		}
	}
	return strings.Join(parts, ".")
}

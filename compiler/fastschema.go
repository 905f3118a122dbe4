package compiler

import (
	"regexp"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/ast/astutil"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/meshgit/mesh/schema"
)

// The schema as the fast path evaluates it.
//
// Besides the one-ofs (fastpath.go), the schema's enumerations are the other costly part of an
// evaluation: CUE evaluates `"tcp" | "http" | ...` as a disjunction, trying each alternative
// against the value, on every service, intention, method and retry condition, and every key of
// intentions is matched against the pattern `#Name | "*"` the same way. On a concrete string a
// disjunction of strings and regular expressions accepts exactly what one regular expression of
// the alternatives accepts, and rejects every other value, strings and non-strings alike. So the
// fast path's schema writes each such disjunction as one `=~` constraint.
//
// A disjunction with a default (`*"tcp" | ...`) marks its field optional instead: plain data
// leaves the field out or writes a concrete value, and the compiler applies the schema's
// defaults to the data itself (schemaDefaults, which TestSchemaDefaults keeps equal to the
// schema's). Every error still comes from the full schema, as for the one-ofs: the fast path
// only decides whether a mesh is valid, never what is wrong with it.

// fastSchemaFiles parses the schema and rewrites it for the fast path: the one-ofs removed and
// the string disjunctions turned into regular expressions.
func fastSchemaFiles() ([]*ast.File, error) {
	var out []*ast.File
	for _, sf := range schema.Files() {
		af, err := parser.ParseFile(schemaPrefix+sf.Name, sf.Data)
		if err != nil {
			return nil, err
		}
		stripOneOfs(af)
		flattenEnums(af)
		out = append(out, af)
	}
	return out, nil
}

// flattenEnums replaces each disjunction of string literals and of references to definitions
// that are regular expressions (after their own rewriting) by one regular expression.
func flattenEnums(f *ast.File) {
	defs := map[string]string{} // definition → the regular expression it stands for
	// Definitions come first so that references to them can be folded; a definition may refer
	// to an earlier one (none of ours refer to a later one, and one left unfolded is harmless).
	for _, d := range f.Decls {
		field, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, err := ast.LabelName(field.Label)
		if err != nil || !strings.HasPrefix(name, "#") {
			continue
		}
		if alts, _, ok := stringSet(field.Value, defs); ok {
			re := alternatives(alts)
			defs[name] = re
			field.Value = matchExpr(re)
		}
	}
	astutil.Apply(f, func(c astutil.Cursor) bool {
		switch x := c.Node().(type) {
		case *ast.Field:
			alts, hasDefault, ok := stringSet(x.Value, defs)
			if !ok || !isDisjunction(x.Value) {
				return true
			}
			x.Value = matchExpr(alternatives(alts))
			if hasDefault {
				x.Constraint = token.OPTION
			}
			return true
		case *ast.BinaryExpr:
			if alts, hasDefault, ok := stringSet(x, defs); ok && !hasDefault {
				c.Replace(matchExpr(alternatives(alts)))
				return false
			}
		}
		return true
	}, nil)
}

func isDisjunction(x ast.Expr) bool {
	b, ok := x.(*ast.BinaryExpr)
	return ok && b.Op == token.OR
}

// stringSet reports whether x is a set of strings CUE would match alternative by alternative: a
// string literal, a `=~` literal, a reference to such a definition, or a disjunction of those.
// It returns the set's alternatives as regular expressions, and whether a default is marked.
func stringSet(x ast.Expr, defs map[string]string) (alts []string, hasDefault, ok bool) {
	switch x := x.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return nil, false, false
		}
		s, err := literal.Unquote(x.Value)
		if err != nil {
			return nil, false, false
		}
		return []string{"^" + regexp.QuoteMeta(s) + "$"}, false, true
	case *ast.Ident:
		re, ok := defs[x.Name]
		return []string{re}, false, ok
	case *ast.UnaryExpr:
		switch x.Op {
		case token.MAT:
			lit, ok := x.X.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return nil, false, false
			}
			s, err := literal.Unquote(lit.Value)
			if err != nil {
				return nil, false, false
			}
			if _, err := regexp.Compile(s); err != nil {
				return nil, false, false
			}
			return []string{s}, false, true
		case token.MUL: // a default marker
			alts, _, ok := stringSet(x.X, defs)
			return alts, true, ok
		}
	case *ast.ParenExpr:
		return stringSet(x.X, defs)
	case *ast.BinaryExpr:
		if x.Op != token.OR {
			return nil, false, false
		}
		l, ld, lok := stringSet(x.X, defs)
		r, rd, rok := stringSet(x.Y, defs)
		if !lok || !rok {
			return nil, false, false
		}
		return append(l, r...), ld || rd, true
	}
	return nil, false, false
}

// alternatives is the regular expression matching what any of alts matches.
func alternatives(alts []string) string {
	if len(alts) == 1 {
		return alts[0]
	}
	return "(?:" + strings.Join(alts, ")|(?:") + ")"
}

func matchExpr(re string) ast.Expr {
	return &ast.UnaryExpr{Op: token.MAT, X: ast.NewString(re)}
}

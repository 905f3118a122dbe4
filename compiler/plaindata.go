package compiler

import (
	"encoding/json"
	"regexp"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/token"
)

// Decoding plain data without CUE.
//
// Once CUE has validated a plain-data mesh (the fast path), its data is the files' literals
// merged key by key, plus the schema's defaults. Reading it back through cue.Value.Decode costs
// as much as evaluating it (CUE orders the fields of every struct it decodes), so on that path
// the raw forms are read from the syntax instead (elements.go), and the schema's two defaults
// (schemaDefaults) are applied by the compiler. Anything this does not understand (expressions,
// optional fields, unusual number syntax) sends the whole mesh down the full path.

// schemaDefaults are the defaults schema/mesh.cue declares (`*value`), which decoding from syntax
// must apply itself. TestSchemaDefaults keeps the list in step with the schema.
var schemaDefaults = []string{`protocol: *"tcp"`, `defaultIntention: *"deny"`}

// mergeField merges one field into m. Definitions and hidden fields are the user's helpers and
// are skipped; they cannot reach data that has no references.
func mergeField(m map[string]any, f *ast.Field) bool {
	name, _, err := ast.LabelName(f.Label)
	if err != nil || f.Constraint != token.ILLEGAL {
		return false
	}
	if strings.HasPrefix(name, "#") || strings.HasPrefix(name, "_") {
		return true
	}
	v, ok := literalData(f.Value)
	if !ok {
		return false
	}
	merged, ok := mergeData(m[name], v)
	if !ok {
		return false
	}
	m[name] = merged
	return true
}

var plainNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

func literalData(x ast.Expr) (any, bool) {
	switch x := x.(type) {
	case *ast.StructLit:
		m := map[string]any{}
		for _, e := range x.Elts {
			f, ok := e.(*ast.Field)
			if !ok || !mergeField(m, f) {
				return nil, false
			}
		}
		return m, true
	case *ast.ListLit:
		l := make([]any, 0, len(x.Elts))
		for _, e := range x.Elts {
			v, ok := literalData(e)
			if !ok {
				return nil, false
			}
			l = append(l, v)
		}
		return l, true
	case *ast.BasicLit:
		switch x.Kind {
		case token.STRING:
			s, err := literal.Unquote(x.Value)
			return s, err == nil
		case token.INT, token.FLOAT:
			if !plainNumber.MatchString(x.Value) {
				return nil, false // 1_000, 0x10, 1Ki...: let CUE read them
			}
			return json.Number(x.Value), true
		case token.TRUE:
			return true, true
		case token.FALSE:
			return false, true
		}
	case *ast.UnaryExpr:
		if lit, ok := x.X.(*ast.BasicLit); ok && x.Op == token.SUB && (lit.Kind == token.INT || lit.Kind == token.FLOAT) && plainNumber.MatchString(lit.Value) {
			return json.Number("-" + lit.Value), true
		}
	}
	return nil, false
}

// mergeData unifies two plain values as CUE does: structs field by field, lists element by
// element, scalars only when equal.
func mergeData(a, b any) (any, bool) {
	if a == nil {
		return b, true
	}
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			return nil, false
		}
		for k, bv := range bm {
			v, ok := mergeData(a[k], bv)
			if !ok {
				return nil, false
			}
			a[k] = v
		}
		return a, true
	case []any:
		bl, ok := b.([]any)
		if !ok || len(bl) != len(a) {
			return nil, false
		}
		for i := range a {
			v, ok := mergeData(a[i], bl[i])
			if !ok {
				return nil, false
			}
			a[i] = v
		}
		return a, true
	case json.Number:
		bn, ok := b.(json.Number)
		return a, ok && bn == a
	default:
		return a, a == b
	}
}

// decodeValue decodes one plain value into a raw form.
func decodeValue[T any](v any) (T, bool) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, false
	}
	err = json.Unmarshal(b, &out)
	return out, err == nil
}

// oneOfsHoldData checks the validators of strippedOneOfs wherever the schema applies them, on
// data read from syntax: it counts the fields of each value as the matchN validators would (a
// field of plain data exists exactly when it is written). The fast paths rely on it in place of
// the validators they strip; TestFastPathSchema keeps the places in step with the schema.
func oneOfsHoldData(data map[string]any) bool {
	ok := true
	want := func(c bool) { ok = ok && c }
	count := func(m map[string]any, names ...string) int {
		n := 0
		for _, name := range names {
			if _, has := m[name]; has {
				n++
			}
		}
		return n
	}
	eachMap := func(v any, f func(map[string]any)) {
		if v == nil {
			return
		}
		m, isMap := v.(map[string]any)
		if !isMap {
			ok = false
			return
		}
		for _, x := range m {
			xm, isMap := x.(map[string]any)
			if !isMap {
				ok = false
				return
			}
			f(xm)
		}
	}
	eachElem := func(v any, f func(map[string]any)) {
		if v == nil {
			return
		}
		l, isList := v.([]any)
		if !isList {
			ok = false
			return
		}
		for _, x := range l {
			xm, isMap := x.(map[string]any)
			if !isMap {
				ok = false
				return
			}
			f(xm)
		}
	}
	httpMatch := func(v any) {
		if v == nil {
			return
		}
		m, isMap := v.(map[string]any)
		if !isMap {
			ok = false
			return
		}
		want(count(m, "path", "pathPrefix", "pathRegex") <= 1)
		eachElem(m["header"], func(h map[string]any) { want(count(h, "exact", "prefix", "suffix", "regex", "present") == 1) })
		eachElem(m["queryParam"], func(q map[string]any) { want(count(q, "exact", "regex", "present") == 1) })
	}
	eachMap(data["services"], func(s map[string]any) {
		if hc, has := s["healthCheck"]; has {
			hm, isMap := hc.(map[string]any)
			want(isMap && count(hm, "http", "tcp", "grpc") == 1)
		}
	})
	eachMap(data["intentions"], func(d map[string]any) {
		for _, in := range d {
			im, isMap := in.(map[string]any)
			if !isMap {
				ok = false
				return
			}
			want(count(im, "action", "permissions") == 1)
			eachElem(im["permissions"], func(p map[string]any) { httpMatch(p["http"]) })
		}
	})
	eachMap(data["routers"], func(r map[string]any) {
		eachElem(r["routes"], func(route map[string]any) {
			if m, isMap := route["match"].(map[string]any); isMap {
				httpMatch(m["http"])
			}
		})
	})
	return ok
}

package compiler

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

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

// decodeValue decodes one plain value (maps, lists, strings, json.Number, bools) into a raw
// form as encoding/json decodes the same value's JSON, without writing the JSON: struct fields by
// their json tags, fields the raw form does not have ignored, numbers into integers only when
// they are integers that fit. It reports false where encoding/json fails. Field names match
// exactly (encoding/json also tries other cases; the schema is closed, so no valid mesh has
// them). TestDecodeValueLikeJSON and FuzzDecodeValue compare the two.
func decodeValue[T any](v any) (T, bool) {
	var out T
	ok := assign(reflect.ValueOf(&out).Elem(), v)
	return out, ok
}

// assign decodes src into dst (see decodeValue).
func assign(dst reflect.Value, src any) bool {
	if src == nil {
		return true // nothing written: the zero value, as JSON's absent field
	}
	if dst.CanAddr() {
		// A raw form of several shapes (rawUpstreams) decodes itself, as with encoding/json.
		if u, ok := dst.Addr().Interface().(json.Unmarshaler); ok {
			b, err := json.Marshal(src)
			return err == nil && u.UnmarshalJSON(b) == nil
		}
	}
	switch dst.Kind() {
	case reflect.Pointer:
		if dst.IsNil() {
			dst.Set(reflect.New(dst.Type().Elem()))
		}
		return assign(dst.Elem(), src)
	case reflect.Struct:
		m, ok := src.(map[string]any)
		if !ok {
			return false
		}
		fields := jsonFields(dst.Type())
		for k, v := range m {
			if i, ok := fields[k]; ok && !assign(dst.Field(i), v) {
				return false
			}
		}
		return true
	case reflect.Map:
		m, ok := src.(map[string]any)
		if !ok || dst.Type().Key().Kind() != reflect.String {
			return false
		}
		if dst.IsNil() {
			dst.Set(reflect.MakeMapWithSize(dst.Type(), len(m)))
		}
		for k, v := range m {
			e := reflect.New(dst.Type().Elem()).Elem()
			if !assign(e, v) {
				return false
			}
			dst.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), e)
		}
		return true
	case reflect.Slice:
		l, ok := src.([]any)
		if !ok {
			return false
		}
		out := reflect.MakeSlice(dst.Type(), len(l), len(l))
		for i, v := range l {
			if !assign(out.Index(i), v) {
				return false
			}
		}
		dst.Set(out)
		return true
	case reflect.String:
		s, ok := src.(string)
		dst.SetString(s)
		return ok
	case reflect.Bool:
		b, ok := src.(bool)
		dst.SetBool(b)
		return ok
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := src.(json.Number)
		if !ok {
			return false
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || dst.OverflowInt(i) {
			return false
		}
		dst.SetInt(i)
		return true
	case reflect.Float32, reflect.Float64:
		n, ok := src.(json.Number)
		if !ok {
			return false
		}
		f, err := strconv.ParseFloat(string(n), dst.Type().Bits())
		if err != nil {
			return false
		}
		dst.SetFloat(f)
		return true
	}
	return false
}

// jsonFields maps the json names of a struct type's fields to their indexes.
func jsonFields(t reflect.Type) map[string]int {
	if m, ok := fieldsByType.Load(t); ok {
		return m.(map[string]int)
	}
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = i
	}
	fieldsByType.Store(t, m)
	return m
}

var fieldsByType sync.Map // reflect.Type → map[string]int

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
	// each calls f on every struct among the values of a map or the elements of a list, and
	// fails the check on anything else; nothing written is nothing to check. (A map where the
	// schema wants a list, or the reverse, passes here and fails CUE's evaluation.)
	each := func(v any, f func(map[string]any)) {
		var items []any
		switch x := v.(type) {
		case nil:
			return
		case map[string]any:
			for _, e := range x {
				items = append(items, e)
			}
		case []any:
			items = x
		default:
			ok = false
			return
		}
		for _, x := range items {
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
		each(m["header"], func(h map[string]any) { want(count(h, "exact", "prefix", "suffix", "regex", "present") == 1) })
		each(m["queryParam"], func(q map[string]any) { want(count(q, "exact", "regex", "present") == 1) })
	}
	each(data["services"], func(s map[string]any) {
		if hc, has := s["healthCheck"]; has {
			hm, isMap := hc.(map[string]any)
			want(isMap && count(hm, "http", "tcp", "grpc") == 1)
		}
	})
	each(data["intentions"], func(d map[string]any) {
		for _, in := range d {
			im, isMap := in.(map[string]any)
			if !isMap {
				ok = false
				return
			}
			want(count(im, "action", "permissions") == 1)
			each(im["permissions"], func(p map[string]any) { httpMatch(p["http"]) })
		}
	})
	each(data["routers"], func(r map[string]any) {
		each(r["routes"], func(route map[string]any) {
			if m, isMap := route["match"].(map[string]any); isMap {
				httpMatch(m["http"])
			}
		})
	})
	return ok
}

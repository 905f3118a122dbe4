package compiler

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/meshgit/mesh/internal/meshgen"
)

// decodeJSON is what decodeValue must agree with: the value's JSON, decoded by encoding/json.
func decodeJSON[T any](v any) (T, bool) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, false
	}
	return out, json.Unmarshal(b, &out) == nil
}

// sameAsJSON decodes v into each raw form both ways and reports the first difference.
func sameAsJSON(v any) (string, bool) {
	for name, check := range map[string]func(any) bool{
		"rawMesh":                 func(v any) bool { return agree[rawMesh](v) },
		"rawService":              func(v any) bool { return agree[rawService](v) },
		"map[string]rawIntention": func(v any) bool { return agree[map[string]rawIntention](v) },
		"rawRouter":               func(v any) bool { return agree[rawRouter](v) },
		"rawSplitter":             func(v any) bool { return agree[rawSplitter](v) },
		"rawResolver":             func(v any) bool { return agree[rawResolver](v) },
	} {
		if !check(v) {
			return name, false
		}
	}
	return "", true
}

func agree[T any](v any) bool {
	got, gotOK := decodeValue[T](v)
	want, wantOK := decodeJSON[T](v)
	return gotOK == wantOK && (!gotOK || reflect.DeepEqual(got, want))
}

// TestDecodeValueLikeJSON decodes every element of a generated mesh and of repo-example, and
// values that must fail, both ways.
func TestDecodeValueLikeJSON(t *testing.T) {
	generated, _ := generatedFiles(t, meshgen.Options{Services: 300, Seed: 8})
	example, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	decoded := 0
	for _, files := range [][]File{generated, example} {
		_, keyed, ok := splitDecls(parseAll(t, files))
		if !ok {
			t.Fatal("not split")
		}
		for _, kd := range keyed {
			m := map[string]any{}
			if !mergeField(m, kd.sub) {
				t.Fatalf("%s: not plain data", kd.key)
			}
			for _, v := range m {
				if typ, ok := sameAsJSON(v); !ok {
					t.Errorf("%s as %s: decodeValue and encoding/json differ", kd.key, typ)
				}
				decoded++
			}
		}
	}
	if decoded < 700 {
		t.Errorf("only %d elements decoded", decoded)
	}
	n := func(s string) json.Number { return json.Number(s) }
	for name, v := range map[string]any{
		"port as string":    map[string]any{"port": "80"},
		"port not integral": map[string]any{"port": n("80.5")},
		"port in exponent":  map[string]any{"port": n("8e1")},
		"port overflows":    map[string]any{"port": n("99999999999999999999")},
		"weight in exp":     map[string]any{"splits": []any{map[string]any{"weight": n("5e1")}}},
		"list for a struct": map[string]any{"healthCheck": []any{}},
		"number for a bool": map[string]any{"web": map[string]any{"permissions": []any{map[string]any{"http": map[string]any{"header": []any{map[string]any{"present": n("1")}}}}}}},
		"unknown fields":    map[string]any{"colour": "blue", "port": n("8080")},
		"map for a list":    map[string]any{"endpoints": map[string]any{}},
		"string for a map":  map[string]any{"meta": "x", "subsets": "y"},
		"scalar":            "x",
	} {
		if typ, ok := sameAsJSON(v); !ok {
			t.Errorf("%s: decodeValue and encoding/json differ as %s", name, typ)
		}
	}
}

package compiler

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/schema"
)

// TestFastPathSchema keeps strippedOneOfs, the schema and oneOfsHoldData in step: every validator
// the fast path strips is in the schema as written, and its definitions are used exactly where
// oneOfsHoldData looks. If this fails after a schema change, update fastpath.go to match.
func TestFastPathSchema(t *testing.T) {
	var text strings.Builder
	for _, f := range schema.Files() {
		text.Write(f.Data)
		af, err := parser.ParseFile(f.Name, f.Data)
		if err != nil {
			t.Fatal(err)
		}
		before := formatNode(af)
		stripOneOfs(af)
		after := formatNode(af)
		for def, v := range strippedOneOfs {
			if strings.Count(before, v) != 1 {
				t.Errorf("schema %s: %s: want %s once", f.Name, def, v)
			}
			if strings.Contains(after, v) {
				t.Errorf("schema %s: %s: %s not stripped", f.Name, def, v)
			}
		}
		if n := strings.Count(after, "matchN("); n != 0 {
			t.Errorf("schema %s: %d matchN left after stripping; the fast path must check each one", f.Name, n)
		}
	}
	// Where oneOfsHoldData looks: services.*.healthCheck, intentions.*.*, the http of permissions
	// and of route matches, and their header and queryParam lists.
	uses := map[string][]string{
		"#HealthCheck": {"healthCheck?: #HealthCheck"},
		"#Intention":   {`[#Name | "*"]: #Intention`},
		"#HTTPMatch":   {"http:   #HTTPMatch", "match?: http?: #HTTPMatch"},
		"#HeaderMatch": {"header?: [...#HeaderMatch]"},
		"#QueryMatch":  {"queryParam?: [...#QueryMatch]"},
	}
	for def, wants := range uses {
		n := strings.Count(text.String(), def) - 1 // its definition
		if n != len(wants) {
			t.Errorf("%s is used %d times in the schema, oneOfsHoldData knows %d: %q", def, n, len(wants), wants)
		}
		for _, w := range wants {
			if !strings.Contains(text.String(), w) {
				t.Errorf("%s: schema has no %q, which oneOfsHoldData relies on", def, w)
			}
		}
	}
}

// TestFastPathSameSnapshot compiles valid meshes through the fast and the full path: the fast
// path must be taken and give the same snapshot, positions included.
func TestFastPathSameSnapshot(t *testing.T) {
	example, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	generated, _ := generatedFiles(t, meshgen.Options{Services: 300, Seed: 3})
	twice := []File{
		{Name: "a.cue", Data: []byte(`package mesh
mesh: {name: "m", trustDomain: "m.mesh"}
services: api: {protocol: "http", port: 80, healthCheck: {http: "/h"}}
services: web: {protocol: "http", port: 80}
intentions: api: web: permissions: [{action: "allow", http: {pathPrefix: "/a", header: [{name: "x", present: true}], queryParam: [{name: "q", exact: "1"}]}}]
routers: api: routes: [{match: http: {path: "/b", header: [{name: "y", regex: "a.*"}]}}]
`)},
		{Name: "b.cue", Data: []byte(`package mesh
services: api: healthCheck: {http: "/h", interval: "20s"}
intentions: api: web: permissions: [{action: "allow", http: {pathPrefix: "/a"}}]
intentions: api: "*": {action: "deny"}
`)},
	}
	gateways := []File{{Name: "g.cue", Data: []byte(`package mesh
mesh: {name: "m", trustDomain: "m.mesh", datacenters: ["dc1", "dc2"], meshGateway: mode: "local"}
services: api: {port: 80, endpoints: [{address: "10.0.0.1", port: 80, datacenter: "dc2"}]}
services: web: {port: 80, upstreams: {api: {localPort: 9191, datacenter: "dc2", meshGateway: mode: "remote"}}}
`)}}
	for name, files := range map[string][]File{"repo-example": example, "generated": generated, "twice": twice, "gateways": gateways} {
		t.Run(name, func(t *testing.T) {
			var errs errorList
			if _, ok := load(files, &errs, nil); !ok || len(errs.list) > 0 {
				t.Fatalf("load: %v", errs.err())
			}
			userFiles := parseAll(t, files)
			if _, ok := loadFast(files, userFiles, nil); !ok {
				t.Fatal("the fast path was not taken")
			}
			fast := compileJSON(t, files)
			fastPath = false
			defer func() { fastPath = true }()
			full := compileJSON(t, files)
			if fast != full {
				t.Errorf("the fast path's snapshot differs from the full path's:\nfast: %.2000s\nfull: %.2000s", fast, full)
			}
		})
	}
}

// TestFastPathDeclines checks that meshes the fast path must not decide go down the full path:
// a violated one-of, and files that are not plain data.
func TestFastPathDeclines(t *testing.T) {
	for name, src := range map[string]string{
		"both action and permissions": `intentions: api: web: {action: "allow", permissions: [{action: "allow", http: path: "/a"}]}`,
		"neither":                     `intentions: api: web: {description: "x"}`,
		"two paths":                   `intentions: api: web: permissions: [{action: "allow", http: {path: "/a", pathPrefix: "/b"}}]`,
		"header two kinds":            `intentions: api: web: permissions: [{action: "allow", http: header: [{name: "x", exact: "1", prefix: "a"}]}]`,
		"header no kind":              `intentions: api: web: permissions: [{action: "allow", http: header: [{name: "x"}]}]`,
		"queryParam two kinds":        `routers: api: routes: [{match: http: queryParam: [{name: "x", exact: "1", regex: "a"}]}]`,
		"route two paths":             `routers: api: routes: [{match: http: {path: "/a", pathRegex: "/b"}}]`,
		"empty pathRegex beside path": `routers: api: routes: [{match: http: {path: "/a", pathRegex: ""}}]`,
		"health check two kinds":      `services: web: healthCheck: {http: "/h", tcp: true}`,
		"health check no kind":        `services: web: healthCheck: {interval: "10s"}`,
		"extra field":                 `intentions: api: web: {action: "allow", note: "x"}`,
		"reference":                   `_p: [{action: "allow", http: {path: "/a", pathPrefix: "/b"}}]` + "\n" + `intentions: api: web: permissions: _p`,
		"definition reference":        `_x: #HTTPMatch & {path: "/a", pathPrefix: "/b"}`,
		"comprehension":               `for s in ["web"] {intentions: api: (s): action: "allow"}`,
	} {
		t.Run(name, func(t *testing.T) {
			files := []File{{Name: "a.cue", Data: []byte(`package mesh
mesh: {name: "m", trustDomain: "m.mesh"}
services: api: {protocol: "http", port: 80}
services: web: {protocol: "http", port: 80}
` + src + "\n")}}
			if _, ok := loadFast(files, parseAll(t, files), nil); ok {
				t.Error("the fast path accepted it")
			}
		})
	}
}

func parseAll(t *testing.T, files []File) []*ast.File {
	t.Helper()
	var out []*ast.File
	for _, f := range files {
		af, err := parser.ParseFile(f.Name, f.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, af)
	}
	return out
}

func compileJSON(t *testing.T, files []File) string {
	t.Helper()
	snap, err := Compile(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFastPositions checks the positions of every path of the data, on a generated mesh,
// repo-example, and repo-example with its fields spread over many files in random ways, so that
// structs and lists are unified from several places: the fast path's equal the full path's; they
// equal those of a plain walk of every file in order, first place wins (an independent
// rendering of the rule in node.go); and the text there is the field's label, or the scalar's
// value, or the start of the list element.
func TestFastPositions(t *testing.T) {
	generated, _ := generatedFiles(t, meshgen.Options{Services: 60, Seed: 5})
	example, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	meshes := map[string][]File{"generated": generated, "repo-example": example}
	decls := explodeAll(t, example)
	for seed := int64(1); seed <= 6; seed++ {
		meshes[fmt.Sprintf("spread-%d", seed)] = relayout(t, rand.New(rand.NewSource(seed)), decls)
	}
	for name, files := range meshes {
		t.Run(name, func(t *testing.T) {
			fm, ok := loadFast(files, parseAll(t, files), nil)
			if !ok {
				t.Fatal("the fast path was not taken")
			}
			fastPath = false
			var errs errorList
			full, ok := load(files, &errs, nil)
			fastPath = true
			if !ok || len(errs.list) > 0 {
				t.Fatalf("load: %v", errs.err())
			}
			oracle := map[string]mesh.Pos{}
			for _, f := range parseAll(t, files) {
				for _, d := range f.Decls {
					if field, ok := d.(*ast.Field); ok {
						firstPlaces(oracle, "", field)
					}
				}
			}
			text := map[string][]string{}
			for _, f := range files {
				text[f.Name] = strings.Split(string(f.Data), "\n")
			}
			checked := 0
			var walk func(fast node, sels []cue.Selector)
			walk = func(fast node, sels []cue.Selector) {
				if len(sels) > 0 {
					checked++
					path := cue.MakePath(sels...).String()
					got, want := fast.pos(), full.root().at(sels...).pos()
					if got != want {
						t.Errorf("%s: fast path says %s, full path %s", path, got, want)
					}
					if got != oracle[path] {
						t.Errorf("%s: at %s, but first written at %s", path, got, oracle[path])
					}
					at := text[got.File][got.Line-1][got.Col-1:]
					last := sels[len(sels)-1]
					var wantText string
					switch d := fast.data.(type) {
					case map[string]any:
						wantText = "{"
						if last.LabelType() != cue.IndexLabel {
							wantText = last.Unquoted()
						}
					case []any:
						wantText = "["
						if last.LabelType() != cue.IndexLabel {
							wantText = last.Unquoted()
						}
					case string:
						wantText = strconv.Quote(d)[:1]
					default:
						wantText = fmt.Sprint(d)
					}
					if !strings.HasPrefix(strings.TrimLeft(at, `#"`), wantText) && !strings.HasPrefix(strings.TrimLeft(at, "#"), wantText) {
						t.Errorf("%s: at %s the text is %.20q, want %q", path, got, at, wantText)
					}
				}
				switch d := fast.data.(type) {
				case map[string]any:
					for name := range d {
						s := append(sels[:len(sels):len(sels)], cue.Str(name))
						walk(fast.at(cue.Str(name)), s)
					}
				case []any:
					for i := range d {
						s := append(sels[:len(sels):len(sels)], cue.Index(i))
						walk(fast.at(cue.Index(i)), s)
					}
				}
			}
			walk(fm.root(), nil)
			if checked < 100 {
				t.Errorf("only %d paths compared", checked)
			}
		})
	}
}

// firstPlaces records where each path below field is written first, as node.go defines it.
func firstPlaces(out map[string]mesh.Pos, parent string, field *ast.Field) {
	name, ok := fieldName(field)
	if !ok {
		return
	}
	path := cue.MakePath(cue.Str(name)).String()
	if parent != "" {
		path = parent + "." + path
	}
	pos := field.Pos()
	if isScalar(field.Value) {
		pos = field.Value.Pos()
	}
	firstPlacesValue(out, path, posOf(pos), field.Value)
}

func firstPlacesValue(out map[string]mesh.Pos, path string, pos mesh.Pos, x ast.Expr) {
	if _, seen := out[path]; !seen {
		out[path] = pos
	}
	switch x := x.(type) {
	case *ast.StructLit:
		for _, d := range x.Elts {
			if f, ok := d.(*ast.Field); ok {
				firstPlaces(out, path, f)
			}
		}
	case *ast.ListLit:
		for i, e := range x.Elts {
			firstPlacesValue(out, fmt.Sprintf("%s[%d]", path, i), posOf(e.Pos()), e)
		}
	}
}

// TestChunkedSameSnapshot compiles meshes split into chunks (chunks.go) with chunks small enough
// that every mesh here is split many ways: the chunked path must be taken and give the full
// path's snapshot, positions included; and a mesh with an error in one chunk must give exactly
// the full path's errors.
func TestChunkedSameSnapshot(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 7
	example, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	generated, _ := generatedFiles(t, meshgen.Options{Services: 300, Seed: 5})
	for name, files := range map[string][]File{"repo-example": example, "generated": generated} {
		t.Run(name, func(t *testing.T) {
			shared, keyed, ok := splitDecls(parseAll(t, files))
			if !ok {
				t.Fatal("not split")
			}
			if n, ok := validChunks(shared, keyed); !ok || n < 2 {
				t.Fatalf("the chunked path was not taken (%d chunks)", n)
			}
			chunked := compileJSON(t, files)
			fastPath = false
			defer func() { fastPath = true }()
			full := compileJSON(t, files)
			if chunked != full {
				t.Errorf("the chunked snapshot differs from the full path's:\nchunked: %.2000s\nfull: %.2000s", chunked, full)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		broken := append(append([]File{}, example...), File{Name: "broken.cue", Data: []byte(
			"package mesh\n\nservices: web: port: 70000\nintentions: api: ghost: {action: \"allow\"}\n")})
		_, errChunked := Compile(context.Background(), broken)
		fastPath = false
		defer func() { fastPath = true }()
		_, errFull := Compile(context.Background(), broken)
		if errChunked == nil || errFull == nil || errChunked.Error() != errFull.Error() {
			t.Errorf("errors differ:\nchunked: %v\nfull: %v", errChunked, errFull)
		}
	})
}

// TestChunkedDeclinesOneOfs: the one-ofs checked on data read from syntax (oneOfsHoldData)
// decline exactly what the schema's matchN would reject, so such a mesh takes the full path.
func TestChunkedDeclinesOneOfs(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 7
	example, err := ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{
		"both action and permissions": `intentions: api: admin: {action: "allow"}`,
		"two paths":                   `intentions: api: web: permissions: [{action: "allow", http: {path: "/a"}}, {action: "allow", http: {path: "/a", pathPrefix: "/b"}}, {action: "deny", http: {path: "/c"}}]`,
		"header two kinds":            `routers: api: routes: [{match: http: header: [{name: "x-canary", exact: "1", prefix: "a"}]}]`,
		"health check two kinds":      `services: web: healthCheck: {tcp: true}`,
	} {
		t.Run(name, func(t *testing.T) {
			files := append(append([]File{}, example...), File{Name: "z.cue", Data: []byte("package mesh\n\n" + src + "\n")})
			if _, ok := loadFast(files, parseAll(t, files), nil); ok {
				t.Fatal("the chunked path accepted a mesh that violates a one-of")
			}
			if _, err := Compile(context.Background(), files); err == nil {
				t.Fatal("the mesh compiled")
			}
		})
	}
}

// defaultMarker finds a CUE default, `*value`, but not the string "*".
var defaultMarker = regexp.MustCompile(`(^|[\s:(|&,\[])\*("|true|false|\[|\{|-?[0-9])`)

// TestSchemaDefaults keeps schemaDefaults in step with the schema: decoding from syntax applies
// exactly these defaults, so the schema must declare no other.
func TestSchemaDefaults(t *testing.T) {
	var text strings.Builder
	for _, f := range schema.Files() {
		text.Write(f.Data)
	}
	n := 0
	for _, line := range strings.Split(text.String(), "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		n += len(defaultMarker.FindAllString(line, -1))
	}
	for _, d := range schemaDefaults {
		if !strings.Contains(text.String(), d) {
			t.Errorf("schema lacks %s", d)
		}
	}
	if n != len(schemaDefaults) {
		t.Errorf("the schema declares %d defaults, schemaDefaults lists %d: update plaindata.go and the compiler", n, len(schemaDefaults))
	}
}

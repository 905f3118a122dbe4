package docgen

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestAPIDocCoversRoutes: every route registered on an HTTP mux anywhere in the code
// (mux.Handle("GET /v1/status", ...), mux.HandleFunc(...)) has its "### `METHOD /path`" section
// in docs/api.md, and every such section is a registered route.
func TestAPIDocCoversRoutes(t *testing.T) {
	root := filepath.Join("..", "..")
	routes := registeredRoutes(t, root)
	if len(routes) < 15 || !routes["GET /v1/status"] || !routes["POST /v1/ca/sign"] {
		t.Fatalf("found only %d routes, the scan is broken: %v", len(routes), routes)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^### `((?:[A-Z]+ )?/[^`]*)`$").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for _, r := range sortedKeys(routes) {
		if !documented[r] {
			t.Errorf("route %s is not documented in docs/api.md (add a \"### `%s`\" section)", r, r)
		}
	}
	for _, d := range sortedKeys(documented) {
		if !routes[d] {
			t.Errorf("docs/api.md documents %s, which no mux registers", d)
		}
	}
}

// registeredRoutes parses every non-test Go file under root and returns the string patterns
// passed to Handle and HandleFunc.
func registeredRoutes(t *testing.T, root string) map[string]bool {
	t.Helper()
	routes := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if p, err := strconv.Unquote(lit.Value); err == nil && strings.Contains(p, "/") {
				routes[p] = true
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package mesh

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestGoModInstallable keeps `go install github.com/meshgit/mesh/cmd/mesh@VERSION` working (the
// CI recipe in repo-example/.github uses it): the go command refuses to install a module at a
// version when its go.mod has a replace or exclude directive.
func TestGoModInstallable(t *testing.T) {
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range installBlockers(string(data)) {
		t.Errorf("go.mod: %s: `go install module@version` refuses a module with this directive; "+
			"choose versions that build without it", d)
	}
}

// TestInstallBlockers holds installBlockers to the forms of the directives that go.mod allows.
func TestInstallBlockers(t *testing.T) {
	for _, tc := range []struct {
		gomod string
		want  int
	}{
		{"module m\n\nrequire a v1.0.0\n", 0},
		{"module m\n// replace a => b v1.0.0\n", 0},
		{"module m\nrequire (\n\treplacer v1.0.0 // replace\n)\n", 0},
		{"module m\nreplace a => b v1.0.0\n", 1},
		{"module m\n  replace\ta v1.0.0 => ../a // local\n", 1},
		{"module m\nreplace (\n\ta => b v1.0.0\n\tc => ../c\n)\n", 1},
		{"module m\nexclude a v1.2.0\n", 1},
		{"module m\nexclude(\n a v1.2.0\n)\nreplace a => b v1\n", 2},
	} {
		if got := installBlockers(tc.gomod); len(got) != tc.want {
			t.Errorf("installBlockers(%q) = %q, want %d directives", tc.gomod, got, tc.want)
		}
	}
}

// installBlockers returns the replace and exclude directives of a go.mod file, as "line N: text".
func installBlockers(gomod string) []string {
	var found []string
	for i, line := range strings.Split(gomod, "\n") {
		line, _, _ = strings.Cut(line, "//")
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '(' })
		if len(fields) > 0 && (fields[0] == "replace" || fields[0] == "exclude") {
			found = append(found, fmt.Sprintf("line %d: %s", i+1, strings.TrimSpace(line)))
		}
	}
	return found
}

// Package docgen generates the parts of docs/ that follow from the code, so they cannot drift
// from it: docs/reference.md, the repository format, is the embedded CUE schema (schema/) walked
// field by field, each field with the hand-written prose of prose.txtar beside it. A field of the
// schema without prose, or prose for a field the schema does not have, is an error, so a schema
// change cannot land without its documentation. cmd/mesh/cli's TestDocs compares the committed
// docs with what this package and the command tree generate; MESH_UPDATE=1 rewrites them.
package docgen

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	"github.com/rogpeppe/go-internal/txtar"

	"github.com/meshgit/mesh/schema"
)

//go:embed prose.txtar
var proseArchive []byte

// Sentinel errors.
var (
	// ErrUndocumented means a schema field has no prose in prose.txtar.
	ErrUndocumented = errors.New("schema field without prose in internal/docgen/prose.txtar")
	// ErrStaleProse means prose.txtar documents a field the schema does not have.
	ErrStaleProse = errors.New("prose in internal/docgen/prose.txtar for a field the schema does not have")
)

// Field is one field of the schema, at a dotted path such as "#Service.upstreams.[#Name].localPort".
type Field struct {
	Path     string // the key of its prose: the definition or top-level field, then the labels
	Label    string // as written, with ? or ! for optional and required fields
	Type     string // the CUE expression it must satisfy; "{...}" for a struct documented below
	Default  string // the default marked with *, if any
	Required bool   // a regular field without a default: the user must give it
	Comment  string // the schema's own comment on it
	Depth    int    // 0 for the fields of a definition, 1 for the fields of those, ...
}

// Definition is a top-level field or a #Definition of the schema, with its fields.
type Definition struct {
	Name    string
	Type    string // the whole expression, for scalar definitions and top-level fields
	Comment string
	Fields  []Field
	// Constraints are the embedded validators, such as matchN(1, [...]), in their own words.
	Constraints []string
}

// Schema parses the embedded schema into its definitions, in the order they are written.
func Schema() ([]Definition, error) {
	var defs []Definition
	for _, sf := range schema.Files() {
		f, err := parser.ParseFile(sf.Name, sf.Data, parser.ParseComments)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", sf.Name, err)
		}
		for _, d := range f.Decls {
			field, ok := d.(*ast.Field)
			if !ok {
				continue
			}
			name, _, err := ast.LabelName(field.Label)
			if err != nil {
				return nil, fmt.Errorf("schema %s: %w", sf.Name, err)
			}
			def := Definition{Name: name, Comment: comment(field)}
			if st, ok := field.Value.(*ast.StructLit); ok {
				def.Type = "{...}"
				def.Fields, def.Constraints = structFields(name, st, 0)
			} else {
				def.Type = expr(field.Value)
			}
			defs = append(defs, def)
		}
	}
	return defs, nil
}

// structFields lists the fields of st, depth first; nested structs are listed after the field
// that holds them, one level deeper.
func structFields(prefix string, st *ast.StructLit, depth int) (fields []Field, constraints []string) {
	for _, d := range st.Elts {
		switch x := d.(type) {
		case *ast.EmbedDecl:
			c := "`" + expr(x.Expr) + "`"
			if cm := comment(x); cm != "" {
				c = strings.TrimSuffix(cm, ".") + " (" + c + ")"
			}
			constraints = append(constraints, c)
		case *ast.Field:
			label := labelText(x.Label)
			path := prefix + "." + label
			f := Field{Path: path, Label: label + constraintMark(x.Constraint), Comment: comment(x), Depth: depth}
			_, pattern := x.Label.(*ast.ListLit) // [#Name]: any number of fields, none required
			if sub, ok := x.Value.(*ast.StructLit); ok {
				f.Type = "{...}"
				f.Required = x.Constraint != token.OPTION && !pattern
				fields = append(fields, f)
				inner, cons := structFields(path, sub, depth+1)
				fields = append(fields, inner...)
				constraints = append(constraints, cons...)
				continue
			}
			f.Type = expr(x.Value)
			f.Default = defaultOf(x.Value)
			f.Required = x.Constraint != token.OPTION && f.Default == "" && !pattern
			fields = append(fields, f)
		}
	}
	return fields, constraints
}

func labelText(l ast.Label) string {
	if name, _, err := ast.LabelName(l); err == nil {
		return name
	}
	if list, ok := l.(*ast.ListLit); ok { // a pattern constraint such as [#Name]
		return "[" + expr(list.Elts[0]) + "]"
	}
	return expr(l.(ast.Expr))
}

func constraintMark(t token.Token) string {
	switch t {
	case token.OPTION:
		return "?"
	case token.NOT:
		return "!"
	}
	return ""
}

// defaultOf returns the value marked with * in a disjunction, or "".
func defaultOf(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.UnaryExpr:
		if x.Op == token.MUL {
			return expr(x.X)
		}
	case *ast.BinaryExpr:
		if x.Op == token.OR {
			if d := defaultOf(x.X); d != "" {
				return d
			}
			return defaultOf(x.Y)
		}
	}
	return ""
}

func expr(n ast.Node) string {
	b, err := format.Node(n, format.Simplify())
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	s := strings.Join(strings.Fields(string(b)), " ")
	return strings.ReplaceAll(strings.ReplaceAll(s, "[ ", "["), " ]", "]")
}

// comment joins the comment lines written before n and on its line.
func comment(n ast.Node) string {
	var lines []string
	for _, g := range ast.Comments(n) {
		for _, c := range g.List {
			lines = append(lines, strings.TrimSpace(strings.TrimPrefix(c.Text, "//")))
		}
	}
	return strings.Join(lines, " ")
}

// prose returns the hand-written text of every documented path.
func prose() map[string]string {
	out := map[string]string{}
	for _, f := range txtar.Parse(proseArchive).Files {
		out[f.Name] = strings.TrimSpace(string(f.Data))
	}
	return out
}

// Intro and the other sections of prose.txtar that are not fields.
const (
	sectionIntro = "intro"
	sectionTypes = "types"
)

// Reference renders docs/reference.md.
func Reference() ([]byte, error) {
	defs, err := Schema()
	if err != nil {
		return nil, err
	}
	text := prose()
	used := map[string]bool{sectionIntro: true, sectionTypes: true}
	var missing []string
	get := func(path string) string {
		used[path] = true
		p, ok := text[path]
		if !ok || p == "" {
			missing = append(missing, path)
		}
		return p
	}
	var b bytes.Buffer
	b.WriteString("# The repository format\n\n")
	b.WriteString("<!-- Generated from schema/mesh.cue and internal/docgen/prose.txtar by\n" +
		"     `MESH_UPDATE=1 go test -tags hashicorpmetrics ./cmd/mesh/cli -run TestDocs`; edit those, not this file. -->\n\n")
	b.WriteString(text[sectionIntro] + "\n\n")
	var scalars []Definition
	for _, d := range defs {
		if strings.HasPrefix(d.Name, "#") && d.Type != "{...}" {
			scalars = append(scalars, d)
			continue
		}
		writeDefinition(&b, d, get)
	}
	b.WriteString("## Value types\n\n" + text[sectionTypes] + "\n\n")
	for _, d := range scalars {
		fmt.Fprintf(&b, "### `%s`\n\n`%s`\n\n%s\n\n", d.Name, d.Type, get(d.Name))
	}
	for path := range text {
		if !used[path] {
			return nil, fmt.Errorf("%w: %s", ErrStaleProse, path)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("%w: %s", ErrUndocumented, strings.Join(missing, ", "))
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func writeDefinition(b *bytes.Buffer, d Definition, get func(string) string) {
	if strings.HasPrefix(d.Name, "#") {
		fmt.Fprintf(b, "## `%s`\n\n", d.Name)
	} else {
		fmt.Fprintf(b, "## `%s: %s`\n\n", d.Name, d.Type)
	}
	b.WriteString(get(d.Name) + "\n\n")
	for _, c := range d.Constraints {
		fmt.Fprintf(b, "Constraint: %s.\n\n", strings.TrimSuffix(c, "."))
	}
	for _, f := range d.Fields {
		indent := strings.Repeat("  ", f.Depth)
		fmt.Fprintf(b, "%s- **`%s`** `%s`", indent, f.Label, f.Type)
		switch {
		case f.Default != "":
			fmt.Fprintf(b, " (default `%s`)", f.Default)
		case f.Required:
			b.WriteString(" (required)")
		}
		b.WriteString("  \n")
		for _, line := range strings.Split(get(f.Path), "\n") {
			if line == "" {
				b.WriteString("\n")
				continue
			}
			fmt.Fprintf(b, "%s  %s\n", indent, line)
		}
	}
	if len(d.Fields) > 0 {
		b.WriteString("\n")
	}
}

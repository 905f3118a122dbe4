package compiler

import (
	"fmt"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/meshgit/mesh/schema"
)

// TestFlattenEnums checks that the fast path's schema accepts exactly the values the schema as
// written accepts at every place where flattenEnums rewrote a disjunction: every literal of the
// schema's enumerations, near misses, and values of other kinds.
func TestFlattenEnums(t *testing.T) {
	fast, err := fastSchemaFiles()
	if err != nil {
		t.Fatal(err)
	}
	var full []*ast.File
	for _, sf := range schema.Files() {
		af, err := parser.ParseFile(schemaPrefix+sf.Name, sf.Data)
		if err != nil {
			t.Fatal(err)
		}
		stripOneOfs(af) // the one-ofs are not what this test is about
		full = append(full, af)
	}
	after := formatNode(fast[0])
	// The one disjunction that is not of strings: upstreams, "*" or a struct. On plain data
	// CUE decides it by the value's kind, without trying alternatives in depth.
	const kinds = `upstreams?: "*" | {`
	if n := strings.Count(after, " | ") - strings.Count(after, kinds); n != 0 || !strings.Contains(after, kinds) {
		t.Errorf("%d disjunctions left in the fast schema besides %s:\n%s", n, kinds, after)
	}

	// Candidates: every string literal of the schema, and variations of each.
	cands := map[string]bool{`""`: true, `"*"`: true, `"**"`: true, `"x"`: true, `1`: true, `true`: true, `null`: true,
		`"tcp|http"`: true, `"^tcp$"`: true, `"a-b"`: true, `"-a"`: true, `"A"`: true}
	ast.Walk(full[0], func(n ast.Node) bool {
		if l, ok := n.(*ast.BasicLit); ok && l.Kind == token.STRING && !strings.Contains(l.Value, "^") {
			s := strings.Trim(l.Value, `"`)
			for _, v := range []string{s, s + "x", " " + s, strings.ToUpper(s), s + "\n"} {
				cands[fmt.Sprintf("%q", v)] = true
			}
		}
		return true
	}, nil)

	// Each template puts a candidate at one rewritten place.
	templates := []string{
		`mesh: {name: "m", trustDomain: "m.local", defaultIntention: %s}`,
		`mesh: {name: "m", trustDomain: "m.local", tls: minVersion: %s}`,
		`mesh: {name: "m", trustDomain: "m.local", tls: maxVersion: %s}`,
		`services: web: {port: 80, protocol: %s}`,
		`intentions: web: (%s): action: "allow"`,
		`intentions: (%s): web: action: "allow"`,
		`intentions: web: api: action: %s`,
		`intentions: web: api: permissions: [{action: %s, http: {}}]`,
		`intentions: web: api: permissions: [{action: "allow", http: methods: [%s]}]`,
		`routers: web: routes: [{destination: retryOn: [%s]}]`,
		`resolvers: web: loadBalancer: policy: %s`,
		`resolvers: web: failover: (%s): datacenters: ["dc2"]`,
		`services: (%s): port: 80`,
	}
	ctx := cuecontext.New()
	build1 := func(files []*ast.File) cue.Value {
		inst := build.NewContext().NewInstance("mesh", nil)
		inst.PkgName = "mesh"
		for _, f := range files {
			if err := inst.AddSyntax(f); err != nil {
				t.Fatal(err)
			}
		}
		v := ctx.BuildInstance(inst)
		if v.Err() != nil {
			t.Fatal(v.Err())
		}
		return v
	}
	fullV, fastV := build1(full), build1(fast)
	eval := func(s cue.Value, data string) error {
		d := ctx.CompileString(data)
		if d.Err() != nil {
			return d.Err()
		}
		return s.Unify(d).Validate(cue.All())
	}
	accepted := 0
	for _, tmpl := range templates {
		for c := range cands {
			data := fmt.Sprintf(tmpl, c)
			want, got := eval(fullV, data), eval(fastV, data)
			if (want == nil) != (got == nil) {
				t.Errorf("%s:\n  schema: %v\n  fast:   %v", data, want, got)
			}
			if want == nil {
				accepted++
			}
		}
	}
	if accepted < 40 {
		t.Errorf("only %d candidates accepted: the test is not exercising the enumerations", accepted)
	}
}

package compiler

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"

	"github.com/meshgit/mesh/internal/meshgen"
)

// TestIncrementalMatchesCold holds the incremental compilation (incremental.go: compiled
// services, intentions and chains reused, the Version hashed from kept JSON, the analysis's
// warnings reused) to a cold one over random sequences of edits of generated meshes, which have
// upstreams, L7 intentions, "*" sources, routers, splitters and resolvers: intentions flipped,
// added into "*" and removed, upstreams dropped or pointed at no service, services renamed
// (their callers' upstreams and intentions then name no service), ports changed, lines
// inserted above elements (their positions move, their text does not), mesh-wide settings
// changed, and invalid values. Every compilation with one warm Cache gives exactly the
// snapshot (Version and positions included) and the warnings, or the errors with their
// positions, of a compilation without one.
func TestIncrementalMatchesCold(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			files, _ := generatedFiles(t, meshgen.Options{Services: 24, Teams: 2, Seed: seed + 11})
			r := rand.New(rand.NewPCG(seed, 29))
			cache := NewCache()
			var undo []File
			reused := 0
			for step := range 30 {
				if undo != nil {
					files, undo = undo, nil
				}
				before := slices.Clone(files)
				kind, broken := coldEdit(r, files)
				if broken {
					undo = before
				}
				want, wantErr := compileString(files, nil)
				got, gotErr := compileString(files, cache)
				if got != want || gotErr != wantErr {
					t.Fatalf("step %d (%s): with the cache:\n%.2000s\n%s\nwithout:\n%.2000s\n%s", step, kind, got, gotErr, want, wantErr)
				}
				if wantErr == "" {
					reused += cache.Stats().CompiledReused
				}
			}
			if reused == 0 {
				t.Fatal("no compilation reused the memo")
			}
		})
	}
}

var (
	reAction   = regexp.MustCompile(`action: "(allow|deny)"`)
	reUpstream = regexp.MustCompile(`\n\t\t"[a-z0-9-]+": localPort: [0-9]+`)
	reService  = regexp.MustCompile(`services: "([a-z0-9-]+)": \{`)
	rePort     = regexp.MustCompile(`port:     80[0-9][0-9]`)
)

// coldEdit makes one random edit of files (mesh.cue first, then team files) in place and says
// what it was, and whether it breaks the mesh (to be undone after one compilation).
func coldEdit(r *rand.Rand, files []File) (string, bool) {
	i := 1 + r.IntN(len(files)-1)
	data := files[i].Data
	at := func(re *regexp.Regexp) []int {
		all := re.FindAllIndex(data, -1)
		if len(all) == 0 {
			return nil
		}
		return all[r.IntN(len(all))]
	}
	set := func(b []byte) { files[i].Data = b }
	splice := func(loc []int, repl string) []byte {
		return slices.Concat(data[:loc[0]], []byte(repl), data[loc[1]:])
	}
	switch r.IntN(10) {
	case 0:
		if loc := at(reAction); loc != nil {
			old := string(data[loc[0]:loc[1]])
			set(splice(loc, map[string]string{`action: "allow"`: `action: "deny"`, `action: "deny"`: `action: "allow"`}[old]))
		}
		return "flip an intention", false
	case 1:
		set(bytes.Replace(data, []byte("package mesh\n"), []byte("package mesh\n\n// moved\n"), 1))
		return "shift positions", false
	case 2:
		if loc := at(reUpstream); loc != nil {
			set(splice(loc, ""))
		}
		return "drop an upstream", false
	case 3:
		if loc := at(reUpstream); loc != nil {
			set(splice(loc, "\n\t\t\"nowhere\": localPort: 9999"))
		}
		return "upstream to no service", true
	case 4:
		if loc := at(reService); loc != nil {
			name := string(data[loc[0]+len(`services: "`) : loc[1]-len(`": {`)])
			set(splice(loc, `services: "`+name+`-renamed": {`))
		}
		return "rename a service", true
	case 5:
		if loc := at(rePort); loc != nil {
			set(splice(loc, fmt.Sprintf("port:     80%02d", r.IntN(100))))
		}
		return "change a port", false
	case 6:
		if loc := reService.FindSubmatch(data); loc != nil {
			set(append(bytes.Clone(data), fmt.Sprintf("\nintentions: \"*\": %q: action: %q\n", loc[1], []string{"allow", "deny"}[r.IntN(2)])...))
		}
		return "add an intention into *", false
	case 7:
		old, repl := []string{`defaultIntention: "deny"`, `defaultIntention: "allow"`}, []string{`minVersion:  "TLSv1_2"`, `minVersion:  "TLSv1_3"`}
		pair := [][]string{old, repl}[r.IntN(2)]
		m := files[0].Data
		if bytes.Contains(m, []byte(pair[0])) {
			files[0].Data = bytes.Replace(m, []byte(pair[0]), []byte(pair[1]), 1)
		} else {
			files[0].Data = bytes.Replace(m, []byte(pair[1]), []byte(pair[0]), 1)
		}
		return "mesh-wide setting", false
	case 8:
		if loc := at(rePort); loc != nil {
			set(splice(loc, "port:     70000"))
		}
		return "invalid port", true
	default:
		if loc := at(reAction); loc != nil {
			set(splice(loc, `permissions: [{action: "allow", http: pathRegex: "(["}]`))
		}
		return "invalid regex", true
	}
}

// TestIncrementalVersionIsCanonical: the Version an incremental compilation hashes from kept JSON is
// the Snapshot's ComputeVersion.
func TestIncrementalVersionIsCanonical(t *testing.T) {
	files, _ := generatedFiles(t, meshgen.Options{Services: 40, Teams: 2, Seed: 3})
	cache := NewCache()
	for round := range 3 {
		if round == 2 {
			files = slices.Clone(files)
			files[1].Data = reAction.ReplaceAll(files[1].Data, []byte(`action: "deny"`))
		}
		snap, _, err := CompileWithReport(context.Background(), files, Options{Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		v, err := snap.ComputeVersion()
		if err != nil {
			t.Fatal(err)
		}
		if snap.Version != v {
			t.Fatalf("round %d: version %s, the canonical JSON hashes to %s", round, snap.Version, v)
		}
		if round > 0 && cache.Stats().CompiledReused == 0 {
			t.Fatalf("round %d: nothing reused", round)
		}
	}
}

// TestFieldNameMatchesLabelName: fieldName's shortcut for plain quoted labels gives what
// ast.LabelName gives, and leaves every other form to it.
func TestFieldNameMatchesLabelName(t *testing.T) {
	src := "package mesh\n\nservices: {\n\t\"a-b\": 1\n\t\"a\\\"b\": 2\n\t\"\\u0041x\": 3\n\t#\"raw\\#(1)\"#: 4\n\tplain: 5\n\t\"\": 6\n\t\"caf\u00e9\": 7\n}\n"
	f, err := parser.ParseFile("x.cue", src)
	if err != nil {
		t.Fatal(err)
	}
	st := f.Decls[1].(*ast.Field).Value.(*ast.StructLit)
	if len(st.Elts) != 7 {
		t.Fatalf("%d fields", len(st.Elts))
	}
	for _, e := range st.Elts {
		field := e.(*ast.Field)
		want, _, err := ast.LabelName(field.Label)
		got, ok := fieldName(field)
		if ok != (err == nil) || got != want {
			t.Errorf("label %v: fieldName %q %v, LabelName %q %v", field.Label, got, ok, want, err)
		}
	}
}

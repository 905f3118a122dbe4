package compiler

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/meshgen"
)

// TestCacheMeshWideChange changes mesh-wide settings (defaultIntention, tls, mode) of a warm
// Cache's mesh: CUE evaluates the settings alone, every element is reused, and the snapshot is
// the one a cold compile gives.
func TestCacheMeshWideChange(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 20
	files, stats := generatedFiles(t, meshgen.Options{Services: 60, Teams: 3, Seed: 5})
	if files[0].Name != "mesh.cue" {
		t.Fatalf("unexpected layout: %s", files[0].Name)
	}
	cache := NewCache()
	if _, err := compileString(files, cache); err != "" {
		t.Fatal(err)
	}
	elements := cache.Stats().ElementsEvaluated
	if elements < stats.Services {
		t.Fatalf("cold compile evaluated %d elements, want at least %d", elements, stats.Services)
	}
	edits := []struct{ old, new string }{
		{`defaultIntention: "deny"`, `defaultIntention: "allow"`},
		{`minVersion:  "TLSv1_2"`, `minVersion:  "TLSv1_3"`},
		{`policies: []`, `policies: []` + "\n\tmode: \"transparent\""},
	}
	for _, e := range edits {
		t.Run(e.new, func(t *testing.T) {
			if !bytes.Contains(files[0].Data, []byte(e.old)) {
				t.Fatalf("mesh.cue has no %q", e.old)
			}
			files = slices.Clone(files)
			files[0].Data = bytes.Replace(files[0].Data, []byte(e.old), []byte(e.new), 1)
			want, wantErr := compileString(files, nil)
			got, gotErr := compileString(files, cache)
			if got != want || gotErr != wantErr || wantErr != "" {
				t.Fatalf("with the cache:\n%.800s\n%s\nwithout:\n%.800s\n%s", got, gotErr, want, wantErr)
			}
			st := cache.Stats()
			if st.ElementsEvaluated != 0 || st.ElementsReused != elements || !st.SettingsEvaluated || st.FilesParsed != 1 {
				t.Errorf("stats %+v, want 0 elements evaluated, %d reused, the settings evaluated, 1 file parsed", st, elements)
			}
		})
	}
}

// TestCacheKeyDependencies is the guard of the Cache's keys (elementDeps): over random sequences
// of edits (mesh-wide settings, a user's definitions that constrain elements, elements changed,
// added, removed and moved between files, invalid values), every compilation with one warm Cache
// gives exactly the snapshot, positions included, and the analysis's warnings (whose L7
// verdicts the Cache keeps too), or the errors of a compilation without one.
// A key that leaves out something an element depends on makes the warm compilation take a
// stale element and differ.
func TestCacheKeyDependencies(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 4 // several chunks
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 13))
			m := newEditModel()
			cache := NewCache()
			prevOK := false
			for step := range 80 {
				kind := m.edit(r)
				files := m.files()
				want, wantErr := compileString(files, nil)
				got, gotErr := compileString(files, cache)
				if got != want || gotErr != wantErr {
					t.Fatalf("step %d (%s): with the cache:\n%.1500s\n%s\nwithout:\n%.1500s\n%s\nfiles:\n%s",
						step, kind, got, gotErr, want, wantErr, dumpFiles(files))
				}
				ok := wantErr == ""
				if st := cache.Stats(); kind == "settings" && prevOK && ok && st.ElementsEvaluated != 0 {
					t.Errorf("step %d: a settings change evaluated %d elements (%+v)", step, st.ElementsEvaluated, st)
				}
				prevOK = ok
			}
		})
	}
}

// editModel is a small mesh that TestCacheKeyDependencies edits at random.
type editModel struct {
	defaultIntention, tls, mode, helper string
	services                            []*editService
	next                                int
	revert                              func() // undoes an invalid value after one step
}

type editService struct {
	name   string
	port   int
	file   int
	action string // of the intention web → this service
	first  bool   // written before or after its intention in its file
}

const editFiles = 3

func newEditModel() *editModel {
	m := &editModel{defaultIntention: "deny", tls: "TLSv1_2"}
	for range 6 {
		m.add()
	}
	return m
}

func (m *editModel) add() {
	m.services = append(m.services, &editService{name: fmt.Sprintf("svc-%d", m.next), port: 8080, file: m.next % editFiles, action: "allow"})
	m.next++
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

// edit makes one random edit and says what kind it was: "settings" when only the mesh
// settings changed.
func (m *editModel) edit(r *rand.Rand) string {
	if m.revert != nil {
		m.revert()
		m.revert = nil
	}
	s := m.services[r.IntN(len(m.services))]
	switch r.IntN(9) {
	case 0:
		m.defaultIntention = pick(r, "allow", "deny")
		return "settings"
	case 1:
		old := m.tls
		m.tls = pick(r, "TLSv1_2", "TLSv1_3", "TLSv1_9") // the last is invalid, for one step
		if m.tls == "TLSv1_9" {
			m.revert = func() { m.tls = old }
		}
		return "settings"
	case 2:
		m.mode = pick(r, "", "transparent", "direct")
		return "settings"
	case 3:
		// User definitions that constrain every service: elements depend on them.
		m.helper = pick(r, "", "#Service: port: <=9000", "#Port: <=9000", `#Intention: description?: "x"`)
		return "definitions"
	case 4:
		old := s.port
		s.port = pick(r, 8080, 9090, 70000) // 9090 breaks the helpers; 70000 the schema, for one step
		if s.port == 70000 {
			m.revert = func() { s.port = old }
		}
		return "port"
	case 5:
		// An L7 intention's verdict (analysis warnings) depends on mesh.defaultIntention.
		s.action = pick(r, "allow", "deny", "l7")
		return "intention"
	case 6:
		if len(m.services) > 2 {
			m.services = slices.DeleteFunc(m.services, func(x *editService) bool { return x == s })
			return "remove"
		}
		m.add()
		return "add"
	case 7:
		m.add()
		return "add"
	default:
		s.file = (s.file + 1 + r.IntN(editFiles-1)) % editFiles
		s.first = !s.first
		return "move"
	}
}

func (m *editModel) files() []File {
	var b strings.Builder
	fmt.Fprintf(&b, "package mesh\n\nmesh: {\n\tname: \"edits\"\n\ttrustDomain: \"edits.mesh\"\n\tdefaultIntention: %q\n\ttls: minVersion: %q\n", m.defaultIntention, m.tls)
	if m.mode != "" {
		fmt.Fprintf(&b, "\tmode: %q\n", m.mode)
	}
	b.WriteString("}\n\nservices: web: {protocol: \"http\", port: 8000}\n")
	if m.helper != "" {
		b.WriteString("\n" + m.helper + "\n")
	}
	files := []File{{Name: "mesh.cue", Data: []byte(b.String())}}
	for i := range editFiles {
		var f strings.Builder
		f.WriteString("package mesh\n")
		for _, s := range m.services {
			if s.file != i {
				continue
			}
			svc := fmt.Sprintf("\nservices: %q: {\n\tprotocol: \"http\"\n\tport: %d\n}\n", s.name, s.port)
			in := fmt.Sprintf("\nintentions: %q: web: action: %q\n", s.name, s.action)
			if s.action == "l7" {
				in = fmt.Sprintf("\nintentions: %q: web: permissions: [{action: \"deny\", http: pathPrefix: \"/admin/\"}]\n", s.name)
			}
			if s.first {
				f.WriteString(svc + in)
			} else {
				f.WriteString(in + svc)
			}
		}
		files = append(files, File{Name: fmt.Sprintf("team-%d.cue", i), Data: []byte(f.String())})
	}
	return files
}

func dumpFiles(files []File) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "-- %s --\n%s", f.Name, f.Data)
	}
	return b.String()
}

// TestVerdictsAgreeWithAllowsSome: the analysis's verdicts (decided without a search where the
// action or the default decides, and kept in a Cache by what they depend on) are AllowsSome's,
// for every pair of services of generated meshes, with a warm Cache and without one, under
// both defaults.
func TestVerdictsAgreeWithAllowsSome(t *testing.T) {
	for _, def := range []string{"deny", "allow"} {
		files, _ := generatedFiles(t, meshgen.Options{Services: 40, Teams: 2, Seed: 3})
		files[0].Data = bytes.Replace(files[0].Data, []byte(`defaultIntention: "deny"`), []byte(`defaultIntention: "`+def+`"`), 1)
		cache := NewCache()
		for round := range 2 {
			cache.begin()
			s, err := Compile(context.Background(), files)
			if err != nil {
				cache.end()
				t.Fatal(err)
			}
			cold := &l7Verdicts{s: s, byIntention: map[*mesh.Intention]bool{}}
			warm := &l7Verdicts{s: s, cache: cache, byIntention: map[*mesh.Intention]bool{}}
			names := append(s.ServiceNames(), mesh.Wildcard)
			for _, src := range names {
				for _, dst := range names {
					want := allows(s, src, dst)
					if cold.allows(src, dst) != want || warm.allows(src, dst) != want {
						t.Errorf("default %s, round %d: %s → %s: verdicts say %v (cold) %v (warm), AllowsSome %v", def, round, src, dst, cold.allows(src, dst), warm.allows(src, dst), want)
					}
				}
			}
			if round == 1 && (cache.last.VerdictsReused == 0 || cache.last.VerdictsSearched != 0) {
				t.Errorf("default %s: the second round searched %d verdicts and reused %d; want all reused", def, cache.last.VerdictsSearched, cache.last.VerdictsReused)
			}
			cache.end()
		}
	}
}

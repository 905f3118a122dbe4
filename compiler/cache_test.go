package compiler

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshgit/mesh/internal/meshgen"
)

// TestCacheSameResults compiles a sequence of edits of a mesh with one Cache and without: every
// snapshot (positions included) and every error must be the same, and the cache must have
// evaluated only what each edit changed.
func TestCacheSameResults(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 20 // several chunks even for a small mesh
	files, stats := generatedFiles(t, meshgen.Options{Services: 120, Teams: 3, Seed: 9})
	team := 1 // files[0] is mesh.cue
	if !strings.HasPrefix(files[team].Name, "teams/") {
		t.Fatalf("unexpected layout: %s", files[team].Name)
	}
	edit := func(fs []File, i int, old, new string) []File {
		t.Helper()
		out := append([]File(nil), fs...)
		if !bytes.Contains(out[i].Data, []byte(old)) {
			t.Fatalf("%s has no %q", out[i].Name, old)
		}
		out[i].Data = bytes.Replace(out[i].Data, []byte(old), []byte(new), 1)
		return out
	}
	elements := stats.Services + 1 // at least one per service, and the shared declarations
	flipped := edit(files, team, `action: "allow"`, `action: "deny"`)
	broken := edit(flipped, team, `port:     8080`, `port:     70000`)
	// A service moved to the end of another file: same text, other positions.
	moved := func() []File {
		src := string(flipped[team].Data)
		start := strings.Index(src, "services: ")
		end := start + strings.Index(src[start:], "\n}\n") + 3
		out := append([]File(nil), flipped...)
		out[team].Data = []byte(src[:start] + src[end:])
		out[team+1].Data = append(append([]byte(nil), out[team+1].Data...), "\n"+src[start:end]...)
		return out
	}()
	settings := edit(moved, 0, `trustDomain:`, `datacenter: "dc1"`+"\n\ttrustDomain:")

	steps := []struct {
		name         string
		files        []File
		evaluatedMin int // elements CUE evaluated, at least and at most
		evaluatedMax int
		parsed       int
	}{
		{"cold", files, elements, 1 << 30, len(files)},
		{"one intention flipped", flipped, 1, 1, 1},
		{"schema error", broken, 0, 1 << 30, 1},
		// The broken compilation did not use the service's valid text, so it was dropped.
		{"repaired", flipped, 1, 1, 1},
		{"a service moved between files", moved, 0, 0, 2},
		// No element depends on the mesh settings: they are evaluated alone.
		{"mesh settings changed", settings, 0, 0, 1},
	}
	cache := NewCache()
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			want, wantErr := compileString(s.files, nil)
			got, gotErr := compileString(s.files, cache)
			if got != want || gotErr != wantErr {
				t.Fatalf("with the cache:\n%.1500s\n%s\nwithout:\n%.1500s\n%s", got, gotErr, want, wantErr)
			}
			st := cache.Stats()
			if st.ElementsEvaluated < s.evaluatedMin || st.ElementsEvaluated > s.evaluatedMax {
				t.Errorf("evaluated %d elements, want %d to %d (%+v)", st.ElementsEvaluated, s.evaluatedMin, s.evaluatedMax, st)
			}
			if st.FilesParsed != s.parsed {
				t.Errorf("parsed %d files, want %d (%+v)", st.FilesParsed, s.parsed, st)
			}
		})
	}
	if n := len(cache.files); n != len(settings) {
		t.Errorf("the cache holds %d files after the last compilation of %d", n, len(settings))
	}
}

// compileString compiles files and returns the snapshot's JSON followed by the analysis's
// warnings, or the errors.
func compileString(files []File, cache *Cache) (snapshot, errs string) {
	snap, report, err := CompileWithReport(context.Background(), files, Options{Cache: cache})
	if err != nil {
		return "", err.Error()
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return "", err.Error()
	}
	return string(b) + "\nwarnings:\n" + report.Warnings.Error(), ""
}

// TestCacheElementsAcrossProcesses carries validated elements through WriteElements and
// ReadElements into a new Cache: the next compilation evaluates only what changed, parses every
// file, and gives the same snapshot as without any cache.
func TestCacheElementsAcrossProcesses(t *testing.T) {
	defer func(n int) { chunkDecls = n }(chunkDecls)
	chunkDecls = 20
	files, _ := generatedFiles(t, meshgen.Options{Services: 80, Teams: 2, Seed: 4})
	first := NewCache()
	if _, err := compileString(files, first); err != "" {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	if err := first.WriteElements(&saved); err != nil {
		t.Fatal(err)
	}

	changed := append([]File(nil), files...)
	changed[1].Data = bytes.Replace(changed[1].Data, []byte(`action: "allow"`), []byte(`action: "deny"`), 1)
	second := NewCache()
	if err := second.ReadElements(bytes.NewReader(saved.Bytes())); err != nil {
		t.Fatal(err)
	}
	want, wantErr := compileString(changed, nil)
	got, gotErr := compileString(changed, second)
	if got != want || gotErr != wantErr {
		t.Fatalf("with elements read back:\n%.1500s\n%s\nwithout:\n%.1500s\n%s", got, gotErr, want, wantErr)
	}
	if st := second.Stats(); st.ElementsEvaluated != 1 || st.FilesParsed != len(changed) {
		t.Errorf("evaluated %d elements and parsed %d files, want 1 and %d (%+v)", st.ElementsEvaluated, st.FilesParsed, len(changed), st)
	}

	// An invalid element is never taken for a validated one: its text is not a known key.
	broken := append([]File(nil), changed...)
	broken[1].Data = bytes.Replace(broken[1].Data, []byte(`port:     8080`), []byte(`port:     70000`), 1)
	third := NewCache()
	if err := third.ReadElements(bytes.NewReader(saved.Bytes())); err != nil {
		t.Fatal(err)
	}
	if _, gotErr := compileString(broken, third); !strings.Contains(gotErr, "70000") {
		t.Errorf("a broken mesh compiled with elements read back: %q", gotErr)
	}

	for name, data := range map[string][]byte{
		"empty":        nil,
		"other magic":  []byte("mesh compiler elements 0\n"),
		"torn":         append([]byte(elementsMagic), make([]byte, 31)...),
		"json":         []byte(`{"elements": []}`),
		"magic alone?": []byte(elementsMagic[:10]),
	} {
		if err := NewCache().ReadElements(bytes.NewReader(data)); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
}

// generatedFiles is a mesh from internal/meshgen, as compiler Files.
func generatedFiles(t *testing.T, opts meshgen.Options) ([]File, meshgen.Stats) {
	t.Helper()
	gen, stats, err := meshgen.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	files := make([]File, len(gen))
	for i, f := range gen {
		files[i] = File{Name: f.Name, Data: f.Data}
	}
	return files, stats
}

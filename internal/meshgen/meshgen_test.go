package meshgen_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
)

// A generated mesh compiles, has the shape the package comment promises, and the same options
// give the same bytes.
func TestGenerate(t *testing.T) {
	opts := meshgen.Options{Services: 200, Seed: 7}
	files, stats, err := meshgen.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := meshgen.Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(files) {
		t.Fatalf("second run: %d files, first %d", len(again), len(files))
	}
	for i := range files {
		if files[i].Name != again[i].Name || !bytes.Equal(files[i].Data, again[i].Data) {
			t.Fatalf("file %s differs between two runs with the same options", files[i].Name)
		}
	}
	var in []compiler.File
	for _, f := range files {
		in = append(in, compiler.File{Name: f.Name, Data: f.Data})
	}
	snap, err := compiler.Compile(context.Background(), in)
	if err != nil {
		t.Fatalf("generated mesh does not compile:\n%v", err)
	}
	if len(snap.Services) != stats.Services || len(snap.Intentions) != stats.Intentions ||
		len(snap.Routers) != stats.Routers || len(snap.Splitters) != stats.Splitters || len(snap.Resolvers) != stats.Resolvers {
		t.Errorf("compiled %d services, %d intentions, %d routers, %d splitters, %d resolvers; stats say %v",
			len(snap.Services), len(snap.Intentions), len(snap.Routers), len(snap.Splitters), len(snap.Resolvers), stats)
	}
	if stats.Teams != 4 || stats.Files != 5 {
		t.Errorf("200 services: %d teams in %d files, want 4 teams in 5 files", stats.Teams, stats.Files)
	}
	if per := float64(stats.Intentions) / float64(stats.Services); per < 4 || per > 6 {
		t.Errorf("%.1f intentions per service, want about 5", per)
	}
	if stats.Permissions == 0 || stats.Routers == 0 || stats.Splitters < stats.Services/20 {
		t.Errorf("too few L7 permissions, routers or splitters: %v", stats)
	}
	protocols := map[string]int{}
	for _, s := range snap.Services {
		protocols[s.Protocol]++
	}
	if protocols["http"] < stats.Services/2 || protocols["grpc"] == 0 || protocols["tcp"] == 0 {
		t.Errorf("protocols %v: want mostly http, some grpc and tcp", protocols)
	}
}

func TestGenerateOptions(t *testing.T) {
	if _, _, err := meshgen.Generate(meshgen.Options{}); err == nil {
		t.Error("0 services: no error")
	}
	files, stats, err := meshgen.Generate(meshgen.Options{Services: 3, Teams: 10})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Teams != 3 || len(files) != 4 {
		t.Errorf("3 services, 10 teams: got %d teams, %d files; want 3 teams (at least one service each), 4 files", stats.Teams, len(files))
	}
}

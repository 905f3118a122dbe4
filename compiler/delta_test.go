package compiler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/meshgen"
)

// TestSnapshotDeltaRoundTrip holds mesh.Diff and Delta.Apply (what servers replicate in place
// of whole snapshots) against the snapshots themselves: for consecutive compiled snapshots of
// random edit sequences, and between unrelated generated meshes (routers, splitters, resolvers,
// chains, everything changed), the delta sent as JSON and applied to the base as a follower
// decoded it gives a snapshot whose encoding is byte for byte the target's.
func TestSnapshotDeltaRoundTrip(t *testing.T) {
	var snaps []*mesh.Snapshot
	r := rand.New(rand.NewPCG(7, 7))
	m := newEditModel()
	for range 40 {
		m.edit(r)
		if s, _, err := CompileWithReport(context.Background(), m.files(), Options{}); err == nil {
			snaps = append(snaps, s)
		}
	}
	for seed := range uint64(3) {
		files, _ := generatedFiles(t, meshgen.Options{Services: 40 + int(seed)*10, Teams: 2, Seed: seed + 1})
		s, _, err := CompileWithReport(context.Background(), files, Options{})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	if len(snaps) < 20 {
		t.Fatalf("only %d of the edits compiled", len(snaps))
	}
	for i := 1; i < len(snaps); i++ {
		base, want := snaps[i-1], snaps[i]
		want.Commit = fmt.Sprintf("%040d", i)
		d := mesh.Diff(base, want)
		wire, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var got mesh.Delta
		if err := json.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		// The base as a follower holds it: decoded from what the leader sent.
		enc, err := base.Encode()
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := mesh.Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, err := want.Encode()
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string]*mesh.Snapshot{"decoded base": decoded, "compiled base": base} {
			s, err := got.Apply(b)
			if err != nil {
				t.Fatalf("step %d: %s: %v", i, name, err)
			}
			gotJSON, err := s.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Fatalf("step %d: %s: delta (%d changes) applied gives\n%.2000s\nwant\n%.2000s", i, name, d.Changes(), gotJSON, wantJSON)
			}
			if v, err := s.ComputeVersion(); err != nil || v != want.Version {
				t.Fatalf("step %d: %s: version %s (%v), want %s", i, name, v, err, want.Version)
			}
		}
		if _, err := got.Apply(want); err == nil && want.Version != base.Version {
			t.Fatalf("step %d: a delta applied to another snapshot than its base", i)
		}
	}
}

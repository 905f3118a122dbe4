package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// TestDeltaRoundTrip: a Delta sent as JSON and applied to its base gives the target's encoding
// byte for byte, through additions, changes and removals of intentions, services and positions,
// nil maps and lists against empty ones (they encode differently), and a delta of nothing; it
// is small when little changed, shares what did not change, and refuses another base.
func TestDeltaRoundTrip(t *testing.T) {
	seal := func(s *Snapshot) *Snapshot {
		t.Helper()
		if err := s.Seal(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := seal(newSnapshot(Deny, allow("web", "api"), deny("*", "db"), l7("web", "db", perm(Allow, &HTTPMatch{PathPrefix: "/x"}))))
	b := seal(newSnapshot(Allow, allow("web", "api"), l7("web", "db", perm(Deny, &HTTPMatch{PathPrefix: "/y"})), allow("cron", "api")))
	empty := seal(&Snapshot{Mesh: a.Mesh, Services: map[string]*Service{}})
	none := seal(&Snapshot{Mesh: a.Mesh})
	steps := []*Snapshot{a, b, empty, none, a, a, none, b}
	for i := 1; i < len(steps); i++ {
		base, want := steps[i-1], steps[i]
		wire, err := json.Marshal(Diff(base, want))
		if err != nil {
			t.Fatal(err)
		}
		var d Delta
		if err := json.Unmarshal(wire, &d); err != nil {
			t.Fatal(err)
		}
		got, err := d.Apply(base)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		g, _ := got.Encode()
		w, _ := want.Encode()
		if !bytes.Equal(g, w) {
			t.Fatalf("step %d: applied\n%s\nwant\n%s\ndelta %s", i, g, w, wire)
		}
		if base == want && d.Changes() != 0 {
			t.Errorf("step %d: a delta to the same snapshot has %d changes: %s", i, d.Changes(), wire)
		}
	}

	// One intention changed: the delta holds it and its position, and the rest is shared.
	c := seal(newSnapshot(Deny, allow("web", "api"), deny("*", "db"), l7("web", "db", perm(Deny, &HTTPMatch{PathPrefix: "/x"}))))
	d := Diff(a, c)
	if d.Changes() != 1 || d.Intentions == nil || len(d.Intentions.Set) != 1 || d.Services != nil || d.Mesh != nil {
		t.Errorf("one intention changed: delta %+v", d)
	}
	got, err := d.Apply(a)
	if err != nil {
		t.Fatal(err)
	}
	if got.Services["api"] != a.Services["api"] {
		t.Error("an unchanged service is not shared with the base")
	}
	if _, err := d.Apply(b); !errors.Is(err, ErrDeltaBase) {
		t.Errorf("applied to another base: %v", err)
	}
	var null Delta
	if err := json.Unmarshal([]byte(`{"base":"`+a.Version+`","services":{"set":{"api":null}}}`), &null); err != nil {
		t.Fatal(err)
	}
	if _, err := null.Apply(a); !errors.Is(err, ErrDeltaNil) {
		t.Errorf("a delta setting a service to null: %v", err)
	}
}

package mesh

import (
	"strings"
	"testing"
)

func TestWitnesses(t *testing.T) {
	for _, re := range []string{`/v[0-9]+/.*`, `/(a|b)/x?`, `[a-z]{3}`, `.*\.json`} {
		if len(witnesses(re)) == 0 {
			t.Errorf("no witness for %q", re)
		}
	}
}

// TestAllowsSome: whether some request is allowed comes from Authorize through the rules the
// evaluator applies, mesh default included.
func TestAllowsSome(t *testing.T) {
	snap := func(def Action, perms ...Permission) *Snapshot {
		s := &Snapshot{Mesh: Config{DefaultIntention: def}}
		s.Intentions = []*Intention{{Source: "web", Destination: "api", Precedence: PrecedenceExact, Permissions: perms}}
		return s
	}
	deny := func(m *HTTPMatch) Permission { return Permission{Action: Deny, HTTP: m} }
	allow := func(m *HTTPMatch) Permission { return Permission{Action: Allow, HTTP: m} }
	for _, c := range []struct {
		name      string
		s         *Snapshot
		allows    bool
		undecided string
	}{
		{"deny one path, default allow", snap(Allow, deny(&HTTPMatch{PathPrefix: "/admin/"})), true, ""},
		{"deny one path, default deny", snap(Deny, deny(&HTTPMatch{PathPrefix: "/admin/"})), false, ""},
		{"an allow shadowed by a deny of everything", snap(Deny, deny(nil), allow(&HTTPMatch{Path: "/x"})), false, ""},
		{"an allow shadowed by a wider deny", snap(Deny, deny(&HTTPMatch{PathPrefix: "/a"}), allow(&HTTPMatch{Path: "/a/b"})), false, ""},
		{"an allow partly shadowed", snap(Deny, deny(&HTTPMatch{PathPrefix: "/a/"}), allow(&HTTPMatch{PathPrefix: "/a"})), true, ""},
		{"an allow behind a header deny", snap(Deny, deny(&HTTPMatch{Header: []HeaderMatch{{Name: "x", Kind: MatchPresent}}}), allow(nil)), true, ""},
		{"a regex allow shadowed", snap(Deny, deny(&HTTPMatch{PathPrefix: "/"}), allow(&HTTPMatch{PathRegex: "/a.*"})), false, ""},
		{"a regex deny", snap(Deny, allow(&HTTPMatch{PathRegex: "/a.*"})), true, ""},
		{"a regex never shown to allow", snap(Deny, deny(&HTTPMatch{PathRegex: "/.*"}), allow(&HTTPMatch{PathPrefix: "/"})), false, "regex"},
	} {
		d := AllowsSome(c.s, "web", "api", 0)
		if d.Differs != c.allows || (c.undecided == "") != (d.Undecided == "") || !strings.Contains(d.Undecided, c.undecided) {
			t.Errorf("%s: AllowsSome = %+v; want allows %v, undecided %q", c.name, d, c.allows, c.undecided)
		}
		if d.Differs {
			q := d.Example
			if got := Authorize(c.s, q); !got.Allowed() {
				t.Errorf("%s: example %s is not allowed: %s", c.name, q.Describe(), got.Reason)
			}
		}
	}
}

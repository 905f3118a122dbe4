package review

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// headerRules returns the permissions [deny h1=a, allow h2=b, deny h3=x, ..., deny h7=x].
func headerRules() []mesh.Permission {
	rule := func(action mesh.Action, name, value string) mesh.Permission {
		return mesh.Permission{Action: action, HTTP: &mesh.HTTPMatch{Header: []mesh.HeaderMatch{{Name: name, Kind: mesh.MatchExact, Value: value}}}}
	}
	perms := []mesh.Permission{rule(mesh.Deny, "h1", "a"), rule(mesh.Allow, "h2", "b")}
	for i := 3; i <= 7; i++ {
		perms = append(perms, rule(mesh.Deny, fmt.Sprintf("h%d", i), "x"))
	}
	return perms
}

func twoServices(def mesh.Action, perms []mesh.Permission) *mesh.Snapshot {
	s := &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: def}, Services: map[string]*mesh.Service{
		"web": {Name: "web", Protocol: mesh.ProtocolHTTP},
		"api": {Name: "api", Protocol: mesh.ProtocolHTTP},
	}}
	setIntention(s, &mesh.Intention{Source: "web", Destination: "api", Precedence: mesh.PrecedenceExact, Permissions: perms})
	return s
}

// TestReviewSeesTwoHeaderChange is the reproducer of issue 10.8: with seven header conditions the
// probe product passed 4096 and the review fell back to varying one header at a time, so a
// change that needs h1 and h2 at once (h1=a, h2=b was denied by the first rule, is now allowed by
// the second) was reported as no change.
func TestReviewSeesTwoHeaderChange(t *testing.T) {
	base := twoServices(mesh.Deny, headerRules())
	head := twoServices(mesh.Deny, headerRules()[1:])
	q := mesh.Request{Source: "web", Destination: "api", Path: "/", Method: "GET", Headers: map[string]string{"h1": "a", "h2": "b"}}
	if mesh.Authorize(base, q).Verdict == mesh.Authorize(head, q).Verdict {
		t.Fatal("the reproducer does not change access")
	}
	r := Review(base, head)
	if len(r.Undecided) != 0 {
		t.Fatalf("undecided: %+v", r.Undecided[0])
	}
	if len(r.Access) != 1 || r.Access[0].Source != "web" || r.Access[0].Destination != "api" {
		t.Fatalf("access changes = %d (%s); want web → api", len(r.Access), r.Summary)
	}
	if ex := r.Access[0].Example; !strings.Contains(ex, "h1: a") || !strings.Contains(ex, "h2: b") {
		t.Errorf("example %q does not show h1: a and h2: b", ex)
	}
}

// TestDecideManyHeaders: for random rule lists over six headers (exact, prefix, suffix and
// present conditions, inverted or not), every change that a brute force over 4^6 header
// combinations finds is reported, every reported change comes with a request on which Authorize
// disagrees, and nothing is left undecided.
func TestDecideManyHeaders(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 60
	}
	names := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
	vals := []string{"", "a", "b", "ab"} // "" is absent
	var reqs []mesh.Request
	var rec func(i int, h map[string]string)
	rec = func(i int, h map[string]string) {
		if i == len(names) {
			c := map[string]string{}
			for k, v := range h {
				c[k] = v
			}
			reqs = append(reqs, mesh.Request{Source: "web", Destination: "api", Path: "/", Method: "GET", Headers: c})
			return
		}
		for _, v := range vals {
			if v != "" {
				h[names[i]] = v
			} else {
				delete(h, names[i])
			}
			rec(i+1, h)
		}
		delete(h, names[i])
	}
	rec(0, map[string]string{})
	kinds := []string{mesh.MatchExact, mesh.MatchPrefix, mesh.MatchSuffix, mesh.MatchPresent}
	randomPerms := func(r *rand.Rand) []mesh.Permission {
		var out []mesh.Permission
		for i := 0; i < 1+r.IntN(7); i++ {
			m := &mesh.HTTPMatch{}
			for j := 0; j < 1+r.IntN(2); j++ {
				h := mesh.HeaderMatch{Name: names[r.IntN(len(names))], Kind: kinds[r.IntN(len(kinds))], Invert: r.IntN(4) == 0}
				if h.Kind != mesh.MatchPresent {
					h.Value = []string{"a", "b", "ab"}[r.IntN(3)]
				}
				m.Header = append(m.Header, h)
			}
			out = append(out, mesh.Permission{Action: pickAction(r), HTTP: m})
		}
		return out
	}
	changes := 0
	for i := 0; i < n; i++ {
		r := rand.New(rand.NewPCG(uint64(i), 11))
		base := twoServices(pickAction(r), randomPerms(r))
		var head *mesh.Snapshot
		if r.IntN(2) == 0 {
			head = twoServices(base.Mesh.DefaultIntention, randomPerms(r))
		} else { // a small edit: drop one permission
			perms := append([]mesh.Permission(nil), base.Intentions[0].Permissions...)
			k := r.IntN(len(perms))
			head = twoServices(base.Mesh.DefaultIntention, append(perms[:k:k], perms[k+1:]...))
		}
		brute := false
		for _, q := range reqs {
			if mesh.Authorize(base, q).Verdict != mesh.Authorize(head, q).Verdict {
				brute = true
				break
			}
		}
		changed, undecided := Accesses(base, head)
		if len(undecided) > 0 {
			t.Fatalf("case %d: undecided: %s\nbase:\n%s\nhead:\n%s", i, undecided[0].Undecided, dump(base), dump(head))
		}
		if brute != (len(changed) > 0) && brute {
			t.Fatalf("case %d: a brute force finds a change, the review none\nbase:\n%s\nhead:\n%s", i, dump(base), dump(head))
		}
		if len(changed) > 0 {
			changes++
			if changed[0].Example == "" {
				t.Errorf("case %d: a change without an example request", i)
			}
		}
	}
	if changes == 0 || changes == n {
		t.Errorf("%d of %d cases change access: the generator does not exercise both outcomes", changes, n)
	}
}

// TestUndecidedWhenSearchTooLarge: when the search runs out of its budget, the pair is listed
// as undecided with the reason, never reported as unchanged, whether or not access changes.
func TestUndecidedWhenSearchTooLarge(t *testing.T) {
	defer func(n int) { maxStates = n }(maxStates)
	maxStates = 1
	hdr := func(name, v string) mesh.HeaderMatch {
		return mesh.HeaderMatch{Name: name, Kind: mesh.MatchExact, Value: v}
	}
	three := mesh.Permission{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Header: []mesh.HeaderMatch{hdr("h1", "a"), hdr("h2", "b"), hdr("h3", "c")}}}
	two := mesh.Permission{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Header: []mesh.HeaderMatch{hdr("h1", "a"), hdr("h2", "b")}}}
	for _, c := range []struct {
		name       string
		base, head []mesh.Permission
	}{
		{"equivalent", []mesh.Permission{three, two}, []mesh.Permission{two}},
		{"the reproducer", headerRules(), headerRules()[1:]},
	} {
		base, head := twoServices(mesh.Deny, c.base), twoServices(mesh.Deny, c.head)
		r := Review(base, head)
		if len(r.Access) != 0 || len(r.Undecided) != 1 {
			t.Fatalf("%s: %d changes, %d undecided; want 0 and 1", c.name, len(r.Access), len(r.Undecided))
		}
		if u := r.Undecided[0]; u.Source != "web" || u.Destination != "api" || !strings.Contains(u.Undecided, "deciding them needs more than 1 search states") {
			t.Errorf("%s: undecided %s → %s: %q", c.name, u.Source, u.Destination, u.Undecided)
		}
		if !strings.Contains(r.Summary, "1 pair UNDECIDED") {
			t.Errorf("%s: summary %q does not say UNDECIDED", c.name, r.Summary)
		}
		var md, js strings.Builder
		if err := r.Markdown(&md); err != nil {
			t.Fatal(err)
		}
		if err := r.JSON(&js); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(md.String(), "could not decide") || !strings.Contains(js.String(), `"undecided": "the rules combine`) {
			t.Errorf("%s: the reports do not show the undecided pair:\n%s\n%s", c.name, md.String(), js.String())
		}
	}
}

// TestReviewRegexesExact: regex conditions are decided, not sampled: an equivalent rewrite is
// no change, and a narrowing is a change shown by the one request it drops.
func TestReviewRegexesExact(t *testing.T) {
	rx := func(expr string) []mesh.Permission {
		return []mesh.Permission{{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{PathRegex: expr, Header: []mesh.HeaderMatch{{Name: "v", Kind: mesh.MatchRegex, Value: "[0-9]+"}}}}}
	}
	base := twoServices(mesh.Deny, rx("/a/.*"))
	r := Review(base, twoServices(mesh.Deny, rx("/a/(.*)|/a/")))
	if len(r.Access)+len(r.Undecided) != 0 {
		t.Errorf("an equivalent regex: %s", r.Summary)
	}
	r = Review(base, twoServices(mesh.Deny, rx("/a/.+")))
	if len(r.Undecided) != 0 || len(r.Access) != 1 {
		t.Fatalf("a narrowed regex: %s", r.Summary)
	}
	if ex := r.Access[0].Example; !strings.HasPrefix(ex, "GET /a/ with v: ") {
		t.Errorf("example %q; want the path /a/ with a numeric v", ex)
	}
}

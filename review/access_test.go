package review

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestAccessChangesProperty: for random small meshes and random edits, the pairs AccessChanges
// reports (groups expanded) are exactly the pairs for which Authorize gives a different verdict
// in base and head for some request of a brute-force request set, and no pair is reported twice.
func TestAccessChangesProperty(t *testing.T) {
	n := 400
	if testing.Short() {
		n = 100
	}
	reqs := bruteRequests()
	for i := 0; i < n; i++ {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		base := randomMesh(r)
		head := edit(r, base)
		want := map[[2]string]bool{}
		names := unionNames(base, head)
		for _, s := range names {
			for _, d := range names {
				for _, q := range reqs {
					q.Source, q.Destination = s, d
					if mesh.Authorize(base, q).Verdict != mesh.Authorize(head, q).Verdict {
						want[[2]string{s, d}] = true
						break
					}
				}
			}
		}
		got := map[[2]string]bool{}
		access := AccessChanges(base, head)
		for _, a := range access {
			count := 0
			a.Each(func(s, d string) {
				count++
				k := [2]string{s, d}
				if got[k] {
					t.Errorf("case %d: pair %s → %s reported twice", i, s, d)
				}
				got[k] = true
			})
			if count != a.Pairs {
				t.Errorf("case %d: %s → %s says %d pairs, stands for %d", i, a.Source, a.Destination, a.Pairs, count)
			}
		}
		if diff := pairDiff(want, got); diff != "" {
			t.Fatalf("case %d: %s\nbase:\n%s\nhead:\n%s", i, diff, dump(base), dump(head))
		}
	}
}

func pairDiff(want, got map[[2]string]bool) string {
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k[0]+"→"+k[1])
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k[0]+"→"+k[1])
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("missing %v, extra %v", missing, extra)
}

func unionNames(a, b *mesh.Snapshot) []string {
	m := map[string]bool{}
	for n := range a.Services {
		m[n] = true
	}
	for n := range b.Services {
		m[n] = true
	}
	return sortedSet(m)
}

// bruteRequests covers every combination of conditions randomMesh's rules can tell apart.
func bruteRequests() []mesh.Request {
	var out []mesh.Request
	for _, p := range []string{"/", "/a", "/a/", "/a/b", "/a/c", "/ab", "/b", "/b/c", "/zz"} {
		for _, m := range []string{"GET", "POST", "PUT"} {
			for _, h := range []string{"", "1", "12", "2"} {
				for _, k := range []string{"", "v"} {
					q := mesh.Request{Path: p, Method: m, Headers: map[string]string{}}
					if h != "" {
						q.Headers["x-h"] = h
					}
					if k != "" {
						q.Headers["x-k"] = k
					}
					out = append(out, q)
				}
			}
		}
	}
	return out
}

func randomMesh(r *rand.Rand) *mesh.Snapshot {
	s := &mesh.Snapshot{
		Mesh:     mesh.Config{DefaultIntention: pickAction(r)},
		Services: map[string]*mesh.Service{},
	}
	n := 2 + r.IntN(4)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%d", i)
		s.Services[name] = &mesh.Service{Name: name, Protocol: mesh.ProtocolHTTP}
	}
	keys := r.IntN(8)
	for i := 0; i < keys; i++ {
		setIntention(s, randomIntention(r, s))
	}
	return s
}

func pickAction(r *rand.Rand) mesh.Action {
	if r.IntN(2) == 0 {
		return mesh.Allow
	}
	return mesh.Deny
}

func pickName(r *rand.Rand, s *mesh.Snapshot) string {
	if r.IntN(4) == 0 {
		return mesh.Wildcard
	}
	names := s.ServiceNames()
	return names[r.IntN(len(names))]
}

func randomIntention(r *rand.Rand, s *mesh.Snapshot) *mesh.Intention {
	src, dst := pickName(r, s), pickName(r, s)
	in := &mesh.Intention{Source: src, Destination: dst, Precedence: mesh.Precedence(src, dst)}
	if dst == mesh.Wildcard || r.IntN(2) == 0 {
		in.Action = pickAction(r)
		return in
	}
	for j := 0; j <= r.IntN(3); j++ {
		in.Permissions = append(in.Permissions, mesh.Permission{Action: pickAction(r), HTTP: randomMatch(r)})
	}
	return in
}

func randomMatch(r *rand.Rand) *mesh.HTTPMatch {
	if r.IntN(8) == 0 {
		return nil
	}
	m := &mesh.HTTPMatch{}
	switch r.IntN(4) {
	case 0:
		m.Path = []string{"/a", "/a/b", "/b"}[r.IntN(3)]
	case 1, 2:
		m.PathPrefix = []string{"/", "/a", "/a/", "/b"}[r.IntN(4)]
	}
	switch r.IntN(4) {
	case 0:
		m.Methods = []string{"GET"}
	case 1:
		m.Methods = []string{"GET", "POST"}
	}
	if r.IntN(3) == 0 {
		h := mesh.HeaderMatch{Name: "x-h", Invert: r.IntN(3) == 0}
		switch r.IntN(3) {
		case 0:
			h.Kind, h.Value = mesh.MatchExact, "1"
		case 1:
			h.Kind, h.Value = mesh.MatchPrefix, "1"
		default:
			h.Kind = mesh.MatchPresent
		}
		m.Header = append(m.Header, h)
	}
	if r.IntN(5) == 0 {
		m.Header = append(m.Header, mesh.HeaderMatch{Name: "x-k", Kind: mesh.MatchPresent, Invert: r.IntN(2) == 0})
	}
	return m
}

// setIntention adds or replaces the intention at in's key.
func setIntention(s *mesh.Snapshot, in *mesh.Intention) {
	out := s.Intentions[:0:0]
	for _, x := range s.Intentions {
		if x.Source != in.Source || x.Destination != in.Destination {
			out = append(out, x)
		}
	}
	s.Intentions = append(out, in)
	mesh.SortIntentions(s.Intentions)
}

// edit returns a copy of s with one to three random edits.
func edit(r *rand.Rand, s *mesh.Snapshot) *mesh.Snapshot {
	h := &mesh.Snapshot{Mesh: s.Mesh, Services: map[string]*mesh.Service{}}
	for n, svc := range s.Services {
		h.Services[n] = svc
	}
	h.Intentions = append(h.Intentions, s.Intentions...)
	for e := 0; e <= r.IntN(3); e++ {
		switch r.IntN(7) {
		case 0:
			if h.Mesh.DefaultIntention == mesh.Allow {
				h.Mesh.DefaultIntention = mesh.Deny
			} else {
				h.Mesh.DefaultIntention = mesh.Allow
			}
		case 1:
			if len(h.Intentions) > 0 {
				i := r.IntN(len(h.Intentions))
				h.Intentions = append(h.Intentions[:i:i], h.Intentions[i+1:]...)
			}
		case 2:
			name := fmt.Sprintf("s%d", len(h.Services)+r.IntN(2))
			h.Services[name] = &mesh.Service{Name: name, Protocol: mesh.ProtocolHTTP}
		case 3:
			// Change one permission's action or match, keeping the key.
			if len(h.Intentions) > 0 {
				old := h.Intentions[r.IntN(len(h.Intentions))]
				in := *old
				if len(in.Permissions) > 0 {
					in.Permissions = append([]mesh.Permission(nil), in.Permissions...)
					j := r.IntN(len(in.Permissions))
					if r.IntN(2) == 0 {
						in.Permissions[j].HTTP = randomMatch(r)
					} else {
						in.Permissions[j].Action = pickAction(r)
					}
				} else {
					in.Action = pickAction(r)
				}
				setIntention(h, &in)
			}
		default:
			setIntention(h, randomIntention(r, h))
		}
	}
	return h
}

func dump(s *mesh.Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  default %s, services %v\n", s.Mesh.DefaultIntention, s.ServiceNames())
	for _, in := range s.Intentions {
		fmt.Fprintf(&b, "  %s → %s: %s\n", in.Source, in.Destination, describeRule(in, s.Mesh.DefaultIntention))
	}
	return b.String()
}

func TestDescribeRule(t *testing.T) {
	in := &mesh.Intention{Permissions: []mesh.Permission{{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{PathPrefix: "/admin/", Methods: []string{"GET"}}}}}
	if got, want := describeRule(in, mesh.Deny), "only GET /admin/*"; got != want {
		t.Errorf("describeRule = %q, want %q", got, want)
	}
	in.Permissions = append(in.Permissions, mesh.Permission{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{Path: "/x", Header: []mesh.HeaderMatch{{Name: "x-a", Kind: mesh.MatchPresent}}}})
	if got, want := describeRule(in, mesh.Deny), `allow GET /admin/*; deny /x with header x-a present; otherwise deny`; got != want {
		t.Errorf("describeRule = %q, want %q", got, want)
	}
}

// TestLargeGroup: a group lists at most MaxListed names but counts and enumerates every pair.
func TestLargeGroup(t *testing.T) {
	base := &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: mesh.Deny}, Services: map[string]*mesh.Service{}}
	const n = MaxListed + 200
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%04d", i)
		base.Services[name] = &mesh.Service{Name: name, Owners: []string{"@team" + fmt.Sprint(i%3)}}
	}
	head := &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: mesh.Allow}, Services: base.Services}
	setIntention(head, &mesh.Intention{Source: "s0001", Destination: "s0002", Precedence: 9, Action: mesh.Deny})
	r := Review(base, head)
	if len(r.Access) != 1 {
		t.Fatalf("got %d access changes, want 1 group", len(r.Access))
	}
	a := r.Access[0]
	if !a.Truncated || len(a.Sources) != MaxListed || len(a.Destinations) != MaxListed {
		t.Errorf("group lists %d sources, %d destinations (truncated %v); want %d each, truncated", len(a.Sources), len(a.Destinations), a.Truncated, MaxListed)
	}
	count := 0
	a.Each(func(s, d string) { count++ })
	if want := n*n - 1; a.Pairs != want || count != want {
		t.Errorf("group says %d pairs, enumerates %d; want %d", a.Pairs, count, want)
	}
	if len(r.Owners) != 3 || len(r.Owners[0].Services)+len(r.Owners[1].Services)+len(r.Owners[2].Services) != n {
		t.Errorf("owners = %d teams; want 3 covering all %d destinations", len(r.Owners), n)
	}
}

func TestSameService(t *testing.T) {
	a := &mesh.Service{Name: "a", Protocol: "http", Port: 1, Owners: []string{"o"}, Meta: map[string]string{"k": "v"},
		Upstreams:   map[string]*mesh.Upstream{"b": {Service: "b", LocalPort: 2}},
		Endpoints:   []mesh.Endpoint{{Address: "x", Port: 1, Datacenter: "dc1", Meta: map[string]string{"v": "1"}}},
		HealthCheck: &mesh.HealthCheck{HTTP: "/h"}}
	clone := func() *mesh.Service {
		c := *a
		c.Owners = append([]string(nil), a.Owners...)
		c.Meta = map[string]string{"k": "v"}
		c.Upstreams = map[string]*mesh.Upstream{"b": {Service: "b", LocalPort: 2}}
		c.Endpoints = []mesh.Endpoint{{Address: "x", Port: 1, Datacenter: "dc1", Meta: map[string]string{"v": "1"}}}
		hc := *a.HealthCheck
		c.HealthCheck = &hc
		return &c
	}
	if !sameService(a, clone()) {
		t.Error("a clone differs")
	}
	for i, edit := range []func(*mesh.Service){
		func(s *mesh.Service) { s.Port = 2 },
		func(s *mesh.Service) { s.Owners = nil },
		func(s *mesh.Service) { s.Meta["k"] = "w" },
		func(s *mesh.Service) { s.Upstreams["b"].LocalPort = 3 },
		func(s *mesh.Service) { s.Endpoints[0].Meta = nil },
		func(s *mesh.Service) { s.HealthCheck.HTTP = "/x" },
		func(s *mesh.Service) { s.HealthCheck = nil },
	} {
		c := clone()
		edit(c)
		if sameService(a, c) || reflect.DeepEqual(a, c) {
			t.Errorf("edit %d: not seen", i)
		}
	}
}

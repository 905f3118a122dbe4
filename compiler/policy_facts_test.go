package compiler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/meshgen"
)

// The differential test of the facts policies read: intentions[D][S].allows and access[D][S]
// must say what mesh.Authorize says, request by request, over generated meshes.

// newcomer is a service name that no generated mesh uses: a source or destination that no
// intention names.
const newcomer = "newcomer"

// pairVerdicts runs Authorize on every request of reqs for every pair of names (the mesh's services
// and newcomer) and returns, per pair, the deciding intention (nil for the mesh default) and
// whether some request is allowed.
type pairFacts struct {
	decidedBy *mesh.Intention
	allows    bool
}

func pairVerdicts(s *mesh.Snapshot, reqs []mesh.Request) map[[2]string]pairFacts {
	names := append(s.ServiceNames(), newcomer)
	out := map[[2]string]pairFacts{}
	for _, src := range names {
		for _, dst := range names {
			var f pairFacts
			for i, q := range reqs {
				q.Source, q.Destination = src, dst
				d := mesh.Authorize(s, q)
				if i == 0 {
					f.decidedBy = d.Intention
				} else if d.Intention != f.decidedBy {
					panic("the deciding intention depends on the request")
				}
				f.allows = f.allows || d.Allowed()
			}
			out[[2]string{src, dst}] = f
		}
	}
	return out
}

// checkFacts compares the policy view of s with Authorize over reqs. With exact set, reqs
// covers every behaviour of the mesh's rules and the facts must equal the brute force; without,
// only an allowed request must be seen (the facts may know of more).
func checkFacts(t *testing.T, name string, s *mesh.Snapshot, reqs []mesh.Request, exact bool) {
	t.Helper()
	v := policyView(s)
	brute := pairVerdicts(s, reqs)
	agree := func(what string, fact, want bool) {
		t.Helper()
		if fact != want && (exact || want) {
			t.Errorf("%s: %s: the policy fact says allows=%v, Authorize over %d requests %v\n%s", name, what, fact, len(reqs), want, dumpIntentions(s))
		}
	}
	// intentions[D][S].allows: some pair the intention decides is allowed some request.
	decides := map[*mesh.Intention]bool{}
	for _, f := range brute {
		if f.decidedBy != nil {
			decides[f.decidedBy] = decides[f.decidedBy] || f.allows
		}
	}
	for _, in := range s.Intentions {
		agree(fmt.Sprintf("intention %s → %s", in.Source, in.Destination), v.Intentions[in.Destination][in.Source].Allows, decides[in])
	}
	// access[D][S], or access[D]["*"] for a source without an entry of its own.
	for _, dst := range s.ServiceNames() {
		for _, src := range append(s.ServiceNames(), newcomer) {
			if s.Intention(src, dst) != nil {
				continue
			}
			a, ok := v.Access[dst][src]
			if !ok {
				a = v.Access[dst][mesh.Wildcard]
			}
			f := brute[[2]string{src, dst}]
			what := fmt.Sprintf("access %s → %s", src, dst)
			agree(what, a.Allows, f.allows)
			want := ""
			if f.decidedBy != nil {
				want = mesh.PathIntention(f.decidedBy.Destination, f.decidedBy.Source)
			}
			got := ""
			if a.DecidedBy != nil {
				got = a.DecidedBy.Path
			}
			if got != want {
				t.Errorf("%s: %s: decided by %q, Authorize says %q\n%s", name, what, got, want, dumpIntentions(s))
			}
		}
	}
}

func dumpIntentions(s *mesh.Snapshot) string {
	out := fmt.Sprintf("  default %s\n", s.Mesh.DefaultIntention)
	for _, in := range s.Intentions {
		out += fmt.Sprintf("  %s → %s: %s", in.Source, in.Destination, in.Action)
		for _, p := range in.Permissions {
			out += fmt.Sprintf(" [%s %s]", p.Action, p.HTTP.Describe())
		}
		out += "\n"
	}
	return out
}

// factRequests covers every behaviour of the rules randomFactMesh writes.
func factRequests() []mesh.Request {
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

// randomFactMesh returns a small mesh with intentions at every precedence, L7 permissions that
// shadow each other, and either default.
func randomFactMesh(r *rand.Rand) *mesh.Snapshot {
	action := func() mesh.Action {
		if r.IntN(2) == 0 {
			return mesh.Allow
		}
		return mesh.Deny
	}
	s := &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: action()}, Services: map[string]*mesh.Service{}}
	names := []string{}
	for i := 0; i < 2+r.IntN(4); i++ {
		n := fmt.Sprintf("s%d", i)
		names = append(names, n)
		s.Services[n] = &mesh.Service{Name: n, Protocol: mesh.ProtocolHTTP}
	}
	pick := func() string {
		if r.IntN(3) == 0 {
			return mesh.Wildcard
		}
		return names[r.IntN(len(names))]
	}
	seen := map[[2]string]bool{}
	for i := 0; i < r.IntN(9); i++ {
		src, dst := pick(), pick()
		if seen[[2]string{src, dst}] {
			continue
		}
		seen[[2]string{src, dst}] = true
		in := &mesh.Intention{Source: src, Destination: dst, Precedence: mesh.Precedence(src, dst)}
		if dst == mesh.Wildcard || r.IntN(3) == 0 {
			in.Action = action()
		} else {
			for j := 0; j <= r.IntN(3); j++ {
				in.Permissions = append(in.Permissions, mesh.Permission{Action: action(), HTTP: randomFactMatch(r)})
			}
		}
		s.Intentions = append(s.Intentions, in)
	}
	mesh.SortIntentions(s.Intentions)
	return s
}

func randomFactMatch(r *rand.Rand) *mesh.HTTPMatch {
	if r.IntN(6) == 0 {
		return nil
	}
	m := &mesh.HTTPMatch{}
	switch r.IntN(4) {
	case 0:
		m.Path = []string{"/a", "/a/b", "/b"}[r.IntN(3)]
	case 1, 2:
		m.PathPrefix = []string{"/", "/a", "/a/", "/b"}[r.IntN(4)]
	}
	if r.IntN(3) == 0 {
		m.Methods = []string{"GET", "POST"}[:1+r.IntN(2)]
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

// TestPolicyFactsAreAuthorize: over random meshes, every fact the policies read equals what
// Authorize decides on a request set that covers every behaviour of their rules.
func TestPolicyFactsAreAuthorize(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 80
	}
	reqs := factRequests()
	for i := 0; i < n; i++ {
		s := randomFactMesh(rand.New(rand.NewPCG(uint64(i), 16)))
		checkFacts(t, fmt.Sprintf("case %d", i), s, reqs, true)
		if t.Failed() {
			return
		}
	}
}

// TestPolicyFactsOnGeneratedMeshes: the same on meshes of a realistic shape (internal/meshgen),
// compiled from CUE; every allowed request Authorize finds is known to the facts, and every
// deciding intention is the one Authorize names.
func TestPolicyFactsOnGeneratedMeshes(t *testing.T) {
	reqs := []mesh.Request{{Path: "/", Method: "GET"}}
	for _, p := range []string{"/", "/api/", "/admin/", "/v2/x", "/healthz"} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			reqs = append(reqs, mesh.Request{Path: p, Method: m}, mesh.Request{Path: p, Method: m, Headers: map[string]string{"x-canary": "1"}})
		}
	}
	for seed := uint64(1); seed <= 2; seed++ {
		gen, _, err := meshgen.Generate(meshgen.Options{Services: 40, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var files []File
		for _, f := range gen {
			files = append(files, File{Name: f.Name, Data: f.Data})
		}
		s, err := Compile(context.Background(), files)
		if err != nil {
			t.Fatal(err)
		}
		checkFacts(t, fmt.Sprintf("meshgen seed %d", seed), s, reqs, false)
	}
}

// TestAnalysisAllowsFromAuthorize: the analysis asks the evaluator whether an upstream is
// allowed some request: a permission that allows but is shadowed by an earlier deny of every
// request allows nothing, and a deny of one path under an allowing default leaves the rest.
func TestAnalysisAllowsFromAuthorize(t *testing.T) {
	mk := func(def mesh.Action, perms ...mesh.Permission) *mesh.Snapshot {
		s := &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: def}, Services: map[string]*mesh.Service{
			"web": {Name: "web", Protocol: mesh.ProtocolHTTP, Upstreams: map[string]*mesh.Upstream{"api": {Service: "api", LocalPort: 9001}}},
			"api": {Name: "api", Protocol: mesh.ProtocolHTTP},
		}}
		s.Intentions = []*mesh.Intention{{Source: "web", Destination: "api", Precedence: mesh.PrecedenceExact, Permissions: perms}}
		return s
	}
	denied := func(s *mesh.Snapshot) bool {
		for _, e := range analyze(s) {
			if strings.Contains(e.Msg, "upstream api: every request is denied") {
				return true
			}
		}
		return false
	}
	shadowed := mk(mesh.Deny, mesh.Permission{Action: mesh.Deny}, mesh.Permission{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Path: "/x"}})
	if !denied(shadowed) {
		t.Error("an allow shadowed by a deny of every request: no warning that every request is denied")
	}
	rest := mk(mesh.Allow, mesh.Permission{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: "/"}}, mesh.Permission{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Methods: []string{"GET"}}})
	if !denied(rest) {
		t.Error("every path denied before the allow: no warning")
	}
	open := mk(mesh.Allow, mesh.Permission{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: "/admin/"}})
	if denied(open) {
		t.Error("a deny of /admin/ under an allowing default: warned that every request is denied")
	}
}

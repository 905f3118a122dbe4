package mesh

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// randomIntentionMesh builds a mesh of n services with random intentions on both sides of "*",
// some decided by an action and some by L7 permissions that allow or deny only some requests.
func randomIntentionMesh(r *rand.Rand, n int) *Snapshot {
	names := []string{Wildcard}
	for i := range n {
		names = append(names, fmt.Sprintf("s%d", i))
	}
	def := Deny
	if r.IntN(3) == 0 {
		def = Allow
	}
	seen := map[[2]string]bool{}
	var ins []*Intention
	for range r.IntN(3 * n) {
		src, dst := names[r.IntN(len(names))], names[r.IntN(len(names))]
		if seen[[2]string{src, dst}] {
			continue
		}
		seen[[2]string{src, dst}] = true
		switch {
		case dst != Wildcard && r.IntN(3) == 0:
			a := []Action{Allow, Deny}[r.IntN(2)]
			m := &HTTPMatch{PathPrefix: "/admin/", Methods: []string{"GET"}}
			if r.IntN(2) == 0 {
				m = &HTTPMatch{Header: []HeaderMatch{{Name: "x-team", Kind: MatchExact, Value: "a"}}}
			}
			ins = append(ins, l7(src, dst, perm(a, m)))
		case r.IntN(2) == 0:
			ins = append(ins, allow(src, dst))
		default:
			ins = append(ins, deny(src, dst))
		}
	}
	s := newSnapshot(def, ins...)
	for _, name := range names[1:] {
		if s.Services[name] == nil {
			s.Services[name] = &Service{Name: name, Protocol: ProtocolHTTP, Port: 8080}
		}
	}
	return s
}

// TestReachableDifferential: Reachable, which decides each group of destinations sharing a
// deciding intention once, finds exactly the destinations to which AllowsSome (asked pair by
// pair) says Authorize allows some request; and every destination to which one of a few
// sampled requests is allowed by Authorize itself is among them.
func TestReachableDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 1))
	requests := []Request{
		{Method: "GET", Path: "/"}, {Method: "GET", Path: "/admin/x"}, {Method: "POST", Path: "/admin/x"},
		{Method: "GET", Path: "/", Headers: map[string]string{"x-team": "a"}},
	}
	for iter := range 200 {
		s := randomIntentionMesh(r, 2+r.IntN(6))
		for _, src := range s.ServiceNames() {
			var want []string
			for _, dst := range s.ServiceNames() {
				d := AllowsSome(s, src, dst, 0)
				if d.Differs || d.Undecided != "" {
					want = append(want, dst)
				}
				for _, q := range requests {
					q.Source, q.Destination = src, dst
					if Authorize(s, q).Allowed() && !(d.Differs || d.Undecided != "") {
						t.Fatalf("mesh %d: Authorize allows %+v, AllowsSome says no", iter, q)
					}
				}
			}
			got := Reachable(s, src)
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("mesh %d: Reachable(%s) = %v, want %v; intentions %v", iter, src, got, want, s.Intentions)
			}
		}
	}
}

// TestUpstreamsDifferential: Upstreams of transparent services (shared lists and Upstreams
// where a service declares none) are the declared upstreams, each with its port, and one
// Upstream (port 0) per other service Reachable finds, sorted; for random meshes, with and
// without declared upstreams.
func TestUpstreamsDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for iter := range 200 {
		s := randomIntentionMesh(r, 2+r.IntN(6))
		names := s.ServiceNames()
		for _, n := range names {
			s.Services[n].Mode = ModeTransparent
			if r.IntN(3) == 0 {
				u := names[r.IntN(len(names))]
				s.Services[n].Upstreams = map[string]*Upstream{u: {Service: u, LocalPort: 9000 + r.IntN(100)}}
			}
		}
		for _, src := range names {
			want := map[string]Upstream{}
			for _, d := range Reachable(s, src) {
				want[d] = Upstream{Service: d}
			}
			for _, u := range s.Services[src].Upstreams {
				want[u.Service] = *u
			}
			got := s.Upstreams(src)
			if len(got) != len(want) || !slices.IsSortedFunc(got, func(a, b *Upstream) int { return strings.Compare(a.Service, b.Service) }) {
				t.Fatalf("mesh %d: %s: upstreams %v, want %v", iter, src, got, want)
			}
			for _, u := range got {
				if *u != want[u.Service] {
					t.Fatalf("mesh %d: %s: upstream %+v, want %+v", iter, src, *u, want[u.Service])
				}
			}
		}
	}
}

// TestUpstreamsTransparent: a transparent service's upstreams are its declared ones, with
// their ports, and every other reachable service; a direct one's only its declared ones.
func TestUpstreamsTransparent(t *testing.T) {
	build := func(mode string) *Snapshot { // a snapshot is immutable once used: one per mode
		s := newSnapshot(Deny, allow("web", "api"), allow("web", "db"), allow("*", "auth"))
		s.Services["web"].Upstreams = map[string]*Upstream{"db": {Service: "db", LocalPort: 5432}, "cache": {Service: "cache", LocalPort: 6379}}
		s.Services["cache"] = &Service{Name: "cache", Protocol: ProtocolTCP, Port: 6379}
		s.Services["web"].Mode = mode
		return s
	}
	s := build("")
	describe := func(ups []*Upstream) []string {
		var out []string
		for _, u := range ups {
			out = append(out, fmt.Sprintf("%s:%d", u.Service, u.LocalPort))
		}
		return out
	}
	if got, want := describe(s.Upstreams("web")), []string{"cache:6379", "db:5432"}; !slices.Equal(got, want) {
		t.Errorf("direct: %v, want %v", got, want)
	}
	s = build(ModeTransparent)
	if got, want := describe(s.Upstreams("web")), []string{"api:0", "auth:0", "cache:6379", "db:5432"}; !slices.Equal(got, want) {
		t.Errorf("transparent: %v, want %v", got, want)
	}
}

func TestAssignVirtualIPs(t *testing.T) {
	var names []string
	for i := range 3000 {
		names = append(names, fmt.Sprintf("svc-%d", i))
	}
	all := AssignVirtualIPs(names)
	seen := map[string]bool{}
	for _, n := range names {
		a, err := netip.ParseAddr(all[n])
		if err != nil || !VirtualIPPrefix.Contains(a) || seen[all[n]] || a == VirtualIPPrefix.Addr() {
			t.Fatalf("%s: %q is not a distinct address of %s", n, all[n], VirtualIPPrefix)
		}
		seen[all[n]] = true
	}
	// Each service's address is its own: the same in a mesh of any other services.
	some := AssignVirtualIPs(names[1000:1010])
	for n, ip := range some {
		if all[n] != ip {
			t.Errorf("%s: %s alone, %s among 3000", n, ip, all[n])
		}
	}
	// A collision: the later name takes its next address, the earlier keeps its own.
	if a, b := virtualIP("x", 0), virtualIP("x", 1); a == b {
		t.Fatalf("a name's candidate addresses repeat: %s", a)
	}
}

// TestWithServicesKeepsReach: a copy with other endpoints (the live catalog's) keeps the
// virtual IPs and what each service reaches.
func TestWithServicesKeepsReach(t *testing.T) {
	s := newSnapshot(Deny, allow("web", "api"))
	s.Services["web"].Mode = ModeTransparent
	s.VirtualIPs = AssignVirtualIPs(s.ServiceNames())
	want := Reachable(s, "web")
	svcs := map[string]*Service{}
	for n, svc := range s.Services {
		cp := *svc
		cp.Endpoints = []Endpoint{{Address: "10.0.0.9", Port: 1}}
		svcs[n] = &cp
	}
	c := s.WithServices(svcs)
	if !slices.Equal(Reachable(c, "web"), want) || len(c.VirtualIPs) != 2 || c.VirtualIPs["api"] != s.VirtualIPs["api"] {
		t.Fatalf("copy: reach %v (want %v), virtual IPs %v", Reachable(c, "web"), want, c.VirtualIPs)
	}
	if ups := c.Upstreams("web"); len(ups) != 1 || ups[0].Service != "api" {
		t.Fatalf("copy: upstreams %v", ups)
	}
}

// BenchmarkReachableDense asks what every service of the dense transparent mesh of issue 13
// ("*" → "*" allowed, every service transparent) reaches, on a new snapshot each time, as xds
// does after every commit: all sources share one list instead of deciding services² pairs.
func BenchmarkReachableDense(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				s := &Snapshot{Mesh: Config{DefaultIntention: Deny}, Services: map[string]*Service{}}
				for i := range n {
					name := fmt.Sprintf("svc-%05d", i)
					s.Services[name] = &Service{Name: name, Protocol: ProtocolHTTP, Mode: ModeTransparent}
				}
				s.Intentions = []*Intention{{Source: Wildcard, Destination: Wildcard, Precedence: PrecedenceWildcardBoth, Action: Allow}}
				for _, name := range s.ServiceNames() {
					if got := Reachable(s, name); len(got) != n {
						b.Fatalf("%s reaches %d services, want %d", name, len(got), n)
					}
				}
			}
		})
	}
}

// BenchmarkUpstreamsDense is BenchmarkReachableDense for Upstreams, which xds asks for each
// proxied service: every service of the dense mesh shares one list.
func BenchmarkUpstreamsDense(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				s := &Snapshot{Mesh: Config{DefaultIntention: Deny}, Services: map[string]*Service{}}
				for i := range n {
					name := fmt.Sprintf("svc-%05d", i)
					s.Services[name] = &Service{Name: name, Protocol: ProtocolHTTP, Mode: ModeTransparent}
				}
				s.Intentions = []*Intention{{Source: Wildcard, Destination: Wildcard, Precedence: PrecedenceWildcardBoth, Action: Allow}}
				for _, name := range s.ServiceNames() {
					if got := s.Upstreams(name); len(got) != n {
						b.Fatalf("%s has %d upstreams, want %d", name, len(got), n)
					}
				}
			}
		})
	}
}

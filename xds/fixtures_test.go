package xds

import (
	"sort"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
)

// Test snapshots built directly in Go (the compiler has its own tests; these exercise rendering
// on shapes the repo example may not have).

const testTrustDomain = "test.mesh"

func newSnap(def mesh.Action) *mesh.Snapshot {
	return &mesh.Snapshot{
		Mesh: mesh.Config{
			Name: "test", TrustDomain: testTrustDomain, Datacenter: "dc1",
			Datacenters: []string{"dc1", "dc2"}, DefaultIntention: def,
			TLS: mesh.TLS{MinVersion: "TLSv1_2"},
		},
		Services: map[string]*mesh.Service{},
		Chains:   map[string]*mesh.Chain{},
	}
}

func addService(s *mesh.Snapshot, name, protocol string, port int, eps ...mesh.Endpoint) *mesh.Service {
	svc := &mesh.Service{Name: name, Protocol: protocol, Port: port, Endpoints: eps}
	s.Services[name] = svc
	if s.Chains[name] == nil {
		setChain(s, name, nil, []mesh.ChainRoute{{Splits: []mesh.TargetWeight{{Target: mesh.TargetID("", name, "dc1"), Weight: mesh.TotalWeight}}}})
	}
	return svc
}

func addUpstream(s *mesh.Snapshot, from, to string, localPort int) {
	svc := s.Services[from]
	if svc.Upstreams == nil {
		svc.Upstreams = map[string]*mesh.Upstream{}
	}
	svc.Upstreams[to] = &mesh.Upstream{Service: to, LocalPort: localPort}
}

func ep(addr string, port int, dc string, meta ...string) mesh.Endpoint {
	e := mesh.Endpoint{Address: addr, Port: port, Datacenter: dc}
	if len(meta) > 0 {
		e.Meta = map[string]string{}
		for i := 0; i+1 < len(meta); i += 2 {
			e.Meta[meta[i]] = meta[i+1]
		}
	}
	return e
}

// setChain sets the chain of service with the given subsets (name → version filter) and routes.
// Every target the routes name is created; failover maps a target ID to its failover IDs.
func setChain(s *mesh.Snapshot, service string, subsets map[string]string, routes []mesh.ChainRoute, failover ...map[string][]string) {
	protocol := mesh.ProtocolTCP
	if svc := s.Services[service]; svc != nil {
		protocol = svc.Protocol
	}
	ch := &mesh.Chain{Service: service, Protocol: protocol, Routes: routes, Targets: map[string]*mesh.Target{}}
	mk := func(id string) {
		if ch.Targets[id] != nil {
			return
		}
		// id is subset.service.dc or service.dc
		parts := splitID(id)
		t := &mesh.Target{ID: id, Service: parts[1], Subset: parts[0], Datacenter: parts[2],
			SNI:            mesh.SNI(parts[0], parts[1], parts[2], s.Mesh.TrustDomain),
			ConnectTimeout: mesh.Duration(5 * time.Second), LoadBalancer: mesh.LBRoundRobin}
		if parts[0] != "" {
			t.Filter = map[string]string{"version": subsets[parts[0]]}
		}
		ch.Targets[id] = t
	}
	for _, r := range routes {
		for _, sp := range r.Splits {
			mk(sp.Target)
		}
	}
	for _, f := range failover {
		for id, fs := range f {
			mk(id)
			for _, x := range fs {
				mk(x)
			}
			ch.Targets[id].Failover = fs
		}
	}
	s.Chains[service] = ch
}

func splitID(id string) [3]string {
	var parts []string
	start := 0
	for i := 0; i < len(id); i++ {
		if id[i] == '.' {
			parts = append(parts, id[start:i])
			start = i + 1
		}
	}
	parts = append(parts, id[start:])
	if len(parts) == 2 {
		return [3]string{"", parts[0], parts[1]}
	}
	return [3]string{parts[0], parts[1], parts[2]}
}

func allow(s *mesh.Snapshot, src, dst string) *mesh.Intention {
	return addIntention(s, &mesh.Intention{Source: src, Destination: dst, Action: mesh.Allow})
}

func deny(s *mesh.Snapshot, src, dst string) *mesh.Intention {
	return addIntention(s, &mesh.Intention{Source: src, Destination: dst, Action: mesh.Deny})
}

func addIntention(s *mesh.Snapshot, in *mesh.Intention) *mesh.Intention {
	in.Precedence = mesh.Precedence(in.Source, in.Destination)
	for i, x := range s.Intentions {
		if x.Source == in.Source && x.Destination == in.Destination {
			s.Intentions[i] = in
			mesh.SortIntentions(s.Intentions)
			return in
		}
	}
	s.Intentions = append(s.Intentions, in)
	mesh.SortIntentions(s.Intentions)
	return in
}

func seal(t testing.TB, s *mesh.Snapshot) *mesh.Snapshot {
	t.Helper()
	for _, svc := range s.Services {
		sort.Slice(svc.Endpoints, func(i, j int) bool {
			a, b := svc.Endpoints[i], svc.Endpoints[j]
			if a.Address != b.Address {
				return a.Address < b.Address
			}
			return a.Port < b.Port
		})
	}
	// Round-trip through the canonical encoding: a fresh Snapshot (no stale intention index)
	// exactly as another server would decode it.
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := mesh.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// greeterMesh is the end-to-end mesh: a gRPC destination "greeter" with subsets v1 and v2 on
// the given ports, a header route (x-canary: 1 → v2), a 90/10 split, and callers:
// web (allowed), admin (L7: only /test.Greeter/Hello), batch (no intention: denied by default).
func greeterMesh(v1Port, v2Port int) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	addService(s, "greeter", mesh.ProtocolGRPC, 8080,
		ep("127.0.0.1", v1Port, "dc1", "version", "v1"),
		ep("127.0.0.1", v2Port, "dc1", "version", "v2"))
	for _, c := range []string{"web", "admin", "batch"} {
		addService(s, c, mesh.ProtocolGRPC, 8080)
		addUpstream(s, c, "greeter", 9191)
	}
	v1, v2 := mesh.TargetID("v1", "greeter", "dc1"), mesh.TargetID("v2", "greeter", "dc1")
	setChain(s, "greeter", map[string]string{"v1": "v1", "v2": "v2"}, []mesh.ChainRoute{
		{
			Match:  &mesh.HTTPMatch{PathPrefix: "/", Header: []mesh.HeaderMatch{{Name: "x-canary", Kind: mesh.MatchExact, Value: "1"}}},
			Splits: []mesh.TargetWeight{{Target: v2, Weight: mesh.TotalWeight}},
		},
		{Splits: []mesh.TargetWeight{{Target: v1, Weight: 9000}, {Target: v2, Weight: 1000}}},
	})
	allow(s, "web", "greeter")
	addIntention(s, &mesh.Intention{Source: "admin", Destination: "greeter", Permissions: []mesh.Permission{
		{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Path: "/test.Greeter/Hello"}},
	}})
	return s
}

// richMesh exercises every rendering feature in both shapes: tcp and http services, wildcard
// intentions, permissions with every match kind, routes with rewrites, retries and timeouts,
// failover, every load balancer.
func richMesh() *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	addService(s, "web", mesh.ProtocolHTTP, 8080, ep("10.0.0.1", 21000, "dc1"), ep("10.0.0.2", 21000, "dc1"))
	addService(s, "api", mesh.ProtocolHTTP, 8080,
		ep("10.0.1.1", 21000, "dc1", "version", "v1"), ep("10.0.1.2", 21000, "dc1", "version", "v2"),
		ep("10.1.1.1", 21000, "dc2", "version", "v1"))
	addService(s, "db", mesh.ProtocolTCP, 5432, ep("10.0.2.1", 21000, "dc1"))
	addService(s, "auth", mesh.ProtocolGRPC, 9000, ep("10.0.3.1", 21000, "dc1"), ep("10.1.3.1", 21000, "dc2"))
	addUpstream(s, "web", "api", 9191)
	addUpstream(s, "web", "auth", 9192)
	addUpstream(s, "api", "db", 9193)
	addUpstream(s, "api", "auth", 9192)
	v1, v2 := mesh.TargetID("v1", "api", "dc1"), mesh.TargetID("v2", "api", "dc1")
	setChain(s, "api", map[string]string{"v1": "v1", "v2": "v2"}, []mesh.ChainRoute{
		{
			Match: &mesh.HTTPMatch{PathPrefix: "/v2/", Methods: []string{"GET", "HEAD"},
				Header:     []mesh.HeaderMatch{{Name: "X-Canary", Kind: mesh.MatchExact, Value: "1"}, {Name: "x-debug", Kind: mesh.MatchPresent, Invert: true}},
				QueryParam: []mesh.QueryMatch{{Name: "beta", Kind: mesh.MatchPresent}}},
			Splits:        []mesh.TargetWeight{{Target: v2, Weight: mesh.TotalWeight}},
			PrefixRewrite: "/", RequestTimeout: mesh.Duration(3 * time.Second), NumRetries: 2, RetryOn: []string{"5xx"},
		},
		{Splits: []mesh.TargetWeight{{Target: v1, Weight: 9000}, {Target: v2, Weight: 1000}}},
	}, map[string][]string{v1: {mesh.TargetID("v1", "api", "dc2")}})
	s.Chains["api"].Targets[v1].LoadBalancer = mesh.LBLeastRequest
	s.Chains["api"].Targets[v2].LoadBalancer = mesh.LBMaglev
	s.Chains["auth"].Targets[mesh.TargetID("", "auth", "dc1")].LoadBalancer = mesh.LBRingHash
	s.Chains["auth"].Targets[mesh.TargetID("", "auth", "dc1")].Failover = []string{mesh.TargetID("", "auth", "dc2")}
	s.Chains["auth"].Targets[mesh.TargetID("", "auth", "dc2")] = &mesh.Target{ID: "auth.dc2", Service: "auth", Datacenter: "dc2",
		SNI: mesh.SNI("", "auth", "dc2", testTrustDomain), LoadBalancer: mesh.LBRoundRobin}
	s.Chains["db"].Targets[mesh.TargetID("", "db", "dc1")].LoadBalancer = mesh.LBRandom

	allow(s, "web", "api")
	deny(s, "*", "api")
	allow(s, "api", "db")
	allow(s, "*", "auth")
	deny(s, "web", "*")
	addIntention(s, &mesh.Intention{Source: "web", Destination: "auth", Permissions: []mesh.Permission{
		{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathRegex: "/auth\\.Admin/.*"}},
		{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{PathPrefix: "/auth.", Header: []mesh.HeaderMatch{
			{Name: "x-tenant", Kind: mesh.MatchRegex, Value: "[a-z]+"},
			{Name: "x-debug", Kind: mesh.MatchPresent, Invert: true},
			{Name: "x-env", Kind: mesh.MatchSuffix, Value: "prod", Invert: true},
		}}},
		{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Path: "/health", QueryParam: []mesh.QueryMatch{{Name: "full", Kind: mesh.MatchExact, Value: "1"}}}},
	}})
	return s
}

// transparentMesh is richMesh with web in transparent mode (besides its declared upstreams)
// and a transparent service ops that declares none: intentions alone say what they reach.
func transparentMesh() *mesh.Snapshot {
	s := richMesh()
	s.Services["web"].Mode = mesh.ModeTransparent
	addService(s, "ops", mesh.ProtocolHTTP, 8080, ep("10.0.4.1", 21000, "dc1")).Mode = mesh.ModeTransparent
	allow(s, "ops", "db")
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	return s
}

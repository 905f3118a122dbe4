package mesh

import "fmt"

// Test helpers that build snapshots directly in Go, as the compiler would: precedences set,
// intentions in canonical order, and a position recorded for every intention and permission.

// allow and deny build intentions decided by their action alone.
func allow(source, destination string) *Intention {
	return &Intention{Source: source, Destination: destination, Action: Allow}
}

func deny(source, destination string) *Intention {
	return &Intention{Source: source, Destination: destination, Action: Deny}
}

// l7 builds an intention decided by its permissions.
func l7(source, destination string, perms ...Permission) *Intention {
	return &Intention{Source: source, Destination: destination, Permissions: perms}
}

func perm(a Action, m *HTTPMatch) Permission { return Permission{Action: a, HTTP: m} }

// newSnapshot returns a snapshot with the given default intention and intentions. The intention
// at index i is recorded at intentions.cue:10*(i+1):3 and its j-th permission one line per
// permission below it, at column 5.
func newSnapshot(def Action, ins ...*Intention) *Snapshot {
	s := &Snapshot{
		Mesh:      Config{Name: "test", TrustDomain: "test.mesh", Datacenter: "dc1", DefaultIntention: def},
		Services:  map[string]*Service{},
		Positions: map[string]Pos{},
	}
	for i, in := range ins {
		in.Precedence = Precedence(in.Source, in.Destination)
		line := 10 * (i + 1)
		s.Positions[PathIntention(in.Destination, in.Source)] = Pos{File: "intentions.cue", Line: line, Col: 3}
		for j := range in.Permissions {
			s.Positions[PathPermission(in.Destination, in.Source, j)] = Pos{File: "intentions.cue", Line: line + 1 + j, Col: 5}
		}
		for _, name := range []string{in.Source, in.Destination} {
			if name != Wildcard && s.Services[name] == nil {
				s.Services[name] = &Service{Name: name, Protocol: ProtocolHTTP, Port: 8080}
			}
		}
		s.Intentions = append(s.Intentions, in)
	}
	SortIntentions(s.Intentions)
	return s
}

// pos is the position newSnapshot records for the intention at index i (perm < 0) or for its
// permission perm.
func pos(i, perm int) Pos {
	if perm < 0 {
		return Pos{File: "intentions.cue", Line: 10 * (i + 1), Col: 3}
	}
	return Pos{File: "intentions.cue", Line: 10*(i+1) + 1 + perm, Col: 5}
}

// richSnapshot returns a snapshot that sets every kind of element, for encoding tests.
func richSnapshot() *Snapshot {
	s := newSnapshot(Deny,
		l7("web", "api",
			perm(Deny, &HTTPMatch{PathPrefix: "/internal/"}),
			perm(Allow, &HTTPMatch{PathRegex: "/v[12]/.*", Methods: []string{"GET", "POST"},
				Header:     []HeaderMatch{{Name: "x-tenant", Kind: MatchPresent}, {Name: "x-debug", Kind: MatchExact, Value: "1", Invert: true}},
				QueryParam: []QueryMatch{{Name: "page", Kind: MatchRegex, Value: "[0-9]+"}}}),
		),
		allow("api", "db"),
		allow("metrics", Wildcard),
		deny(Wildcard, "db"),
	)
	s.Commit = "0123456789abcdef0123456789abcdef01234567"
	s.Mesh.Datacenters = []string{"dc1", "dc2"}
	s.Mesh.TLS = TLS{MinVersion: "TLSv1_2"}
	s.Mesh.CA = CA{LeafTTL: Duration(72 * 3600e9)}
	s.Mesh.Policies = []string{"default-deny"}
	for _, name := range []string{"web", "api", "db", "metrics"} {
		if s.Services[name] == nil {
			s.Services[name] = &Service{Name: name, Protocol: ProtocolHTTP, Port: 8080}
		}
	}
	s.Services["db"].Protocol = ProtocolTCP
	s.Services["db"].Port = 5432
	s.Services["api"].Owners = []string{"@shop/api"}
	s.Services["api"].Meta = map[string]string{"tier": "backend", "team": "api"}
	s.Services["api"].Upstreams = map[string]*Upstream{"db": {Service: "db", LocalPort: 9104}}
	s.Services["api"].HealthCheck = &HealthCheck{HTTP: "/healthz", Interval: Duration(10e9), Timeout: Duration(1500e6)}
	for i, v := range []string{"v1", "v1", "v2"} {
		s.Services["api"].Endpoints = append(s.Services["api"].Endpoints, Endpoint{
			Address: fmt.Sprintf("10.1.20.%d", 11+i), Port: 8080, Datacenter: "dc1", Meta: map[string]string{"version": v},
		})
	}
	s.Routers = map[string]*Router{"api": {Routes: []Route{{
		Match:       &HTTPMatch{Header: []HeaderMatch{{Name: "x-canary", Kind: MatchExact, Value: "1"}}},
		Destination: RouteDestination{Service: "api", Subset: "v2", RequestTimeout: Duration(3e9), NumRetries: 2, RetryOn: []string{"5xx"}},
	}}}}
	s.Splitters = map[string]*Splitter{"api": {Splits: []Split{{Weight: 9000, Service: "api", Subset: "v1"}, {Weight: 1000, Service: "api", Subset: "v2"}}}}
	s.Resolvers = map[string]*Resolver{"api": {
		DefaultSubset:  "v1",
		Subsets:        map[string]Subset{"v1": {Filter: map[string]string{"version": "v1"}}, "v2": {Filter: map[string]string{"version": "v2"}}},
		ConnectTimeout: Duration(5e9),
		Failover:       map[string]Failover{"*": {Datacenters: []string{"dc2"}}},
		LoadBalancer:   &LoadBalancer{Policy: LBLeastRequest},
	}}
	target := func(subset, dc string) *Target {
		return &Target{
			ID: TargetID(subset, "api", dc), Service: "api", Subset: subset, Datacenter: dc,
			Filter: map[string]string{"version": subset}, SNI: SNI(subset, "api", dc, "test.mesh"),
			ConnectTimeout: Duration(5e9), LoadBalancer: LBLeastRequest,
		}
	}
	v1, v2, v1dc2, v2dc2 := target("v1", "dc1"), target("v2", "dc1"), target("v1", "dc2"), target("v2", "dc2")
	v1.Failover, v2.Failover = []string{v1dc2.ID}, []string{v2dc2.ID}
	s.Chains = map[string]*Chain{"api": {
		Service: "api", Protocol: ProtocolHTTP,
		Routes: []ChainRoute{
			{Match: s.Routers["api"].Routes[0].Match, Splits: []TargetWeight{{Target: v2.ID, Weight: TotalWeight}}, RequestTimeout: Duration(3e9), NumRetries: 2, RetryOn: []string{"5xx"}},
			{Splits: []TargetWeight{{Target: v1.ID, Weight: 9000}, {Target: v2.ID, Weight: 1000}}},
		},
		Targets: map[string]*Target{v1.ID: v1, v2.ID: v2, v1dc2.ID: v1dc2, v2dc2.ID: v2dc2},
	}}
	s.Positions[PathService("api")] = Pos{File: "teams/api.cue", Line: 4, Col: 1}
	s.Positions[PathRoute("api", 0)] = Pos{File: "teams/api.cue", Line: 40, Col: 2}
	return s
}

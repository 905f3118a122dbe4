package xds

import (
	"reflect"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestEqualityCoversEveryField fails when a field is added to a type that equal.go compares
// by hand: update the equality function, then the count here.
func TestEqualityCoversEveryField(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{
		{mesh.Service{}, 9}, {mesh.Upstream{}, 4}, {mesh.Endpoint{}, 6}, {mesh.HealthCheck{}, 5},
		{mesh.Chain{}, 5}, {mesh.ChainRoute{}, 6}, {mesh.TargetWeight{}, 2}, {mesh.Target{}, 9},
		{mesh.Intention{}, 6}, {mesh.Permission{}, 2}, {mesh.HTTPMatch{}, 6}, {mesh.HeaderMatch{}, 4}, {mesh.QueryMatch{}, 3},
	} {
		if got := reflect.TypeOf(c.v).NumField(); got != c.want {
			t.Errorf("%T has %d fields, equal.go knows %d: compare the new ones", c.v, got, c.want)
		}
	}
}

func TestDiffFindsEveryChange(t *testing.T) {
	base := seal(t, richMesh())
	for name, mutate := range map[string]func(*mesh.Snapshot){
		"endpoint meta":         func(s *mesh.Snapshot) { s.Services["api"].Endpoints[0].Meta["version"] = "v9" },
		"endpoint health":       func(s *mesh.Snapshot) { s.Services["api"].Endpoints[0].Health = mesh.HealthCritical },
		"endpoint weight":       func(s *mesh.Snapshot) { s.Services["api"].Endpoints[0].Weight = 3 },
		"upstream port":         func(s *mesh.Snapshot) { s.Services["web"].Upstreams["api"].LocalPort = 1 },
		"upstream gateway mode": func(s *mesh.Snapshot) { s.Services["web"].Upstreams["api"].MeshGateway = mesh.MeshGatewayLocal },
		"chain timeout":         func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].RequestTimeout = 1 },
		"route path":            func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match.PathPrefix = "/v3/" },
		"route method":          func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match.Methods[1] = "PUT" },
		"route header invert":   func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match.Header[1].Invert = false },
		"route header value":    func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match.Header[0].Value = "2" },
		"route query":           func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match.QueryParam[0].Kind = mesh.MatchExact },
		"route match gone":      func(s *mesh.Snapshot) { s.Chains["api"].Routes[0].Match = nil },
		"target lb":             func(s *mesh.Snapshot) { s.Chains["db"].Targets["db.dc1"].LoadBalancer = mesh.LBRingHash },
		"permission":            func(s *mesh.Snapshot) { s.Intention("web", "auth").Permissions[0].Action = mesh.Allow },
		"permission match":      func(s *mesh.Snapshot) { s.Intention("web", "auth").Permissions[0].HTTP.PathRegex = "/x" },
		"permission added": func(s *mesh.Snapshot) {
			in := s.Intention("web", "auth")
			in.Permissions = append(in.Permissions, mesh.Permission{Action: mesh.Deny})
		},
		"default": func(s *mesh.Snapshot) { s.Mesh.DefaultIntention = mesh.Allow },
		"remote chain": func(s *mesh.Snapshot) {
			s.RemoteChains = map[string]*mesh.Chain{mesh.RemoteChainKey("api", "dc2"): {Service: "api", Datacenter: "dc2"}}
		},
	} {
		next := seal(t, richMesh())
		mutate(next)
		if diff(base, next).empty() {
			t.Errorf("%s: change not found", name)
		}
	}
	if !diff(base, seal(t, richMesh())).empty() {
		t.Error("identical snapshots differ")
	}
}

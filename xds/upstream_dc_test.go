package xds

import (
	"context"
	"testing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// TestRenderUpstreamDatacenter: web's upstream api names dc2, so web's proxies (both shapes)
// route api's traffic to api's targets in dc2, whose endpoints come first, with dc1's as the
// failover priority; the local upstream auth is unchanged.
func TestRenderUpstreamDatacenter(t *testing.T) {
	src := `package mesh

mesh: {name: "m", trustDomain: "m.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"]}
services: {
	web: {protocol: "http", port: 80, upstreams: {api: {localPort: 9001, datacenter: "dc2"}, auth: localPort: 9002}}
	api: {protocol: "http", port: 8080, endpoints: [
		{address: "10.1.0.1", port: 8080, datacenter: "dc1"},
		{address: "10.2.0.1", port: 8080, datacenter: "dc2"},
	]}
	auth: {protocol: "http", port: 9090, endpoints: [{address: "10.1.0.2", port: 9090}]}
}
resolvers: api: failover: "*": datacenters: ["dc1"]
`
	snap, err := compiler.Compile(context.Background(), []compiler.File{{Name: "m.cue", Data: []byte(src)}})
	if err != nil {
		t.Fatal(err)
	}
	remote := mesh.SNI("", "api", "dc2", "m.mesh")
	local := mesh.SNI("", "auth", "dc1", "m.mesh")
	for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
		t.Run(string(shape), func(t *testing.T) {
			res, err := Render(snap, Proxy{Service: "web", Shape: shape})
			if err != nil {
				t.Fatal(err)
			}
			if err := res.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := res.Consistent(); err != nil {
				t.Fatal(err)
			}
			var routed []string
			for _, rc := range res.Routes {
				routed = append(routed, routeClusters(rc)...)
			}
			for _, want := range []string{remote, local} {
				if !contains(routed, want) {
					t.Errorf("routes go to %v, want %s among them", routed, want)
				}
			}
			if contains(routed, mesh.SNI("", "api", "dc1", "m.mesh")) {
				t.Errorf("routes go to api in dc1: %v", routed)
			}
			var found bool
			for _, cla := range res.Endpoints {
				if cla.ClusterName != remote {
					continue
				}
				found = true
				if len(cla.Endpoints) != 2 || cla.Endpoints[0].Locality.Region != "dc2" || cla.Endpoints[0].Priority != 0 ||
					cla.Endpoints[1].Locality.Region != "dc1" || cla.Endpoints[1].Priority != 1 {
					t.Errorf("endpoints of %s: %v, want dc2 at priority 0 and dc1 at 1", remote, cla.Endpoints)
				}
			}
			if !found {
				t.Errorf("no endpoints for %s", remote)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package xds

import (
	"fmt"
	"maps"
	"reflect"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// smallDenseMesh is denseBenchMesh's shape at n services: transparent, every service reaching
// every other, an L7 intention into each (so that inbound listeners and RBAC differ).
func smallDenseMesh(n int) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	s.Mesh.Mode = mesh.ModeTransparent
	for i := range n {
		svc := addService(s, denseName(i), mesh.ProtocolHTTP, 8080, ep(fmt.Sprintf("10.0.%d.1", i), 21000, "dc1"))
		svc.Mode = mesh.ModeTransparent
		s.Intentions = append(s.Intentions, &mesh.Intention{Source: denseName(n - 1 - i), Destination: denseName(i),
			Precedence: mesh.PrecedenceExact, Permissions: []mesh.Permission{
				{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: fmt.Sprintf("/admin-%d/", i)}},
				{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Methods: []string{"GET"}}},
			}})
	}
	s.Intentions = append(s.Intentions, &mesh.Intention{Source: mesh.Wildcard, Destination: mesh.Wildcard,
		Precedence: mesh.PrecedenceWildcardBoth, Action: mesh.Allow})
	mesh.SortIntentions(s.Intentions)
	s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	return s
}

// Groups rendered from one snapshot whose content of a type is the same share go-control-plane's
// index of it and its version map (one object, not equal copies), and hold what each would hold
// rendered alone.
func TestGroupsShareCacheIndex(t *testing.T) {
	srv := NewServer(testLogger(t))
	snap := seal(t, smallDenseMesh(6))
	for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
		m := newMemo(snap, nil)
		var groups []*group
		for i := range 6 {
			p := Proxy{Service: denseName(i), Shape: shape}
			g, err := srv.render(snap, nil, m, p, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			alone, err := srv.render(snap, nil, nil, p, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range resourceTypes {
				rt := cachev3.GetResponseType(typ)
				if g.typeHash.get(typ) != alone.typeHash.get(typ) || !maps.Equal(g.cs.VersionMap[typ], alone.cs.VersionMap[typ]) ||
					g.cs.Resources[rt].Version != alone.cs.Resources[rt].Version ||
					!keysEqual(g.cs.Resources[rt].Items, alone.cs.Resources[rt].Items) {
					t.Fatalf("%s %s %s: shared %v, alone %v", shape, p.Service, shortType(typ), g.cs.VersionMap[typ], alone.cs.VersionMap[typ])
				}
			}
			groups = append(groups, g)
		}
		shared := 0
		for _, typ := range resourceTypes {
			rt := cachev3.GetResponseType(typ)
			for _, g := range groups[1:] {
				sameIndex := reflect.ValueOf(g.cs.Resources[rt].Items).Pointer() == reflect.ValueOf(groups[0].cs.Resources[rt].Items).Pointer()
				sameVersions := reflect.ValueOf(g.cs.VersionMap[typ]).Pointer() == reflect.ValueOf(groups[0].cs.VersionMap[typ]).Pointer()
				if g.typeHash.get(typ) == groups[0].typeHash.get(typ) {
					if len(g.cs.Resources[rt].Items) > 0 && (!sameIndex || !sameVersions) {
						t.Errorf("%s %s: %s and %s have the same content and their own index (%v) or version map (%v)",
							shape, shortType(typ), g.proxy.Service, groups[0].proxy.Service, !sameIndex, !sameVersions)
					}
					shared++
				} else if sameIndex || sameVersions {
					t.Errorf("%s %s: %s and %s have different content and share the index or version map", shape, shortType(typ), g.proxy.Service, groups[0].proxy.Service)
				}
			}
		}
		// Every proxy of a dense mesh holds the same clusters and load assignments.
		if c, e := groups[5].typeHash.get(resourcev3.ClusterType), groups[5].typeHash.get(resourcev3.EndpointType); c != groups[0].typeHash.get(resourcev3.ClusterType) || e != groups[0].typeHash.get(resourcev3.EndpointType) || shared < 2*5 {
			t.Fatalf("%s: the fixture has too little in common (%d shared)", shape, shared)
		}
	}
}

func keysEqual[V any](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

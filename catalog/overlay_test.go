package catalog

import (
	"reflect"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestOverlayer: the overlaid snapshot has Git's endpoints, then the catalog's instances with
// their health, for declared services only; an Overlayer keeps the same definition for the
// services that did not change and gives the same result as Overlay.
func TestOverlayer(t *testing.T) {
	snap := &mesh.Snapshot{Version: "v", Mesh: mesh.Config{Datacenter: "dc1"}, Services: map[string]*mesh.Service{
		"api": {Name: "api", Endpoints: []mesh.Endpoint{{Address: "10.0.0.1", Port: 80, Datacenter: "dc1"}}},
		"web": {Name: "web"},
		"db":  {Name: "db"},
	}}
	s := mustApply(t, Empty(), 1, reg("n1", "api-1", "api", ttl("c1", StatusPassing)))
	s = mustApply(t, s, 2, reg("n1", "web-1", "web", ttl("c2", StatusWarning)))
	s = mustApply(t, s, 3, reg("n1", "ghost-1", "ghost"))
	s = mustApply(t, s, 4, Command{Op: OpStaticHealth, ID: StaticKey("api", "10.0.0.1", 80), Status: StatusCritical})
	var o Overlayer
	a := o.Overlay(snap, s)
	if a.Services["ghost"] != nil || a.Services["db"] != snap.Services["db"] {
		t.Fatal("undeclared service routed, or an untouched service copied")
	}
	api := a.Services["api"].Endpoints
	if len(api) != 2 || api[0].Health != mesh.HealthCritical || api[1].Address != "127.0.0.1" || api[1].Health != mesh.HealthPassing || api[1].Datacenter != "dc1" {
		t.Fatalf("api endpoints %+v", api)
	}
	if w := a.Services["web"].Endpoints; len(w) != 1 || w[0].Health != mesh.HealthWarning || w[0].Weight != 1 {
		t.Fatalf("web endpoints %+v", w)
	}
	s2 := mustApply(t, s, 5, Command{Op: OpCheck, NodeName: "n1", ID: "c2", Status: StatusCritical})
	b := o.Overlay(snap, s2)
	if b.Services["api"] != a.Services["api"] || b.Services["web"] == a.Services["web"] {
		t.Fatal("the Overlayer did not keep the unchanged service, or kept the changed one")
	}
	if !reflect.DeepEqual(b.Services, Overlay(snap, s2).Services) {
		t.Fatal("Overlayer and Overlay differ")
	}
}

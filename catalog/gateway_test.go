package catalog

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestMeshGatewayRegistration: a Kind mesh-gateway registration keeps its lan and wan tagged
// addresses (Consul's shape); the overlay lists the gateway with its health in the snapshot's
// MeshGateways of the local datacenter, though Git does not declare it, and keeps other
// datacenters' gateways; bad tagged addresses are refused with the field named.
func TestMeshGatewayRegistration(t *testing.T) {
	var r Registration
	body := `{"Kind": "mesh-gateway", "ID": "gw-1", "Name": "gateway", "Port": 8443, "Address": "10.0.0.2",
		"TaggedAddresses": {"lan": {"Address": "10.0.0.2", "Port": 8443}, "wan": {"Address": "198.51.100.2", "Port": 443}}}`
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	in, err := r.Instance()
	if err != nil {
		t.Fatal(err)
	}
	if in.TaggedAddresses["wan"] != (ServiceAddress{Address: "198.51.100.2", Port: 443}) {
		t.Fatalf("tagged addresses %+v", in.TaggedAddresses)
	}
	in.Node, in.Checks = "n1", []Check{ttl("gw-alive", StatusPassing)}
	s := mustApply(t, Empty(), 1, reg("n1", "api-1", "api"))
	s = mustApply(t, s, 2, Command{Op: OpRegister, Node: s.Node("n1"), Instance: in})

	remote := []mesh.Gateway{{Service: "gateway", Address: "10.9.0.2", Port: 8443}}
	snap := &mesh.Snapshot{Version: "v", Mesh: mesh.Config{Datacenter: "dc1"},
		Services:     map[string]*mesh.Service{"api": {Name: "api"}},
		MeshGateways: map[string][]mesh.Gateway{"dc2": remote}}
	out := Overlay(snap, s)
	want := mesh.Gateway{Service: "gateway", Address: "10.0.0.2", Port: 8443, WANAddress: "198.51.100.2", WANPort: 443, Health: mesh.HealthPassing}
	if g := out.MeshGateways["dc1"]; len(g) != 1 || g[0] != want {
		t.Fatalf("dc1 gateways %+v, want %+v", g, want)
	}
	if len(out.MeshGateways["dc2"]) != 1 || out.Services["gateway"] != nil || len(out.Services["api"].Endpoints) != 1 {
		t.Fatalf("overlay %+v", out)
	}
	if snap.MeshGateways["dc1"] != nil {
		t.Fatal("the overlay changed its input")
	}
	s = mustApply(t, s, 3, Command{Op: OpCheck, NodeName: "n1", ID: "gw-alive", Status: StatusCritical})
	if g := Overlay(snap, s).MeshGateways["dc1"]; len(g) != 1 || g[0].Health != mesh.HealthCritical {
		t.Fatalf("critical gateway %+v", g)
	}

	for bad, field := range map[string]string{
		`{"lan": {"Address": "gw.example", "Port": 1}}`:   "TaggedAddresses.lan.Address",
		`{"wan": {"Address": "10.0.0.1", "Port": 70000}}`: "TaggedAddresses.wan.Port",
		`["10.0.0.1"]`: "TaggedAddresses",
	} {
		r := Registration{Name: "gateway", Kind: "mesh-gateway", TaggedAddresses: json.RawMessage(bad)}
		_, err := r.Instance()
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err = %v, want a bad request naming %s", bad, err, field)
		}
	}
}

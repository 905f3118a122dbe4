package compiler

import (
	"context"
	"errors"
	"testing"
)

// TestForDatacenter: dc2's view keeps the version, makes dc2 local and resolves chains there;
// an upstream that names dc1 follows dc1's chain; the original is untouched.
func TestForDatacenter(t *testing.T) {
	snap, err := Compile(context.Background(), []File{{Name: "m.cue", Data: []byte(`package mesh
mesh: {name: "m", trustDomain: "m.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"]}
services: api: {port: 80}
services: web: {port: 80, upstreams: {api: localPort: 9191}}
services: batch: {port: 80, upstreams: {api: {localPort: 9191, datacenter: "dc1"}}}
resolvers: api: failover: "*": datacenters: ["dc1"]
`)}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ForDatacenter(snap, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != snap.Version || v.Mesh.Datacenter != "dc2" || snap.Mesh.Datacenter != "dc1" {
		t.Fatalf("view %s %s, original %s", v.Version, v.Mesh.Datacenter, snap.Mesh.Datacenter)
	}
	web := v.UpstreamChain(v.Services["web"].Upstreams["api"])
	tgt := web.Targets[web.Routes[0].Splits[0].Target]
	if tgt.Datacenter != "dc2" || tgt.SNI != "api.default.dc2.internal.m.mesh" || len(tgt.Failover) != 1 || tgt.Failover[0] != "api.dc1" {
		t.Fatalf("web's api target in dc2's view: %+v", tgt)
	}
	batch := v.UpstreamChain(v.Services["batch"].Upstreams["api"])
	if bt := batch.Targets[batch.Routes[0].Splits[0].Target]; bt.Datacenter != "dc1" {
		t.Fatalf("batch's upstream in dc1 resolved in %s", bt.Datacenter)
	}
	orig := snap.UpstreamChain(snap.Services["web"].Upstreams["api"])
	if orig.Targets[orig.Routes[0].Splits[0].Target].Datacenter != "dc1" {
		t.Fatal("the original snapshot changed")
	}
	if _, err := ForDatacenter(snap, "dc9"); !errors.Is(err, ErrDatacenter) {
		t.Fatalf("dc9: %v", err)
	}
}

package compiler

import (
	"context"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestMeshGatewayMode: mesh.meshGateway.mode and the per-upstream override reach the snapshot;
// an unknown mode is a positioned error; a mesh without it keeps its version.
func TestMeshGatewayMode(t *testing.T) {
	const base = `package mesh
mesh: {name: "m", trustDomain: "m.mesh", datacenters: ["dc1", "dc2"]%s}
services: api: {port: 80, endpoints: [{address: "10.0.0.1", port: 80, datacenter: "dc2"}]}
services: web: {port: 80, upstreams: {api: {localPort: 9191, datacenter: "dc2"%s}}}
`
	compile := func(meshExtra, upExtra string) (*mesh.Snapshot, error) {
		return Compile(context.Background(), []File{{Name: "m.cue", Data: []byte(sprintf(base, meshExtra, upExtra))}})
	}
	plain, err := compile("", "")
	if err != nil {
		t.Fatal(err)
	}
	if m := plain.Mesh.GatewayMode(plain.Services["web"].Upstreams["api"]); m != mesh.MeshGatewayNone {
		t.Fatalf("default mode %q, want none", m)
	}
	local, err := compile(`, meshGateway: mode: "local"`, "")
	if err != nil {
		t.Fatal(err)
	}
	if m := local.Mesh.GatewayMode(local.Services["web"].Upstreams["api"]); m != mesh.MeshGatewayLocal {
		t.Fatalf("mode %q, want local", m)
	}
	if local.Version == plain.Version {
		t.Fatal("the mode does not change the version")
	}
	over, err := compile(`, meshGateway: mode: "local"`, `, meshGateway: mode: "remote"`)
	if err != nil {
		t.Fatal(err)
	}
	if m := over.Mesh.GatewayMode(over.Services["web"].Upstreams["api"]); m != mesh.MeshGatewayRemote {
		t.Fatalf("override %q, want remote", m)
	}
	_, err = compile(`, meshGateway: mode: "sideways"`, "")
	if err == nil || !strings.Contains(err.Error(), "m.cue:2:") || !strings.Contains(err.Error(), "meshGateway.mode") {
		t.Fatalf("unknown mode: err = %v, want a positioned error on meshGateway.mode", err)
	}
}

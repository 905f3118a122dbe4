package compiler

import (
	"fmt"
	"slices"

	mesh "github.com/meshgit/mesh"
)

// ForDatacenter returns snap as the servers of datacenter dc serve it: the same compiled mesh
// and the same Version (one repository, one version everywhere), with dc as the local
// datacenter and every discovery chain resolved there, as Consul resolves a chain in its
// caller's datacenter: a chain's default targets are in dc, and an upstream that names a
// datacenter follows the chain resolved in that one. snap itself is returned when dc is "" or
// already its datacenter; dc must be one of mesh.datacenters. snap is not modified.
func ForDatacenter(snap *mesh.Snapshot, dc string) (*mesh.Snapshot, error) {
	if snap == nil || dc == "" || dc == snap.Mesh.Datacenter {
		return snap, nil
	}
	if !slices.Contains(snap.Mesh.Datacenters, dc) {
		return nil, fmt.Errorf("%w: %q is not one of mesh.datacenters %v of snapshot %s", ErrDatacenter, dc, snap.Mesh.Datacenters, snap.Version)
	}
	v := snap.WithServices(snap.Services)
	v.Mesh.Datacenter = dc
	v.Chains, v.RemoteChains = map[string]*mesh.Chain{}, nil
	(&compilation{snap: v}).chains()
	return v, nil
}

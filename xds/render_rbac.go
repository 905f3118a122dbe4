package xds

import (
	"fmt"
	"maps"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// renderRBAC is render for an Envoy sidecar whose RBAC alone changed (change.inboundOnly): its
// RBAC is its two extension configurations (ECDS) and nothing else of it depends on the
// intentions into its service, so the new group is old with that one type replaced: its list,
// content hash, version, version map and cache resources, all made once per service and
// snapshot (rbacSet). Nothing else is rendered, validated, hashed or indexed again: it costs
// what writing and hashing the new RBAC costs, however much the proxy reaches.
//
// The result is what render gives for the same inputs (TestRenderRBACMatchesRender): the same
// versions, hashes and bytes. It reports false, and renders nothing, where the shortcut does
// not apply (another shape or kind, a test hook, no previous group, or extension
// configurations of other names than old's: then their references are checked again).
func (s *Server) renderRBAC(snap *mesh.Snapshot, bundle *trustBundle, m *memo, p Proxy, old *group) (*group, bool, error) {
	if p.Shape != ShapeEnvoy || p.Kind == mesh.KindMeshGateway || s.testHookResources != nil ||
		old == nil || old.res == nil || old.err != nil || old.cs == nil || old.deps == nil || snap.Services[p.Service] == nil {
		return nil, false, nil
	}
	set, err := publicRBACSet(snap, p, m)
	if err != nil {
		return nil, false, fmt.Errorf("render %s extension configs: %w", p, err)
	}
	var xs []*corev3.TypedExtensionConfig
	if set != nil {
		xs = set.xs
	}
	if !sameExtensionNames(old.res.Extensions, xs) {
		return nil, false, nil
	}
	s.metrics.renders.Inc()
	s.listenerOnly.Add(1)
	t := resourcev3.ExtensionConfigType
	ng := *old
	ng.snap, ng.bundle = snap, bundle
	if set == nil || set.typeHash == old.typeHash.get(t) {
		return &ng, true, nil // the same content: the same versions, nothing to send
	}
	// The resources and the cache snapshot that holds them in one allocation (a mesh-wide
	// change makes one per service); not the group, which holds the snapshot it was rendered
	// from, and which a node's served or ACKed cache snapshot must not keep alive.
	a := &struct {
		res Resources
		cs  cachev3.Snapshot
	}{res: *old.res}
	a.res.Extensions = set.xs
	ng.res = &a.res
	ng.typeHash.set(t, set.typeHash)
	ng.typeVersion.set(t, set.version)
	ng.hash = groupHash(ng.typeHash)
	a.cs = cachev3.Snapshot{Resources: old.cs.Resources, VersionMap: maps.Clone(old.cs.VersionMap)}
	a.cs.Resources[cachev3.GetResponseType(t)], a.cs.VersionMap[t] = set.res, set.versions
	ng.cs = &a.cs
	return &ng, true, nil
}

// groupHash is the hash of all of a group's content from the content hash of each type, as
// hashByType combines them.
func groupHash(typeHash typeHashes) string {
	var buf [512]byte // room for the six types and their hashes: no allocation
	b := buf[:0]
	for i, t := range resourceTypes {
		b = append(append(b, t...), typeHash[i]...)
	}
	return hashOf(b)
}

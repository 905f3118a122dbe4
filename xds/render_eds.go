package xds

import (
	"maps"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// renderScope is what of a proxy's configuration a change requires rendering again.
type renderScope int

const (
	scopeAll       renderScope = iota
	scopeEDS                   // an instance or its health changed in a service the proxy calls
	scopeListeners             // the RBAC of its service changed, and nothing else of it
)

// scopeOf decides what of p's configuration, rendered into g from prev, the change ch requires
// rendering again. It runs on the goroutine that renders p.
func scopeOf(ch *change, p Proxy, g *group, prev *mesh.Snapshot, bundle *trustBundle) renderScope {
	if g == nil || g.err != nil || g.cs == nil || g.snap != prev || p.Shape == ShapeEnvoy && g.bundle != bundle ||
		p.Kind == mesh.KindMeshGateway { // a gateway's resources are not a sidecar's: render them whole
		return scopeAll
	}
	switch {
	case ch.edsOnly(p.Service, g.deps):
		return scopeEDS
	case ch.inboundOnly(p.Service, g.deps):
		return scopeListeners
	}
	return scopeAll
}

// rerender renders p's configuration under snap after prev: only its EDS or its listeners when
// scope allows, all of it otherwise.
func (s *Server) rerender(snap, prev *mesh.Snapshot, bundle *trustBundle, m *memo, p Proxy, old *group, scope renderScope) (*group, error) {
	if scope == scopeEDS && s.testHookResources == nil {
		if g, ok, err := s.renderEDS(snap, bundle, m, p, old); ok || err != nil {
			return g, err
		}
	}
	if scope == scopeListeners {
		if g, ok, err := s.renderRBAC(snap, bundle, m, p, old); ok || err != nil {
			return g, err
		}
	}
	return s.render(snap, bundle, m, p, old, scope == scopeListeners)
}

// renderEDS renders only p's load assignments, keeping old's other resources, versions and
// hashes. It reports false (and the caller renders everything) when the assignments do not
// name exactly the clusters they named before.
func (s *Server) renderEDS(snap *mesh.Snapshot, bundle *trustBundle, m *memo, p Proxy, old *group) (*group, bool, error) {
	if old.res == nil {
		return nil, false, nil
	}
	s.metrics.renders.Inc()
	r := &Resources{Endpoints: endpoints(snap, p, m)}
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].ClusterName < r.Endpoints[j].ClusterName })
	prevItems := old.cs.Resources[types.Endpoint].Items
	if len(prevItems) != len(r.Endpoints) {
		return nil, false, nil
	}
	for _, cla := range r.Endpoints {
		if _, ok := prevItems[cla.ClusterName]; !ok {
			return nil, false, nil
		}
	}
	if err := r.validate(m); err != nil {
		return nil, false, err
	}
	typeHash, _, versionMap, err := r.hashTypes(m)
	if err != nil {
		return nil, false, err
	}
	eds := resourcev3.EndpointType
	ng := *old
	ng.snap, ng.bundle = snap, bundle
	if typeHash.get(eds) == old.typeHash.get(eds) {
		return &ng, true, nil
	}
	res := *old.res
	res.Endpoints = r.Endpoints
	ng.res = &res
	ng.typeHash.set(eds, typeHash.get(eds))
	ng.typeVersion.set(eds, snap.Version+"-"+typeHash.get(eds)[:8])
	ng.hash = groupHash(ng.typeHash)
	cs := &cachev3.Snapshot{Resources: old.cs.Resources}
	cs.VersionMap = maps.Clone(old.cs.VersionMap)
	cs.Resources[types.Endpoint], cs.VersionMap[eds] = m.sharedResources(eds, typeHash.get(eds), ng.typeVersion.get(eds), r.byType()[eds], versionMap[eds], nil)
	ng.cs = cs
	return &ng, true, nil
}

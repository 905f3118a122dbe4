package catalog

import (
	"maps"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// Overlay returns snap with the catalog's instances of every declared service appended to its
// endpoints (after the static ones from Git), each with its health and weight, in the mesh's
// datacenter, its meta used for subsets; Git's endpoints take the status of the servers' checks
// of them (StaticHealth; none yet: routed to, as before checks existed). Services the catalog has nothing for keep their
// definition (the same pointer), so that xds re-renders only the proxies that depend on a
// service whose instances or health changed. Undeclared services are left out: nobody routes
// to them. With no instances at all, snap itself is returned.
func Overlay(snap *mesh.Snapshot, st *State) *mesh.Snapshot {
	if snap == nil || st == nil || len(st.services) == 0 && len(st.static) == 0 {
		return snap
	}
	names := map[string]bool{}
	for name := range st.services {
		names[name] = true
	}
	for key := range st.static {
		name, _, _ := strings.Cut(key, "|")
		names[name] = true
	}
	var services map[string]*mesh.Service
	for name := range names {
		svc := snap.Services[name]
		if svc == nil {
			continue
		}
		if services == nil {
			services = maps.Clone(snap.Services)
		}
		ns := *svc
		ns.Endpoints = append(make([]mesh.Endpoint, 0, len(svc.Endpoints)+len(st.services[name].instancesOrNil())), svc.Endpoints...)
		for i, ep := range ns.Endpoints {
			if h := st.static[StaticKey(name, ep.Address, ep.Port)]; h != "" {
				ns.Endpoints[i].Health = h
			}
		}
		for _, in := range st.Instances(name) {
			ns.Endpoints = append(ns.Endpoints, endpoint(in, st.Node(in.Node), snap.Mesh.Datacenter))
		}
		services[name] = &ns
	}
	if services == nil {
		return snap
	}
	return snap.WithServices(services)
}

func endpoint(in *Instance, node *Node, dc string) mesh.Endpoint {
	ep := mesh.Endpoint{Address: in.Address, Port: in.Port, Datacenter: dc, Meta: in.Meta}
	if ep.Address == "" && node != nil {
		ep.Address = node.Address
	}
	switch in.Status(node) {
	case StatusPassing:
		ep.Health, ep.Weight = mesh.HealthPassing, in.Weights.Passing
	case StatusWarning:
		ep.Health, ep.Weight = mesh.HealthWarning, in.Weights.Warning
		if ep.Weight <= 0 {
			// A warning weight of 0 asks for no traffic while warning.
			ep.Health, ep.Weight = mesh.HealthCritical, 0
		}
	default:
		ep.Health = mesh.HealthCritical
	}
	return ep
}

func (e *serviceEntry) instancesOrNil() map[string]*Instance {
	if e == nil {
		return nil
	}
	return e.instances
}

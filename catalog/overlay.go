package catalog

import (
	"maps"
	"strings"
	"sync"

	mesh "github.com/meshgit/mesh"
)

// Overlay returns snap with the catalog's instances of every declared service appended to its
// endpoints (after the static ones from Git), each with its health and weight, in the mesh's
// datacenter, its meta used for subsets; Git's endpoints take the status of the servers' checks
// of them (StaticHealth; none yet: routed to, as before checks existed). Undeclared services
// are left out: nobody routes to them. With no instances at all, snap itself is returned.
func Overlay(snap *mesh.Snapshot, st *State) *mesh.Snapshot {
	return new(Overlayer).Overlay(snap, st)
}

// Overlayer computes Overlay from one catalog to the next, keeping the overlaid definition of
// every service whose Git definition, instances and Git endpoints' health did not change: the
// same pointer, so that xds finds it unchanged at once and re-renders only the proxies that
// depend on a service that did change. Safe for concurrent use.
type Overlayer struct {
	mu    sync.Mutex
	cache map[string]overlaid
}

type overlaid struct {
	base   *mesh.Service
	entry  *serviceEntry
	static string // the Git endpoints' health, in order
	out    *mesh.Service
}

// Overlay is the package's Overlay, reusing what did not change since the previous call.
func (o *Overlayer) Overlay(snap *mesh.Snapshot, st *State) *mesh.Snapshot {
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
	o.mu.Lock()
	defer o.mu.Unlock()
	next := make(map[string]overlaid, len(names))
	var services map[string]*mesh.Service
	for name := range names {
		svc := snap.Services[name]
		if svc == nil {
			continue
		}
		if services == nil {
			services = maps.Clone(snap.Services)
		}
		e := st.services[name]
		var static strings.Builder
		if len(st.static) > 0 {
			for _, ep := range svc.Endpoints {
				static.WriteString(st.static[StaticKey(name, ep.Address, ep.Port)])
				static.WriteByte(',')
			}
		}
		if c, ok := o.cache[name]; ok && c.base == svc && c.entry == e && c.static == static.String() {
			next[name], services[name] = c, c.out
			continue
		}
		out := overlayService(name, svc, e, st, snap.Mesh.Datacenter)
		next[name], services[name] = overlaid{base: svc, entry: e, static: static.String(), out: out}, out
	}
	o.cache = next
	if services == nil {
		return snap
	}
	return snap.WithServices(services)
}

func overlayService(name string, svc *mesh.Service, e *serviceEntry, st *State, dc string) *mesh.Service {
	ns := *svc
	ns.Endpoints = append(make([]mesh.Endpoint, 0, len(svc.Endpoints)+len(e.instancesOrNil())), svc.Endpoints...)
	for i, ep := range ns.Endpoints {
		if h := st.static[StaticKey(name, ep.Address, ep.Port)]; h != "" {
			ns.Endpoints[i].Health = h
		}
	}
	for _, in := range st.Instances(name) {
		ns.Endpoints = append(ns.Endpoints, endpoint(in, st.Node(in.Node), dc))
	}
	return &ns
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

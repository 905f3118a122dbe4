package xds

import (
	"maps"
	"reflect"
	"slices"
	"strconv"

	mesh "github.com/meshgit/mesh"
)

// change is what differs between two snapshots, at the granularity rendering depends on. It
// lets SetSnapshot re-render only the proxies a change can affect. Services and chains are
// compared lazily, and only those some proxy depends on, each at most once: with 10k services
// and 1,000 proxies that is a fraction of the snapshot. A change is used by one goroutine.
type change struct {
	prev, next *mesh.Snapshot
	all        bool            // mesh-wide settings changed, or there is no previous snapshot
	intentions map[string]bool // destinations whose inbound intentions changed ("*" for wildcard)
	services   map[string]bool // memo: service definition (incl. endpoints, upstreams) changed
	endpoints  map[string]bool // memo: of a changed service, whether only its endpoints changed
	chains     map[string]bool // memo: discovery chain changed
}

// diff compares two snapshots. A nil prev changes everything.
func diff(prev, next *mesh.Snapshot) *change {
	c := &change{prev: prev, next: next, intentions: map[string]bool{}, services: map[string]bool{}, chains: map[string]bool{}, endpoints: map[string]bool{}}
	if prev == nil || !meshEqualButDefault(prev.Mesh, next.Mesh) || !reflect.DeepEqual(prev.MeshGateways, next.MeshGateways) ||
		!reflect.DeepEqual(prev.RemoteHealthy, next.RemoteHealthy) {
		c.all = true
		return c
	}
	if prev.Mesh.DefaultIntention != next.Mesh.DefaultIntention {
		// The default decides where no intention does, into every service: a change of every
		// service's inbound intentions (RBAC, and what transparent proxies reach), nothing
		// else (rbac.go and mesh.Reachable are its only readers).
		c.intentions[mesh.Wildcard] = true
	}
	if len(prev.Intentions) == len(next.Intentions) && (len(prev.Intentions) == 0 || &prev.Intentions[0] == &next.Intentions[0]) {
		return c // the same intentions (a catalog change shares them with the previous snapshot)
	}
	type key struct{ dst, src string }
	pi := make(map[key]*mesh.Intention, len(prev.Intentions))
	for _, in := range prev.Intentions {
		pi[key{in.Destination, in.Source}] = in
	}
	for _, in := range next.Intentions {
		k := key{in.Destination, in.Source}
		if p, ok := pi[k]; !ok || !intentionEqual(p, in) {
			c.intentions[in.Destination] = true
		}
		delete(pi, k)
	}
	for k := range pi {
		c.intentions[k.dst] = true
	}
	return c
}

// meshEqualButDefault reports whether two mesh-wide configurations are equal but for their
// default intention.
func meshEqualButDefault(a, b mesh.Config) bool {
	a.DefaultIntention, b.DefaultIntention = "", ""
	return reflect.DeepEqual(a, b)
}

func (c *change) serviceChanged(name string) bool {
	if v, ok := c.services[name]; ok {
		return v
	}
	v := !serviceEqual(c.prev.Services[name], c.next.Services[name])
	c.services[name] = v
	return v
}

// endpointsOnly reports whether service, which changed, changed in its endpoints only (their
// health, a catalog instance...): what only the EDS of its callers is rendered from.
func (c *change) endpointsOnly(name string) bool {
	if v, ok := c.endpoints[name]; ok {
		return v
	}
	a, b := c.prev.Services[name], c.next.Services[name]
	v := false
	if a != nil && b != nil {
		x, y := *a, *b
		x.Endpoints, y.Endpoints = nil, nil
		v = serviceEqual(&x, &y)
	}
	c.endpoints[name] = v
	return v
}

// healthOnly reports whether service changed in its endpoints' health and weights only: the
// same endpoints (address, port, datacenter, meta) in the same order.
func (c *change) healthOnly(name string) bool {
	if !c.endpointsOnly(name) {
		return false
	}
	a, b := c.prev.Services[name].Endpoints, c.next.Services[name].Endpoints
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Health, x.Weight, y.Health, y.Weight = "", 0, "", 0
		if x.Address != y.Address || x.Port != y.Port || x.Datacenter != y.Datacenter || !maps.Equal(x.Meta, y.Meta) {
			return false
		}
	}
	return true
}

// edsOnly reports whether, for a proxy of service whose deps (from prev) are d, the change
// alters at most its EDS: its own service, its chains and the intentions are unchanged, and
// the services of its targets that changed changed only in their endpoints. Listeners and
// clusters read a proxy's own service's endpoints (addresses and ports, never health), never
// its targets'; so its own service may have changed in its endpoints' health only.
func (c *change) edsOnly(service string, d *deps) bool {
	if d == nil || c.all || c.intentions[service] || c.intentions[mesh.Wildcard] || c.serviceChanged(service) && !c.healthOnly(service) {
		return false
	}
	// A transparent proxy also reaches services its intentions allow: one added or removed
	// changes its listeners and clusters, not only its EDS.
	if d.reach != nil && !slices.Equal(d.reach, reachKey(c.next, service, upstreams(c.next, service))) {
		return false
	}
	for _, ch := range d.chains {
		if c.chainChanged(ch) {
			return false
		}
	}
	for _, svc := range d.services {
		if c.serviceChanged(svc) && !c.endpointsOnly(svc) {
			return false
		}
	}
	return true
}

func (c *change) chainChanged(name string) bool {
	if v, ok := c.chains[name]; ok {
		return v
	}
	v := !chainEqual(c.prev.ChainByKey(name), c.next.ChainByKey(name))
	c.chains[name] = v
	return v
}

// deps are what a proxy's resources are rendered from, besides the mesh-wide settings and
// the intentions into its service: its service's definition (ports, endpoints, upstreams), its
// upstreams' chains, and the services (endpoints) of their targets.
type deps struct {
	services []string // its own first
	chains   []string // by Snapshot.ChainKey
	// reach is, for a transparent service, what its upstreams are: each one's name, local port
	// and virtual IP. Intentions into any service and services added or removed change it.
	reach []string
}

// reachKey describes a transparent service's upstreams, or is nil for a direct one.
func reachKey(snap *mesh.Snapshot, service string, ups []*mesh.Upstream) []string {
	if !snap.Services[service].Transparent() {
		return nil
	}
	vips := virtualIPs(snap)
	out := make([]string, len(ups))
	for i, u := range ups {
		out[i] = u.Service + "@" + u.Datacenter + ":" + strconv.Itoa(u.LocalPort) + "=" + vips[u.Service]
	}
	return out
}

// dependencies returns the deps of a proxy of service in snap. They stay valid for a later
// snapshot unless the service itself or one of the chains changed, which affects reports.
func dependencies(snap *mesh.Snapshot, service string) *deps {
	d := &deps{services: []string{service}}
	seen := map[string]bool{service: true}
	ups := upstreams(snap, service)
	d.reach = reachKey(snap, service, ups)
	for _, u := range ups {
		key := snap.ChainKey(u)
		d.chains = append(d.chains, key)
		ch := snap.ChainByKey(key)
		if ch == nil {
			continue
		}
		for _, t := range ch.Targets {
			if !seen[t.Service] {
				seen[t.Service] = true
				d.services = append(d.services, t.Service)
			}
		}
	}
	return d
}

// affects reports whether the change can alter the resources of a proxy of service, whose
// deps (computed from prev, or nil to compute them from next) are d.
func (c *change) affects(service string, d *deps) bool {
	if c.all || c.intentions[service] || c.intentions[mesh.Wildcard] {
		return true
	}
	if d == nil {
		if c.serviceChanged(service) {
			return true
		}
		d = dependencies(c.next, service)
	} else if d.reach != nil && !slices.Equal(d.reach, reachKey(c.next, service, upstreams(c.next, service))) {
		return true
	}
	for _, ch := range d.chains {
		if c.chainChanged(ch) {
			return true
		}
	}
	for _, svc := range d.services {
		if c.serviceChanged(svc) {
			return true
		}
	}
	return false
}

// inboundOnly reports whether, of what a proxy of service renders (deps d, from prev), the
// change alters at most what the intentions into its service decide: its RBAC, in its public
// or server listeners. Then what it reaches, and so its clusters, routes and endpoints, are as
// they were.
func (c *change) inboundOnly(service string, d *deps) bool {
	if c.all || d == nil || !(c.intentions[service] || c.intentions[mesh.Wildcard]) {
		return false
	}
	if d.reach != nil && !slices.Equal(d.reach, reachKey(c.next, service, upstreams(c.next, service))) {
		return false
	}
	for _, ch := range d.chains {
		if c.chainChanged(ch) {
			return false
		}
	}
	for _, svc := range d.services {
		if c.serviceChanged(svc) {
			return false
		}
	}
	return true
}

// empty reports whether nothing that rendering reads changed, for every service of next.
func (c *change) empty() bool {
	if c.all || len(c.intentions) > 0 {
		return false
	}
	for name := range c.prev.Services {
		if c.serviceChanged(name) {
			return false
		}
	}
	for name := range c.next.Services {
		if c.serviceChanged(name) || c.chainChanged(name) {
			return false
		}
	}
	for name := range c.prev.Chains {
		if c.chainChanged(name) {
			return false
		}
	}
	for _, remote := range []map[string]*mesh.Chain{c.prev.RemoteChains, c.next.RemoteChains} {
		for key := range remote {
			if c.chainChanged(key) {
				return false
			}
		}
	}
	return true
}

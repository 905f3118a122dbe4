package xds

import (
	"reflect"

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
	chains     map[string]bool // memo: discovery chain changed
}

// diff compares two snapshots. A nil prev changes everything.
func diff(prev, next *mesh.Snapshot) *change {
	c := &change{prev: prev, next: next, intentions: map[string]bool{}, services: map[string]bool{}, chains: map[string]bool{}}
	if prev == nil || !reflect.DeepEqual(prev.Mesh, next.Mesh) {
		c.all = true
		return c
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

func (c *change) serviceChanged(name string) bool {
	if v, ok := c.services[name]; ok {
		return v
	}
	v := !serviceEqual(c.prev.Services[name], c.next.Services[name])
	c.services[name] = v
	return v
}

func (c *change) chainChanged(name string) bool {
	if v, ok := c.chains[name]; ok {
		return v
	}
	v := !chainEqual(c.prev.Chains[name], c.next.Chains[name])
	c.chains[name] = v
	return v
}

// affects reports whether the change can alter the resources of a proxy of service: its own
// definition (ports, endpoints, upstreams), the intentions into it, its upstreams' chains and
// the endpoints of their targets. Upstreams are read from next; if they differ from prev, the
// service itself changed.
func (c *change) affects(service string) bool {
	if c.all || c.intentions[service] || c.intentions[mesh.Wildcard] || c.serviceChanged(service) {
		return true
	}
	for _, u := range upstreams(c.next, service) {
		if c.chainChanged(u.Service) {
			return true
		}
		ch := c.next.Chains[u.Service]
		if ch == nil {
			continue
		}
		for _, t := range ch.Targets {
			if c.serviceChanged(t.Service) {
				return true
			}
		}
	}
	return false
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
	return true
}

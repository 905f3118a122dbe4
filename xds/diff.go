package xds

import (
	"reflect"

	mesh "github.com/meshgit/mesh"
)

// change is what differs between two snapshots, at the granularity that rendering depends on.
// It lets SetSnapshot re-render only the proxies a change can affect.
type change struct {
	all        bool            // mesh-wide settings changed, or there is no previous snapshot
	services   map[string]bool // services added, removed or changed (including endpoints, upstreams)
	intentions map[string]bool // destinations whose inbound intentions changed ("*" for wildcard)
	chains     map[string]bool // services whose discovery chain changed
}

// diff compares two snapshots. A nil prev changes everything.
func diff(prev, next *mesh.Snapshot) *change {
	c := &change{services: map[string]bool{}, intentions: map[string]bool{}, chains: map[string]bool{}}
	if prev == nil || !reflect.DeepEqual(prev.Mesh, next.Mesh) {
		c.all = true
		return c
	}
	for name, s := range next.Services {
		if p, ok := prev.Services[name]; !ok || (p != s && !reflect.DeepEqual(p, s)) {
			c.services[name] = true
		}
	}
	for name := range prev.Services {
		if _, ok := next.Services[name]; !ok {
			c.services[name] = true
		}
	}
	type key struct{ dst, src string }
	pi := make(map[key]*mesh.Intention, len(prev.Intentions))
	for _, in := range prev.Intentions {
		pi[key{in.Destination, in.Source}] = in
	}
	for _, in := range next.Intentions {
		k := key{in.Destination, in.Source}
		if p, ok := pi[k]; !ok || (p != in && !reflect.DeepEqual(p, in)) {
			c.intentions[in.Destination] = true
		}
		delete(pi, k)
	}
	for k := range pi {
		c.intentions[k.dst] = true
	}
	for name, ch := range next.Chains {
		if p, ok := prev.Chains[name]; !ok || (p != ch && !reflect.DeepEqual(p, ch)) {
			c.chains[name] = true
		}
	}
	for name := range prev.Chains {
		if _, ok := next.Chains[name]; !ok {
			c.chains[name] = true
		}
	}
	return c
}

// affects reports whether the change can alter the resources of a proxy of service, whose
// dependencies are read from next: its own definition (ports, endpoints, upstreams), the
// intentions into it, its upstreams' chains and the endpoints of their targets.
func (c *change) affects(next *mesh.Snapshot, service string) bool {
	if c.all || c.services[service] || c.intentions[service] || c.intentions[mesh.Wildcard] {
		return true
	}
	if len(c.chains) == 0 && len(c.services) == 0 {
		return false
	}
	for _, u := range upstreams(next, service) {
		if c.chains[u.Service] || c.services[u.Service] {
			return true
		}
		ch := next.Chains[u.Service]
		if ch == nil {
			continue
		}
		for _, t := range ch.Targets {
			if c.services[t.Service] {
				return true
			}
		}
	}
	return false
}

// empty reports whether nothing changed.
func (c *change) empty() bool {
	return !c.all && len(c.services) == 0 && len(c.intentions) == 0 && len(c.chains) == 0
}

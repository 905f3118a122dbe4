package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"reflect"
	"slices"
	"sync"

	mesh "github.com/meshgit/mesh"
)

// change is what differs between two snapshots, at the granularity rendering depends on. It
// lets SetSnapshot re-render only the proxies a change can affect. Services and chains are
// compared lazily, and only those some proxy depends on, each at most once: with 10k services
// and 1,000 proxies that is a fraction of the snapshot. A change is safe for concurrent use
// (the proxies of a snapshot are examined by the goroutines that render them).
type change struct {
	mu         sync.Mutex // guards the memos below
	prev, next *mesh.Snapshot
	all        bool              // mesh-wide settings changed, or there is no previous snapshot
	intentions map[string]bool   // destinations whose inbound intentions changed ("*" for wildcard)
	services   map[string]bool   // memo: service definition (incl. endpoints, upstreams) changed
	endpoints  map[string]bool   // memo: of a changed service, whether only its endpoints changed
	chains     map[string]bool   // memo: discovery chain changed
	reach      map[upsKey]string // memo: digest of a list of upstreams under next (reachChanged)
	// wide holds, once computed (wideChanges), the services and chains that changed, of all:
	// a mesh-wide change examines every proxy, and so nearly every service and chain.
	wide struct {
		once             sync.Once
		services, chains map[string]bool
	}
}

// diff compares two snapshots. A nil prev changes everything.
func diff(prev, next *mesh.Snapshot) *change {
	c := &change{prev: prev, next: next, intentions: map[string]bool{}, services: map[string]bool{}, chains: map[string]bool{}, endpoints: map[string]bool{}, reach: map[upsKey]string{}}
	if prev == nil || !meshEqualButDefault(prev.Mesh, next.Mesh) || !reflect.DeepEqual(prev.MeshGateways, next.MeshGateways) ||
		!reflect.DeepEqual(prev.RemoteHealthy, next.RemoteHealthy) {
		c.all = true
		return c
	}
	if prev.Mesh.DefaultIntention != next.Mesh.DefaultIntention {
		// The default decides where no intention does, into every service: a change of every
		// service's inbound intentions (RBAC, and what transparent proxies reach), nothing
		// else (rbac.go and mesh.Reachable are its only readers). Which destinations' own
		// intentions changed too does not matter then: every reader of c.intentions takes the
		// wildcard for all of them.
		c.intentions[mesh.Wildcard] = true
		return c
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

// memoized returns m[k], computing it with compute (outside c.mu: two goroutines may both
// compute it, to the same value) the first time.
func memoized[K comparable, V any](c *change, m map[K]V, k K, compute func() V) V {
	c.mu.Lock()
	v, ok := m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = compute()
	c.mu.Lock()
	m[k] = v
	c.mu.Unlock()
	return v
}

func (c *change) serviceChanged(name string) bool {
	return memoized(c, c.services, name, func() bool {
		return !serviceEqual(c.prev.Services[name], c.next.Services[name])
	})
}

// endpointsOnly reports whether service, which changed, changed in its endpoints only (their
// health, a catalog instance...): what only the EDS of its callers is rendered from.
func (c *change) endpointsOnly(name string) bool {
	return memoized(c, c.endpoints, name, func() bool {
		a, b := c.prev.Services[name], c.next.Services[name]
		if a == nil || b == nil {
			return false
		}
		x, y := *a, *b
		x.Endpoints, y.Endpoints = nil, nil
		return serviceEqual(&x, &y)
	})
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
	if c.reachChanged(service, d.up.reach) {
		return false
	}
	for _, ch := range d.up.chains {
		if c.chainChanged(ch) {
			return false
		}
	}
	for svc := range d.services {
		if c.serviceChanged(svc) && !c.endpointsOnly(svc) {
			return false
		}
	}
	return true
}

func (c *change) chainChanged(name string) bool {
	return memoized(c, c.chains, name, func() bool {
		return !chainEqual(c.prev.ChainByKey(name), c.next.ChainByKey(name))
	})
}

// deps are what a proxy's resources are rendered from, besides the mesh-wide settings and
// the intentions into its service: its service's definition (ports, endpoints, upstreams), its
// upstreams' chains, and the services (endpoints) of their targets.
type deps struct {
	service string  // its own
	up      *upDeps // what its upstreams add
}

// upDeps are the deps that come from a list of upstreams. The proxies of services with the
// same list (in a dense transparent mesh, every service reaches every service: one list)
// share them (memo.dependencies): a group holds them for as long as it is served, and a
// thousand copies of a thousand names each were most of a group's memory.
type upDeps struct {
	chains  []string // by Snapshot.ChainKey
	targets []string // the services of the chains' targets, without repetition
	// reach is, for a transparent service, a digest of what its upstreams are: each one's name,
	// datacenter, local port and virtual IP (reachDigest); "" for a direct one. Intentions into
	// any service and services added or removed change it.
	reach string
}

// services yields the services d depends on: its own, then its targets'.
func (d *deps) services(yield func(string) bool) {
	if !yield(d.service) {
		return
	}
	for _, svc := range d.up.targets {
		if !yield(svc) {
			return
		}
	}
}

// reachDigest is a digest of a transparent service's upstreams (name, datacenter, local port
// and virtual IP of each, in order), or "" for a direct service.
func reachDigest(snap *mesh.Snapshot, service string, ups []*mesh.Upstream) string {
	if !snap.Services[service].Transparent() {
		return ""
	}
	vips := virtualIPs(snap)
	h := sha256.New()
	var buf []byte
	for _, u := range ups {
		buf = buf[:0]
		for _, f := range [...]string{u.Service, u.Datacenter, vips[u.Service]} {
			buf = binary.AppendUvarint(buf, uint64(len(f)))
			buf = append(buf, f...)
		}
		buf = binary.AppendVarint(buf, int64(u.LocalPort))
		h.Write(buf)
	}
	return string(h.Sum(nil))
}

// dependencies returns the deps of a proxy of service in snap. They stay valid for a later
// snapshot unless the service itself or one of the chains changed, which affects reports.
func dependencies(snap *mesh.Snapshot, service string) *deps {
	return &deps{service: service, up: upstreamDeps(snap, service, upstreams(snap, service))}
}

// upstreamDeps returns the deps that service's upstreams ups add.
func upstreamDeps(snap *mesh.Snapshot, service string, ups []*mesh.Upstream) *upDeps {
	// Most chains target their own service alone: room for one target service per upstream.
	d := &upDeps{chains: make([]string, 0, len(ups)), targets: make([]string, 0, len(ups)), reach: reachDigest(snap, service, ups)}
	seen := map[string]bool{}
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
				d.targets = append(d.targets, t.Service)
			}
		}
	}
	if cap(d.targets) > len(d.targets) {
		d.targets = slices.Clone(d.targets) // held as long as the group: no room to grow
	}
	return d
}

// reachChanged reports whether the reach of a transparent service, whose digest under prev
// is reach (as in its deps), is another under next. Digests are computed once per list of
// upstreams.
func (c *change) reachChanged(service, reach string) bool {
	if reach == "" {
		return false
	}
	ups := upstreams(c.next, service)
	k := upsKey{n: len(ups), transparent: c.next.Services[service].Transparent()}
	if len(ups) > 0 {
		k.first = ups[0]
	}
	return memoized(c, c.reach, k, func() string { return reachDigest(c.next, service, ups) }) != reach
}

// upsKey identifies a list of upstreams of a snapshot (Snapshot.Upstreams returns the same
// slice for every service that reaches every service) and whether its service is transparent.
type upsKey struct {
	first       *mesh.Upstream
	n           int
	transparent bool
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
	} else if c.reachChanged(service, d.up.reach) {
		return true
	}
	for _, ch := range d.up.chains {
		if c.chainChanged(ch) {
			return true
		}
	}
	for svc := range d.services {
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
	if c.reachChanged(service, d.up.reach) {
		return false
	}
	if c.intentions[mesh.Wildcard] {
		// Every proxy asks: look its deps up in what changed of all (nothing, for a flip of
		// the default intention alone), not each in a memo under a lock.
		services, chains := c.wideChanges()
		if len(chains) > 0 && slices.ContainsFunc(d.up.chains, func(ch string) bool { return chains[ch] }) {
			return false
		}
		if len(services) > 0 {
			for svc := range d.services {
				if services[svc] {
					return false
				}
			}
		}
		return true
	}
	for _, ch := range d.up.chains {
		if c.chainChanged(ch) {
			return false
		}
	}
	for svc := range d.services {
		if c.serviceChanged(svc) {
			return false
		}
	}
	return true
}

// wideChanges returns the services and the chains (by Snapshot.ChainKey) that differ between
// the two snapshots, of all, computed once.
func (c *change) wideChanges() (services, chains map[string]bool) {
	c.wide.once.Do(func() {
		c.wide.services, c.wide.chains = map[string]bool{}, map[string]bool{}
		for _, m := range []map[string]*mesh.Service{c.prev.Services, c.next.Services} {
			for name := range m {
				if !serviceEqual(c.prev.Services[name], c.next.Services[name]) {
					c.wide.services[name] = true
				}
			}
		}
		for _, m := range []map[string]*mesh.Chain{c.prev.Chains, c.next.Chains, c.prev.RemoteChains, c.next.RemoteChains} {
			for key := range m {
				if !chainEqual(c.prev.ChainByKey(key), c.next.ChainByKey(key)) {
					c.wide.chains[key] = true
				}
			}
		}
	})
	return c.wide.services, c.wide.chains
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

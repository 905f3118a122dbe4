package compiler

import (
	"sort"

	mesh "github.com/meshgit/mesh"
)

// chains resolves every service's discovery chain, router → splitter → resolver, into routes of
// weighted targets. It runs only on a configuration that passed every check, so references,
// subsets, cycles and redirects are known to be sound.
func (c *compilation) chains() {
	c.chainContext()
	for _, name := range c.serviceNames() {
		c.snap.Chains[name] = c.memoChain(name) // incremental.go
	}
	// Upstreams that name another datacenter follow the chain resolved there.
	for _, name := range c.serviceNames() {
		for _, u := range c.snap.Services[name].Upstreams {
			key := c.snap.ChainKey(u)
			if key == u.Service || c.snap.RemoteChains[key] != nil || c.snap.Services[u.Service] == nil {
				continue
			}
			if c.snap.RemoteChains == nil {
				c.snap.RemoteChains = map[string]*mesh.Chain{}
			}
			c.snap.RemoteChains[key] = c.chain(u.Service, u.Datacenter)
		}
	}
}

// chain resolves the discovery chain of service in dc ("": the mesh's datacenter).
func (c *compilation) chain(name, dc string) *mesh.Chain {
	svc := c.snap.Services[name]
	ch := &mesh.Chain{Service: name, Protocol: svc.Protocol, Datacenter: dc, Targets: map[string]*mesh.Target{}}
	if rt := c.snap.Routers[name]; rt != nil {
		for _, r := range rt.Routes {
			d := r.Destination
			ch.Routes = append(ch.Routes, mesh.ChainRoute{
				Match:          r.Match,
				Splits:         c.split(ch, d.Service, d.Subset, mesh.TotalWeight, nil),
				PrefixRewrite:  d.PrefixRewrite,
				RequestTimeout: d.RequestTimeout,
				NumRetries:     d.NumRetries,
				RetryOn:        d.RetryOn,
			})
		}
	}
	ch.Routes = append(ch.Routes, mesh.ChainRoute{Splits: c.split(ch, name, "", mesh.TotalWeight, nil)})
	return ch
}

// split resolves traffic for service (and subset) with a share of weight out of TotalWeight,
// through the service's splitter when it has one and no subset is asked for.
func (c *compilation) split(ch *mesh.Chain, service, subset string, weight int, seen []string) []mesh.TargetWeight {
	sp := c.snap.Splitters[service]
	if subset != "" || sp == nil || contains(seen, service) {
		return []mesh.TargetWeight{{Target: c.resolve(ch, service, subset), Weight: weight}}
	}
	seen = append(seen, service)
	var out []mesh.TargetWeight
	for _, s := range sp.Splits {
		w := weight * s.Weight / mesh.TotalWeight
		if s.Service == service {
			out = append(out, mesh.TargetWeight{Target: c.resolve(ch, service, s.Subset), Weight: w})
			continue
		}
		out = append(out, c.split(ch, s.Service, s.Subset, w, seen)...)
	}
	return normalize(out, weight)
}

// normalize merges splits to the same target, drops empty ones, sorts by target and gives any
// rounding remainder to the heaviest, so that the weights sum to exactly total.
func normalize(in []mesh.TargetWeight, total int) []mesh.TargetWeight {
	sum := map[string]int{}
	for _, tw := range in {
		sum[tw.Target] += tw.Weight
	}
	out := make([]mesh.TargetWeight, 0, len(sum))
	got := 0
	for t, w := range sum {
		if w > 0 {
			out = append(out, mesh.TargetWeight{Target: t, Weight: w})
			got += w
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	if len(out) > 0 && got != total {
		heaviest := 0
		for i := range out {
			if out[i].Weight > out[heaviest].Weight {
				heaviest = i
			}
		}
		out[heaviest].Weight += total - got
	}
	return out
}

// resolve returns the ID of the target for subset of service in the chain's datacenter,
// following the service's resolver (one redirect, default subset, failover), and adds it and its
// failover targets to the chain.
func (c *compilation) resolve(ch *mesh.Chain, service, subset string) string {
	dc := c.snap.Mesh.Datacenter
	if ch.Datacenter != "" {
		dc = ch.Datacenter
	}
	if r := c.snap.Resolvers[service]; r != nil && r.Redirect != nil {
		rd := r.Redirect
		service = rd.Service
		if rd.Subset != "" {
			subset = rd.Subset
		}
		if rd.Datacenter != "" {
			dc = rd.Datacenter
		}
	}
	r := c.snap.Resolvers[service]
	if subset == "" && r != nil {
		subset = r.DefaultSubset
	}
	t := c.target(ch, service, subset, dc)
	if r != nil && len(r.Failover) > 0 && t.Failover == nil {
		f, ok := r.Failover[subset]
		if !ok {
			f, ok = r.Failover[mesh.Wildcard]
		}
		if ok {
			fsvc := f.Service
			if fsvc == "" {
				fsvc = service
			}
			for _, fdc := range f.Datacenters {
				if fdc == dc && fsvc == service {
					continue
				}
				fsub := subset
				if fr := c.snap.Resolvers[fsvc]; fsvc != service && (fr == nil || !hasSubset(fr, fsub)) {
					fsub = ""
				}
				ft := c.target(ch, fsvc, fsub, fdc)
				t.Failover = append(t.Failover, ft.ID)
			}
		}
	}
	return t.ID
}

// target returns the chain's target for subset of service in dc, creating it.
func (c *compilation) target(ch *mesh.Chain, service, subset, dc string) *mesh.Target {
	id := mesh.TargetID(subset, service, dc)
	if t := ch.Targets[id]; t != nil {
		return t
	}
	t := &mesh.Target{
		ID: id, Service: service, Subset: subset, Datacenter: dc,
		SNI:            mesh.SNI(subset, service, dc, c.snap.Mesh.TrustDomain),
		ConnectTimeout: mesh.Duration(DefaultConnectTimeout),
		LoadBalancer:   mesh.LBRoundRobin,
	}
	if r := c.snap.Resolvers[service]; r != nil && r.Redirect == nil {
		if subset != "" {
			t.Filter = r.Subsets[subset].Filter
		}
		t.ConnectTimeout = r.ConnectTimeout
		if r.LoadBalancer != nil {
			t.LoadBalancer = r.LoadBalancer.Policy
		}
	}
	ch.Targets[id] = t
	return t
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package compiler

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"cuelang.org/go/cue"

	mesh "github.com/meshgit/mesh"
)

// Defaults applied where the repository leaves a setting out.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultLeafTTL        = 72 * time.Hour
	DefaultTLSMinVersion  = "TLSv1_2"
)

// Compile compiles the files of one mesh directory into a sealed Snapshot (its Version set).
// Configuration errors are returned together as Errors, sorted by position.
func Compile(ctx context.Context, files []File) (snap *mesh.Snapshot, err error) {
	// A panic in the CUE evaluator on some input must not take a server down: it becomes an
	// error of this one compilation.
	defer func() {
		if r := recover(); r != nil {
			snap, err = nil, fmt.Errorf("%w: internal error while compiling: %v", ErrInternal, r)
		}
	}()
	var cache *Cache
	if st, ok := ctx.Value(guardKey{}).(*guardState); ok {
		cache = st.opts.Cache
	}
	cache.begin()
	defer cache.end()
	var errs errorList
	l, ok := load(files, &errs, cache)
	if !ok {
		return nil, errs.err()
	}
	schemaFailed := len(errs.list) > 0
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raws := l.fast
	if raws == nil {
		raws = &fastMesh{} // the full path: every element decoded from CUE's value
	}
	c := &compilation{root: l.root(), fast: l.fast, raws: raws, errs: &errs, quiet: schemaFailed, broken: map[string]bool{}, snap: &mesh.Snapshot{
		Services:  map[string]*mesh.Service{},
		Routers:   map[string]*mesh.Router{},
		Splitters: map[string]*mesh.Splitter{},
		Resolvers: map[string]*mesh.Resolver{},
		Chains:    map[string]*mesh.Chain{},
		Positions: map[string]mesh.Pos{},
	}}
	c.meshConfig()
	c.startIncremental(cache) // incremental.go
	if l.fast == nil {
		checkOneOfsClosed(c.root, &errs) // closed.go
	}
	c.services()
	c.intentions()
	c.routers()
	c.splitters()
	c.resolvers()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.checkSplitterCycles()
	c.checkRedirects()
	if len(errs.list) > 0 {
		return nil, errs.err()
	}
	c.chains()
	if len(errs.list) > 0 {
		return nil, errs.err()
	}
	if err := c.seal(); err != nil {
		return nil, err
	}
	c.commit()
	// Guardrails: analysis warnings and policy violations (analysis.go, policy.go).
	if err := guard(ctx, c.snap); err != nil {
		return nil, err
	}
	return c.snap, nil
}

type compilation struct {
	// root is the whole mesh: its evaluated value, or its data and positions (node.go).
	root node
	// fast is the mesh read from its syntax on the fast path (fastpath.go), nil on the full
	// path; raw forms come from it instead of cue.Value.Decode. raws is fast, or an empty
	// fastMesh on the full path.
	fast, raws *fastMesh
	errs       *errorList
	snap       *mesh.Snapshot
	// quiet is set when the schema rejected parts of the mesh: those parts are skipped rather
	// than reported twice, and checks that depend on them are not made.
	quiet bool
	// broken names the elements the schema rejected, e.g. "resolvers.api" or "mesh".
	broken map[string]bool
	// positions of chain entries, for messages
	resolverNodes map[string]node
	splitterNodes map[string]node
	routerNodes   map[string]node
	// inc reuses what earlier compilations with the same Cache derived (incremental.go).
	inc *incremental
	// names are the services' names, sorted, once services() has made them all.
	names []string
}

// serviceNames is c.snap.ServiceNames(), made once: no service is added after services().
func (c *compilation) serviceNames() []string {
	if c.names == nil {
		c.names = c.snap.ServiceNames()
	}
	return c.names
}

func (c *compilation) add(pos mesh.Pos, format string, args ...any) { c.errs.add(pos, format, args...) }

// addUnlessPartial reports an error that the files which could not be loaded might resolve (a
// reference to something defined elsewhere, a protocol or setting left to its default, a field
// given in another file): when some files were not loaded, it would be a guess, so it is left out.
func (c *compilation) addUnlessPartial(pos mesh.Pos, format string, args ...any) {
	if !c.errs.partial {
		c.errs.add(pos, format, args...)
	}
}

// checkName reports a key that is not a DNS label; partial wildcards get their own message.
func (c *compilation) checkName(kind, name string, pos mesh.Pos, wildcardOK bool) bool {
	if name == mesh.Wildcard && wildcardOK {
		return true
	}
	if strings.Contains(name, "*") {
		c.add(pos, "%s %q: partial wildcards are not supported; use \"*\" or a service name", kind, name)
		return false
	}
	if !isDNSLabel(name) {
		c.add(pos, "%s %q: names are DNS labels (lower-case letters, digits and '-', at most 63)", kind, name)
		return false
	}
	return true
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
			return false
		}
	}
	return true
}

func (c *compilation) duration(s string, pos mesh.Pos, what string) mesh.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.add(pos, "%s: invalid duration %q", what, s)
		return 0
	}
	if d < 0 {
		c.add(pos, "%s: negative duration %q", what, s)
	}
	return mesh.Duration(d)
}

func (c *compilation) meshConfig() {
	mv := c.root.at(cue.Str("mesh"))
	var raw rawMesh
	if c.fast != nil {
		raw = c.fast.mesh
	} else if err := mv.v.Decode(&raw); err != nil {
		c.broken["mesh"] = true
		if !c.quiet {
			addCUEErrors(c.errs, err)
		}
		return
	}
	pos := mv.pos()
	m := mesh.Config{
		Name:             raw.Name,
		TrustDomain:      raw.TrustDomain,
		Datacenter:       raw.Datacenter,
		Datacenters:      raw.Datacenters,
		DefaultIntention: mesh.Action(raw.DefaultIntention),
		Policies:         raw.Policies,
		Mode:             raw.Mode,
	}
	if m.Mode == mesh.ModeDirect {
		m.Mode = "" // the default, recorded as when left out
	}
	if raw.TransparentProxy != nil {
		m.TransparentProxy.MeshDestinationsOnly = raw.TransparentProxy.MeshDestinationsOnly
	}
	if raw.MeshGateway != nil {
		m.MeshGateway.Mode = raw.MeshGateway.Mode
	}
	if m.Datacenter == "" {
		m.Datacenter = "dc1"
	}
	if len(m.Datacenters) == 0 {
		m.Datacenters = []string{m.Datacenter}
	}
	seen := map[string]bool{}
	for _, dc := range m.Datacenters {
		if seen[dc] {
			c.add(lookup(mv, pos, cue.Str("datacenters")), "mesh.datacenters: %q listed twice", dc)
		}
		seen[dc] = true
	}
	if !seen[m.Datacenter] {
		c.addUnlessPartial(lookup(mv, pos, cue.Str("datacenter")), "mesh.datacenter %q is not in mesh.datacenters", m.Datacenter)
	}
	m.TLS.MinVersion = DefaultTLSMinVersion
	if raw.TLS != nil {
		if raw.TLS.MinVersion != "" {
			m.TLS.MinVersion = raw.TLS.MinVersion
		}
		m.TLS.MaxVersion = raw.TLS.MaxVersion
		m.TLS.CipherSuites = raw.TLS.CipherSuites
		if m.TLS.MaxVersion != "" && m.TLS.MaxVersion < m.TLS.MinVersion {
			c.add(lookup(mv, pos, cue.Str("tls"), cue.Str("maxVersion")), "mesh.tls: maxVersion %s is below minVersion %s", m.TLS.MaxVersion, m.TLS.MinVersion)
		}
		c.checkCipherSuites(mv, pos, m.TLS)
		c.snap.Positions[mesh.PathMeshTLS] = lookup(mv, pos, cue.Str("tls"))
	}
	m.CA.LeafTTL = mesh.Duration(DefaultLeafTTL)
	if raw.CA != nil && raw.CA.LeafTTL != "" {
		m.CA.LeafTTL = c.duration(raw.CA.LeafTTL, lookup(mv, pos, cue.Str("ca"), cue.Str("leafTTL")), "mesh.ca.leafTTL")
		if m.CA.LeafTTL.D() < time.Second {
			c.add(lookup(mv, pos, cue.Str("ca"), cue.Str("leafTTL")), "mesh.ca.leafTTL: %s is too short (at least 1s)", raw.CA.LeafTTL)
		}
	}
	c.snap.Mesh = m
	c.snap.Positions["mesh"] = pos
	c.snap.Positions[mesh.PathTrustDomain] = lookup(mv, pos, cue.Str("trustDomain"))
}

func (c *compilation) hasDC(dc string) bool {
	if c.broken["mesh"] {
		return true // unknown: the schema error on mesh says what is wrong
	}
	for _, d := range c.snap.Mesh.Datacenters {
		if d == dc {
			return true
		}
	}
	return false
}

func (c *compilation) services() {
	for _, e := range decodeMap(c.reuseServices(c.root.at(cue.Str("services"))), c.raws.services, c.errs, c.quiet) {
		if !c.checkName("service", e.name, e.pos, false) {
			continue
		}
		reserved := e.name == mesh.ServerService
		if reserved {
			c.add(e.pos, "service %q: the name is reserved for the mesh servers' own identity; choose another", e.name)
		}
		if reserved || !e.ok {
			// Reserved, or rejected by the schema: it exists (references to it are not errors too),
			// but its protocol and the rest are unknown.
			c.snap.Services[e.name] = &mesh.Service{Name: e.name}
			c.snap.Positions[mesh.PathService(e.name)] = e.pos
			continue
		}
		r := e.raw
		if r.Protocol == "" {
			r.Protocol = mesh.ProtocolTCP // the schema's default (schemaDefaults), for raw forms read from syntax
		}
		s := &mesh.Service{
			Name:     e.name,
			Protocol: r.Protocol,
			Port:     r.Port,
			Owners:   sortedCopy(r.Owners),
			Meta:     r.Meta,
		}
		s.Mode = r.Mode
		if s.Mode == "" {
			s.Mode = c.snap.Mesh.Mode
		}
		if s.Mode == mesh.ModeDirect {
			s.Mode = "" // the default is not recorded, so that versions stay as they were
		}
		if r.Upstreams.All {
			if r.Mode == mesh.ModeDirect {
				c.add(lookup(e.n, e.pos, cue.Str("upstreams")), "service %s: upstreams \"*\" needs transparent mode, but the service sets mode \"direct\"", e.name)
			}
			s.Mode = mesh.ModeTransparent
		}
		if len(r.Upstreams.ByName) > 0 {
			s.Upstreams = map[string]*mesh.Upstream{}
			ports := map[int]string{}
			for _, u := range sortedKeys(r.Upstreams.ByName) {
				ru := r.Upstreams.ByName[u]
				upos := lookup(e.n, e.pos, cue.Str("upstreams"), cue.Str(u))
				if prev, ok := ports[ru.LocalPort]; ok {
					c.add(upos, "service %s: upstreams %s and %s both listen on localPort %d", e.name, prev, u, ru.LocalPort)
				}
				ports[ru.LocalPort] = u
				if ru.Datacenter != "" && !c.hasDC(ru.Datacenter) {
					c.addUnlessPartial(upos, "service %s: upstream %s: unknown datacenter %q", e.name, u, ru.Datacenter)
				}
				s.Upstreams[u] = &mesh.Upstream{Service: u, LocalPort: ru.LocalPort, Datacenter: ru.Datacenter}
				if ru.MeshGateway != nil {
					s.Upstreams[u].MeshGateway = ru.MeshGateway.Mode
				}
				c.snap.Positions[mesh.PathService(e.name)+".upstreams."+u] = upos
			}
		}
		seen := map[string]bool{}
		for i, ep := range r.Endpoints {
			dc := ep.Datacenter
			if dc == "" {
				dc = c.snap.Mesh.Datacenter
			}
			epos := lookup(e.n, e.pos, cue.Str("endpoints"), cue.Index(i))
			if !c.hasDC(dc) {
				c.addUnlessPartial(epos, "service %s: endpoint %s:%d: unknown datacenter %q", e.name, ep.Address, ep.Port, dc)
			}
			key := sprintf("%s:%d", ep.Address, ep.Port)
			if seen[key] {
				c.add(epos, "service %s: endpoint %s listed twice", e.name, key)
			}
			seen[key] = true
			s.Endpoints = append(s.Endpoints, mesh.Endpoint{Address: ep.Address, Port: ep.Port, Datacenter: dc, Meta: ep.Meta})
		}
		sort.Slice(s.Endpoints, func(i, j int) bool {
			a, b := s.Endpoints[i], s.Endpoints[j]
			if a.Datacenter != b.Datacenter {
				return a.Datacenter < b.Datacenter
			}
			if a.Address != b.Address {
				return a.Address < b.Address
			}
			return a.Port < b.Port
		})
		if r.HealthCheck != nil {
			hc := *r.HealthCheck // a copy: raw forms may be shared through a Cache
			hpos := lookup(e.n, e.pos, cue.Str("healthCheck"))
			if hc.HTTP == "" && !hc.TCP && hc.GRPC == "" {
				c.addUnlessPartial(hpos, "service %s: healthCheck needs one of http, tcp and grpc", e.name)
			}
			if hc.Interval == "" {
				hc.Interval = "10s"
			}
			if hc.Timeout == "" {
				hc.Timeout = "2s"
			}
			s.HealthCheck = &mesh.HealthCheck{
				HTTP: hc.HTTP, TCP: hc.TCP, GRPC: hc.GRPC,
				Interval: c.duration(hc.Interval, hpos, "healthCheck.interval"),
				Timeout:  c.duration(hc.Timeout, hpos, "healthCheck.timeout"),
			}
			if s.HealthCheck.Timeout > s.HealthCheck.Interval {
				c.add(hpos, "service %s: healthCheck timeout %s exceeds its interval %s", e.name, hc.Timeout, hc.Interval)
			}
		}
		c.snap.Services[e.name] = s
		c.snap.Positions[mesh.PathService(e.name)] = e.pos
		c.derivedService(e.name, s)
	}
	// Transparent sidecars match connections by the destinations' virtual IPs.
	for _, svc := range c.snap.Services {
		if svc.Transparent() {
			c.snap.VirtualIPs = mesh.AssignVirtualIPs(c.serviceNames())
			break
		}
	}
	// Upstreams must name services; checked once all services are known.
	for _, name := range c.serviceNames() {
		for u := range c.snap.Services[name].Upstreams {
			if c.snap.Services[u] == nil {
				c.addUnlessPartial(c.snap.Positions[mesh.PathService(name)+".upstreams."+u], "service %s: upstream %s: no such service", name, u)
			}
		}
	}
}

func (c *compilation) intentions() {
	pre := c.raws.intentions
	dests, err := c.root.at(cue.Str("intentions")).fields()
	if err != nil {
		addCUEErrors(c.errs, err)
	}
	for _, d := range dests {
		if c.reuseIntentions(d.name) {
			continue
		}
		dpos := d.node.pos()
		dst := d.name
		if !c.checkName("intention destination", dst, dpos, true) {
			continue
		}
		start := len(c.snap.Intentions)
		dsvc := c.snap.Services[dst]
		if dst != mesh.Wildcard && dsvc == nil {
			c.addUnlessPartial(dpos, "intentions: destination %s: no such service", dst)
		}
		for _, sEntry := range decodeMap(d.node, pre[dst], c.errs, c.quiet) {
			src := sEntry.name
			if !c.checkName("intention source", src, sEntry.pos, true) || !sEntry.ok {
				continue
			}
			if src != mesh.Wildcard && c.snap.Services[src] == nil {
				c.addUnlessPartial(sEntry.pos, "intention %s → %s: source %s: no such service", src, dst, src)
			}
			r := sEntry.raw
			if r.Action == "" && len(r.Permissions) == 0 {
				c.addUnlessPartial(sEntry.pos, "intention %s → %s: needs an action or permissions", src, dst)
			}
			in := &mesh.Intention{
				Source: src, Destination: dst, Precedence: mesh.Precedence(src, dst),
				Action: mesh.Action(r.Action), Description: r.Description,
			}
			if len(r.Permissions) > 0 {
				ppos := lookup(sEntry.n, sEntry.pos, cue.Str("permissions"))
				switch {
				case dst == mesh.Wildcard:
					c.add(ppos, "intention %s → *: permissions are not allowed on destination \"*\"; L7 rules need a destination's protocol", src)
				case notHTTP(dsvc):
					c.addUnlessPartial(ppos, "intention %s → %s: permissions need an http, http2 or grpc destination; %s speaks %s", src, dst, dst, dsvc.Protocol)
				}
			}
			for i, rp := range r.Permissions {
				pv := sEntry.n.at(cue.Str("permissions"), cue.Index(i))
				pp := pv.pos()
				c.snap.Positions[mesh.PathPermission(dst, src, i)] = pp
				in.Permissions = append(in.Permissions, mesh.Permission{
					Action: mesh.Action(rp.Action),
					HTTP:   c.httpMatch(rp.HTTP, pv.at(cue.Str("http")), pp),
				})
			}
			c.snap.Intentions = append(c.snap.Intentions, in)
			c.snap.Positions[mesh.PathIntention(dst, src)] = sEntry.pos
		}
		c.derivedIntentions(dst, dpos, c.snap.Intentions[start:])
	}
	c.sortIntentions() // incremental.go
}

// httpMatch converts a raw match, checking its regexes.
func (c *compilation) httpMatch(r *rawHTTPMatch, v node, pos mesh.Pos) *mesh.HTTPMatch {
	if r == nil {
		return nil
	}
	m := &mesh.HTTPMatch{Path: r.Path, PathPrefix: r.PathPrefix, PathRegex: r.PathRegex, Methods: r.Methods}
	if r.PathRegex != "" {
		c.checkRegex(r.PathRegex, lookup(v, pos, cue.Str("pathRegex")), "pathRegex")
	}
	for i, h := range r.Header {
		hm := mesh.HeaderMatch{Name: strings.ToLower(h.Name), Invert: h.Invert}
		hm.Kind, hm.Value = matchKind(h)
		if hm.Kind == mesh.MatchPresent && (h.Present == nil || !*h.Present) {
			c.addUnlessPartial(lookup(v, pos, cue.Str("header"), cue.Index(i)), "header %s: needs one of exact, prefix, suffix, regex and present", h.Name)
		}
		if hm.Kind == mesh.MatchRegex {
			c.checkRegex(hm.Value, lookup(v, pos, cue.Str("header"), cue.Index(i), cue.Str("regex")), "header "+h.Name)
		}
		m.Header = append(m.Header, hm)
	}
	for i, q := range r.QueryParam {
		qm := mesh.QueryMatch{Name: q.Name}
		qm.Kind, qm.Value = matchKind(q)
		if qm.Kind == mesh.MatchPresent && (q.Present == nil || !*q.Present) {
			c.addUnlessPartial(lookup(v, pos, cue.Str("queryParam"), cue.Index(i)), "queryParam %s: needs one of exact, regex and present", q.Name)
		}
		if qm.Kind == mesh.MatchRegex {
			c.checkRegex(qm.Value, lookup(v, pos, cue.Str("queryParam"), cue.Index(i), cue.Str("regex")), "queryParam "+q.Name)
		}
		m.QueryParam = append(m.QueryParam, qm)
	}
	return m
}

func matchKind(r rawMatch) (kind, value string) {
	switch {
	case r.Exact != nil:
		return mesh.MatchExact, *r.Exact
	case r.Prefix != nil:
		return mesh.MatchPrefix, *r.Prefix
	case r.Suffix != nil:
		return mesh.MatchSuffix, *r.Suffix
	case r.Regex != nil:
		return mesh.MatchRegex, *r.Regex
	}
	return mesh.MatchPresent, ""
}

func (c *compilation) checkRegex(expr string, pos mesh.Pos, what string) {
	if _, err := mesh.FullRegexp(expr); err != nil {
		if _, rawErr := regexp.Compile(expr); rawErr != nil {
			err = rawErr
		}
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "error parsing regexp: ")
		c.add(pos, "%s: invalid RE2 regex %q: %s", what, expr, msg)
	}
}

func (c *compilation) routers() {
	c.routerNodes = map[string]node{}
	for _, e := range decodeMap(c.root.at(cue.Str("routers")), c.raws.routers, c.errs, c.quiet) {
		c.routerNodes[e.name] = e.n
		if !c.checkName("router", e.name, e.pos, false) {
			continue
		}
		if !e.ok {
			c.broken[mesh.PathRouter(e.name)] = true
			continue
		}
		svc := c.snap.Services[e.name]
		c.snap.Positions[mesh.PathRouter(e.name)] = e.pos
		if svc == nil {
			c.addUnlessPartial(e.pos, "router %s: no such service", e.name)
			continue
		}
		if notHTTP(svc) {
			c.addUnlessPartial(e.pos, "router %s: routers need an http, http2 or grpc service; %s speaks %s", e.name, e.name, svc.Protocol)
			continue
		}
		rt := &mesh.Router{}
		for i, r := range e.raw.Routes {
			rv := e.n.at(cue.Str("routes"), cue.Index(i))
			rpos := rv.pos()
			c.snap.Positions[mesh.PathRoute(e.name, i)] = rpos
			route := mesh.Route{Destination: mesh.RouteDestination{Service: e.name}}
			if r.Match != nil && r.Match.HTTP != nil {
				route.Match = c.httpMatch(r.Match.HTTP, rv.at(cue.Str("match"), cue.Str("http")), rpos)
			}
			if d := r.Destination; d != nil {
				dpos := lookup(rv, rpos, cue.Str("destination"))
				if d.Service != "" {
					route.Destination.Service = d.Service
				}
				route.Destination.Subset = d.Subset
				route.Destination.PrefixRewrite = d.PrefixRewrite
				route.Destination.RequestTimeout = c.duration(d.RequestTimeout, dpos, "requestTimeout")
				route.Destination.NumRetries = d.NumRetries
				route.Destination.RetryOn = d.RetryOn
				if d.PrefixRewrite != "" && (route.Match == nil || route.Match.PathPrefix == "" && route.Match.Path == "") {
					c.add(dpos, "router %s: route %d: prefixRewrite needs a path or pathPrefix match", e.name, i+1)
				}
			}
			ds := route.Destination.Service
			dsvc := c.snap.Services[ds]
			dpos := lookup(rv, rpos, cue.Str("destination"), cue.Str("service"))
			switch {
			case dsvc == nil:
				c.addUnlessPartial(dpos, "router %s: route %d: destination service %s: no such service", e.name, i+1, ds)
			case notHTTP(dsvc):
				c.addUnlessPartial(dpos, "router %s: route %d: destination %s speaks %s; routes need http, http2 or grpc", e.name, i+1, ds, dsvc.Protocol)
			}
			rt.Routes = append(rt.Routes, route)
		}
		c.snap.Routers[e.name] = rt
	}
}

func (c *compilation) splitters() {
	c.splitterNodes = map[string]node{}
	for _, e := range decodeMap(c.root.at(cue.Str("splitters")), c.raws.splitters, c.errs, c.quiet) {
		if !c.checkName("splitter", e.name, e.pos, false) {
			continue
		}
		if !e.ok {
			c.broken[mesh.PathSplitter(e.name)] = true
			continue
		}
		c.snap.Positions[mesh.PathSplitter(e.name)] = e.pos
		c.splitterNodes[e.name] = e.n
		svc := c.snap.Services[e.name]
		if svc == nil {
			c.addUnlessPartial(e.pos, "splitter %s: no such service", e.name)
			continue
		}
		if notHTTP(svc) {
			c.addUnlessPartial(e.pos, "splitter %s: splitters need an http, http2 or grpc service; %s speaks %s", e.name, e.name, svc.Protocol)
		}
		sp := &mesh.Splitter{}
		total := 0
		for i, s := range e.raw.Splits {
			w := int(math.Round(s.Weight * 100))
			spos := lookup(e.n, e.pos, cue.Str("splits"), cue.Index(i))
			if math.Abs(s.Weight*100-float64(w)) > 1e-6 {
				c.add(spos, "splitter %s: split %d: weight %v has more than two decimals", e.name, i+1, s.Weight)
			}
			total += w
			name := s.Service
			if name == "" {
				name = e.name
			}
			if ls := c.snap.Services[name]; ls == nil {
				c.addUnlessPartial(spos, "splitter %s: split %d: service %s: no such service", e.name, i+1, name)
			} else if notHTTP(ls) {
				c.addUnlessPartial(spos, "splitter %s: split %d: service %s speaks %s; splits need http, http2 or grpc", e.name, i+1, name, ls.Protocol)
			}
			sp.Splits = append(sp.Splits, mesh.Split{Weight: w, Service: name, Subset: s.Subset})
		}
		if total != mesh.TotalWeight {
			c.add(e.pos, "splitter %s: weights sum to %s, want 100", e.name, formatWeight(total))
		}
		c.snap.Splitters[e.name] = sp
	}
}

func formatWeight(w int) string {
	if w%100 == 0 {
		return sprintf("%d", w/100)
	}
	return strings.TrimRight(sprintf("%d.%02d", w/100, w%100), "0")
}

func (c *compilation) resolvers() {
	c.resolverNodes = map[string]node{}
	entries := decodeMap(c.root.at(cue.Str("resolvers")), c.raws.resolvers, c.errs, c.quiet)
	for _, e := range entries {
		if !c.checkName("resolver", e.name, e.pos, false) {
			continue
		}
		if !e.ok {
			c.broken[mesh.PathResolver(e.name)] = true
			continue
		}
		c.snap.Positions[mesh.PathResolver(e.name)] = e.pos
		c.resolverNodes[e.name] = e.n
		if c.snap.Services[e.name] == nil {
			c.addUnlessPartial(e.pos, "resolver %s: no such service", e.name)
			continue
		}
		r := e.raw
		res := &mesh.Resolver{DefaultSubset: r.DefaultSubset}
		if r.Redirect != nil {
			rd := r.Redirect
			rpos := lookup(e.n, e.pos, cue.Str("redirect"))
			if r.DefaultSubset != "" || len(r.Subsets) > 0 || len(r.Failover) > 0 || r.ConnectTimeout != "" || r.LoadBalancer != nil {
				c.add(rpos, "resolver %s: redirect replaces everything else; remove the resolver's other fields", e.name)
			}
			if rd.Service == "" && rd.Subset == "" && rd.Datacenter == "" {
				c.add(rpos, "resolver %s: redirect names no service, subset or datacenter", e.name)
			}
			target := rd.Service
			if target == "" {
				target = e.name
			}
			if c.snap.Services[target] == nil {
				c.addUnlessPartial(lookup(e.n, rpos, cue.Str("redirect"), cue.Str("service")), "resolver %s: redirect to %s: no such service", e.name, target)
			}
			if rd.Datacenter != "" && !c.hasDC(rd.Datacenter) {
				c.addUnlessPartial(lookup(e.n, rpos, cue.Str("redirect"), cue.Str("datacenter")), "resolver %s: redirect: unknown datacenter %q", e.name, rd.Datacenter)
			}
			res.Redirect = &mesh.Redirect{Service: target, Subset: rd.Subset, Datacenter: rd.Datacenter}
			c.snap.Resolvers[e.name] = res
			continue
		}
		if len(r.Subsets) > 0 {
			res.Subsets = map[string]mesh.Subset{}
			for n, s := range r.Subsets {
				spos := lookup(e.n, e.pos, cue.Str("subsets"), cue.Str(n))
				if !c.checkName("subset", n, spos, false) {
					continue
				}
				res.Subsets[n] = mesh.Subset{Filter: s.Filter}
			}
		}
		if r.DefaultSubset != "" && !hasKey(r.Subsets, r.DefaultSubset) {
			c.addUnlessPartial(lookup(e.n, e.pos, cue.Str("defaultSubset")), "resolver %s: defaultSubset %s: no such subset", e.name, r.DefaultSubset)
		}
		res.ConnectTimeout = mesh.Duration(DefaultConnectTimeout)
		if r.ConnectTimeout != "" {
			res.ConnectTimeout = c.duration(r.ConnectTimeout, lookup(e.n, e.pos, cue.Str("connectTimeout")), "connectTimeout")
		}
		res.LoadBalancer = &mesh.LoadBalancer{Policy: mesh.LBRoundRobin}
		if r.LoadBalancer != nil && r.LoadBalancer.Policy != "" {
			res.LoadBalancer.Policy = r.LoadBalancer.Policy
		}
		if len(r.Failover) > 0 {
			res.Failover = map[string]mesh.Failover{}
			for _, key := range sortedKeys(r.Failover) {
				f := r.Failover[key]
				fpos := lookup(e.n, e.pos, cue.Str("failover"), cue.Str(key))
				if key != mesh.Wildcard && !hasKey(r.Subsets, key) {
					c.addUnlessPartial(fpos, "resolver %s: failover for subset %s: no such subset", e.name, key)
				}
				if f.Service != "" && c.snap.Services[f.Service] == nil {
					c.addUnlessPartial(lookup(e.n, fpos, cue.Str("failover"), cue.Str(key), cue.Str("service")), "resolver %s: failover to %s: no such service", e.name, f.Service)
				}
				for _, dc := range f.Datacenters {
					if !c.hasDC(dc) {
						c.addUnlessPartial(fpos, "resolver %s: failover: unknown datacenter %q", e.name, dc)
					}
				}
				res.Failover[key] = mesh.Failover{Service: f.Service, Datacenters: f.Datacenters}
			}
		}
		c.snap.Resolvers[e.name] = res
	}
	// Subsets named by routes and splits exist in the resolver of the service they name.
	for _, name := range sortedKeys(c.snap.Routers) {
		for i, r := range c.snap.Routers[name].Routes {
			if r.Destination.Subset != "" {
				c.checkSubset(r.Destination.Service, r.Destination.Subset, func() (mesh.Pos, string) {
					return c.routePos(name, i, "subset"), sprintf("router %s: route %d", name, i+1)
				})
			}
		}
	}
	for _, name := range sortedKeys(c.snap.Splitters) {
		for i, s := range c.snap.Splitters[name].Splits {
			if s.Subset != "" {
				c.checkSubset(s.Service, s.Subset, func() (mesh.Pos, string) {
					return lookup(c.splitterNodes[name], c.snap.Positions[mesh.PathSplitter(name)], cue.Str("splits"), cue.Index(i)),
						sprintf("splitter %s: split %d", name, i+1)
				})
			}
		}
	}
	for _, name := range sortedKeys(c.snap.Resolvers) {
		if rd := c.snap.Resolvers[name].Redirect; rd != nil && rd.Subset != "" {
			c.checkSubset(rd.Service, rd.Subset, func() (mesh.Pos, string) {
				return lookup(c.resolverNodes[name], c.snap.Positions[mesh.PathResolver(name)], cue.Str("redirect"), cue.Str("subset")),
					sprintf("resolver %s: redirect", name)
			})
		}
	}
}

// routePos is the position of a field of a route's destination, or of the route.
func (c *compilation) routePos(router string, i int, field string) mesh.Pos {
	if v, ok := c.routerNodes[router]; ok {
		return lookup(v, c.snap.Positions[mesh.PathRoute(router, i)], cue.Str("routes"), cue.Index(i), cue.Str("destination"), cue.Str(field))
	}
	return c.snap.Positions[mesh.PathRoute(router, i)]
}

// checkSubset reports a subset that service's resolver does not define, at the position and
// with the subject where gives (asked only then: positions are looked up in the syntax).
func (c *compilation) checkSubset(service, subset string, where func() (mesh.Pos, string)) {
	if c.snap.Services[service] == nil || c.broken[mesh.PathResolver(service)] {
		return // reported already
	}
	r := c.snap.Resolvers[service]
	if r != nil && r.Redirect != nil {
		return // the redirect decides; checked by checkRedirects
	}
	if r == nil || !hasSubset(r, subset) {
		pos, what := where()
		c.addUnlessPartial(pos, "%s: subset %s of service %s: no such subset (define it in resolvers.%s.subsets)", what, subset, service, service)
	}
}

func hasSubset(r *mesh.Resolver, subset string) bool {
	_, ok := r.Subsets[subset]
	return ok
}

// checkRedirects rejects redirect chains and loops: a resolver may redirect once.
func (c *compilation) checkRedirects() {
	for _, name := range sortedKeys(c.snap.Resolvers) {
		rd := c.snap.Resolvers[name].Redirect
		if rd == nil {
			continue
		}
		pos := lookup(c.resolverNodes[name], c.snap.Positions[mesh.PathResolver(name)], cue.Str("redirect"))
		if rd.Service == name && rd.Subset == "" && (rd.Datacenter == "" || rd.Datacenter == c.snap.Mesh.Datacenter) {
			c.add(pos, "resolver %s: redirect loop: %s redirects to itself", name, name)
			continue
		}
		next := c.snap.Resolvers[rd.Service]
		if rd.Service != name && next != nil && next.Redirect != nil {
			if next.Redirect.Service == name {
				c.add(pos, "resolver %s: redirect loop: %s → %s → %s", name, name, rd.Service, name)
			} else {
				c.add(pos, "resolver %s: redirect to %s, which redirects again to %s; a resolver may redirect only once", name, rd.Service, next.Redirect.Service)
			}
		}
	}
}

// checkSplitterCycles rejects splitters whose legs lead back to themselves.
func (c *compilation) checkSplitterCycles() {
	const (
		unvisited = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	reported := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		state[name] = active
		stack = append(stack, name)
		for _, s := range c.snap.Splitters[name].Splits {
			next := s.Service
			if next == name || s.Subset != "" || c.snap.Splitters[next] == nil {
				continue
			}
			switch state[next] {
			case active:
				i := indexOf(stack, next)
				cycle := append(append([]string{}, stack[i:]...), next)
				if !reported[next] {
					reported[next] = true
					c.add(c.snap.Positions[mesh.PathSplitter(next)], "splitter cycle: %s", strings.Join(cycle, " → "))
				}
			case unvisited:
				visit(next)
			}
		}
		stack = stack[:len(stack)-1]
		state[name] = done
	}
	for _, name := range sortedKeys(c.snap.Splitters) {
		if state[name] == unvisited {
			visit(name)
		}
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

// notHTTP reports whether svc is known to speak a protocol without L7 requests. A service the
// schema rejected has no known protocol and is not reported again.
func notHTTP(svc *mesh.Service) bool {
	return svc != nil && svc.Protocol != "" && !mesh.IsHTTP(svc.Protocol)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedCopy(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

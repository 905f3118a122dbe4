package compiler

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// analyze looks for configurations that are valid but very likely wrong, and returns them as
// warnings (errors with --strict), sorted by position:
//
//   - an upstream whose intentions deny its caller every request;
//   - an exact intention that allows a caller that does not declare the destination as an
//     upstream (its sidecar has no listener for it);
//   - intentions that can never decide, because intentions of higher precedence cover every pair
//     they could decide, and permissions that can never decide, because an earlier permission
//     of the same intention matches every request they match;
//   - resolver subsets that select none of the service's endpoints;
//   - splitters and resolvers of services that no service calls, directly or through a chain;
//   - mesh.tls settings that proxyless gRPC cannot apply, when some service speaks grpc.
//
// Verdicts come from mesh.Authorize; the other checks are sufficient conditions, so a warning is
// never a false alarm, though not every dead rule is found (regexes are compared as text).
func analyze(s *mesh.Snapshot) Errors { return analyzeCached(s, nil) }

// analyzeCached is analyze with the verdicts of L7 intentions taken from, and kept in, cache
// (nil: none): what a one-file change leaves alone is not decided again.
func analyzeCached(s *mesh.Snapshot, cache *Cache) Errors {
	var w errorList
	names := s.ServiceNames()
	v := &l7Verdicts{s: s, cache: cache, byIntention: map[*mesh.Intention]bool{}}

	// Upstreams denied, callers allowed without the upstream: with the memo of the compilation
	// that made s, only for what changed (incremental.go).
	ma := analysisMemo(s, cache)
	if ma != nil {
		v.permissions = ma.m.permissionJSON
	}
	for _, name := range names {
		svc := s.Services[name]
		if ma.reuseUpstreams(name, svc, &w) {
			continue
		}
		start := len(w.list)
		onDefault := upstreamWarnings(s, v, name, svc, &w)
		ma.keepUpstreams(name, svc, w.list[start:], onDefault)
	}
	if ma != nil {
		for dst, me := range ma.m.intentions {
			if ma.reuseIntentions(dst, me, &w) {
				continue
			}
			start := len(w.list)
			me.warnOnDefault = false
			for _, in := range me.list {
				intentionWarning(s, v, in, &w)
				me.warnOnDefault = me.warnOnDefault || len(in.Permissions) > 0
			}
			me.warn, me.warnCommit = slices.Clone(w.list[start:]), ma.m.commits
		}
	} else {
		for _, in := range s.Intentions {
			intentionWarning(s, v, in, &w)
		}
	}

	// Intentions that never decide.
	n := len(names)
	exactInto := map[string]int{}            // destination → exact sources
	exactFrom := map[string][]string{}       // source → destinations of its exact intentions
	wildInto := map[string]bool{}            // destinations with D←*
	wildFrom := map[string]*mesh.Intention{} // sources with *←S
	var both *mesh.Intention
	for _, in := range s.Intentions {
		if in.Precedence == mesh.PrecedenceWildcardDest {
			wildFrom[in.Source] = in
		}
	}
	for _, in := range s.Intentions {
		switch in.Precedence {
		case mesh.PrecedenceExact:
			exactInto[in.Destination]++
			if wildFrom[in.Source] != nil { // only the sources of *←S intentions are asked for
				exactFrom[in.Source] = append(exactFrom[in.Source], in.Destination)
			}
		case mesh.PrecedenceWildcardSource:
			wildInto[in.Destination] = true
		case mesh.PrecedenceWildcardBoth:
			both = in
		}
	}
	for _, in := range s.Intentions {
		switch in.Precedence {
		case mesh.PrecedenceWildcardSource:
			if exactInto[in.Destination] == n {
				w.add(s.Pos(mesh.PathIntention(in.Destination, in.Source)), "intention * → %s never decides: every service has its own intention into %s", in.Destination, in.Destination)
			}
		case mesh.PrecedenceWildcardDest:
			covered := len(wildInto)
			for _, d := range exactFrom[in.Source] {
				if !wildInto[d] {
					covered++
				}
			}
			if covered == n {
				w.add(s.Pos(mesh.PathIntention(in.Destination, in.Source)), "intention %s → * never decides: every service has an intention from %s or from * of its own", in.Source, in.Source)
			}
		}
	}
	if both != nil && n > 0 && bothShadowed(s, names, wildInto, wildFrom) {
		w.add(s.Pos(mesh.PathIntention(mesh.Wildcard, mesh.Wildcard)), "intention * → * never decides: intentions of higher precedence cover every pair")
	}
	for _, in := range s.Intentions {
		for j := 1; j < len(in.Permissions); j++ {
			for i := 0; i < j; i++ {
				if covers(in.Permissions[i].HTTP, in.Permissions[j].HTTP) {
					w.add(s.Pos(mesh.PathPermission(in.Destination, in.Source, j)),
						"intention %s → %s: permission %d never decides: permission %d matches every request it matches", in.Source, in.Destination, j+1, i+1)
					break
				}
			}
		}
	}

	// Subsets without endpoints.
	for _, name := range sortedKeys(s.Resolvers) {
		r, svc := s.Resolvers[name], s.Services[name]
		if svc == nil || len(svc.Endpoints) == 0 {
			continue
		}
		for _, sub := range sortedKeys(r.Subsets) {
			found := false
			for _, ep := range svc.Endpoints {
				if mesh.SubsetMatches(r.Subsets[sub].Filter, ep.Meta) {
					found = true
					break
				}
			}
			if !found {
				w.add(s.Pos(mesh.PathResolver(name)), "resolver %s: subset %s selects none of the endpoints of %s (filter %s)", name, sub, name, describeFilter(r.Subsets[sub].Filter))
			}
		}
	}

	// Splitters and resolvers nobody reaches. A transparent sidecar may reach any service; what
	// it does reach is not worked out here (services × services), so then none is reported.
	reached := map[string]bool{}
	for _, name := range names {
		if s.Services[name].Transparent() {
			for _, n := range names {
				reached[n] = true
			}
			break
		}
	}
	for _, name := range names {
		for u, up := range s.Services[name].Upstreams {
			if reached[u] {
				continue
			}
			reached[u] = true
			if ch := s.UpstreamChain(up); ch != nil {
				for _, t := range ch.Targets {
					reached[t.Service] = true
				}
			}
		}
	}
	for _, name := range sortedKeys(s.Splitters) {
		if !reached[name] {
			w.add(s.Pos(mesh.PathSplitter(name)), "splitter %s: no service calls %s, as an upstream or through a chain", name, name)
		}
	}
	for _, name := range sortedKeys(s.Resolvers) {
		if !reached[name] {
			w.add(s.Pos(mesh.PathResolver(name)), "resolver %s: no service calls %s, as an upstream or through a chain", name, name)
		}
	}
	grpcIgnoresTLS(s, &w)
	if len(w.list) == 0 {
		return nil
	}
	w.list.sort()
	return w.list
}

// upstreamWarnings warns about the upstreams of service name whose every request is denied,
// and reports whether a verdict depended on the mesh's defaultIntention.
func upstreamWarnings(s *mesh.Snapshot, v *l7Verdicts, name string, svc *mesh.Service, w *errorList) (onDefault bool) {
	for _, u := range sortedKeys(svc.Upstreams) {
		if s.Services[u] == nil {
			continue
		}
		a, dep := v.decide(name, u)
		onDefault = onDefault || dep
		if a {
			continue
		}
		// Every request is denied: any one says why.
		d := mesh.Authorize(s, mesh.Request{Source: name, Destination: u, Path: "/"})
		w.add(s.Pos(mesh.PathService(name)+".upstreams."+u), "service %s: upstream %s: every request is denied (%s)", name, u, d.Reason)
	}
	return onDefault
}

// intentionWarning warns when an exact intention allows a caller that does not declare its
// destination as an upstream.
func intentionWarning(s *mesh.Snapshot, v *l7Verdicts, in *mesh.Intention, w *errorList) {
	if in.Precedence != mesh.PrecedenceExact || !v.allows(in.Source, in.Destination) {
		return
	}
	src := s.Services[in.Source]
	if src == nil || src.Transparent() || src.Upstreams[in.Destination] != nil {
		return
	}
	w.add(s.Pos(mesh.PathIntention(in.Destination, in.Source)),
		"intention %s → %s allows %s, but %s does not declare %s as an upstream", in.Source, in.Destination, in.Source, in.Source, in.Destination)
}

// grpcIgnoresTLS warns when mesh.tls asks for something proxyless gRPC cannot apply. gRPC's xDS
// client NACKs a TLS context with tls_params (grpc-go: "unsupported tls_params field"), so the
// gRPC shape carries none and gRPC negotiates with Go's crypto/tls defaults: TLS 1.2 to 1.3,
// Go's cipher suites. Services that speak grpc are the ones proxyless gRPC may serve or call.
func grpcIgnoresTLS(s *mesh.Snapshot, w *errorList) {
	t := s.Mesh.TLS
	if t.MinVersion == DefaultTLSMinVersion && (t.MaxVersion == "" || t.MaxVersion == "TLSv1_3") && len(t.CipherSuites) == 0 {
		return
	}
	var grpc []string
	for _, name := range s.ServiceNames() {
		if s.Services[name].Protocol == mesh.ProtocolGRPC {
			grpc = append(grpc, name)
		}
	}
	if len(grpc) == 0 {
		return
	}
	if len(grpc) > 3 {
		grpc = append(grpc[:3], "...")
	}
	w.add(s.Pos(mesh.PathMeshTLS), "mesh.tls: applied by Envoy sidecars only; proxyless gRPC workloads of %s cannot take TLS "+
		"settings over xDS and negotiate TLS 1.2 to 1.3 with Go's default cipher suites", strings.Join(grpc, ", "))
}

// bothShadowed reports whether every pair has an intention of higher precedence than * → *.
func bothShadowed(s *mesh.Snapshot, names []string, wildInto map[string]bool, wildFrom map[string]*mesh.Intention) bool {
	var open []string // sources without *←S
	for _, n := range names {
		if wildFrom[n] == nil {
			open = append(open, n)
		}
	}
	if len(open) == 0 {
		return true
	}
	for _, d := range names {
		if wildInto[d] {
			continue
		}
		for _, src := range open {
			if s.Intention(src, d) == nil {
				return false
			}
		}
	}
	return true
}

// covers reports whether every request that b matches also matches a (a sufficient test).
func covers(a, b *mesh.HTTPMatch) bool {
	if a == nil || reflect.DeepEqual(*a, mesh.HTTPMatch{}) {
		return true
	}
	if b == nil {
		return false
	}
	switch {
	case a.Path != "":
		if b.Path != a.Path {
			return false
		}
	case a.PathPrefix != "":
		if !(b.Path != "" && strings.HasPrefix(b.Path, a.PathPrefix) || b.PathPrefix != "" && strings.HasPrefix(b.PathPrefix, a.PathPrefix)) {
			return false
		}
	case a.PathRegex != "":
		if b.PathRegex != a.PathRegex {
			re, err := mesh.FullRegexp(a.PathRegex)
			if err != nil || b.Path == "" || !re.MatchString(b.Path) {
				return false
			}
		}
	}
	if len(a.Methods) > 0 {
		if len(b.Methods) == 0 {
			return false
		}
		for _, m := range b.Methods {
			if !containsString(a.Methods, m) {
				return false
			}
		}
	}
	for _, h := range a.Header {
		found := false
		for _, hb := range b.Header {
			if h == hb {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for _, q := range a.QueryParam {
		found := false
		for _, qb := range b.QueryParam {
			if q == qb {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func describeFilter(f map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(f) {
		parts = append(parts, fmt.Sprintf("%s=%s", k, f[k]))
	}
	return strings.Join(parts, ", ")
}

// l7Verdicts answers allows(s, src, dst), remembering the answers that cost a search.
//
// allows is Authorize's question "is some request from src to dst allowed", and its answer
// depends only on the deciding intention (the first of s.Candidates): its action alone, or its
// permissions and the mesh's defaultIntention, where no permission matches. Only the second
// kind needs a search (mesh.CompareAccess); its answer is kept by the deciding intention, in
// this analysis, and by the permissions' content and the default, in cache, across
// compilations. A mesh-wide defaultIntention change decides those again, since they depend on
// it; a tls change, or a change of one file, decides only what changed.
type l7Verdicts struct {
	s           *mesh.Snapshot
	cache       *Cache
	byIntention map[*mesh.Intention]bool
	// permissions keeps the JSON of intentions' permissions (the memo's, incremental.go), nil
	// for none.
	permissions map[*mesh.Intention][]byte
}

func (v *l7Verdicts) allows(src, dst string) bool {
	a, _ := v.decide(src, dst)
	return a
}

// decide is allows, and whether the answer depended on the mesh's defaultIntention.
func (v *l7Verdicts) decide(src, dst string) (allowed, onDefault bool) {
	in := v.s.Deciding(src, dst)
	switch {
	case in == nil: // the default decides every request (Authorize's "" is deny)
		return v.s.Mesh.DefaultIntention == mesh.Allow, true
	case len(in.Permissions) == 0: // the action decides every request
		return in.Action == mesh.Allow, false
	}
	if a, ok := v.byIntention[in]; ok {
		return a, true
	}
	perms, ok := v.permissions[in]
	if !ok {
		var err error
		if perms, err = json.Marshal(in.Permissions); err != nil {
			return allows(v.s, src, dst), true
		}
		if v.permissions != nil {
			v.permissions[in] = perms
		}
	}
	key := string(v.s.Mesh.DefaultIntention) + "\x00" + string(perms)
	a, ok := v.cache.verdict(key)
	if !ok {
		a = allows(v.s, src, dst)
		v.cache.putVerdict(key, a)
	}
	v.byIntention[in] = a
	return a, true
}

package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	mesh "github.com/meshgit/mesh"
)

// Resources is the configuration of one proxy, each list sorted by resource name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
	// Extensions are the filter configurations listeners take over ECDS (extensions.go).
	Extensions []*corev3.TypedExtensionConfig
}

// Render renders the configuration of proxy p from snap, without a trust bundle (no SecretRoots
// secret). It is a pure function of its inputs. A proxy whose service is not in snap gets
// ErrUnknownService.
func Render(snap *mesh.Snapshot, p Proxy) (*Resources, error) {
	return RenderWithBundle(snap, p, nil)
}

// RenderWithBundle is Render with the CA's trust bundle (PEM certificates), which Envoy
// sidecars receive as the SecretRoots secret. It is a pure function of its inputs.
func RenderWithBundle(snap *mesh.Snapshot, p Proxy, bundle []byte) (*Resources, error) {
	return renderShared(snap, p, bundle, nil)
}

// renderShared is RenderWithBundle taking the resources it shares with other proxies of snap
// from m (shared.go); a nil m renders everything afresh.
func renderShared(snap *mesh.Snapshot, p Proxy, bundle []byte, m *memo) (*Resources, error) {
	if snap == nil {
		return nil, errors.New("render: nil snapshot")
	}
	if p.Kind == mesh.KindMeshGateway {
		if p.Shape != ShapeEnvoy {
			return nil, fmt.Errorf("render %s: a mesh gateway is an Envoy (or built-in) proxy, not %q", p.Service, p.Shape)
		}
		return renderGateway(snap, p)
	}
	if snap.Services[p.Service] == nil {
		return nil, fmt.Errorf("%w: %q is not a service of snapshot %s", ErrUnknownService, p.Service, snap.Version)
	}
	if p.Shape != ShapeEnvoy && p.Shape != ShapeGRPC {
		return nil, fmt.Errorf("render %s: unknown shape %q", p.Service, p.Shape)
	}
	ls, err := listeners(snap, p, m)
	if err != nil {
		return nil, fmt.Errorf("render %s listeners: %w", p, err)
	}
	cs, err := clusters(snap, p, m)
	if err != nil {
		return nil, fmt.Errorf("render %s clusters: %w", p, err)
	}
	xs, err := extensionConfigs(snap, p, m)
	if err != nil {
		return nil, fmt.Errorf("render %s extension configs: %w", p, err)
	}
	r := &Resources{
		Listeners:  ls,
		Routes:     routes(snap, p, m),
		Clusters:   cs,
		Endpoints:  endpoints(snap, p, m),
		Secrets:    secrets(p, bundle),
		Extensions: xs,
	}
	r.sort()
	return r, nil
}

// rerenderListeners renders p's RBAC again from snap, keeping old's other resources: what
// Server.render does when a change alters nothing but the RBAC of p's service. An Envoy
// sidecar's RBAC is its extension configurations (ECDS), and its listeners are kept as they
// were (the same messages): they depend on the service, its upstreams and the mesh-wide
// settings, which such a change leaves alone. A gRPC proxy's server listeners carry the RBAC
// inline and are rendered again. Only the new lists are sorted: old's are shared with the
// group they came from.
func rerenderListeners(snap *mesh.Snapshot, p Proxy, m *memo, old *Resources) (*Resources, error) {
	ls := old.Listeners
	if p.Shape != ShapeEnvoy {
		var err error
		if ls, err = listeners(snap, p, m); err != nil {
			return nil, fmt.Errorf("render %s listeners: %w", p, err)
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
	}
	xs, err := extensionConfigs(snap, p, m)
	if err != nil {
		return nil, fmt.Errorf("render %s extension configs: %w", p, err)
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return &Resources{Listeners: ls, Routes: old.Routes, Clusters: old.Clusters, Endpoints: old.Endpoints, Secrets: old.Secrets, Extensions: xs}, nil
}

// sort sorts each list by resource name. slices.SortFunc is the pdqsort of sort.Slice (the
// same order, equal names included) without its allocation per call.
func (r *Resources) sort() {
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return strings.Compare(a.ClusterName, b.ClusterName)
	})
	slices.SortFunc(r.Secrets, func(a, b *tlsv3.Secret) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Extensions, func(a, b *corev3.TypedExtensionConfig) int { return strings.Compare(a.Name, b.Name) })
}

// byType returns the resources keyed by type URL, in name order. Every list is cut from one
// allocation (this runs for every proxy a change re-renders).
func (r *Resources) byType() map[resourcev3.Type][]types.Resource {
	all := make([]types.Resource, len(r.Listeners)+len(r.Routes)+len(r.Clusters)+len(r.Endpoints)+len(r.Secrets)+len(r.Extensions))
	var ls, rs, cs, es, ss, xs []types.Resource
	ls, all = asResources(all, r.Listeners)
	rs, all = asResources(all, r.Routes)
	cs, all = asResources(all, r.Clusters)
	es, all = asResources(all, r.Endpoints)
	ss, all = asResources(all, r.Secrets)
	xs, _ = asResources(all, r.Extensions)
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: ls, resourcev3.RouteType: rs, resourcev3.ClusterType: cs,
		resourcev3.EndpointType: es, resourcev3.SecretType: ss, resourcev3.ExtensionConfigType: xs,
	}
}

// asResources returns l as a list of resources cut from the front of room (its capacity its
// length, so that appending to it never writes into the rest), nil when empty, and the rest.
func asResources[T types.Resource](room []types.Resource, l []T) (out, rest []types.Resource) {
	if len(l) == 0 {
		return nil, room
	}
	out = room[:len(l):len(l)]
	for i, x := range l {
		out[i] = x
	}
	return out, room[len(l):]
}

// resourceTypes is the order in which types are hashed and reported.
var resourceTypes = []resourcev3.Type{
	resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType,
	resourcev3.EndpointType, resourcev3.SecretType, resourcev3.ExtensionConfigType,
}

// typeHashes holds a content hash (or a version) per resource type, in resourceTypes order: a group's, in
// an array rather than a map (a mesh-wide change copies every group's).
type typeHashes [6]string

// typeIndex is t's index in resourceTypes, or -1.
func typeIndex(t resourcev3.Type) int {
	switch t {
	case resourcev3.ListenerType:
		return 0
	case resourcev3.RouteType:
		return 1
	case resourcev3.ClusterType:
		return 2
	case resourcev3.EndpointType:
		return 3
	case resourcev3.SecretType:
		return 4
	case resourcev3.ExtensionConfigType:
		return 5
	}
	return -1
}

// get returns the hash of type t ("" for a type that is not one of resourceTypes).
func (h *typeHashes) get(t resourcev3.Type) string {
	if i := typeIndex(t); i >= 0 {
		return h[i]
	}
	return ""
}

// set sets the hash of type t, one of resourceTypes.
func (h *typeHashes) set(t resourcev3.Type, v string) { h[typeIndex(t)] = v }

type validator interface{ ValidateAll() error }

// Validate runs the generated protoc-gen-validate rules (ValidateAll) on every resource.
func (r *Resources) Validate() error { return r.validate(nil) }

// validate is Validate, checking each message shared through m once.
func (r *Resources) validate(m *memo) error { return r.validateTypes(m, nil) }

// validateTypes is validate leaving out the types in skip (validated before).
func (r *Resources) validateTypes(m *memo, skip map[resourcev3.Type]bool) error {
	return validateByType(r.byType(), m, skip, nil)
}

// validateByType is validateTypes of the resources byType (Resources.byType) lists.
// gf, if not nil, holds the resources' facts (memo.factsOf with the same skip).
func validateByType(byType map[resourcev3.Type][]types.Resource, m *memo, skip map[resourcev3.Type]bool, gf *groupFacts) error {
	var errs []error
	for i, t := range resourceTypes {
		if skip[t] {
			continue
		}
		for j, res := range byType[t] {
			v, ok := res.(validator)
			if !ok {
				continue
			}
			if err := m.validatedIn(gf.at(i, j), res, v.ValidateAll); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", shortType(t), cachev3.GetResourceName(res), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Consistent checks that the resources reference each other completely, more strictly than
// go-control-plane's Snapshot.Consistent (which does not look inside API listeners): every
// route configuration a listener names (in a filter chain or an API listener) exists and every
// route configuration is named; every cluster a route or tcp proxy names exists; every EDS
// cluster has exactly one load assignment and every load assignment has its cluster.
func (r *Resources) Consistent() error { return r.consistent(nil) }

// refs are the route configurations, clusters and extension configurations a listener's
// filter (or API listener) names.
type refs struct {
	routes     []string
	clusters   []string
	extensions []extensionRef
	err        error
}

// extensionRef is a filter configured over ECDS: the extension configuration it names and the
// type URLs it admits.
type extensionRef struct {
	name     string
	typeURLs []string
}

// filterRefs reads the references of one network filter.
func filterRefs(f *listenerv3.Filter) refs {
	if d := f.GetConfigDiscovery(); d != nil {
		return refs{extensions: []extensionRef{{name: f.Name, typeURLs: d.GetTypeUrls()}}}
	}
	tc := f.GetTypedConfig()
	if tc == nil {
		return refs{}
	}
	switch f.Name {
	case hcmFilterName:
		h := &hcmv3.HttpConnectionManager{}
		if err := tc.UnmarshalTo(h); err != nil {
			return refs{err: err}
		}
		return hcmRefs(h)
	case tcpProxyFilterName:
		return refs{clusters: tcpProxyClusters(tc)}
	}
	return refs{}
}

func hcmRefs(h *hcmv3.HttpConnectionManager) refs {
	var out refs
	if rds := h.GetRds(); rds != nil {
		out.routes = append(out.routes, rds.RouteConfigName)
	}
	if rc := h.GetRouteConfig(); rc != nil {
		out.clusters = routeClusters(rc)
	}
	for _, f := range h.GetHttpFilters() {
		if d := f.GetConfigDiscovery(); d != nil {
			out.extensions = append(out.extensions, extensionRef{name: f.Name, typeURLs: d.GetTypeUrls()})
		}
	}
	return out
}

// listenerRefs lists the references of a listener, each filter's read once per memo, and the
// list made once per shared listener (it is never modified).
func listenerRefs(l *listenerv3.Listener, m *memo) []refs {
	if m == nil {
		return readListenerRefs(l, nil)
	}
	if v := learnt(m, l, lrefsOf); v != nil {
		return *v
	}
	out := readListenerRefs(l, m)
	return *learn(m, l, lrefsOf, &out)
}

// readListenerRefs is listenerRefs without the memo's list of l.
func readListenerRefs(l *listenerv3.Listener, m *memo) []refs {
	var out []refs
	if a := l.GetApiListener().GetApiListener(); a != nil {
		out = append(out, m.refsOf(a, func() refs {
			h := &hcmv3.HttpConnectionManager{}
			if err := a.UnmarshalTo(h); err != nil {
				return refs{err: fmt.Errorf("api listener: %w", err)}
			}
			return hcmRefs(h)
		}))
	}
	chains := l.FilterChains
	if l.DefaultFilterChain != nil {
		chains = append(chains[:len(chains):len(chains)], l.DefaultFilterChain)
	}
	for _, fc := range chains {
		for _, f := range fc.Filters {
			out = append(out, m.refsOf(f, func() refs { return filterRefs(f) }))
		}
	}
	return out
}

// consistent is Consistent, reading the references of each filter shared through m once.
func (r *Resources) consistent(m *memo) error {
	sc := consistencyScratches.Get().(*consistencyScratch)
	defer sc.release()
	var errs []error
	for _, rc := range r.Routes {
		sc.routes[rc.Name] = true
	}
	for _, c := range r.Clusters {
		sc.clusters[c.Name] = true
		if c.GetType() == clusterv3.Cluster_EDS {
			n := c.GetEdsClusterConfig().GetServiceName()
			if n == "" {
				n = c.Name
			}
			sc.eds[n] = true
		}
	}
	for _, l := range r.Listeners {
		for _, x := range listenerRefs(l, m) {
			if x.err != nil {
				errs = append(errs, fmt.Errorf("listener %q: %w", l.Name, x.err))
				continue
			}
			for _, rc := range x.routes {
				if !sc.routes[rc] {
					errs = append(errs, fmt.Errorf("listener %q: route configuration %q is missing", l.Name, rc))
				}
				sc.referenced[rc] = true
			}
			sc.refClusters = append(sc.refClusters, x.clusters...)
		}
	}
	for _, rc := range r.Routes {
		if !sc.referenced[rc.Name] {
			errs = append(errs, fmt.Errorf("route configuration %q is not referenced by any listener", rc.Name))
		}
		sc.refClusters = append(sc.refClusters, m.refsOf(rc, func() refs { return refs{clusters: routeClusters(rc)} }).clusters...)
	}
	for _, c := range sc.refClusters {
		if !sc.clusters[c] {
			errs = append(errs, fmt.Errorf("cluster %q is referenced but missing", c))
		}
	}
	errs = append(errs, extensionsConsistentIn(sc, r.Listeners, r.Extensions, m)...)
	for _, cla := range r.Endpoints {
		if sc.cla[cla.ClusterName] {
			errs = append(errs, fmt.Errorf("load assignment %q appears twice", cla.ClusterName))
		}
		sc.cla[cla.ClusterName] = true
		if !sc.eds[cla.ClusterName] {
			errs = append(errs, fmt.Errorf("load assignment %q has no EDS cluster", cla.ClusterName))
		}
	}
	for n := range sc.eds {
		if !sc.cla[n] {
			errs = append(errs, fmt.Errorf("EDS cluster %q has no load assignment", n))
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// consistencyScratch is the scratch space of one consistency check: sets of names, emptied
// (keeping their room) when released, so that checking a thousand groups does not make
// seven thousand maps.
type consistencyScratch struct {
	routes, clusters, eds, referenced, cla, named map[string]bool
	types                                         map[string]string
	refClusters                                   []string
}

var consistencyScratches = sync.Pool{New: func() any {
	return &consistencyScratch{
		routes: map[string]bool{}, clusters: map[string]bool{}, eds: map[string]bool{},
		referenced: map[string]bool{}, cla: map[string]bool{}, named: map[string]bool{},
		types: map[string]string{},
	}
}}

// release empties sc and returns it to the pool.
func (sc *consistencyScratch) release() {
	clear(sc.routes)
	clear(sc.clusters)
	clear(sc.eds)
	clear(sc.referenced)
	clear(sc.cla)
	clear(sc.named)
	clear(sc.types)
	clear(sc.refClusters) // no strings kept alive from the pool
	sc.refClusters = sc.refClusters[:0]
	consistencyScratches.Put(sc)
}

// extensionsConsistent checks that every extension configuration a listener's filter names
// exists, with a type the filter admits, and that every extension configuration is named (but
// for the other of public_listener's RBAC pair: extensions.go).
func extensionsConsistent(ls []*listenerv3.Listener, xs []*corev3.TypedExtensionConfig, m *memo) []error {
	sc := consistencyScratches.Get().(*consistencyScratch)
	defer sc.release()
	return extensionsConsistentIn(sc, ls, xs, m)
}

// extensionsConsistentIn is extensionsConsistent using sc's types and named, which it fills.
func extensionsConsistentIn(sc *consistencyScratch, ls []*listenerv3.Listener, xs []*corev3.TypedExtensionConfig, m *memo) []error {
	var errs []error
	for _, x := range xs {
		sc.types[x.Name] = extensionTypeURL(x)
	}
	for _, l := range ls {
		for _, x := range listenerRefs(l, m) {
			for _, e := range x.extensions {
				sc.named[e.name] = true
				t, ok := sc.types[e.name]
				switch {
				case !ok:
					errs = append(errs, fmt.Errorf("listener %q: extension config %q is missing", l.Name, e.name))
				case !slices.Contains(e.typeURLs, t):
					errs = append(errs, fmt.Errorf("listener %q: extension config %q is a %s, the filter admits %v", l.Name, e.name, t, e.typeURLs))
				}
			}
		}
	}
	for _, x := range xs {
		if !sc.named[x.Name] && !unreferencedOK(x.Name, sc.named) {
			errs = append(errs, fmt.Errorf("extension config %q is not referenced by any listener", x.Name))
		}
	}
	return errs
}

func routeClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" {
				out = append(out, c)
			}
			for _, w := range a.GetWeightedClusters().GetClusters() {
				out = append(out, w.Name)
			}
		}
	}
	return out
}

// hashTypes returns a content hash of each resource type (hex, 16 digits), of the whole, and
// of each resource (type URL → name → hash, the version map delta xDS needs). Every resource
// is marshalled once, deterministically.
func (r *Resources) hashTypes(m *memo) (typeHashes, string, map[string]map[string]string, error) {
	return r.hashTypesReusing(m, nil, nil)
}

// hashTypesReusing is hashTypes taking the hashes and version maps of the types in keep from
// oldHash and oldVersions (what hashTypes returned for resources whose lists of those types
// were the same).
func (r *Resources) hashTypesReusing(m *memo, keep map[resourcev3.Type]bool, old *group) (typeHashes, string, map[string]map[string]string, error) {
	return hashByType(r.byType(), m, keep, old, nil)
}

// hashByType is hashTypesReusing of the resources byType (Resources.byType) lists.
// gf, if not nil, holds the resources' facts (memo.factsOf with keep as its skip).
func hashByType(byType map[resourcev3.Type][]types.Resource, m *memo, keep map[resourcev3.Type]bool, old *group, gf *groupFacts) (typeHashes, string, map[string]map[string]string, error) {
	var out typeHashes
	perResource := make(map[string]map[string]string, len(resourceTypes))
	all, h := sha256.New(), sha256.New() // h hashes each type in turn (Reset)
	var buf, scratch []byte
	longest := 0
	for _, l := range byType {
		longest = max(longest, len(l))
	}
	hashes := make([]string, 0, longest) // room for every type's: one allocation
	var sum [sha256.Size]byte
	for i, t := range resourceTypes {
		if keep[t] {
			out[i], perResource[t] = old.typeHash[i], old.cs.VersionMap[t]
		} else {
			h.Reset()
			hashes = hashes[:0]
			for j, res := range byType[t] {
				rh, err := m.resourceHashIn(gf.at(i, j), res, &buf)
				if err != nil {
					return out, "", nil, fmt.Errorf("hash %s: %w", shortType(t), err)
				}
				name := cachev3.GetResourceName(res)
				hashes = append(hashes, rh)
				// One Write of name's length (8 bytes, little-endian), name and hash, through scratch space:
				// no allocation per resource.
				scratch = binary.LittleEndian.AppendUint64(scratch[:0], uint64(len(name)))
				scratch = append(append(scratch, name...), rh...)
				h.Write(scratch)
			}
			out[i] = hexPrefix(h.Sum(sum[:0]))
			// The same content has the same version map: made once per memo (cacheshare.go).
			perResource[t] = m.versionMapOf(t, out[i], byType[t], hashes)
		}
		// Type URL and hash through scratch space: the same bytes hashed as two writes, without
		// converting either to a new slice.
		scratch = append(append(scratch[:0], t...), out[i]...)
		all.Write(scratch)
	}
	return out, hexPrefix(all.Sum(sum[:0])), perResource, nil
}

// hexPrefix is the first 16 hex digits of sum (its first 8 bytes), allocating only the result.
func hexPrefix(sum []byte) string {
	var h [16]byte
	hex.Encode(h[:], sum[:8])
	return string(h[:])
}

// listenerRefs returns every route configuration and cluster the listeners name (sorted,
// without repetition), each listener's read once per memo.
func listenersRefs(ls []*listenerv3.Listener, m *memo) (routes, clusters []string, err error) {
	seenR, seenC := map[string]bool{}, map[string]bool{}
	for _, l := range ls {
		sum := m.refsOf(l, func() refs {
			var out refs
			for _, x := range listenerRefs(l, m) {
				if x.err != nil {
					return refs{err: fmt.Errorf("listener %q: %w", l.Name, x.err)}
				}
				out.routes = append(out.routes, x.routes...)
				out.clusters = append(out.clusters, x.clusters...)
			}
			return out
		})
		if sum.err != nil {
			return nil, nil, sum.err
		}
		for _, x := range sum.routes {
			if !seenR[x] {
				seenR[x] = true
				routes = append(routes, x)
			}
		}
		for _, x := range sum.clusters {
			if !seenC[x] {
				seenC[x] = true
				clusters = append(clusters, x)
			}
		}
	}
	sort.Strings(routes)
	sort.Strings(clusters)
	return routes, clusters, nil
}

// shortType turns a type URL into the message name, for messages and file names.
// metricType is shortType for a metric label: a type URL comes from the client, so anything
// but the six types we serve is "other" (bounded cardinality, always valid UTF-8).
func metricType(t resourcev3.Type) string {
	if s := shortType(t); s != t {
		return s
	}
	return "other"
}

func shortType(t resourcev3.Type) string {
	switch t {
	case resourcev3.ListenerType:
		return "listeners"
	case resourcev3.RouteType:
		return "routes"
	case resourcev3.ClusterType:
		return "clusters"
	case resourcev3.EndpointType:
		return "endpoints"
	case resourcev3.SecretType:
		return "secrets"
	case resourcev3.ExtensionConfigType:
		return "extensions"
	}
	return t
}

func tcpProxyClusters(tc interface {
	UnmarshalTo(proto.Message) error
}) []string {
	tp := &tcpproxyv3.TcpProxy{}
	if err := tc.UnmarshalTo(tp); err != nil {
		return nil
	}
	return tcpProxyRefs(tp)
}

// tcpProxyRefs returns the clusters a tcp proxy names.
func tcpProxyRefs(tp *tcpproxyv3.TcpProxy) []string {
	if c := tp.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, w := range tp.GetWeightedClusters().GetClusters() {
		out = append(out, w.Name)
	}
	return out
}

// toAny validates m (ValidateAll on a resource does not look inside the typed configs it
// carries) and packs it deterministically: Envoy configs hold maps (RBAC policies), and packing
// them in random order would change content hashes, and so versions, of unchanged configuration.
func toAny(m proto.Message) (*anypb.Any, error) {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

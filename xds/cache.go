package xds

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// The watch cache: go-control-plane's cache.Cache, answering what its SnapshotCache (ads=false)
// answers, at a cost that follows what changed.
//
// go-control-plane's SnapshotCache, on every SetSnapshot of a node, walks every resource of
// every type for each delta watch of the node and allocates a version map per watch, even for
// the types that did not change; and it re-wraps every resource per response. Here:
//
//   - a node's snapshot is held as one immutable typeSet per resource type (resources, their
//     delta versions and their marshalled Any), shared by every node set with the same
//     cachev3.Snapshot (the proxies of a group) and carried over, by identity, for the types a
//     new snapshot takes unchanged from the node's previous one (the server reuses the
//     previous snapshot's Resources for unchanged types);
//   - SetSnapshot looks only at the watches of the types whose typeSet changed;
//   - a wildcard delta watch opened while the client was up to date with a typeSet is answered
//     from the difference between that typeSet and the new one (computed once and shared by
//     every node that makes the same step), not by walking the type;
//   - the Any of each distinct resource is built once (wire.go) and shared by every response
//     and every snapshot that sends it.
//
// State-of-the-world ADS streams are served from the cache by sotwserver.go, which registers
// its streams on their node (sotwConns) and is woken by SetSnapshot; the rest of this file
// serves go-control-plane's server (delta, per-type streams, REST, and SotW with
// WithControlPlaneSotW). Its responses are go-control-plane's passthrough responses, so its
// server sends them as built (setting the nonce on the per-response message); the maps handed
// to the server as returned resources are fresh per response, because the server alters them.
//
// TestWatchCacheMatchesSnapshotCache drives both caches with the same random snapshots through
// real ADS streams and holds their clients to the same state.

// watchCache implements cachev3.Cache plus what Server needs of a SnapshotCache. It is safe for
// concurrent use; responses are sent under its lock, on channels go-control-plane's server
// sizes so that they never block (as SnapshotCache does).
type watchCache struct {
	mu    sync.Mutex
	nodes map[string]*cacheNode
	// shared maps every cachev3.Snapshot set for some node to its converted form, with the
	// number of nodes holding it, so that the nodes of a group share one.
	shared map[*cachev3.Snapshot]*sharedSnap
	lastID uint64 // of typeSets
	// deltaConns are the streams of the server's own delta server (deltaserver.go) by node id,
	// woken when the node's snapshot changes.
	deltaConns map[string]map[*deltaConn]struct{}
}

type sharedSnap struct {
	snap *nodeSnap
	refs int
}

// nodeSnap is one snapshot as the cache serves it: a typeSet per resource type (nil where the
// snapshot has no resources of the type). Never modified.
type nodeSnap struct {
	cs    *cachev3.Snapshot
	types [types.UnknownType]*typeSet
}

// typeSet is one type's resources of a snapshot. Never modified but for its diff memo, under
// watchCache.mu.
type typeSet struct {
	version  string
	typeURL  string
	items    map[string]types.ResourceWithTTL // the snapshot's own map (never copied)
	extra    map[string]*anypb.Any            // the Any of each resource that is not a wire
	versions map[string]string                // name → delta version: the snapshot's own VersionMap entry
	src      uintptr                          // identity of the cachev3.Resources.Items it was made from

	// diff is what changed since the typeSet whose id is diffBase (an id, not a pointer, which
	// would keep every past typeSet alive).
	id       uint64 // unique in its cache
	diffBase uint64
	diff     *typeDiff

	// sotw holds the state-of-the-world response bodies built from the typeSet
	// (sotwserver.go), under its own lock.
	sotw sotwBodies
}

// typeDiff is what changed from one typeSet to another.
type typeDiff struct {
	changed []string // added or with another version
	removed []string

	// bodies are the delta server's responses of the change (deltaserver.go's diffBody), by
	// subscription: wildcardNames, or the interned names of a named one; nil for nothing due.
	mu     sync.Mutex
	bodies map[*nameSet]*deltaBody
}

type cacheNode struct {
	snap   *nodeSnap
	sotw   [types.UnknownType + 1]map[*sotwWatch]struct{}
	deltas [types.UnknownType + 1]map[*deltaWatch]struct{}
	// sotwConns are the node's state-of-the-world ADS streams served by sotwserver.go, woken
	// when its snapshot changes.
	sotwConns map[*sotwConn]struct{}
}

type sotwWatch struct {
	req *cachev3.Request
	out chan cachev3.Response
}

type deltaWatch struct {
	req *cachev3.DeltaRequest
	sub cachev3.Subscription
	out chan cachev3.DeltaResponse
	// base is the typeSet the subscription was found up to date with when the watch opened,
	// for a wildcard subscription (its returned resources are then exactly base's versions);
	// nil otherwise.
	base *typeSet
}

var _ cachev3.Cache = (*watchCache)(nil)

func newWatchCache() *watchCache {
	return &watchCache{nodes: map[string]*cacheNode{}, shared: map[*cachev3.Snapshot]*sharedSnap{},
		deltaConns: map[string]map[*deltaConn]struct{}{}}
}

// responseType returns the index of a type URL, types.UnknownType for an unknown one.
func responseType(typeURL string) types.ResponseType {
	return cachev3.GetResponseType(typeURL)
}

// typeOf returns the node's typeSet of t, or nil.
func (n *cacheNode) typeOf(t types.ResponseType) *typeSet {
	if n == nil || n.snap == nil || t >= types.UnknownType {
		return nil
	}
	return n.snap.types[t]
}

func (c *watchCache) node(id string) *cacheNode {
	n := c.nodes[id]
	if n == nil {
		n = &cacheNode{}
		c.nodes[id] = n
	}
	return n
}

// SetSnapshot sets a node's snapshot, which must be a *cachev3.Snapshot (with its VersionMap
// constructed, or constructible: it is constructed here on first use) that nobody modifies any
// more, and answers the node's open watches of the types that changed.
func (c *watchCache) SetSnapshot(ctx context.Context, nodeID string, rs cachev3.ResourceSnapshot) error {
	cs, ok := rs.(*cachev3.Snapshot)
	if !ok || cs == nil {
		return fmt.Errorf("xds cache: snapshot of type %T, want *cache.Snapshot", rs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(nodeID)
	old := n.snap
	if old != nil && old.cs == cs {
		return nil
	}
	ns, err := c.acquire(cs, old)
	if err != nil {
		return err
	}
	c.release(old)
	n.snap = ns
	woken := false
	for t := range types.UnknownType {
		var prev *typeSet
		if old != nil {
			prev = old.types[t]
		}
		if ns.types[t] == prev && old != nil {
			continue
		}
		if prev != nil && ns.types[t] != nil && len(c.deltaConns[nodeID]) > 0 {
			// What the node's delta streams in step with prev are due, worked out here, once
			// per group and step, rather than by the first stream that wakes (deltaViews).
			ns.types[t].diffFrom(prev)
		}
		if !woken {
			n.wakeSotw()
			for dc := range c.deltaConns[nodeID] {
				dc.notify()
			}
			woken = true
		}
		if err := c.respondSotw(ctx, n, t); err != nil {
			return err
		}
		if err := c.respondDeltas(ctx, n, t); err != nil {
			return err
		}
	}
	return nil
}

// acquire returns cs converted, shared with the other nodes set with it; types whose
// Resources are old's are taken from old. Called with c.mu held.
func (c *watchCache) acquire(cs *cachev3.Snapshot, old *nodeSnap) (*nodeSnap, error) {
	if sh := c.shared[cs]; sh != nil {
		sh.refs++
		return sh.snap, nil
	}
	if err := cs.ConstructVersionMap(); err != nil {
		return nil, err
	}
	sh := &struct { // one allocation: a mesh-wide change sets a snapshot per group
		sharedSnap
		ns nodeSnap
	}{}
	ns := &sh.ns
	ns.cs = cs
	for t := range types.UnknownType {
		r := cs.Resources[t]
		if len(r.Items) == 0 && r.Version == "" {
			continue
		}
		src := reflect.ValueOf(r.Items).Pointer()
		if old != nil && old.types[t] != nil && old.types[t].src == src && old.types[t].version == r.Version && src != 0 {
			ns.types[t] = old.types[t]
			continue
		}
		ts, err := newTypeSet(t, r, cs.VersionMap, src)
		if err != nil {
			return nil, err
		}
		c.lastID++
		ts.id = c.lastID
		ns.types[t] = ts
	}
	sh.snap, sh.refs = ns, 1
	c.shared[cs] = &sh.sharedSnap
	return ns, nil
}

// release drops a node's hold on ns. Called with c.mu held.
func (c *watchCache) release(ns *nodeSnap) {
	if ns == nil {
		return
	}
	if sh := c.shared[ns.cs]; sh != nil && sh.snap == ns {
		if sh.refs--; sh.refs <= 0 {
			delete(c.shared, ns.cs)
		}
	}
}

func newTypeSet(t types.ResponseType, r cachev3.Resources, versionMap map[string]map[string]string, src uintptr) (*typeSet, error) {
	typeURL, err := cachev3.GetResponseTypeURL(t)
	if err != nil {
		return nil, err
	}
	vm := versionMap[typeURL]
	if vm == nil {
		vm = map[string]string{}
	}
	ts := &typeSet{version: r.Version, typeURL: typeURL, src: src, items: r.Items, versions: vm}
	for name, rt := range r.Items {
		if rt.TTL != nil {
			return nil, fmt.Errorf("xds cache: resource %s %q has a TTL, which the cache does not serve", typeURL, name)
		}
		if w, ok := rt.Resource.(*wire); ok && w.any.GetTypeUrl() == typeURL {
			continue
		}
		b, err := cachev3.MarshalResource(rt.Resource)
		if err != nil {
			return nil, fmt.Errorf("xds cache: marshal %s %q: %w", typeURL, name, err)
		}
		if ts.extra == nil {
			ts.extra = map[string]*anypb.Any{}
		}
		ts.extra[name] = &anypb.Any{TypeUrl: typeURL, Value: b}
	}
	return ts, nil
}

// any returns the resource name of ts as sent: its wire's own Any (made once per distinct
// resource, shared by every snapshot holding it), else the one newTypeSet marshalled.
func (ts *typeSet) any(name string) *anypb.Any {
	if a := ts.extra[name]; a != nil {
		return a
	}
	return ts.items[name].Resource.(*wire).any
}

// diffFrom returns what changed from base to ts, memoized for the last base. Called with
// c.mu held.
func (ts *typeSet) diffFrom(base *typeSet) *typeDiff {
	if ts.diffBase == base.id && ts.diff != nil {
		return ts.diff
	}
	d := &typeDiff{}
	for name := range ts.items {
		if v, ok := base.versions[name]; !ok || v != ts.versions[name] {
			d.changed = append(d.changed, name)
		}
	}
	for name := range base.items {
		if _, ok := ts.items[name]; !ok {
			d.removed = append(d.removed, name)
		}
	}
	ts.diffBase, ts.diff = base.id, d
	return d
}

// deltaWatch registers a stream of the delta server (deltaserver.go) to be woken whenever the
// node's snapshot changes; deltaUnwatch forgets it.
func (c *watchCache) deltaWatch(nodeID string, dc *deltaConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.deltaConns[nodeID]
	if m == nil {
		m = map[*deltaConn]struct{}{}
		c.deltaConns[nodeID] = m
	}
	m[dc] = struct{}{}
}

func (c *watchCache) deltaUnwatch(nodeID string, dc *deltaConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.deltaConns[nodeID], dc)
	if len(c.deltaConns[nodeID]) == 0 {
		delete(c.deltaConns, nodeID)
	}
}

// deltaView is what the delta server sees of a node's type: ts, the node's typeSet of it, and
// diff, its difference from the typeSet a stream's client was last sent when the client holds
// exactly what it was sent (deltaType.inStep); ok is false while the node has no snapshot.
type deltaView struct {
	ts   *typeSet
	diff *typeDiff
	ok   bool
}

// deltaViews sets out[i] to the node's view of dts[i]'s type, all from the same snapshot.
func (c *watchCache) deltaViews(nodeID string, dts []*deltaType, out []deltaView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[nodeID]
	if n == nil || n.snap == nil {
		return
	}
	for i, dt := range dts {
		ts := n.typeOf(dt.t)
		out[i] = deltaView{ts: ts, ok: true}
		if dt.inStep() && ts != nil && dt.base != ts {
			out[i].diff = ts.diffFrom(dt.base)
		}
	}
}

// ClearSnapshot forgets a node: its snapshot and its open watches (which are never answered).
func (c *watchCache) ClearSnapshot(nodeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[nodeID]; n != nil {
		c.release(n.snap)
		delete(c.nodes, nodeID)
	}
}

// CreateWatch opens a state-of-the-world watch, answered at once when the client's version is
// not the current one or it lacks a resource it asks for.
func (c *watchCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	id := req.GetNode().GetId()
	t := responseType(req.GetTypeUrl())
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	w := &sotwWatch{req: req, out: out}
	if n.snap == nil || !sotwShouldRespond(req, sub, n.typeOf(t)) {
		if n.sotw[t] == nil {
			n.sotw[t] = map[*sotwWatch]struct{}{}
		}
		n.sotw[t][w] = struct{}{}
		return c.cancelSotw(id, n, t, w), nil
	}
	if err := send(context.Background(), out, sotwResponse(req, n.typeOf(t))); err != nil {
		return nil, fmt.Errorf("failed to send the response: %w", err)
	}
	return func() {}, nil
}

// sotwShouldRespond reports whether a request, with a snapshot set, is answered at once.
func sotwShouldRespond(req *cachev3.Request, sub cachev3.Subscription, ts *typeSet) bool {
	version := ""
	if ts != nil {
		version = ts.version
	}
	if req.GetVersionInfo() != version {
		return true
	}
	if ts == nil {
		return false
	}
	known := sub.ReturnedResources()
	if !sub.IsWildcard() {
		for r := range sub.SubscribedResources() {
			if _, ok := known[r]; !ok {
				if _, ok := ts.items[r]; ok {
					return true
				}
			}
		}
		return false
	}
	for r := range ts.items {
		if _, ok := known[r]; !ok {
			return true
		}
	}
	return false
}

// sotwResponse is the answer to req from ts: the resources it names (all without names).
func sotwResponse(req *cachev3.Request, ts *typeSet) cachev3.Response {
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: req.GetTypeUrl()}
	returned := map[string]string{}
	if ts != nil {
		resp.VersionInfo = ts.version
		add := func(name string, a *anypb.Any) {
			resp.Resources = append(resp.Resources, a)
			returned[name] = ts.version
		}
		if names := req.GetResourceNames(); len(names) > 0 {
			seen := make(map[string]bool, len(names))
			for _, name := range names {
				if _, ok := ts.items[name]; ok && !seen[name] {
					seen[name] = true
					add(name, ts.any(name))
				}
			}
		} else {
			resp.Resources = make([]*anypb.Any, 0, len(ts.items))
			returned = make(map[string]string, len(ts.items))
			for name := range ts.items {
				add(name, ts.any(name))
			}
		}
	}
	return &cachev3.PassthroughResponse{Request: req, DiscoveryResponse: resp, ReturnedResources: returned}
}

func (c *watchCache) cancelSotw(id string, n *cacheNode, t types.ResponseType, w *sotwWatch) func() {
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.nodes[id] == n {
			delete(n.sotw[t], w)
		}
	}
}

// respondSotw answers the node's state-of-the-world watches of t whose version is not t's.
// Called with c.mu held.
func (c *watchCache) respondSotw(ctx context.Context, n *cacheNode, t types.ResponseType) error {
	ts := n.typeOf(t)
	version := ""
	if ts != nil {
		version = ts.version
	}
	for w := range n.sotw[t] {
		if w.req.GetVersionInfo() == version {
			continue
		}
		if err := send(ctx, w.out, sotwResponse(w.req, ts)); err != nil {
			return err
		}
		delete(n.sotw[t], w)
	}
	return nil
}

func send[R any](ctx context.Context, out chan R, r R) error {
	select {
	case out <- r:
		return nil
	case <-ctx.Done():
		return context.Canceled
	}
}

// CreateDeltaWatch opens a delta watch, answered at once when the subscription lacks
// something of the node's snapshot (or it is the first wildcard request of the stream).
func (c *watchCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	id := req.GetNode().GetId()
	t := responseType(req.GetTypeUrl())
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	w := &deltaWatch{req: req, sub: sub, out: out}
	if n.snap != nil {
		ts := n.typeOf(t)
		resp := deltaFull(req, sub, ts)
		if resp != nil {
			if err := send(context.Background(), out, cachev3.DeltaResponse(resp)); err != nil {
				return nil, fmt.Errorf("failed to send the delta response: %w", err)
			}
			return nil, nil
		}
		if sub.IsWildcard() && ts != nil {
			w.base = ts
		}
	}
	if n.deltas[t] == nil {
		n.deltas[t] = map[*deltaWatch]struct{}{}
	}
	n.deltas[t][w] = struct{}{}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.nodes[id] == n {
			delete(n.deltas[t], w)
		}
	}, nil
}

// respondDeltas answers the node's delta watches of t that lack something of t's typeSet.
// Called with c.mu held.
func (c *watchCache) respondDeltas(ctx context.Context, n *cacheNode, t types.ResponseType) error {
	ts := n.typeOf(t)
	for w := range n.deltas[t] {
		var resp *cachev3.DeltaPassthroughResponse
		if w.base != nil && ts != nil && w.sub.IsWildcard() {
			resp = deltaStep(w, ts)
		} else {
			resp = deltaFull(w.req, w.sub, ts)
		}
		if resp == nil {
			if w.base != nil {
				w.base = ts // up to date with ts: nothing differed
			}
			continue
		}
		if err := send(ctx, w.out, cachev3.DeltaResponse(resp)); err != nil {
			return err
		}
		delete(n.deltas[t], w)
	}
	return nil
}

// deltaStep answers a wildcard watch that was up to date with w.base, now that the type is ts;
// nil when nothing differs.
func deltaStep(w *deltaWatch, ts *typeSet) *cachev3.DeltaPassthroughResponse {
	d := ts.diffFrom(w.base)
	if len(d.changed) == 0 && len(d.removed) == 0 {
		return nil
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: w.req.GetTypeUrl(), SystemVersionInfo: ts.version,
		Resources: make([]*discoveryv3.Resource, 0, len(d.changed))}
	for _, name := range d.changed {
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Resource: ts.any(name), Version: ts.versions[name]})
	}
	if len(d.removed) > 0 {
		resp.RemovedResources = append([]string(nil), d.removed...)
	}
	return &cachev3.DeltaPassthroughResponse{DeltaRequest: w.req, DeltaDiscoveryResponse: resp, NextVersionMap: maps.Clone(ts.versions)}
}

// deltaFull answers a delta subscription from ts as go-control-plane's SnapshotCache does:
// every subscribed resource the client lacks or has at another version, and the removal of
// those it has that are gone; nil when there is nothing to send (but the first wildcard
// request of a stream is always answered).
func deltaFull(req *cachev3.DeltaRequest, sub cachev3.Subscription, ts *typeSet) *cachev3.DeltaPassthroughResponse {
	var items map[string]types.ResourceWithTTL
	var versions map[string]string
	version := ""
	if ts != nil {
		items, versions, version = ts.items, ts.versions, ts.version
	}
	returned := sub.ReturnedResources()
	if !(sub.IsWildcard() && req.GetResponseNonce() == "") && subUpToDate(sub, items, versions) {
		return nil // the common case of an ACK: nothing allocated
	}
	var next map[string]string
	var res []*discoveryv3.Resource
	var removed []string
	if sub.IsWildcard() {
		next = make(map[string]string, len(items))
		for name := range items {
			v := versions[name]
			next[name] = v
			if prev, ok := returned[name]; !ok || prev != v {
				res = append(res, &discoveryv3.Resource{Name: name, Resource: ts.any(name), Version: v})
			}
		}
		for name := range returned {
			if _, ok := items[name]; !ok {
				removed = append(removed, name)
			}
		}
	} else {
		next = make(map[string]string, len(sub.SubscribedResources()))
		for name := range sub.SubscribedResources() {
			prev, ok := returned[name]
			if _, in := items[name]; in {
				v := versions[name]
				if prev != v { // as SnapshotCache (a resource never sent counts as version "")
					res = append(res, &discoveryv3.Resource{Name: name, Resource: ts.any(name), Version: v})
				}
				next[name] = v
			} else if ok {
				removed = append(removed, name)
			}
		}
	}
	if len(res) == 0 && len(removed) == 0 && !(sub.IsWildcard() && req.GetResponseNonce() == "") {
		return nil
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), SystemVersionInfo: version,
		Resources: res, RemovedResources: removed}
	if resp.Resources == nil {
		resp.Resources = []*discoveryv3.Resource{}
	}
	return &cachev3.DeltaPassthroughResponse{DeltaRequest: req, DeltaDiscoveryResponse: resp, NextVersionMap: next}
}

// subUpToDate reports whether deltaFull has nothing to send to sub: it holds every resource of
// items it subscribes to at its version, and nothing else of what it subscribes to.
func subUpToDate(sub cachev3.Subscription, items map[string]types.ResourceWithTTL, versions map[string]string) bool {
	returned := sub.ReturnedResources()
	if sub.IsWildcard() {
		if len(returned) != len(items) {
			return false
		}
		for name := range items {
			if v, ok := returned[name]; !ok || v != versions[name] {
				return false
			}
		}
		return true
	}
	for name := range sub.SubscribedResources() {
		prev, ok := returned[name]
		if _, in := items[name]; in {
			if prev != versions[name] {
				return false
			}
		} else if ok {
			return false
		}
	}
	return true
}

// Fetch answers a REST request as SnapshotCache does.
func (c *watchCache) Fetch(_ context.Context, req *cachev3.Request) (cachev3.Response, error) {
	id := req.GetNode().GetId()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil || n.snap == nil {
		return nil, fmt.Errorf("missing snapshot for %q", id)
	}
	ts := n.typeOf(responseType(req.GetTypeUrl()))
	version := ""
	if ts != nil {
		version = ts.version
	}
	if req.GetVersionInfo() == version {
		return nil, &types.SkipFetchError{}
	}
	return sotwResponse(req, ts), nil
}

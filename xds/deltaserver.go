package xds

import (
	"cmp"
	"context"
	"hash/maphash"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unique"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The server's own delta ADS stream server (DeltaAggregatedResources), reading the watch cache
// (cache.go) directly. It speaks Envoy's incremental xDS exactly as go-control-plane's delta
// server over the watch cache does (pkg/server/delta/v3 and stream/v3's Subscription): legacy
// and explicit ("*") wildcard, subscription and unsubscription by name (an unsubscribed name
// under wildcard is answered with the resource or its removal), initial_resource_versions (a
// reconnecting client is sent only what it lacks), removed_resources, one response in flight
// per type (the next one waits for the ACK or NACK of the last: a NACKed configuration is not
// resent), per-stream nonces and the same callbacks into the Server (callbacks.go). What differs
// is the cost:
//
//   - What a client holds of a type is not a map per stream: it is the typeSet last sent
//     (shared by every node of a group, immutable), whether the whole of it was sent (wildcard)
//     or only the subscribed names, plus a small overlay of what changed since (names
//     unsubscribed, subscribed, initial versions), emptied at each response. A wildcard stream
//     in sync with its node costs two pointers per type.
//   - A response's body (every field but the nonce and the system version, which follow it as
//     their own fields: a field may appear anywhere in an encoding) is encoded once for every
//     stream that sends the same resources at the same versions, whatever the group: responses
//     are interned by content while any stream still holds one (weak pointers), and sent
//     unchanged through the server codec's preEncoded hook (grpcopts.go). The body references
//     each resource's marshalled bytes (wire.go) rather than copying them.
//
// go-control-plane's server stays selectable (WithControlPlaneDeltaServer, and always with
// WithSnapshotCache); TestDeltaServerMatchesControlPlane drives both with the same random
// snapshots and subscriptions over real gRPC streams and holds their clients to the same state.

// deltaStreamBase numbers this server's streams apart from go-control-plane's delta streams
// (the per-type delta services), which count from 1 and share the Server's stream table.
const deltaStreamBase = 1 << 40

type deltaServer struct {
	ctx   context.Context // the server's: its end ends every stream
	cb    deltaCallbacks
	c     *watchCache
	count atomic.Int64

	mu     sync.Mutex // guards bodies
	bodies map[uint64]weak.Pointer[deltaBody]
	sets   nameSets
}

// deltaCallbacks are go-control-plane's delta callbacks: the Server's (callbacks.go). When
// they are a sentRecorder, a response is told to deltaSent rather than OnStreamDeltaResponse.
// A request passed to OnStreamDeltaRequest is the stream's, received into again after the
// call (decode.go).
type deltaCallbacks interface {
	OnDeltaStreamOpen(context.Context, int64, string) error
	OnDeltaStreamClosed(int64, *corev3.Node)
	OnStreamDeltaRequest(int64, *discoveryv3.DeltaDiscoveryRequest) error
	OnStreamDeltaResponse(int64, *discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse)
}

func newDeltaServer(ctx context.Context, c *watchCache, cb deltaCallbacks) *deltaServer {
	return &deltaServer{ctx: ctx, cb: cb, c: c, bodies: map[uint64]weak.Pointer[deltaBody]{},
		sets: nameSets{sets: map[uint64]weak.Pointer[nameSet]{}}}
}

// deltaConn is what the cache knows of a stream: it is woken when its node's snapshot changes.
type deltaConn struct {
	wake chan struct{} // capacity 1
}

func (dc *deltaConn) notify() {
	select {
	case dc.wake <- struct{}{}:
	default:
	}
}

// deltaType is one stream's subscription to one resource type and what the client holds.
type deltaType struct {
	typeURL  string
	t        types.ResponseType
	wildcard bool
	legacy   bool // still in legacy wildcard mode: no name (nor "*") subscribed yet
	// names are the names subscribed to (some may be under the wildcard): a set shared with
	// every stream subscribing to the same names (namesRef keeps it interned), never modified.
	// Each name maps to its index in the set (nameSets.intern).
	names    map[string]uint32
	namesRef *nameSet
	// What the client holds (go-control-plane's ReturnedResources): base's versions, of all of
	// base when baseAll, else of the names subscribed; over overrides them name by name.
	base    *typeSet
	baseAll bool
	over    map[string]heldVersion
	nonce   string // of the latest response
	open    bool   // a request awaits a response (go-control-plane's open watch)
	force   bool   // the open request had no nonce: a wildcard one is answered even with nothing
}

// heldVersion is a version the client holds, or (!has) that it holds none.
type heldVersion struct {
	v   string
	has bool
}

func newDeltaType(sets *nameSets, typeURL string, req *discoveryv3.DeltaDiscoveryRequest) *deltaType {
	d := &deltaType{typeURL: typeURL, t: responseType(typeURL), legacy: true,
		wildcard: len(req.GetResourceNamesSubscribe()) == 0}
	if irv := req.GetInitialResourceVersions(); len(irv) > 0 {
		d.over = make(map[string]heldVersion, len(irv))
		for name, v := range irv {
			d.over[name] = heldVersion{v: v, has: true}
		}
	}
	d.update(sets, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	return d
}

// held returns the version of name the client holds.
func (d *deltaType) held(name string) (string, bool) {
	if o, ok := d.over[name]; ok {
		return o.v, o.has
	}
	if d.base == nil {
		return "", false
	}
	if !d.baseAll {
		if _, ok := d.names[name]; !ok {
			return "", false
		}
	}
	if _, ok := d.base.items[name]; !ok {
		return "", false
	}
	return d.base.versions[name], true
}

// eachHeld calls f with every name the client holds, once each.
func (d *deltaType) eachHeld(f func(name string)) {
	for name, o := range d.over {
		if o.has {
			f(name)
		}
	}
	if d.base == nil {
		return
	}
	if d.baseAll {
		for name := range d.base.items {
			if _, ok := d.over[name]; !ok {
				f(name)
			}
		}
		return
	}
	for name := range d.names {
		if _, ok := d.base.items[name]; ok {
			if _, o := d.over[name]; !o {
				f(name)
			}
		}
	}
}

func (d *deltaType) setOver(name string, h heldVersion) {
	if d.over == nil {
		d.over = map[string]heldVersion{}
	}
	d.over[name] = h
}

// update applies a request's subscriptions and unsubscriptions as go-control-plane's
// Subscription.UpdateResourceSubscriptions does, keeping what the client holds the same.
func (d *deltaType) update(sets *nameSets, subscribe, unsubscribe []string) {
	if d.legacy {
		if len(subscribe) == 0 {
			return // still legacy wildcard (unsubscriptions are ignored, as go-control-plane does)
		}
		d.legacy = false
	}
	if len(d.names) == 0 && d.base == nil && len(unsubscribe) == 0 && d.namesShared(sets, subscribe) {
		return
	}
	// The names are changed in a copy of the shared set, interned again at the end.
	owned := false
	own := func() {
		if !owned {
			m := make(map[string]uint32, len(d.names)+len(subscribe))
			maps.Copy(m, d.names)
			d.names, owned = m, true
		}
	}
	defer func() {
		if owned {
			d.names, d.namesRef = sets.intern(d.names)
		}
	}()
	for _, name := range subscribe {
		if name == "*" {
			d.wildcard = true
			continue
		}
		if _, ok := d.names[name]; ok {
			continue
		}
		if d.base != nil && !d.baseAll {
			// held() would now see base's version, which the client was never sent.
			if _, in := d.base.items[name]; in {
				if _, o := d.over[name]; !o {
					d.setOver(name, heldVersion{})
				}
			}
		}
		own()
		d.names[unique.Make(name).Value()] = 0 // the same strings in every set; indexed by intern
	}
	for _, name := range unsubscribe {
		if name == "*" {
			d.wildcard = false
			continue
		}
		if _, ok := d.names[name]; ok && d.wildcard {
			d.setOver(name, heldVersion{has: true}) // answered with the resource or its removal
		} else if _, has := d.held(name); has {
			d.setOver(name, heldVersion{})
		}
		if _, ok := d.names[name]; ok {
			own()
			delete(d.names, name)
		}
	}
}

// nameSets interns the name sets of named subscriptions: the proxies of a service, and in a
// dense mesh those of most services, subscribe to the same endpoints and routes.
type nameSets struct {
	mu   sync.Mutex
	sets map[uint64]weak.Pointer[nameSet]
}

// nameSet is a set of names, each mapped to its own index in 0..len-1 (namesShared uses them).
type nameSet struct{ m map[string]uint32 }

// nameKey is the part of a set's key that one name adds.
func nameKey(name string) uint64 { return mix(maphash.String(deltaSeed, name), 0x5851f42d4c957f2d) }

// intern returns the shared set equal to m (m itself, indexed, if there is none), nil for no
// names.
func (n *nameSets) intern(m map[string]uint32) (map[string]uint32, *nameSet) {
	if len(m) == 0 {
		return nil, nil
	}
	var key uint64
	for name := range m {
		key += nameKey(name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.sets[key].Value(); s != nil && len(s.m) == len(m) {
		same := true
		for name := range m {
			if _, ok := s.m[name]; !ok {
				same = false
				break
			}
		}
		if same {
			return s.m, s
		}
	}
	i := uint32(0)
	for name := range m {
		m[name] = i
		i++
	}
	s := &nameSet{m: m}
	keepWeak(&n.mu, n.sets, key, s)
	return m, s
}

// namesShared subscribes d, which subscribes to no name yet and holds nothing, to the names
// of subscribe (and to the wildcard if it names "*") when another stream's set holds exactly
// those names: the first requests of a dense mesh's proxies name the same thousand endpoints
// and routes, and would each build a map of them only to find it interned already. It reports
// false, changing nothing, when there is no such set (or nothing but the wildcard is named).
func (d *deltaType) namesShared(sets *nameSets, subscribe []string) bool {
	var key uint64
	n, star := 0, false
	for _, name := range subscribe {
		if name == "*" {
			star = true
			continue
		}
		key += nameKey(name)
		n++
	}
	if n == 0 {
		return false
	}
	sets.mu.Lock()
	s := sets.sets[key].Value()
	sets.mu.Unlock()
	if s == nil || len(s.m) != n {
		return false
	}
	// Equal when every name is in s once: n names, each a distinct index of s's n.
	seen := make([]uint64, (n+63)/64)
	for _, name := range subscribe {
		if name == "*" {
			continue
		}
		i, ok := s.m[name]
		if !ok || seen[i/64]&(1<<(i%64)) != 0 {
			return false
		}
		seen[i/64] |= 1 << (i % 64)
	}
	d.names, d.namesRef = s.m, s
	d.wildcard = d.wildcard || star
	return true
}

// deltaEntry is one resource of a response.
type deltaEntry struct {
	name, version string
	any           *anypb.Any
}

// content returns what d must be sent now that the type is ts (diff, when not nil, is ts's
// difference from d.base, which the client holds all of): the resources it lacks or holds at
// another version and the names it holds that are gone; send is false when nothing is due.
func (d *deltaType) content(ts *typeSet, diff *typeDiff) (entries []deltaEntry, removed []string, send bool) {
	entry := func(name string) deltaEntry {
		return deltaEntry{name: name, version: ts.versions[name], any: ts.any(name)}
	}
	switch {
	case !d.wildcard && diff != nil: // what it holds is base's versions of the names
		for _, name := range diff.changed {
			if _, ok := d.names[name]; ok {
				entries = append(entries, entry(name))
			}
		}
		for _, name := range diff.removed {
			if _, ok := d.names[name]; ok {
				removed = append(removed, name)
			}
		}
	case d.wildcard && diff != nil:
		entries = make([]deltaEntry, 0, len(diff.changed))
		for _, name := range diff.changed {
			entries = append(entries, entry(name))
		}
		removed = slices.Clone(diff.removed)
	case d.wildcard:
		var items map[string]types.ResourceWithTTL
		if ts != nil {
			items = ts.items
		}
		if d.base == nil && len(d.over) == 0 {
			entries = make([]deltaEntry, 0, len(items)) // holds nothing: gets every one
		}
		for name := range items {
			if v, ok := d.held(name); !ok || v != ts.versions[name] {
				entries = append(entries, entry(name))
			}
		}
		d.eachHeld(func(name string) {
			if _, ok := items[name]; !ok {
				removed = append(removed, name)
			}
		})
	default:
		for name := range d.names {
			v, ok := d.held(name)
			if ts != nil {
				if _, in := ts.items[name]; in {
					if v != ts.versions[name] { // as go-control-plane: never sent counts as ""
						entries = append(entries, entry(name))
					}
					continue
				}
			}
			if ok {
				removed = append(removed, name)
			}
		}
	}
	send = len(entries) > 0 || len(removed) > 0 || d.wildcard && d.force
	return entries, removed, send
}

// inStep reports whether the client holds exactly what it was last sent, all of base
// (wildcard) or base's versions of the names it subscribes to, and still subscribes the same
// way: what is due is then what changed since base, among the names when not wildcard.
func (d *deltaType) inStep() bool {
	return d.base != nil && len(d.over) == 0 && d.wildcard == d.baseAll
}

// upToDate reports, cheaply, that nothing is due from ts.
func (d *deltaType) upToDate(ts *typeSet) bool {
	return d.inStep() && d.base == ts && !(d.wildcard && d.force)
}

// deltaStreamState is one stream.
type deltaStreamState struct {
	id   int64 // as the callbacks take it (negated by deltaStreamID)
	conn *deltaConn
	node *corev3.Node // of the last request that had one (as go-control-plane's server)
	// nodeID is the node the stream is served for, its first request's (the Server's
	// callbacks hold a stream to its first node too).
	nodeID string
	types  map[string]*deltaType
	known  [types.UnknownType]*deltaType // the types of types that the server knows, by index
	nonce  int64
	// unknown counts the unknown type URLs in types, at most maxUnknownTypes (sotwserver.go).
	unknown int
	// mu is held while a request or a wake-up is handled; stopped is set, under it, when the
	// stream's handler returns.
	mu      sync.Mutex
	stopped bool
	// req is what every request is received into (decode.go), on the receiving goroutine.
	req deltaRequest
}

// expect returns what the stream expects in a request of typeURL: an ACK of its latest
// response.
func (ss *deltaStreamState) expect(typeURL string) ackExpect {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if dt := ss.types[typeURL]; dt != nil {
		return ackExpect{nonce: dt.nonce}
	}
	return ackExpect{}
}

// serve serves one DeltaAggregatedResources stream until the client ends it, a callback or a
// send fails, the server closes, or the Server kills it (ads.go's killable). Requests are
// handled on the receiving goroutine (handleRequests); this one answers what a new snapshot
// makes due. Both hold ss.mu while they handle, so the stream's state and its sends are never
// concurrent.
func (d *deltaServer) serve(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx, cancel := streamContext(st.Context(), d.ctx)
	defer cancel()
	ss := &deltaStreamState{id: deltaStreamBase + d.count.Add(1), conn: &deltaConn{wake: make(chan struct{}, 1)},
		node: &corev3.Node{}, types: map[string]*deltaType{}}
	cb := d.cb
	defer func() {
		ss.mu.Lock()
		ss.stopped = true
		ss.mu.Unlock()
		if ss.nodeID != "" {
			d.c.deltaUnwatch(ss.nodeID, ss.conn)
		}
		cb.OnDeltaStreamClosed(ss.id, ss.node)
	}()
	if err := cb.OnDeltaStreamOpen(ctx, ss.id, resourcev3.AnyType); err != nil {
		return err
	}
	ss.req.expect = ss.expect
	recv := func() (*discoveryv3.DeltaDiscoveryRequest, error) {
		if err := st.RecvMsg(&ss.req); err != nil {
			return nil, err
		}
		return &ss.req.DeltaDiscoveryRequest, nil
	}
	end := handleRequests(recv, &ss.mu, &ss.stopped, func(req *discoveryv3.DeltaDiscoveryRequest) error {
		return d.request(st, ss, req)
	})
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case err := <-end:
			return err
		case <-ss.conn.wake:
			ss.mu.Lock()
			err := d.respondAll(st, ss)
			ss.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// request handles one request, the stream's own (ss.req): callbacks, subscription, and an
// answer if one is due. Called with ss.mu held.
func (d *deltaServer) request(st grpc.ServerStream, ss *deltaStreamState, req *discoveryv3.DeltaDiscoveryRequest) error {
	// Changes that arrived before the request are answered first, as go-control-plane sends
	// the responses its cache queued before it handles a request.
	select {
	case <-ss.conn.wake:
		if err := d.respondAll(st, ss); err != nil {
			return err
		}
	default:
	}
	if err := d.cb.OnStreamDeltaRequest(ss.id, req); err != nil {
		return err
	}
	if req.GetNode() != nil {
		ss.node = req.GetNode()
	}
	if req.GetTypeUrl() == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
	}
	if ss.nodeID == "" {
		ss.nodeID = ss.node.GetId()
		d.c.deltaWatch(ss.nodeID, ss.conn)
	}
	dt := ss.types[req.GetTypeUrl()]
	if dt == nil {
		if responseType(req.GetTypeUrl()) == types.UnknownType {
			if ss.unknown >= maxUnknownTypes {
				return status.Errorf(codes.InvalidArgument, "more than %d unknown resource types", maxUnknownTypes)
			}
			ss.unknown++
		}
		dt = newDeltaType(&d.sets, req.GetTypeUrl(), req)
		ss.types[req.GetTypeUrl()] = dt
		if dt.t < types.UnknownType {
			ss.known[dt.t] = dt
		}
	} else {
		dt.update(&d.sets, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	dt.open, dt.force = true, req.GetResponseNonce() == ""
	// The request is applied: what it named is not kept while the answer is sent, which takes
	// as long as the proxy takes to read it.
	ss.req.release()
	return d.respond(st, ss, dt)
}

// respondAll answers every open request of the stream that something is now due to, in the
// order Envoy applies a change without dropping traffic: clusters before their endpoints,
// then listeners before their routes, then the rest (deltaOrder; unknown types last, by type
// URL). The known types are answered from one look at the cache.
func (d *deltaServer) respondAll(st grpc.ServerStream, ss *deltaStreamState) error {
	var open [types.UnknownType]*deltaType
	var views [types.UnknownType]deltaView
	n := 0
	for _, t := range deltaOrder {
		if dt := ss.known[t]; dt != nil && dt.open {
			open[n] = dt
			n++
		}
	}
	d.c.deltaViews(ss.nodeID, open[:n], views[:n])
	for i, dt := range open[:n] {
		if err := d.respondFrom(st, ss, dt, views[i]); err != nil {
			return err
		}
	}
	if ss.unknown == 0 {
		return nil
	}
	var unknown []*deltaType
	for _, dt := range ss.types {
		if dt.t == types.UnknownType && dt.open {
			unknown = append(unknown, dt)
		}
	}
	slices.SortFunc(unknown, func(a, b *deltaType) int { return cmp.Compare(a.typeURL, b.typeURL) })
	for _, dt := range unknown {
		if err := d.respond(st, ss, dt); err != nil {
			return err
		}
	}
	return nil
}

// deltaOrder is the order of the known types in which respondAll answers them.
var deltaOrder = func() []types.ResponseType {
	order := make([]types.ResponseType, 0, types.UnknownType)
	for t := range types.UnknownType {
		order = append(order, t)
	}
	slices.SortStableFunc(order, func(a, b types.ResponseType) int { return cmp.Compare(deltaRank(a), deltaRank(b)) })
	return order
}()

func deltaRank(t types.ResponseType) int {
	switch t {
	case types.Cluster:
		return 0
	case types.Endpoint:
		return 1
	case types.Listener:
		return 2
	case types.Route:
		return 3
	}
	return 4 + int(t)
}

// respond sends dt what is due from the node's current snapshot, if anything; an open request
// waits (nothing due, or no snapshot yet) for the node's next snapshot.
func (d *deltaServer) respond(st grpc.ServerStream, ss *deltaStreamState, dt *deltaType) error {
	var v [1]deltaView
	d.c.deltaViews(ss.nodeID, []*deltaType{dt}, v[:])
	return d.respondFrom(st, ss, dt, v[0])
}

// respondFrom sends dt what is due from v, the node's snapshot of dt's type, if anything.
func (d *deltaServer) respondFrom(st grpc.ServerStream, ss *deltaStreamState, dt *deltaType, v deltaView) error {
	ts, diff := v.ts, v.diff
	if !v.ok || dt.upToDate(ts) {
		return nil
	}
	var body *deltaBody
	if diff != nil {
		body = d.diffBody(dt, ts, diff)
		if body == nil {
			if !(dt.wildcard && dt.force) {
				return nil
			}
			body = d.body(dt.typeURL, nil, nil)
		}
	} else {
		entries, removed, send := dt.content(ts, diff)
		if !send {
			return nil
		}
		body = d.body(dt.typeURL, entries, removed)
	}
	version := ""
	if ts != nil {
		version = ts.version
	}
	dt.base, dt.baseAll, dt.over, dt.open, dt.force = ts, dt.wildcard, nil, false, false
	ss.nonce++
	msg := &deltaMsg{body: body, version: version, nonce: strconv.FormatInt(ss.nonce, 10)}
	dt.nonce = msg.nonce
	if r, ok := d.cb.(sentRecorder); ok {
		r.deltaSent(ss.id, dt.typeURL, msg.nonce, version)
	} else {
		d.cb.OnStreamDeltaResponse(ss.id, nil,
			&discoveryv3.DeltaDiscoveryResponse{TypeUrl: dt.typeURL, SystemVersionInfo: version, Nonce: msg.nonce})
	}
	return st.SendMsg(msg)
}

// wildcardNames keys the bodies of wildcard subscriptions in typeDiff.bodies.
var wildcardNames = &nameSet{}

// diffBody returns the body of what is due to dt, whose client holds exactly dt.base, now that
// the type is ts (diff is ts's difference from dt.base); nil when nothing changed of what dt
// subscribes to. It is worked out once per change for every stream that subscribes the same
// way (wildcard, or the same interned names) and kept with the diff, which lives as long as
// ts does and is the difference of ts from one base only: the streams of a group step
// together.
func (d *deltaServer) diffBody(dt *deltaType, ts *typeSet, diff *typeDiff) *deltaBody {
	key := dt.namesRef
	if dt.wildcard {
		key = wildcardNames
	}
	diff.mu.Lock()
	defer diff.mu.Unlock()
	if b, ok := diff.bodies[key]; ok {
		if b != nil {
			b.handed()
		}
		return b
	}
	var b *deltaBody
	if entries, removed, _ := dt.content(ts, diff); len(entries) > 0 || len(removed) > 0 {
		b = d.body(dt.typeURL, entries, removed)
	}
	if diff.bodies == nil {
		diff.bodies = map[*nameSet]*deltaBody{}
	}
	diff.bodies[key] = b
	return b
}

// deltaBody is the encoding of a delta response but for its nonce and system version: its
// type URL, resources and removed names. Never modified but for its index (under
// deltaServer.mu); shared by every stream sending it.
type deltaBody struct {
	typeURL string
	entries []deltaEntry
	removed []string
	bodyBufs
	// index maps each entry's name to its version, and each removed name to removedMark, made
	// when another response is first compared with this one.
	index map[string]string
}

const removedMark = "\x00removed"

var deltaSeed = maphash.MakeSeed()

// body returns the body of a response, shared with every stream that sends the same resources
// at the same versions and the same removals while one of them holds it. Responses are keyed
// by a hash that does not depend on their order (no sorting per stream), and compared in full
// before one is shared.
func (d *deltaServer) body(typeURL string, entries []deltaEntry, removed []string) *deltaBody {
	key := maphash.String(deltaSeed, typeURL)
	for _, e := range entries {
		key += mix(maphash.String(deltaSeed, e.name), maphash.String(deltaSeed, e.version))
	}
	for _, name := range removed {
		key += mix(maphash.String(deltaSeed, name), 0x9e3779b97f4a7c15)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b := d.bodies[key].Value(); b != nil && b.same(typeURL, entries, removed) {
		b.handed()
		return b
	}
	b := encodeDeltaBody(typeURL, entries, removed)
	b.handed()
	keepWeak(&d.mu, d.bodies, key, b)
	return b
}

// mix combines the hashes of a name and a version into the hash of the pair.
func mix(a, b uint64) uint64 {
	x := a*0xff51afd7ed558ccd ^ b
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>29
}

// same reports whether b holds exactly entries (names and versions, in any order) and removed.
// Called with deltaServer.mu held.
func (b *deltaBody) same(typeURL string, entries []deltaEntry, removed []string) bool {
	if b.typeURL != typeURL || len(b.entries) != len(entries) || len(b.removed) != len(removed) {
		return false
	}
	if b.index == nil {
		b.index = make(map[string]string, len(b.entries)+len(b.removed))
		for _, e := range b.entries {
			b.index[e.name] = e.version
		}
		for _, name := range b.removed {
			b.index[name] = removedMark
		}
		if len(b.index) != len(b.entries)+len(b.removed) {
			b.index = nil // a name twice: never shared
			return false
		}
	}
	for _, e := range entries {
		if v, ok := b.index[e.name]; !ok || v != e.version {
			return false
		}
	}
	for _, name := range removed {
		if b.index[name] != removedMark {
			return false
		}
	}
	return true
}

// deltaInline is the size up to which a resource's bytes are copied into the body rather than
// referenced.
const deltaInline = 128

// DeltaDiscoveryResponse, Resource and Any field numbers.
const (
	fDeltaVersion   = 1
	fDeltaResources = 2
	fDeltaTypeURL   = 4
	fDeltaNonce     = 5
	fDeltaRemoved   = 6
	fResVersion     = 1
	fResResource    = 2
	fResName        = 3
	fAnyTypeURL     = 1
	fAnyValue       = 2
)

// encodeDeltaBody encodes a response's type URL, resources and removed names; each large
// resource value is referenced as its own buffer (the wire's bytes), not copied.
func encodeDeltaBody(typeURL string, entries []deltaEntry, removed []string) *deltaBody {
	size := protowire.SizeTag(fDeltaTypeURL) + protowire.SizeBytes(len(typeURL))
	nbufs := 1
	for _, e := range entries {
		size += 32 + len(e.name) + len(e.version) + len(e.any.GetTypeUrl())
		if len(e.any.GetValue()) <= deltaInline {
			size += len(e.any.GetValue())
		} else {
			nbufs += 2
		}
	}
	for _, name := range removed {
		size += protowire.SizeTag(fDeltaRemoved) + protowire.SizeBytes(len(name))
	}
	w := bodyBuf{buf: make([]byte, 0, size), bufs: make(mem.BufferSlice, 0, nbufs)}
	w.buf = protowire.AppendTag(w.buf, fDeltaTypeURL, protowire.BytesType)
	w.buf = protowire.AppendString(w.buf, typeURL)
	for _, e := range entries {
		value := e.any.GetValue()
		anyLen := protowire.SizeTag(fAnyTypeURL) + protowire.SizeBytes(len(e.any.GetTypeUrl())) +
			protowire.SizeTag(fAnyValue) + protowire.SizeBytes(len(value))
		resLen := protowire.SizeTag(fResName) + protowire.SizeBytes(len(e.name)) +
			protowire.SizeTag(fResVersion) + protowire.SizeBytes(len(e.version)) +
			protowire.SizeTag(fResResource) + protowire.SizeBytes(anyLen)
		w.buf = protowire.AppendTag(w.buf, fDeltaResources, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(resLen))
		w.buf = protowire.AppendTag(w.buf, fResName, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, e.name)
		w.buf = protowire.AppendTag(w.buf, fResVersion, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, e.version)
		w.buf = protowire.AppendTag(w.buf, fResResource, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(anyLen))
		w.buf = protowire.AppendTag(w.buf, fAnyTypeURL, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, e.any.GetTypeUrl())
		w.appendValue(value)
	}
	for _, name := range removed {
		w.buf = protowire.AppendTag(w.buf, fDeltaRemoved, protowire.BytesType)
		w.buf = protowire.AppendString(w.buf, name)
	}
	b := &deltaBody{typeURL: typeURL, entries: entries, removed: removed}
	b.setBufs(w.finish())
	return b
}

// deltaMsg is one response as sent on one stream: the shared body, then the stream's system
// version and nonce. It is preEncoded (grpcopts.go), and a proto.Message encoding to the same
// bytes for gRPC servers without the server codec.
type deltaMsg struct {
	body           *deltaBody
	version, nonce string

	bufs    [msgInlineBufs]mem.Buffer // wire's, when they fit (sotwserver.go)
	tailBuf [msgTailSize]byte         // wire's tail, when it fits (sotwserver.go)
	once    sync.Once
	msg     *emptypb.Empty // the encoding as unknown fields, made on first use
}

func (m *deltaMsg) wire() mem.BufferSlice {
	tail := m.tailBuf[:0]
	if n := 8 + len(m.version) + len(m.nonce); n > len(m.tailBuf) {
		tail = make([]byte, 0, n)
	}
	if m.version != "" {
		tail = protowire.AppendTag(tail, fDeltaVersion, protowire.BytesType)
		tail = protowire.AppendString(tail, m.version)
	}
	tail = protowire.AppendTag(tail, fDeltaNonce, protowire.BytesType)
	tail = protowire.AppendString(tail, m.nonce)
	return appendWire(m.bufs[:0], m.body.wire(), mem.SliceBuffer(tail))
}

func (m *deltaMsg) ProtoReflect() protoreflect.Message {
	m.once.Do(func() {
		m.msg = &emptypb.Empty{}
		m.msg.ProtoReflect().SetUnknown(m.wire().Materialize())
	})
	return m.msg.ProtoReflect()
}

var _ preEncoded = (*deltaMsg)(nil)

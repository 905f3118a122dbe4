package xds

import (
	"context"
	"hash/maphash"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"unique"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The state-of-the-world ADS server: StreamAggregatedResources served from the watch cache
// (cache.go) directly, answering what go-control-plane's SotW server answers over that cache
// (WithControlPlaneSotW keeps that server, for TestSotwServerMatchesControlPlane and for
// benchmarks), at a cost that does not grow with the streams that share a response:
//
//   - The wire bytes of a response body (version_info, resources, type_url) are built once per
//     typeSet and set of requested names, and every stream of the group that sends it sends
//     those very bytes (preEncoded, grpcopts.go); only the nonce, a field of its own appended
//     after the body, is per stream. A body references each large resource's marshalled bytes
//     (wire.go) rather than copying them. Bodies are held weakly: shared while streams are
//     sending them, garbage once sent, so a served configuration is not held twice in memory.
//   - A request is received into the stream's one message, an ACK without allocating
//     (decode.go).
//   - A stream is two goroutines: the one that reads requests handles each itself (an ACK
//     wakes nobody), and gRPC's handler answers what a new snapshot makes due: no
//     reflect.Select, no per-type channels. A new snapshot of a node wakes its streams, each of
//     which looks only at the types it waits on, by version.
//   - Per stream and type it keeps the subscription (sorted names or wildcard), the version
//     and nonce of the latest request and response, and what the latest response returned as
//     a typeSet and names rather than a map of every resource.
//
// The protocol is go-control-plane's (pkg/server/sotw/v3 with the watch cache's CreateWatch):
// a request whose nonce is not the type's latest response's is ignored (after the callbacks
// have seen it); a request opens a watch answered at once when the cache's version differs
// from the request's, or a subscribed resource (every resource, for a wildcard subscription)
// was not returned by the latest response, and otherwise when a snapshot changes the type's
// version. A subscription is wildcard when the first request names nothing (legacy wildcard,
// for as long as requests name nothing) or when it names "*". A response holds the subscribed
// resources that exist; a request naming nothing gets every resource (as from
// go-control-plane, also once the subscription is no longer wildcard: it then gets them when
// the version changes). One difference, where go-control-plane is wrong: a wildcard
// subscription that also names resources ("*" and names) is answered with every resource
// (go-control-plane sends only the named ones, then answers every ACK again: a response loop).
//
// A stream the server kills (ads.go) ends as soon as its goroutine is not blocked sending to
// a proxy that does not read.

// maxUnknownTypes bounds the unknown type URLs a stream may ask for (each has its state).
const maxUnknownTypes = 16

// sotwStreamBase numbers this server's streams apart from go-control-plane's (1, 2, … for its
// per-type streams; negated for delta streams, callbacks.go).
const sotwStreamBase = 1 << 40

// sotwTypeOrder is the order in which one wake-up answers several types: clusters before
// endpoints and listeners before routes, as Envoy warms them.
var sotwTypeOrder = [...]types.ResponseType{
	types.Cluster, types.Endpoint, types.Listener, types.Route, types.ScopedRoute,
	types.VirtualHost, types.ExtensionConfig, types.Secret, types.Runtime, types.RateLimitConfig,
}

// Every type is in sotwTypeOrder (this fails to compile when go-control-plane adds one).
var _ = [1]struct{}{}[len(sotwTypeOrder)-int(types.UnknownType)]

// WithControlPlaneSotW serves state-of-the-world ADS with go-control-plane's server, over the
// same cache, instead of the server's own (sotwserver.go). It is kept for comparison
// (TestSotwServerMatchesControlPlaneServer, benchmarks). With WithSnapshotCache it is implied.
func WithControlPlaneSotW() Option {
	return func(s *Server) { s.cplSotw = true }
}

// sotwServer serves state-of-the-world ADS streams from a watch cache. It is safe for
// concurrent use.
type sotwServer struct {
	ctx   context.Context // ends every stream (with OK) when done
	cache *watchCache
	// cb is told of streams, requests and responses as go-control-plane's server tells its
	// callbacks, but that a response passed to OnStreamResponse has no resources (they are
	// encoded already) and its request is nil, and that a cb that is a sentRecorder
	// (callbacks.go) is told of a response by sotwSent instead; nil for none. A request passed
	// to OnStreamRequest is the stream's, received into again after the call (decode.go).
	cb      sotw.Callbacks
	streams atomic.Int64 // numbers streams
}

func newSotwServer(ctx context.Context, c *watchCache, cb sotw.Callbacks) *sotwServer {
	return &sotwServer{ctx: ctx, cache: c, cb: cb}
}

// StreamAggregatedResources makes a sotwServer an ADS server (delta streams unimplemented),
// for tests.
func (x *sotwServer) StreamAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return x.serve(st)
}

func (x *sotwServer) DeltaAggregatedResources(grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return status.Error(codes.Unimplemented, "delta xDS is not served here")
}

// sotwConn is one state-of-the-world ADS stream.
type sotwConn struct {
	x    *sotwServer
	c    *watchCache
	st   grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	id   int64
	node *corev3.Node // of the first request that had one

	// mu is held while a request or a wake-up is handled; stopped is set, under it, when the
	// stream's handler returns.
	mu      sync.Mutex
	stopped bool
	// req is what every request is received into (decode.go), on the receiving goroutine.
	req sotwRequest

	// wake is signalled (never blocking) by the cache when a snapshot of the node changes.
	wake chan struct{}
	// cnode is the cache node the stream waits on, under c.mu.
	cnode *cacheNode

	nonce uint64
	types [types.UnknownType]*sotwType
	other map[string]*sotwType // unknown type URLs: only ever answered with no resources
}

// sotwType is a stream's state of one resource type.
type sotwType struct {
	typeURL string
	sub     sotwSub
	// open: a request waits for the type's version to differ from reqVersion.
	open       bool
	reqVersion string
	nonce      string // of the latest response; "" before
	version    string // of the latest response
	// reqNames are the resource names of the latest request, as received (never modified).
	reqNames []string
	// What the latest response returned: the resources of ret (all of them, or those named in
	// retNames), less those unsubscribed since.
	ret      *typeSet
	retAll   bool
	retNames []string
}

// sotwSub is a subscription: wildcard, or the sorted distinct names asked for.
type sotwSub struct {
	wildcard bool
	legacy   bool // no request has named anything yet: an empty request stays wildcard
	// names are shared with every stream subscribing to the same names (list keeps them
	// interned in sotwLists), their strings with every list (unique); never modified.
	names []string
	list  *nameList
	key   uint64 // of names
}

var sotwSeed = maphash.MakeSeed()

// set updates the subscription from a request's resource names, as go-control-plane's
// Subscription.SetResourceSubscription does, and reports whether it changed. A request naming
// what the subscription names, in its order (an ACK), costs no allocation.
func (sub *sotwSub) set(requested []string) bool {
	if sub.legacy {
		if len(requested) == 0 {
			return false
		}
		sub.legacy = false
	} else if !sub.wildcard && sub.names != nil && slices.Equal(requested, sub.names) {
		return false
	}
	names := make([]string, 0, len(requested))
	star := false
	for _, n := range requested {
		if n == "*" {
			star = true
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	names = slices.Compact(names)
	var h maphash.Hash
	h.SetSeed(sotwSeed)
	for _, n := range names {
		h.WriteString(n)
		h.WriteByte(0)
	}
	sub.wildcard, sub.key = star, h.Sum64()
	sub.names, sub.list = sotwLists.intern(sub.key, names)
	return true
}

// nameLists interns the sorted name lists of state-of-the-world subscriptions: the proxies of
// a service, and in a dense mesh those of most services, ask for the same endpoints and
// routes, a thousand names each, and every stream would otherwise keep its own list of them,
// and its own copy of every name (the strings of the request it received).
type nameLists struct {
	mu    sync.Mutex
	lists map[uint64]weak.Pointer[nameList]
}

type nameList struct{ names []string }

var sotwLists = nameLists{lists: map[uint64]weak.Pointer[nameList]{}}

// intern returns the shared list equal to names (sorted, distinct; key is their hash), or
// names itself, its strings made unique, when there is none; nil for no names.
func (l *nameLists) intern(key uint64, names []string) ([]string, *nameList) {
	if len(names) == 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if nl := l.lists[key].Value(); nl != nil && slices.Equal(nl.names, names) {
		return nl.names, nl
	}
	for i, n := range names {
		names[i] = unique.Make(n).Value()
	}
	nl := &nameList{names: names}
	keepWeak(&l.mu, l.lists, key, nl)
	return names, nl
}

// all reports whether a response to sub holds every resource: it is wildcard, or names none.
func (sub *sotwSub) all() bool { return sub.wildcard || len(sub.names) == 0 }

func newSotwSub(requested []string) sotwSub {
	sub := sotwSub{legacy: true, wildcard: len(requested) == 0}
	sub.set(requested)
	return sub
}

// asReceived returns what reqNames keeps of a request's names: the subscription's shared list
// when they are that list (sorted and distinct, as Envoy and gRPC name them), else a copy of
// them (an ACK repeats them, in their order) that shares their strings with the subscription's,
// so that the request's own are garbage once it is handled.
func (ty *sotwType) asReceived(requested []string) []string {
	if len(requested) == 0 {
		return nil
	}
	if slices.Equal(requested, ty.sub.names) {
		return ty.sub.names
	}
	if len(ty.reqNames) > 0 && &requested[0] == &ty.reqNames[0] {
		return requested // an ACK decoded into what the stream expected (or a prefix of it)
	}
	out := make([]string, len(requested))
	for i, n := range requested {
		if k, ok := slices.BinarySearch(ty.sub.names, n); ok {
			out[i] = ty.sub.names[k]
		} else {
			out[i] = unique.Make(n).Value() // "*"
		}
	}
	return out
}

// returned reports whether the latest response returned name (and it was not unsubscribed).
func (ty *sotwType) returned(name string) bool {
	if ty.ret == nil {
		return false
	}
	if _, ok := ty.ret.items[name]; !ok {
		return false
	}
	if ty.retAll {
		return true
	}
	_, ok := slices.BinarySearch(ty.retNames, name)
	return ok
}

// resubscribe applies a request's names to an existing subscription, forgetting what was
// returned of the names no longer subscribed (so that subscribing again gets them again).
func (ty *sotwType) resubscribe(requested []string) {
	if !ty.sub.set(requested) {
		return
	}
	if ty.sub.wildcard || ty.sub.legacy || ty.ret == nil {
		return
	}
	if ty.retAll {
		ty.retAll, ty.retNames = false, ty.sub.names
		return
	}
	kept := make([]string, 0, len(ty.retNames))
	for _, n := range ty.retNames {
		if _, ok := slices.BinarySearch(ty.sub.names, n); ok {
			kept = append(kept, n)
		}
	}
	ty.retNames = kept
}

// due reports whether an open request is answered from ts now, as the watch cache's
// CreateWatch (sotwShouldRespond) decides.
func (ty *sotwType) due(ts *typeSet) bool {
	if ty.reqVersion != ts.versionOrEmpty() {
		return true
	}
	if ts == nil {
		return false
	}
	if ty.sub.wildcard {
		if ty.ret == ts && ty.retAll {
			return false
		}
		for name := range ts.items {
			if !ty.returned(name) {
				return true
			}
		}
		return false
	}
	if ty.ret == ts && !ty.retAll && len(ty.retNames) == len(ty.sub.names) &&
		(len(ty.retNames) == 0 || &ty.retNames[0] == &ty.sub.names[0]) {
		return false // answered this very subscription from ts
	}
	for _, name := range ty.sub.names {
		if _, ok := ts.items[name]; ok && !ty.returned(name) {
			return true
		}
	}
	return false
}

// serve serves one state-of-the-world ADS stream, until the client ends it, the server's
// context is done, or it is killed (ads.go's killable). Requests are handled on the receiving
// goroutine (handleRequests); this one answers what a new snapshot makes due. Both hold
// conn.mu while they handle, so the stream's state and its sends are never concurrent.
func (x *sotwServer) serve(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx, cancel := streamContext(st.Context(), x.ctx)
	defer cancel()
	conn := &sotwConn{x: x, c: x.cache, st: st, id: sotwStreamBase + x.streams.Add(1), node: &corev3.Node{},
		wake: make(chan struct{}, 1)}
	defer conn.close()
	if x.cb != nil {
		if err := x.cb.OnStreamOpen(ctx, conn.id, resourcev3.AnyType); err != nil {
			return err
		}
	}
	conn.req.expect = conn.expect
	recv := func() (*discoveryv3.DiscoveryRequest, error) {
		if err := st.RecvMsg(&conn.req); err != nil {
			return nil, err
		}
		return &conn.req.DiscoveryRequest, nil
	}
	end := handleRequests(recv, &conn.mu, &conn.stopped, conn.request)
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case err := <-end:
			return err
		case <-conn.wake:
			conn.mu.Lock()
			err := conn.changed()
			conn.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// close stops the stream's watches and tells the server it closed; nothing is handled on the
// stream afterwards.
func (conn *sotwConn) close() {
	conn.mu.Lock()
	conn.stopped = true
	conn.mu.Unlock()
	conn.c.mu.Lock()
	if conn.cnode != nil {
		delete(conn.cnode.sotwConns, conn)
		conn.cnode = nil
	}
	conn.c.mu.Unlock()
	if conn.x.cb != nil {
		conn.x.cb.OnStreamClosed(conn.id, conn.node)
	}
}

// expect returns what the stream expects in a request of typeURL: an ACK of its latest
// response, naming what the latest request named.
func (conn *sotwConn) expect(typeURL string) ackExpect {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if ty, _ := conn.typ(typeURL); ty != nil {
		return ackExpect{version: ty.version, nonce: ty.nonce, names: ty.reqNames}
	}
	return ackExpect{}
}

// typ returns the stream's state of typeURL, nil before its first request.
func (conn *sotwConn) typ(typeURL string) (*sotwType, types.ResponseType) {
	t := responseType(typeURL)
	if t < types.UnknownType {
		return conn.types[t], t
	}
	return conn.other[typeURL], t
}

// request handles one request: callbacks, nonce, subscription, and an answer if one is due.
// Called with conn.mu held.
func (conn *sotwConn) request(req *discoveryv3.DiscoveryRequest) error {
	if req == nil {
		return status.Errorf(codes.Unavailable, "empty request")
	}
	if req.GetNode() != nil {
		conn.node = req.GetNode()
	} else {
		req.Node = conn.node
	}
	if req.GetTypeUrl() == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
	}
	if conn.x.cb != nil {
		if err := conn.x.cb.OnStreamRequest(conn.id, req); err != nil {
			return err
		}
	}
	ty, t := conn.typ(req.GetTypeUrl())
	switch {
	case ty == nil:
		ty = &sotwType{typeURL: req.GetTypeUrl(), sub: newSotwSub(req.GetResourceNames())}
		if t < types.UnknownType {
			conn.types[t] = ty
		} else {
			if len(conn.other) >= maxUnknownTypes {
				return status.Errorf(codes.InvalidArgument, "more than %d unknown resource types", maxUnknownTypes)
			}
			if conn.other == nil {
				conn.other = map[string]*sotwType{}
			}
			conn.other[ty.typeURL] = ty
		}
	case ty.nonce != "" && req.GetResponseNonce() != ty.nonce:
		return nil // stale: an answer to an older response
	default:
		ty.resubscribe(req.GetResourceNames())
	}
	ty.reqVersion, ty.open, ty.reqNames = req.GetVersionInfo(), true, ty.asReceived(req.GetResourceNames())

	c := conn.c
	c.mu.Lock()
	n := c.node(req.GetNode().GetId())
	if conn.cnode != n {
		if conn.cnode != nil {
			delete(conn.cnode.sotwConns, conn)
		}
		if n.sotwConns == nil {
			n.sotwConns = map[*sotwConn]struct{}{}
		}
		n.sotwConns[conn] = struct{}{}
		conn.cnode = n
	}
	ts := n.typeOf(t)
	due := n.snap != nil && ty.due(ts)
	c.mu.Unlock()
	if !due {
		return nil
	}
	return conn.respond(ty, ts)
}

// changed answers the open requests of the types whose version a new snapshot changed.
// Called with conn.mu held.
func (conn *sotwConn) changed() error {
	var due [len(sotwTypeOrder)]bool
	var sets [len(sotwTypeOrder)]*typeSet
	c := conn.c
	c.mu.Lock()
	if n := conn.cnode; n != nil && n.snap != nil {
		for i, t := range sotwTypeOrder {
			if ty := conn.types[t]; ty != nil && ty.open {
				sets[i] = n.typeOf(t)
				due[i] = sets[i].versionOrEmpty() != ty.reqVersion
			}
		}
	}
	c.mu.Unlock()
	for i, t := range sotwTypeOrder {
		if due[i] {
			if err := conn.respond(conn.types[t], sets[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// versionOrEmpty is ts's version, "" for no typeSet.
func (ts *typeSet) versionOrEmpty() string {
	if ts == nil {
		return ""
	}
	return ts.version
}

// respond sends ty's subscription from ts (nil: no resources) and closes ty's watch.
func (conn *sotwConn) respond(ty *sotwType, ts *typeSet) error {
	conn.nonce++
	nonce := strconv.FormatUint(conn.nonce, 10)
	version := ""
	var body *sotwBody
	if ts != nil {
		version = ts.version
		body = ts.sotwBody(&ty.sub)
	} else {
		body = encodeSotwBody("", ty.typeURL, nil)
	}
	ty.open, ty.nonce, ty.version = false, nonce, version
	ty.ret, ty.retAll, ty.retNames = ts, ty.sub.all(), ty.sub.names
	if ty.retAll {
		ty.retNames = nil
	}
	if r, ok := conn.x.cb.(sentRecorder); ok {
		r.sotwSent(conn.id, ty.typeURL, nonce, version)
	} else if conn.x.cb != nil {
		conn.x.cb.OnStreamResponse(conn.st.Context(), conn.id, nil,
			&discoveryv3.DiscoveryResponse{TypeUrl: ty.typeURL, VersionInfo: version, Nonce: nonce})
	}
	msg := &sotwMsg{body: body}
	msg.tail = protowire.AppendString(protowire.AppendTag(msg.tailBuf[:0], fSotwNonce, protowire.BytesType), nonce)
	return conn.st.SendMsg(msg)
}

// wakeSotw tells the node's state-of-the-world streams that its snapshot changed. Called with
// c.mu held.
func (n *cacheNode) wakeSotw() {
	for conn := range n.sotwConns {
		select {
		case conn.wake <- struct{}{}:
		default:
		}
	}
}

// sotwMsg is a DiscoveryResponse as sent: a body shared by every stream sending the same
// resources, and this stream's nonce field.
type sotwMsg struct {
	body *sotwBody // never modified
	tail []byte    // the nonce field, in tailBuf when it fits
	// tailBuf holds the tail of a response in the message's own allocation: a nonce field
	// (a decimal uint64) always fits, a delta response's system version and nonce mostly.
	tailBuf [msgTailSize]byte
	bufs    [msgInlineBufs]mem.Buffer // wire's, when they fit
	msg     *emptypb.Empty            // ProtoReflect's
}

var _ preEncoded = (*sotwMsg)(nil)

// msgInlineBufs is how many buffers a response message holds without allocating a list.
const msgInlineBufs = 6

// msgTailSize is how many bytes of a response's own fields its message holds without
// allocating them.
const msgTailSize = 64

func (r *sotwMsg) wire() mem.BufferSlice {
	return appendWire(r.bufs[:0], r.body.wire(), mem.SliceBuffer(r.tail))
}

// appendWire appends a body's buffers and tail to out (whose capacity is used when it fits).
func appendWire(out, body mem.BufferSlice, tail mem.Buffer) mem.BufferSlice {
	if cap(out) < len(body)+1 {
		out = make(mem.BufferSlice, 0, len(body)+1)
	}
	return append(append(out, body...), tail)
}

// ProtoReflect makes a sotwMsg a proto.Message encoding to its bytes, for gRPC servers
// whose codec does not know preEncoded (a copy: those are tests).
func (r *sotwMsg) ProtoReflect() protoreflect.Message {
	if r.msg == nil {
		r.msg = &emptypb.Empty{}
		r.msg.ProtoReflect().SetUnknown(r.wire().Materialize())
	}
	return r.msg.ProtoReflect()
}

// sotwBody is the encoding of a DiscoveryResponse but for its nonce: version_info, resources
// and type_url, as buffers that reference each large resource's marshalled bytes (wire.go)
// rather than copy them. Never modified; shared by every stream that sends it.
type sotwBody struct {
	bodyBufs
}

// sotwBodies are the response bodies of a typeSet, each held weakly (sotwserver.go).
type sotwBodies struct {
	mu    sync.Mutex
	all   weak.Pointer[sotwBody]
	named map[uint64]namedBody
}

type namedBody struct {
	names []string
	body  weak.Pointer[sotwBody]
}

// maxNamedBodies bounds the bodies of named subscriptions kept per typeSet; beyond, the
// collected ones are dropped, then all.
const maxNamedBodies = 64

// sotwBody returns the encoded body of the response to sub from ts, built once for every
// stream sending it at the same time.
func (ts *typeSet) sotwBody(sub *sotwSub) *sotwBody {
	b := &ts.sotw
	b.mu.Lock()
	defer b.mu.Unlock()
	if sub.all() {
		if body := b.all.Value(); body != nil {
			body.handed()
			return body
		}
		var small [smallBody]string // most bodies of all are small (a sidecar's RBAC pair): no allocation
		names := small[:0]
		if len(ts.items) > len(small) {
			names = make([]string, 0, len(ts.items))
		}
		for name := range ts.items {
			names = append(names, name)
		}
		slices.Sort(names)
		body := ts.encodeSotw(names)
		body.handed()
		b.all = weak.Make(body)
		return body
	}
	if e, ok := b.named[sub.key]; ok && slices.Equal(e.names, sub.names) {
		if body := e.body.Value(); body != nil {
			body.handed()
			return body
		}
	}
	body := ts.encodeSotw(sub.names)
	body.handed()
	if b.named == nil {
		b.named = map[uint64]namedBody{}
	}
	if len(b.named) >= maxNamedBodies {
		for k, e := range b.named {
			if e.body.Value() == nil {
				delete(b.named, k)
			}
		}
		if len(b.named) >= maxNamedBodies {
			clear(b.named)
		}
	}
	b.named[sub.key] = namedBody{names: sub.names, body: weak.Make(body)}
	return body
}

// encodeSotw encodes the body of a response holding the named resources of ts that exist.
func (ts *typeSet) encodeSotw(names []string) *sotwBody {
	var small [smallBody]*anypb.Any
	anys := small[:0]
	if len(names) > len(small) {
		anys = make([]*anypb.Any, 0, len(names))
	}
	for _, name := range names {
		if _, ok := ts.items[name]; ok {
			anys = append(anys, ts.any(name))
		}
	}
	return encodeSotwBody(ts.version, ts.typeURL, anys)
}

// DiscoveryResponse field numbers.
const (
	fSotwVersion   = 1
	fSotwResources = 2
	fSotwTypeURL   = 4
	fSotwNonce     = 5
)

// encodeSotwBody returns the deterministic encoding of a DiscoveryResponse with these fields
// (and no nonce): version_info (1), resources (2), type_url (4), in field order, as
// proto.Marshal writes them. A resource's value larger than deltaInline is referenced as a
// buffer of its own, not copied: the Any's bytes are never modified.
func encodeSotwBody(version, typeURL string, anys []*anypb.Any) *sotwBody {
	size := protowire.SizeTag(fSotwVersion) + protowire.SizeBytes(len(version)) +
		protowire.SizeTag(fSotwTypeURL) + protowire.SizeBytes(len(typeURL))
	nbufs := 1
	for _, a := range anys {
		size += 16 + len(a.GetTypeUrl())
		if len(a.GetValue()) <= deltaInline {
			size += len(a.GetValue())
		} else {
			nbufs += 2
		}
	}
	// The body and its list of buffers in one allocation when the list is short.
	var b *sotwBody
	w := bodyBuf{buf: make([]byte, 0, size)}
	if nbufs <= 2*smallBody+1 {
		a := &struct {
			body sotwBody
			bufs [2*smallBody + 1]mem.Buffer
		}{}
		b, w.bufs = &a.body, a.bufs[:0]
	} else {
		b, w.bufs = &sotwBody{}, make(mem.BufferSlice, 0, nbufs)
	}
	if version != "" {
		w.buf = protowire.AppendString(protowire.AppendTag(w.buf, fSotwVersion, protowire.BytesType), version)
	}
	for _, a := range anys {
		w.buf = protowire.AppendTag(w.buf, fSotwResources, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(anySize(a)))
		if a.GetTypeUrl() != "" {
			w.buf = protowire.AppendString(protowire.AppendTag(w.buf, fAnyTypeURL, protowire.BytesType), a.GetTypeUrl())
		}
		if len(a.GetValue()) > 0 {
			w.appendValue(a.GetValue())
		}
	}
	if typeURL != "" {
		w.buf = protowire.AppendString(protowire.AppendTag(w.buf, fSotwTypeURL, protowire.BytesType), typeURL)
	}
	b.setBufs(w.finish())
	return b
}

// smallBody is how many resources a small response body holds (encodeSotw): its lists need no
// allocation of their own.
const smallBody = 2

// bodyBuf builds a response body's encoding as a list of buffers: what is written goes to buf,
// and a large resource value (over deltaInline bytes) is referenced where it is stored rather
// than copied, between the part of buf written before it and the part written after.
type bodyBuf struct {
	buf   []byte
	start int // where in buf the bytes not yet cut into bufs begin
	bufs  mem.BufferSlice
}

// appendValue writes an Any's value field: small values copied, large ones referenced.
func (w *bodyBuf) appendValue(value []byte) {
	w.buf = protowire.AppendTag(w.buf, fAnyValue, protowire.BytesType)
	w.buf = protowire.AppendVarint(w.buf, uint64(len(value)))
	if len(value) <= deltaInline {
		w.buf = append(w.buf, value...)
		return
	}
	w.bufs = append(w.bufs, mem.SliceBuffer(w.buf[w.start:len(w.buf):len(w.buf)]), mem.SliceBuffer(value))
	w.start = len(w.buf)
}

// finish returns the buffers of the whole body.
func (w *bodyBuf) finish() mem.BufferSlice {
	if w.start < len(w.buf) {
		w.bufs = append(w.bufs, mem.SliceBuffer(w.buf[w.start:len(w.buf):len(w.buf)]))
	}
	return w.bufs
}

// bodyBufs are a response body's buffers (bodyBuf), shared by the messages of every stream
// that sends the body. Each message holds a list of them, two per resource referenced, and
// gRPC a list of its own of what it writes, until the proxy has read it: hundreds of streams of
// a dense mesh's initial sync sending one body of a thousand resources hold 80 KB each that
// way. Once the lists of the messages made of a body (handed) would outweigh a copy of its
// bytes, the body is copied into one buffer (flat) and the messages made after reference that.
type bodyBufs struct {
	bufs     mem.BufferSlice
	size     int // bytes in bufs
	users    atomic.Int64
	flatOnce sync.Once
	flat     atomic.Pointer[flatBody]
}

type flatBody struct{ bufs mem.BufferSlice }

// msgBufCost is about what a message costs per buffer of its body until it is written: its
// entry in the message's list and in gRPC's list of what it writes.
const msgBufCost = 40

func (b *bodyBufs) setBufs(bufs mem.BufferSlice) { b.bufs, b.size = bufs, bufs.Len() }

// handed counts a message made of b, and copies b into one buffer once its messages' lists of
// buffers would outweigh the copy.
func (b *bodyBufs) handed() {
	n := int(b.users.Add(1))
	if len(b.bufs) > 2 && b.flat.Load() == nil && n*len(b.bufs)*msgBufCost >= b.size {
		b.flatOnce.Do(func() {
			b.flat.Store(&flatBody{bufs: mem.BufferSlice{mem.SliceBuffer(b.bufs.Materialize())}})
		})
	}
}

// wire returns b's buffers: its flat copy once there is one.
func (b *bodyBufs) wire() mem.BufferSlice {
	if f := b.flat.Load(); f != nil {
		return f.bufs
	}
	return b.bufs
}

// anySize is the encoded size of an Any's type_url and value.
func anySize(a *anypb.Any) int {
	n := 0
	if u := a.GetTypeUrl(); u != "" {
		n += protowire.SizeTag(fAnyTypeURL) + protowire.SizeBytes(len(u))
	}
	if v := a.GetValue(); len(v) > 0 {
		n += protowire.SizeTag(fAnyValue) + protowire.SizeBytes(len(v))
	}
	return n
}

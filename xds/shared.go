package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// Rendering once, sharing everywhere.
//
// Most of a proxy's resources depend on far less than the proxy: a target's cluster and load
// assignment, an upstream's route configuration and outbound filter depend only on the
// upstream's chain (and the shape); a service's public listener, RBAC and gRPC server listeners
// only on the service. A memo holds each such resource, built once per snapshot the first time
// a proxy needs it and then shared, as the same immutable message, by every proxy that uses it;
// the content hash of each shared message is computed once too. With a thousand proxies each
// reaching a thousand services, that turns a million renderings and marshals of each upstream's
// resources into a thousand.
//
// Sharing never changes what a proxy gets: a resource is keyed by everything its builder reads
// besides the snapshot, and TestSharedRenderingIdentical holds shared rendering byte for byte
// against rendering each proxy alone. Shared messages must not be modified once built (the
// server's test hook clones what it alters).

// memo holds the resources shared by the proxies of one snapshot. Its methods are safe for
// concurrent use; a nil memo shares nothing.
type memo struct {
	snap    *mesh.Snapshot
	mu      sync.Mutex
	entries map[memoKey]*memoEntry
	upsKeys sync.Map // service → setKey's name
	facts   *facts
	// prev holds the facts of the previous snapshot's memo: a proxy re-rendered only for its
	// RBAC keeps its other resources (Server.render), whose facts are there.
	prev *facts
	// cache holds what groups with the same content share in go-control-plane's cache
	// (cacheshare.go).
	cache cacheTypes
	// upDeps are the deps of each list of upstreams (diff.go), shared by the groups whose
	// services have the same list: upsKey → *upDeps.
	upDeps sync.Map
	// pr are the principals of the sources of snap's intentions (rbac.go).
	pr *principals
	// before is the previous snapshot's memo, whose listener sets such a proxy keeps too
	// (carryListenerSet); nil once a newer memo took over, so that memos do not chain.
	before atomic.Pointer[memo]
}

// facts are what is learnt of each message once: content hash, validity, references. One
// map holds all that is learnt of a message (in place of a sync.Map per question, each a trie
// of nodes allocated per message), under a lock that renderings mostly read.
type facts struct {
	mu sync.RWMutex
	m  map[any]*fact // message → what is learnt of it
}

// fact is what is learnt of one message. Each field is set at most once per memo (the first
// to learn it wins: whoever learns it again learns the same) and read atomically, as the
// groups of a memo are rendered concurrently.
type fact struct {
	enc   atomic.Pointer[encoded]  // content hash and wire (resources)
	valid atomic.Pointer[validity] // the result of ValidateAll (resources)
	refs  atomic.Pointer[refs]     // filter, API listener or route configuration
	lrefs atomic.Pointer[[]refs]   // a listener's filters' (listenerRefs)
	raw   atomic.Pointer[[]byte]   // the encoding of a shared part of resources (encodingOf)
}

// validity is the result of a message's ValidateAll.
type validity struct{ err error }

// validOK is the validity of every message that passes: one value, not one per message.
var validOK = &validity{}

// newValidity returns the validity of a ValidateAll that returned err.
func newValidity(err error) *validity {
	if err == nil {
		return validOK
	}
	return &validity{err: err}
}

// newFacts returns empty facts with room for hint messages.
func newFacts(hint int) *facts { return &facts{m: make(map[any]*fact, hint)} }

// get returns the fact of x, or nil.
func (f *facts) get(x any) *fact {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.m[x]
}

// of returns the fact of x, made empty the first time.
func (f *facts) of(x any) *fact {
	if ft := f.get(x); ft != nil {
		return ft
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.m[x]
	if ft == nil {
		ft = &fact{}
		f.m[x] = ft
	}
	return ft
}

// add makes ft the fact of x, unless x has one, and reports whether it did.
func (f *facts) add(x any, ft *fact) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[x] != nil {
		return false
	}
	f.m[x] = ft
	return true
}

// len is the number of messages f knows.
func (f *facts) len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.m)
}

// learnt returns what field holds of x in the facts of m, else of the previous memo, or nil.
func learnt[T any](m *memo, x any, field func(*fact) *atomic.Pointer[T]) *T {
	if ft := m.facts.get(x); ft != nil {
		if v := field(ft).Load(); v != nil {
			return v
		}
	}
	if m.prev != nil {
		if ft := m.prev.get(x); ft != nil {
			return field(ft).Load()
		}
	}
	return nil
}

// learn sets field of x's fact in m to v unless it is set, and returns what it holds.
func learn[T any](m *memo, x any, field func(*fact) *atomic.Pointer[T], v *T) *T {
	p := field(m.facts.of(x))
	if p.CompareAndSwap(nil, v) {
		return v
	}
	return p.Load()
}

func encOf(f *fact) *atomic.Pointer[encoded]    { return &f.enc }
func validOf(f *fact) *atomic.Pointer[validity] { return &f.valid }
func refsOf(f *fact) *atomic.Pointer[refs]      { return &f.refs }
func lrefsOf(f *fact) *atomic.Pointer[[]refs]   { return &f.lrefs }
func rawOf(f *fact) *atomic.Pointer[[]byte]     { return &f.raw }

// setKey is the key of a list of resources that depends only on a service's upstreams (each
// one's chain and local port), its mode and the shape: proxies of services with the same
// upstreams share the list. A nil memo needs no key.
func (m *memo) setKey(kind byte, shape Shape, service string) memoKey {
	if m == nil {
		return memoKey{}
	}
	if k, ok := m.upsKeys.Load(service); ok {
		return memoKey{kind: kind, shape: shape, name: k.(string)}
	}
	// The SHA-256 of "transparent;"? then "chainkey=service:port/gatewaymode;" per upstream,
	// written through a scratch buffer rather than built as one string.
	h := sha256.New()
	var scratch [256]byte
	b := scratch[:0]
	if m.snap.Services[service].Transparent() {
		b = append(b, "transparent;"...)
	}
	for _, u := range upstreams(m.snap, service) {
		b = append(append(b, m.snap.ChainKey(u)...), '=')
		b = append(append(b, u.Service...), ':')
		b = append(strconv.AppendInt(b, int64(u.LocalPort), 10), '/')
		b = append(append(b, m.snap.Mesh.GatewayMode(u)...), ';') // the endpoints of targets in other datacenters
		if len(b) > len(scratch)/2 {
			h.Write(b)
			b = b[:0]
		}
	}
	h.Write(b)
	var sum [sha256.Size]byte
	k := string(h.Sum(sum[:0]))
	m.upsKeys.Store(service, k)
	return memoKey{kind: kind, shape: shape, name: k}
}

// memoKey names a shared resource: its kind, the shape it is rendered for, the chain it comes
// from (nil for per-service resources), the target of the chain it is of (a target's cluster
// and load assignment), a name (service, listener name, mesh gateway mode) and a port (an
// outbound listener's or address's local port). Finding a resource builds no string.
type memoKey struct {
	kind   byte
	shape  Shape
	chain  *mesh.Chain
	target *mesh.Target
	name   string
	port   int
}

// Kinds of shared resources.
const (
	memoTargetCluster  = 'c'
	memoLoadAssignment = 'e'
	memoRoute          = 'r'
	memoOutbound       = 'o' // the network filter of an upstream
	memoOutboundLis    = 'O' // the local-port listener of an upstream
	memoAPIListener    = 'a'
	memoPublicListener = 'p'
	memoServerLis      = 's' // a gRPC service's server listeners
	memoLocalApp       = 'l'
	memoPublicRBAC     = 'x' // the RBAC extension configuration of a service's public listener
	memoDownstreamTLS  = 't' // the TLS transport socket of every public listener
	memoLocalAddress   = 'A' // 127.0.0.1 on a local port, the address of outbound listeners
	memoUpstreamTLS    = 'u' // the shared parts of every Envoy target cluster's TLS context (upstreamtlsenc.go)
	// Whole lists, shared by the proxies whose upstreams are the same (setKey): in a dense
	// transparent mesh, most proxies reach the same services.
	memoClusterSet  = 'C'
	memoRouteSet    = 'R'
	memoEndpointSet = 'E'
	memoListenerSet = 'L'
	memoTargets     = 'T' // the targets of a list of upstreams (proxyTargets)
)

type memoEntry struct {
	once  sync.Once
	v     any
	err   error
	built atomic.Bool // v and err are set
}

// newMemo returns the memo of snap; prev, the memo of the snapshot served before (or nil),
// lends its facts and listener sets.
func newMemo(snap *mesh.Snapshot, prev *memo) *memo {
	// A first memo renders whole groups: meshgen's mesh makes thirteen entries per service.
	hint := firstMemoEntries * len(snap.Services)
	if prev != nil {
		// As many as the memo before needed, up to what a mesh-wide change of RBAC needs: the
		// map does not grow a thousand entries at a time.
		prev.mu.Lock()
		hint = min(len(prev.entries), 2*len(snap.Services))
		prev.mu.Unlock()
	}
	m := &memo{snap: snap, entries: make(map[memoKey]*memoEntry, hint), facts: newFacts(factsHint(snap, prev))}
	m.cache.init(cacheHint(snap, prev))
	var prevPr *principals
	if prev != nil {
		prevPr = prev.pr
	}
	m.pr = newPrincipals(snap, prevPr)
	if prev != nil {
		m.prev = prev.facts // not prev.prev: the chain stops here
		m.before.Store(prev)
		prev.before.Store(nil)
	}
	return m
}

// factsHint is how many messages the facts of snap's memo are made room for: for a first
// memo, which renders whole groups, firstMemoFacts per service (meshgen's mesh learns of about
// ten); else as many as the previous memo learnt of, up to what a mesh-wide change of RBAC
// needs (as for the entries).
func factsHint(snap *mesh.Snapshot, prev *memo) int {
	if prev == nil {
		return firstMemoFacts * len(snap.Services)
	}
	return min(prev.facts.len(), 2*len(snap.Services))
}

// cacheHint is how many contents of a type the cache maps of snap's memo are made room for:
// for a first memo, firstMemoCache per service (meshgen's mesh has five types of distinct
// content per service); else as many as the previous memo made, up to what a mesh-wide change
// of RBAC needs.
func cacheHint(snap *mesh.Snapshot, prev *memo) int {
	if prev == nil {
		return firstMemoCache * len(snap.Services)
	}
	prev.cache.mu.Lock()
	defer prev.cache.mu.Unlock()
	return min(len(prev.cache.m), 2*len(snap.Services))
}

// The room per service made in the maps of a memo without a previous one, so that rendering
// every group of meshgen's mesh does not grow them: its shared entries (thirteen per service),
// the messages it learns of (about ten) and the distinct contents of a type (five).
const (
	firstMemoEntries = 14
	firstMemoFacts   = 11
	firstMemoCache   = 5
)

// principals returns the principals of m's snapshot, or nil for a nil memo.
func (m *memo) principals() *principals {
	if m == nil {
		return nil
	}
	return m.pr
}

// dependencies is dependencies(m.snap, service), the deps of the services with the same
// upstreams shared (the same list: Snapshot.Upstreams gives every service that reaches every
// service one slice). A nil memo shares nothing.
func (m *memo) dependencies(snap *mesh.Snapshot, service string) *deps {
	if m == nil {
		return dependencies(snap, service)
	}
	ups := upstreams(snap, service)
	k := upsKey{n: len(ups), transparent: snap.Services[service].Transparent()}
	if len(ups) > 0 {
		k.first = ups[0]
	}
	if v, ok := m.upDeps.Load(k); ok {
		return &deps{service: service, up: v.(*upDeps)}
	}
	v, _ := m.upDeps.LoadOrStore(k, upstreamDeps(snap, service, ups))
	return &deps{service: service, up: v.(*upDeps)}
}

// carryListenerSet makes the listener set of p's service in m (its outbound listeners, or a
// gRPC proxy's API listeners: every listener but those the intentions into its service
// decide) the very messages the previous snapshot's memo built, if it built them. The caller
// knows the change leaves them as they were (change.inboundOnly: the same upstreams, chains
// and targets), so a proxy re-rendered for its RBAC alone builds, marshals, hashes and checks
// only its inbound listeners, and every other proxy with the same upstreams shares the set.
func (m *memo) carryListenerSet(p Proxy) {
	b := m.before.Load()
	if b == nil || b.snap.Services[p.Service] == nil {
		return
	}
	bkey := b.setKey(memoListenerSet, p.Shape, p.Service)
	b.mu.Lock()
	old := b.entries[bkey]
	b.mu.Unlock()
	if old == nil || !old.built.Load() || old.err != nil {
		return
	}
	// The same upstreams and chains: the same key, without hashing them again.
	m.upsKeys.LoadOrStore(p.Service, bkey.name)
	key := m.setKey(memoListenerSet, p.Shape, p.Service)
	m.mu.Lock()
	e := m.entries[key]
	if e == nil {
		e = &memoEntry{}
		m.entries[key] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.v = old.v; e.built.Store(true) })
}

// shared returns the resource of key, building it with build the first time.
func shared[T any](m *memo, key memoKey, build func() (T, error)) (T, error) {
	if m == nil {
		return build()
	}
	m.mu.Lock()
	e := m.entries[key]
	if e == nil {
		e = &memoEntry{}
		m.entries[key] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.v, e.err = build(); e.built.Store(true) })
	if e.err != nil {
		var zero T
		return zero, e.err
	}
	return e.v.(T), nil
}

// sharedOK is shared for builders that cannot fail.
func sharedOK[T any](m *memo, key memoKey, build func() T) T {
	v, _ := shared(m, key, func() (T, error) { return build(), nil })
	return v
}

// resourceHash returns the content hash of a resource (16 hex digits of the SHA-256 of its
// deterministic encoding), computed once per shared message; the encoding is kept as the
// message's wire, which the cache sends (wire.go). buf is scratch space for a nil memo.
func (m *memo) resourceHash(res types.Resource, buf *[]byte) (string, error) {
	if m == nil {
		b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend((*buf)[:0], res)
		if err != nil {
			return "", err
		}
		*buf = b
		return hashOf(b), nil
	}
	if e := learnt(m, res, encOf); e != nil {
		return e.hash, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(res)
	if err != nil {
		return "", err
	}
	return learn(m, res, encOf, newEncoded(res, b, messageTypeURL(res), cachev3.GetResourceName(res))).hash, nil
}

// hashOf is the content hash of an encoding: 16 hex digits of its SHA-256.
func hashOf(b []byte) string {
	h := hashBytes(b)
	return string(h[:])
}

// hashLen is the length of a content hash (hashOf).
const hashLen = 16

// hashBytes is hashOf(b) as bytes, which allocates nothing.
func hashBytes(b []byte) (h [hashLen]byte) {
	sum := sha256.Sum256(b)
	hex.Encode(h[:], sum[:hashLen/2])
	return h
}

// clone returns a deep copy of r, for altering without touching shared messages.
func (r *Resources) clone() *Resources {
	return &Resources{
		Listeners: cloneAll(r.Listeners), Routes: cloneAll(r.Routes), Clusters: cloneAll(r.Clusters),
		Endpoints: cloneAll(r.Endpoints), Secrets: cloneAll(r.Secrets), Extensions: cloneAll(r.Extensions),
	}
}

func cloneAll[T proto.Message](l []T) []T {
	out := make([]T, len(l))
	for i, m := range l {
		out[i] = proto.Clone(m).(T)
	}
	return out
}

// factOf returns the fact that holds, or is to hold, the validity and encoding of x: x's in m;
// else the previous memo's when it knows both (a message carried from it, whose facts are
// there: it is only read); else a new one in m. One look-up serves both questions, which
// Server.render asks of every resource of a group, most of them shared with other groups (and
// each look-up takes the facts' lock). Nil for a nil memo.
func (m *memo) factOf(x any) *fact {
	if m == nil {
		return nil
	}
	ft := m.facts.get(x)
	if ft != nil && ft.valid.Load() != nil && ft.enc.Load() != nil {
		return ft
	}
	var pf *fact
	if m.prev != nil {
		pf = m.prev.get(x)
	}
	if ft == nil {
		if pf != nil && pf.valid.Load() != nil && pf.enc.Load() != nil {
			return pf
		}
		ft = m.facts.of(x)
	}
	if pf != nil { // what the previous memo learnt, as learnt would read it
		if v := pf.valid.Load(); v != nil {
			ft.valid.CompareAndSwap(nil, v)
		}
		if e := pf.enc.Load(); e != nil {
			ft.enc.CompareAndSwap(nil, e)
		}
	}
	return ft
}

// groupFacts are the facts of a group's resources (factOf), by type in resourceTypes order,
// each list parallel to the group's list of that type.
type groupFacts [len(typeHashes{})][]*fact

// factsOf sets gf to the facts of the resources byType (Resources.byType) lists, leaving out
// the types in skip (nil lists), and returns gf, or nil for a nil memo: one look-up per
// resource for validation and hashing both.
func (m *memo) factsOf(gf *groupFacts, byType map[resourcev3.Type][]types.Resource, skip map[resourcev3.Type]bool) *groupFacts {
	if m == nil {
		return nil
	}
	n := 0
	for _, t := range resourceTypes {
		if !skip[t] {
			n += len(byType[t])
		}
	}
	all := make([]*fact, n) // one allocation for every type's
	for i, t := range resourceTypes {
		if skip[t] {
			continue
		}
		l := byType[t]
		f := all[:len(l):len(l)]
		all = all[len(l):]
		for j, res := range l {
			f[j] = m.factOf(res)
		}
		gf[i] = f
	}
	return gf
}

// at returns the fact of the j-th resource of the i-th type, or nil when gf is nil.
func (gf *groupFacts) at(i, j int) *fact {
	if gf == nil {
		return nil
	}
	return gf[i][j]
}

// list returns the facts of the i-th type's resources, or nil when gf is nil or left the type
// out.
func (gf *groupFacts) list(i int) []*fact {
	if gf == nil {
		return nil
	}
	return gf[i]
}

// validatedIn is validated with res's fact ft (factOf) already looked up; a nil ft looks it up.
func (m *memo) validatedIn(ft *fact, res types.Resource, validate func() error) error {
	if ft == nil {
		return m.validated(res, validate)
	}
	if v := ft.valid.Load(); v != nil {
		return v.err
	}
	v := newValidity(validate())
	if ft.valid.CompareAndSwap(nil, v) {
		return v.err
	}
	return ft.valid.Load().err
}

// resourceHashIn is resourceHash with res's fact ft (factOf) already looked up; a nil ft looks
// it up.
func (m *memo) resourceHashIn(ft *fact, res types.Resource, buf *[]byte) (string, error) {
	if ft == nil {
		return m.resourceHash(res, buf)
	}
	if e := ft.enc.Load(); e != nil {
		return e.hash, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(res)
	if err != nil {
		return "", err
	}
	e := newEncoded(res, b, messageTypeURL(res), cachev3.GetResourceName(res))
	if ft.enc.CompareAndSwap(nil, e) {
		return e.hash, nil
	}
	return ft.enc.Load().hash, nil
}

// validated runs validate on res once per shared message.
func (m *memo) validated(res types.Resource, validate func() error) error {
	if m == nil {
		return validate()
	}
	if v := learnt(m, res, validOf); v != nil {
		return v.err
	}
	return learn(m, res, validOf, newValidity(validate())).err
}

// refsOf reads the references of a shared message x once.
func (m *memo) refsOf(x proto.Message, read func() refs) refs {
	if m == nil {
		return read()
	}
	if v := learnt(m, x, refsOf); v != nil {
		return *v
	}
	r := read()
	return *learn(m, x, refsOf, &r)
}

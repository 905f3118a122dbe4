package compiler

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// Incremental compilation.
//
// With a Cache, a compilation on the fast path reuses what the previous ones derived from the
// elements that did not change: a service's compiled form and positions, a destination's
// intentions, a service's discovery chain, and the canonical JSON of each of them, from which
// the snapshot's Version is hashed. What an element's compiled form depends on is its derived
// key (derivedKey: its text, the schema, the user's definitions and where its declarations
// start) and a few facts outside it, checked on every reuse:
//
//   - a service: the mesh's mode, datacenter and datacenters (memoSettings);
//   - a destination's intentions: whether the destination is a service and its protocol;
//   - a chain: the service's compiled form (the same pointer), the routers, splitters and
//     resolvers (their derived keys), the mesh's datacenter and trust domain (chainContext).
//
// Checks between elements (an upstream, an intention's source or destination that names no
// service) run on every compilation, on reused elements too. Entries are made only from
// elements compiled without an error, and kept only while a compilation uses them: the memo
// holds about one mesh's compiled elements, never more. TestCacheKeyDependencies and
// TestIncrementalMatchesCold hold every compilation with a warm Cache to a cold one, errors
// and their positions included.
type memo struct {
	gen        uint64
	settings   memoSettings
	services   map[string]*memoService
	intentions map[string]*memoIntentions
	// intentionJSON is the canonical JSON of every intention of intentions' entries.
	intentionJSON map[*mesh.Intention][]byte
	// permissionJSON is the JSON of the permissions of L7 intentions of intentions' entries,
	// the analysis's keys of their verdicts.
	permissionJSON map[*mesh.Intention][]byte
	// sizes of the latest snapshot's maps, to allocate the next ones at once
	nServices, nPositions int

	// The analysis (analysis.go) of the latest committed snapshot, snap: commits counts the
	// commits, delta is what the latest changed since the one before.
	snap             *mesh.Snapshot
	commits          uint64
	defaultIntention mesh.Action
	delta            memoDelta
}

// memoDelta is what a commit changed since the one before: services compiled anew or removed,
// destinations whose intentions were compiled anew or removed; all when every analysis result
// must be made again (the first commit, another defaultIntention, other service settings).
type memoDelta struct {
	all              bool
	defaultIntention bool // only the defaultIntention changed of what all covers
	services         map[string]bool
	dsts             map[string]bool
}

// redo reports whether a result made at the commit before must be made again for what the
// delta changed mesh-wide, given whether it depended on the defaultIntention.
func (d *memoDelta) redo(onDefault bool) bool {
	return d.all && (!d.defaultIntention || onDefault)
}

// memoSettings are the mesh settings a service's compiled form depends on.
type memoSettings struct {
	mode, datacenter, datacenters string
}

type memoService struct {
	key  [32]byte
	gen  uint64
	svc  *mesh.Service
	pos  []posEntry
	json []byte // canonical JSON of svc, nil until the version needs it
	// warn are the analysis's warnings on svc's upstreams, made at commit warnCommit;
	// warnOnDefault is set when a verdict depended on the mesh's defaultIntention.
	warn          []*Error
	warnCommit    uint64
	warnOnDefault bool
	// chain is the service's chain for svc under chainCtx.
	chain     *mesh.Chain
	chainCtx  [32]byte
	chainJSON []byte
}

type memoIntentions struct {
	key       [32]byte
	gen       uint64
	dstKnown  bool // the destination is a service
	dstProto  string
	dpos      mesh.Pos
	list      []*mesh.Intention // by source
	pos       []posEntry
	sourcePos []mesh.Pos // of each of list
	// warn are the analysis's warnings on list, made at commit warnCommit; warnOnDefault is
	// set when a verdict depended on the mesh's defaultIntention (an L7 intention).
	warn          []*Error
	warnCommit    uint64
	warnOnDefault bool
}

type posEntry struct {
	path string
	pos  mesh.Pos
}

// incremental is one compilation's use of the memo.
type incremental struct {
	m          *memo
	stats      *CacheStats
	settingsOK bool // the services' entries were derived under these settings
	chainCtx   [32]byte
	fresh      map[string]*memoService
	freshInt   map[string]*memoIntentions
}

// startIncremental prepares the reuse of cache's memo by c, on the fast path only.
func (c *compilation) startIncremental(cache *Cache) {
	if cache == nil || c.fast == nil || c.errs.partial {
		return
	}
	if cache.memo == nil {
		cache.memo = &memo{services: map[string]*memoService{}, intentions: map[string]*memoIntentions{},
			intentionJSON: map[*mesh.Intention][]byte{}, permissionJSON: map[*mesh.Intention][]byte{}}
	}
	m := cache.memo
	m.gen++
	if m.nPositions > len(c.snap.Positions) {
		pos := make(map[string]mesh.Pos, m.nPositions)
		maps.Copy(pos, c.snap.Positions)
		c.snap.Positions = pos
	}
	if m.nServices > len(c.snap.Services) {
		svcs := make(map[string]*mesh.Service, m.nServices)
		maps.Copy(svcs, c.snap.Services)
		c.snap.Services = svcs
	}
	c.inc = &incremental{m: m, stats: &cache.last, settingsOK: m.settings == c.settings(),
		fresh: map[string]*memoService{}, freshInt: map[string]*memoIntentions{}}
}

func (c *compilation) settings() memoSettings {
	return memoSettings{mode: c.snap.Mesh.Mode, datacenter: c.snap.Mesh.Datacenter,
		datacenters: strings.Join(c.snap.Mesh.Datacenters, "\x00")}
}

// reuseServices places the services whose entries hold, and returns the node of the others.
func (c *compilation) reuseServices(sec node) node {
	in := c.inc
	if in == nil || !sec.fast || !in.settingsOK {
		return sec
	}
	all, _ := sec.data.(map[string]any)
	rest := map[string]any{}
	for name, d := range all {
		me := in.m.services[name]
		if me == nil || me.key != c.fast.dkeys[elemKey{"services", name}] {
			rest[name] = d
			continue
		}
		me.gen = in.m.gen
		in.stats.CompiledReused++
		c.snap.Services[name] = me.svc
		for _, pe := range me.pos {
			c.snap.Positions[pe.path] = pe.pos
		}
	}
	sec.data = rest
	return sec
}

// derivedService records a service compiled without error.
func (c *compilation) derivedService(name string, s *mesh.Service) {
	if c.inc == nil {
		return
	}
	me := &memoService{key: c.fast.dkeys[elemKey{"services", name}], svc: s}
	p := mesh.PathService(name)
	me.pos = append(me.pos, posEntry{p, c.snap.Positions[p]})
	for _, u := range sortedKeys(s.Upstreams) {
		up := p + ".upstreams." + u
		me.pos = append(me.pos, posEntry{up, c.snap.Positions[up]})
	}
	c.inc.fresh[name] = me
}

// reuseIntentions places the intentions into dst when its entry holds, checks their sources
// and destination, and reports whether it did.
func (c *compilation) reuseIntentions(dst string) bool {
	in := c.inc
	if in == nil {
		return false
	}
	me := in.m.intentions[dst]
	if me == nil || me.key != c.fast.dkeys[elemKey{"intentions", dst}] {
		return false
	}
	dsvc := c.snap.Services[dst]
	if me.dstKnown != (dsvc != nil) || dsvc != nil && dsvc.Protocol != me.dstProto {
		return false
	}
	me.gen = in.m.gen
	in.stats.CompiledReused++
	if dst != mesh.Wildcard && dsvc == nil {
		c.addUnlessPartial(me.dpos, "intentions: destination %s: no such service", dst)
	}
	for i, it := range me.list {
		if it.Source != mesh.Wildcard && c.snap.Services[it.Source] == nil {
			c.addUnlessPartial(me.sourcePos[i], "intention %s → %s: source %s: no such service", it.Source, dst, it.Source)
		}
	}
	c.snap.Intentions = append(c.snap.Intentions, me.list...)
	for _, pe := range me.pos {
		c.snap.Positions[pe.path] = pe.pos
	}
	return true
}

// derivedIntentions records the intentions into dst compiled from its element, list (by
// source), when none of them had an error.
func (c *compilation) derivedIntentions(dst string, dpos mesh.Pos, list []*mesh.Intention) {
	if c.inc == nil {
		return
	}
	dsvc := c.snap.Services[dst]
	me := &memoIntentions{key: c.fast.dkeys[elemKey{"intentions", dst}], dstKnown: dsvc != nil, dpos: dpos,
		list: append([]*mesh.Intention(nil), list...)}
	if dsvc != nil {
		me.dstProto = dsvc.Protocol
	}
	for _, it := range list {
		p := mesh.PathIntention(dst, it.Source)
		me.sourcePos = append(me.sourcePos, c.snap.Positions[p])
		me.pos = append(me.pos, posEntry{p, c.snap.Positions[p]})
		for i := range it.Permissions {
			pp := mesh.PathPermission(dst, it.Source, i)
			me.pos = append(me.pos, posEntry{pp, c.snap.Positions[pp]})
		}
	}
	c.inc.freshInt[dst] = me
}

// sortIntentions puts the intentions in canonical order (mesh.SortIntentions): with the memo,
// the reused ones keep the latest snapshot's order and the others, sorted, are merged in.
func (c *compilation) sortIntentions() {
	in := c.inc
	if in == nil || in.m.snap == nil {
		mesh.SortIntentions(c.snap.Intentions)
		return
	}
	m := in.m
	kept := make([]*mesh.Intention, 0, len(c.snap.Intentions))
	for _, it := range m.snap.Intentions {
		if me := m.intentions[it.Destination]; me != nil && me.gen == m.gen {
			kept = append(kept, it)
		}
	}
	var fresh []*mesh.Intention
	for _, me := range in.freshInt {
		fresh = append(fresh, me.list...)
	}
	if len(kept)+len(fresh) != len(c.snap.Intentions) {
		mesh.SortIntentions(c.snap.Intentions) // cannot happen; sorting is always right
		return
	}
	mesh.SortIntentions(fresh)
	out := c.snap.Intentions[:0]
	for len(kept) > 0 && len(fresh) > 0 {
		if intentionBefore(fresh[0], kept[0]) {
			out, fresh = append(out, fresh[0]), fresh[1:]
		} else {
			out, kept = append(out, kept[0]), kept[1:]
		}
	}
	c.snap.Intentions = append(append(out, kept...), fresh...)
}

// intentionBefore is the order of mesh.SortIntentions: precedence (highest first), then
// destination, then source. TestIncrementalMatchesCold holds the merge to the sort.
func intentionBefore(a, b *mesh.Intention) bool {
	if a.Precedence != b.Precedence {
		return a.Precedence > b.Precedence
	}
	if a.Destination != b.Destination {
		return a.Destination < b.Destination
	}
	return a.Source < b.Source
}

// chainContext identifies what chains depend on besides their service: the routers, splitters
// and resolvers, the mesh's datacenter and trust domain.
func (c *compilation) chainContext() {
	if c.inc == nil {
		return
	}
	var keys []string
	for k := range c.fast.dkeys {
		if k.section == "routers" || k.section == "splitters" || k.section == "resolvers" {
			keys = append(keys, k.section+"."+k.name)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	writeText(h, []byte(c.snap.Mesh.Datacenter))
	writeText(h, []byte(c.snap.Mesh.TrustDomain))
	for _, k := range keys {
		section, name, _ := strings.Cut(k, ".")
		writeText(h, []byte(k))
		dk := c.fast.dkeys[elemKey{section, name}]
		h.Write(dk[:])
	}
	h.Sum(c.inc.chainCtx[:0])
}

// serviceEntry is the entry of service name as compiled now, or nil.
func (in *incremental) serviceEntry(name string, svc *mesh.Service) *memoService {
	if me := in.fresh[name]; me != nil {
		return me
	}
	if me := in.m.services[name]; me != nil && me.svc == svc {
		return me
	}
	return nil
}

// chain is c.chain(name, ""), reused when the service's entry has it.
func (c *compilation) memoChain(name string) *mesh.Chain {
	if c.inc == nil {
		return c.chain(name, "")
	}
	me := c.inc.serviceEntry(name, c.snap.Services[name])
	if me != nil && me.chain != nil && me.chainCtx == c.inc.chainCtx {
		return me.chain
	}
	ch := c.chain(name, "")
	if me != nil {
		me.chain, me.chainCtx, me.chainJSON = ch, c.inc.chainCtx, nil
	}
	return ch
}

// commit makes the entries of a compilation without errors the memo, dropping the entries it
// did not use.
func (c *compilation) commit() {
	in := c.inc
	if in == nil {
		return
	}
	m := in.m
	d := memoDelta{services: map[string]bool{}, dsts: map[string]bool{}}
	d.all = m.commits == 0 || !in.settingsOK || m.defaultIntention != c.snap.Mesh.DefaultIntention
	d.defaultIntention = m.commits > 0 && in.settingsOK
	m.commits++
	m.snap, m.defaultIntention = c.snap, c.snap.Mesh.DefaultIntention
	m.settings = c.settings()
	m.nServices, m.nPositions = len(c.snap.Services), len(c.snap.Positions)
	for name, me := range in.fresh {
		me.gen = m.gen
		m.services[name] = me
		d.services[name] = true
	}
	for name, me := range m.services {
		if me.gen != m.gen {
			delete(m.services, name)
			d.services[name] = true
		}
	}
	for dst, me := range in.freshInt {
		if old := m.intentions[dst]; old != nil {
			for _, it := range old.list {
				delete(m.intentionJSON, it)
				delete(m.permissionJSON, it)
			}
		}
		me.gen = m.gen
		m.intentions[dst] = me
		d.dsts[dst] = true
	}
	for dst, me := range m.intentions {
		if me.gen != m.gen {
			for _, it := range me.list {
				delete(m.intentionJSON, it)
				delete(m.permissionJSON, it)
			}
			delete(m.intentions, dst)
			d.dsts[dst] = true
		}
	}
	m.delta = d
}

// memoAnalysis lets the analysis of the snapshot a compilation just committed reuse the
// warnings of the elements that neither changed nor depend on what changed.
type memoAnalysis struct{ m *memo }

// analysisMemo is the memo of s, or nil when s is not the latest snapshot committed to cache.
func analysisMemo(s *mesh.Snapshot, cache *Cache) *memoAnalysis {
	if cache == nil || cache.memo == nil || cache.memo.snap != s {
		return nil
	}
	return &memoAnalysis{m: cache.memo}
}

// reuseUpstreams adds the warnings on svc's upstreams made at the commit before, unless svc,
// one of its upstreams, or an intention that may decide a call to one of them changed.
func (ma *memoAnalysis) reuseUpstreams(name string, svc *mesh.Service, w *errorList) bool {
	if ma == nil {
		return false
	}
	m, d := ma.m, &ma.m.delta
	me := m.services[name]
	if me == nil || me.svc != svc || me.warnCommit != m.commits-1 || d.redo(me.warnOnDefault) || d.services[name] || d.dsts[mesh.Wildcard] {
		return false
	}
	for u := range svc.Upstreams {
		if d.dsts[u] || d.services[u] {
			return false
		}
	}
	me.warnCommit = m.commits
	w.list = append(w.list, me.warn...)
	return true
}

// keepUpstreams keeps the warnings made on svc's upstreams.
func (ma *memoAnalysis) keepUpstreams(name string, svc *mesh.Service, warn []*Error, onDefault bool) {
	if ma == nil {
		return
	}
	if me := ma.m.services[name]; me != nil && me.svc == svc {
		me.warn, me.warnCommit, me.warnOnDefault = slices.Clone(warn), ma.m.commits, onDefault
	}
}

// reuseIntentions adds the warnings on the intentions into dst made at the commit before,
// unless they or their sources changed.
func (ma *memoAnalysis) reuseIntentions(dst string, me *memoIntentions, w *errorList) bool {
	m, d := ma.m, &ma.m.delta
	if me.warnCommit != m.commits-1 || d.redo(me.warnOnDefault) || d.dsts[dst] {
		return false
	}
	for _, in := range me.list {
		if d.services[in.Source] {
			return false
		}
	}
	me.warnCommit = m.commits
	w.list = append(w.list, me.warn...)
	return true
}

// seal sets the snapshot's Version: Snapshot.Seal, or with the memo the same hash of the same
// canonical JSON, written from the JSON the entries keep of their elements.
func (c *compilation) seal() error {
	if c.inc == nil {
		return c.snap.Seal()
	}
	s := c.snap
	h := sha256.New()
	w := bufio.NewWriterSize(h, 64<<10)
	je := newJSONEncoder()
	b, err := je.encode(s.Mesh)
	if err != nil {
		return err
	}
	w.WriteString(`{"mesh":`)
	w.Write(b)
	w.WriteString(`,"services":`)
	names := c.serviceNames() // the keys of both Services and Chains
	err = writeMap(w, je, s.Services, names, func(name string, svc *mesh.Service) ([]byte, error) {
		me := c.inc.serviceEntry(name, svc)
		if me != nil && me.json != nil {
			return me.json, nil
		}
		b, err := je.encodeCopy(svc)
		if me != nil {
			me.json = b
		}
		return b, err
	})
	if err != nil {
		return err
	}
	w.WriteString(`,"intentions":`)
	if err := c.writeIntentions(w, je); err != nil {
		return err
	}
	for _, part := range []struct {
		name string
		v    any
		n    int
	}{{"routers", s.Routers, len(s.Routers)}, {"splitters", s.Splitters, len(s.Splitters)}, {"resolvers", s.Resolvers, len(s.Resolvers)}} {
		if part.n == 0 {
			continue // omitempty
		}
		b, err := je.encode(part.v)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, `,"%s":`, part.name)
		w.Write(b)
	}
	w.WriteString(`,"chains":`)
	err = writeMap(w, je, s.Chains, names, func(name string, ch *mesh.Chain) ([]byte, error) {
		me := c.inc.serviceEntry(name, s.Services[name])
		if me != nil && me.chain == ch && me.chainJSON != nil {
			return me.chainJSON, nil
		}
		b, err := je.encodeCopy(ch)
		if me != nil && me.chain == ch {
			me.chainJSON = b
		}
		return b, err
	})
	if err != nil {
		return err
	}
	for _, part := range []struct {
		name string
		v    any
		n    int
	}{{"remoteChains", s.RemoteChains, len(s.RemoteChains)}, {"virtualIPs", s.VirtualIPs, len(s.VirtualIPs)}} {
		if part.n == 0 {
			continue
		}
		b, err := je.encode(part.v)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, `,"%s":`, part.name)
		w.Write(b)
	}
	w.WriteString("}")
	if err := w.Flush(); err != nil {
		return err
	}
	sum := h.Sum(nil)
	s.Version = hex.EncodeToString(sum[:8])
	return nil
}

func (c *compilation) writeIntentions(w *bufio.Writer, je *jsonEncoder) error {
	list := c.snap.Intentions
	if list == nil {
		w.WriteString("null")
		return nil
	}
	m := c.inc.m
	fresh := map[*mesh.Intention]bool{}
	for _, me := range c.inc.freshInt {
		for _, it := range me.list {
			fresh[it] = true
		}
	}
	w.WriteByte('[')
	for i, it := range list {
		if i > 0 {
			w.WriteByte(',')
		}
		b, ok := m.intentionJSON[it]
		if !ok {
			var err error
			if b, err = je.encodeCopy(it); err != nil {
				return err
			}
			if fresh[it] {
				m.intentionJSON[it] = b
			}
		}
		w.Write(b)
	}
	w.WriteByte(']')
	return nil
}

// writeMap writes m, whose keys sorted are keys, as encoding/json does, each value's JSON
// from enc.
func writeMap[V any](w *bufio.Writer, je *jsonEncoder, m map[string]V, keys []string, enc func(string, V) ([]byte, error)) error {
	if m == nil {
		w.WriteString("null")
		return nil
	}
	if len(keys) != len(m) {
		return fmt.Errorf("%w: canonical encoding: %d keys for %d entries", ErrInternal, len(keys), len(m))
	}
	w.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			w.WriteByte(',')
		}
		if err := je.writeKey(w, k); err != nil {
			return err
		}
		w.WriteByte(':')
		b, err := enc(k, m[k])
		if err != nil {
			return err
		}
		w.Write(b)
	}
	w.WriteByte('}')
	return nil
}

// jsonEncoder encodes values as Snapshot.Canonical does (no HTML escaping), one at a time.
type jsonEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newJSONEncoder() *jsonEncoder {
	je := &jsonEncoder{}
	je.enc = json.NewEncoder(&je.buf)
	je.enc.SetEscapeHTML(false)
	return je
}

// encode returns v's JSON, valid until the next call.
func (je *jsonEncoder) encode(v any) ([]byte, error) {
	je.buf.Reset()
	if err := je.enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonical encoding: %w", err)
	}
	return bytes.TrimSuffix(je.buf.Bytes(), []byte("\n")), nil
}

// encodeCopy returns v's JSON in a slice of its own.
func (je *jsonEncoder) encodeCopy(v any) ([]byte, error) {
	b, err := je.encode(v)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// writeKey writes a map key as encoding/json does.
func (je *jsonEncoder) writeKey(w *bufio.Writer, k string) error {
	plain := true
	for i := 0; i < len(k); i++ {
		if b := k[i]; b < 0x20 || b > 0x7e || b == '"' || b == '\\' {
			plain = false
			break
		}
	}
	if plain {
		w.WriteByte('"')
		w.WriteString(k)
		w.WriteByte('"')
		return nil
	}
	b, err := je.encode(k)
	if err != nil {
		return err
	}
	w.Write(b)
	return nil
}

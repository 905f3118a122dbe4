package reconciler

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/atomicfile"
)

// publisher hands the FSM's served snapshot to the Publisher (xDS) and keeps a copy on disk, so
// that a restarted server serves at once what it served last, before Raft has caught up with its
// peers or the leader has reached Git.
type publisher struct {
	s *Server

	mu         sync.Mutex
	served     *mesh.Snapshot
	catalog    *catalog.State // the catalog published with served
	servedAt   time.Time
	cacheIndex uint64 // the Raft index of the snapshot loaded from disk; older FSM states are not published
	// bundleIndex is the FSM's index when the trust bundle loaded from disk was saved: the CA
	// states before it are not handed over (a restarted server replaying its log would otherwise
	// hand its proxies every past bundle).
	bundleIndex uint64
	// diskHistory is the history saved with the snapshot loaded from disk, answered by
	// GET /v1/snapshots until the FSM has caught up with that snapshot (then nil).
	diskHistory *cachedHistory
	// catchUp is the leader's FSM index when this server joined: the FSM states before it are
	// the cluster's past (snapshots since replaced, intentions since revoked), not published.
	catchUp atomic.Uint64
	lastErr error
	waiters []chan struct{}
	// verifyErr says why the FSM's served snapshot is not served (it does not hash to its
	// version) and how its repair goes; "" once a snapshot built from a delta verifies.
	verifyErr string
	repairing atomic.Bool // a repair goroutine runs
	bg        sync.WaitGroup

	// bundle is the CA's trust bundle (PEM) as handed to the Publisher ("" before the CA exists).
	bundle string

	catSave   chan struct{} // capacity 1: the published catalog changed, save it
	cacheSave chan struct{} // capacity 1: cachePending is to be written
	// cachePending is what was published last and is not on disk yet (nil once written): only
	// the newest is written.
	cachePending *pendingCache
	overlayer    catalog.Overlayer // served with the catalog's instances

	viewMu           sync.Mutex
	viewOf, viewSnap *mesh.Snapshot // the last snapshot seen from Config.Datacenter, and that view
	viewErr          error
}

// view returns snap as Config.Datacenter's servers serve it (snap itself without one), computed
// once per snapshot: publishing follows every catalog change.
func (p *publisher) view(snap *mesh.Snapshot) *mesh.Snapshot {
	v, _ := p.viewErrOf(snap)
	return v
}

// withPeers adds the federated datacenters' gateways and healthy-instance counts to snap.
func (p *publisher) withPeers(snap *mesh.Snapshot) *mesh.Snapshot {
	if p.s.fed == nil {
		return snap
	}
	remote, healthy := p.s.fed.gateways(), p.s.fed.healthy()
	if len(remote) == 0 && len(healthy) == 0 {
		return snap
	}
	all := make(map[string][]mesh.Gateway, len(snap.MeshGateways)+len(remote))
	maps.Copy(all, remote)
	maps.Copy(all, snap.MeshGateways) // the local catalog's own datacenter wins
	return snap.WithRemote(all, healthy)
}

func (p *publisher) viewErrOf(snap *mesh.Snapshot) (*mesh.Snapshot, error) {
	dc := p.s.cfg.Datacenter
	if dc == "" || snap == nil {
		return snap, nil
	}
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	if p.viewOf != snap {
		p.viewOf = snap
		p.viewSnap, p.viewErr = compiler.ForDatacenter(snap, dc)
	}
	if p.viewErr != nil {
		return snap, p.viewErr
	}
	return p.viewSnap, nil
}

// cachedHistory is the FSM history as the served snapshot cache recorded it.
type cachedHistory struct {
	Entries []Entry // oldest first
	Pin     string
	Served  string
}

func (p *publisher) init(s *Server) {
	p.s, p.catSave, p.cacheSave = s, make(chan struct{}, 1), make(chan struct{}, 1)
}

// The catalog published with the snapshot is kept too (JSON, saved at most once a second), so
// that a restarted server serves the instances it served, not only Git's endpoints, before
// Raft has caught up.
func (p *publisher) catalogFile() string { return filepath.Join(p.s.cfg.DataDir, "catalog.json.gz") }

func (p *publisher) loadCatalog() *catalog.State {
	b, err := os.ReadFile(p.catalogFile())
	if err != nil {
		if !os.IsNotExist(err) {
			p.s.log.Warn("read catalog cache", "err", err)
		}
		return nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	var st catalog.State
	if err == nil {
		err = json.NewDecoder(io.LimitReader(zr, maxSnapshotJSON)).Decode(&st)
	}
	if err != nil {
		p.s.log.Warn("catalog cache unusable, waiting for raft", "err", err)
		return nil
	}
	return &st
}

// saveCatalogs saves the published catalog when it changes, at most once a second, until ctx
// ends.
func (p *publisher) saveCatalogs(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.catSave:
		}
		p.mu.Lock()
		cat := p.catalog
		p.mu.Unlock()
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		err := json.NewEncoder(zw).Encode(cat)
		if err == nil {
			err = zw.Close()
		}
		if err == nil {
			err = p.s.storage.write("catalog-cache", func() error { return atomicfile.Write(p.catalogFile(), buf.Bytes(), 0o600) })
		}
		if err != nil {
			p.s.log.Warn("save catalog cache", "err", err)
		}
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

// The cache is private to this server, so it uses gob, which decodes a 10k-service snapshot
// about twice as fast as its JSON; the decoded content is still checked against its version.
func (p *publisher) cacheFile() string { return filepath.Join(p.s.cfg.DataDir, "served.gob.gz") }

type servedCache struct {
	Format   int
	Index    uint64
	Snapshot *mesh.Snapshot
	History  *cachedHistory // nil in caches written by older versions
	// Bundle is the CA's trust bundle served with Snapshot ("" before the CA, and in caches of
	// older versions): public certificates. A restarted server serves both at once. BundleIndex
	// is the FSM's index when it was saved.
	Bundle      string
	BundleIndex uint64
}

const cacheFormat = 1

// loadCache publishes the snapshot saved by the last run, if any.
func (p *publisher) loadCache() {
	b, err := os.ReadFile(p.cacheFile())
	if err != nil {
		if !os.IsNotExist(err) {
			p.s.log.Warn("read served snapshot cache", "err", err)
		}
		return
	}
	c, err := readCache(b)
	if err != nil {
		p.s.log.Warn("served snapshot cache unusable, waiting for raft", "err", err)
		return
	}
	p.mu.Lock()
	p.cacheIndex, p.diskHistory, p.bundleIndex = c.Index, c.History, c.BundleIndex
	p.mu.Unlock()
	p.setBundle(c.Bundle) // before the snapshot: the proxies get both in their first configuration
	p.publish(c.Snapshot, p.loadCatalog(), false)
	p.s.log.Info("serving the last snapshot from disk", "version", c.Snapshot.Version, "commit", shortSHA(c.Snapshot.Commit))
}

func readCache(b []byte) (*servedCache, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var c servedCache
	if err := gob.NewDecoder(io.LimitReader(zr, maxSnapshotJSON)).Decode(&c); err != nil {
		return nil, err
	}
	if c.Format != cacheFormat || c.Snapshot == nil {
		return nil, fmt.Errorf("cache format %d, want %d", c.Format, cacheFormat)
	}
	v, err := c.Snapshot.ComputeVersion()
	if err != nil {
		return nil, err
	}
	if v != c.Snapshot.Version {
		return nil, fmt.Errorf("cached content hashes to %s, not its recorded version %s", v, c.Snapshot.Version)
	}
	return &c, nil
}

// run publishes every change of the FSM's served snapshot until ctx ends.
func (p *publisher) run(ctx context.Context) {
	saved, cached, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { defer close(saved); p.saveCatalogs(ctx) }()
	go func() { defer close(cached); p.saveCaches(stop) }()
	defer func() { close(stop); <-saved; <-cached }() // after the last publication
	defer p.bg.Wait()
	var fedChanged chan struct{}
	if p.s.fed != nil {
		fedChanged = p.s.fed.changed
	}
	for {
		p.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.s.fsm.changed:
		case <-fedChanged:
			p.mu.Lock()
			snap, cat := p.served, p.catalog
			p.mu.Unlock()
			p.syncBundle() // a peer's roots may have changed
			if snap != nil {
				p.publish(snap, cat, false)
			}
		}
	}
}

func (p *publisher) check(ctx context.Context) {
	at := p.s.fsm.at()
	st := at.st
	bundled := false
	if at.applied >= p.catchUp.Load() && at.applied >= p.cacheIndex && at.applied >= p.bundleIndex {
		// First: a snapshot applied after the CA's creation is published with its bundle.
		bundled = p.syncBundle()
	}
	if st.served == nil || st.servedIndex < p.cacheIndex || at.applied < p.catchUp.Load() {
		return
	}
	if !p.verified(ctx, st) {
		return
	}
	p.mu.Lock()
	p.diskHistory = nil // the FSM knows at least what the disk did
	cur := p.served
	same := cur == st.served || cur != nil && cur.Version == st.served.Version && cur.Commit == st.served.Commit
	if same && p.catalog == st.catalog {
		p.served = st.served // the FSM's copy; nothing changed for the proxies
	}
	sameCatalog := p.catalog == st.catalog
	p.mu.Unlock()
	if same && sameCatalog {
		if bundled {
			p.saveCache(at)
		}
		return
	}
	if p.publish(st.served, st.catalog, !same) && (!same || bundled) {
		p.saveCache(at)
	}
}

// syncBundle hands the CA's trust bundle to the Publisher when it differs from what it has: once
// the CA exists, after a rotation or a retirement, and when a federated peer's roots change.
// It reports whether it handed a new one over.
func (p *publisher) syncBundle() bool {
	return p.setBundle(p.s.ca.BundlePEM())
}

// setBundle hands pem to the Publisher unless it is "" or what it has; it reports whether it did.
func (p *publisher) setBundle(pem string) bool {
	p.mu.Lock()
	same := pem == p.bundle
	p.mu.Unlock()
	if same || pem == "" {
		return false
	}
	if tb, ok := p.s.cfg.Publisher.(TrustBundler); ok {
		if err := tb.SetTrustBundle([]byte(pem)); err != nil {
			p.s.metrics.publishErrors.Inc()
			p.s.log.Error("trust bundle refused by the publisher", "err", err)
			return false
		}
	}
	p.mu.Lock()
	p.bundle = pem
	p.mu.Unlock()
	return true
}

// ready reports whether this server serves a snapshot and the CA's trust bundle: a proxy that
// connects gets its whole configuration, its mTLS trust included.
func (p *publisher) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served != nil && p.bundle != ""
}

// publish hands snap, with the catalog's instances, to the Publisher. fromFSM is set when the
// snapshot itself (not only the catalog) changed.
func (p *publisher) publish(snap *mesh.Snapshot, cat *catalog.State, fromFSM bool) bool {
	var err error
	if pub := p.s.cfg.Publisher; pub != nil {
		var view *mesh.Snapshot
		if view, err = p.viewErrOf(snap); err == nil {
			err = pub.SetSnapshot(p.withPeers(p.overlayer.Overlay(view, cat)))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err != nil {
		p.s.metrics.publishErrors.Inc()
		p.s.log.Error("publish snapshot", "version", snap.Version, "err", err)
		return false
	}
	if cat != nil && cat != p.catalog {
		select {
		case p.catSave <- struct{}{}:
		default:
		}
	}
	p.served, p.servedAt, p.catalog = snap, time.Now(), cat
	p.s.metrics.setServed(snap)
	for _, w := range p.waiters {
		close(w)
	}
	p.waiters = nil
	if fromFSM {
		p.s.log.Info("serving snapshot", "version", snap.Version, "commit", shortSHA(snap.Commit))
	}
	return true
}

// pendingCache is a served-snapshot cache to write: the FSM's state whose served snapshot was
// published, and the trust bundle published with it.
type pendingCache struct {
	at     point
	bundle string
}

// saveCache has the served snapshot of st, just published, written to disk by saveCaches. At
// 10k services encoding and writing it takes 0.4 s (BenchmarkServedCache), proportional to the
// mesh, not to the change: the publisher does not wait for it (the next commit is served
// meanwhile), and snapshots published while a write runs are coalesced into one write of the
// newest.
func (p *publisher) saveCache(at point) {
	p.mu.Lock()
	p.cachePending = &pendingCache{at: at, bundle: p.bundle}
	p.mu.Unlock()
	select {
	case p.cacheSave <- struct{}{}:
	default:
	}
}

// saveCaches writes the newest published snapshot each time one is pending, until stop is
// closed (after the publisher's last publication); then it writes the last one pending, so that
// a server closed cleanly restarts with what it served last. A crash may leave the file a snapshot or more behind what was served (as a crash
// between publishing and writing always could): the file is replaced atomically, holds a
// snapshot this server served, is checked against its version when read, and the FSM's newer
// states replace it once Raft has them (cacheIndex).
func (p *publisher) saveCaches(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			p.writePendingCache()
			return
		case <-p.cacheSave:
			p.writePendingCache()
		}
	}
}

func (p *publisher) writePendingCache() {
	p.mu.Lock()
	c := p.cachePending
	p.cachePending = nil
	p.mu.Unlock()
	if c != nil {
		p.writeCache(c.at, c.bundle)
	}
}

// writeCache writes the served snapshot of at, with the history and bundle, to the cache file.
func (p *publisher) writeCache(at point, bundle string) {
	st := at.st
	h := &cachedHistory{Pin: st.pin, Served: st.served.Version}
	for _, e := range st.history {
		h.Entries = append(h.Entries, e.Entry)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	err := gob.NewEncoder(zw).Encode(servedCache{Format: cacheFormat, Index: st.servedIndex, Snapshot: st.served, History: h,
		Bundle: bundle, BundleIndex: at.applied})
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = p.s.storage.write("served-cache", func() error { return atomicfile.Write(p.cacheFile(), buf.Bytes(), 0o600) })
	}
	if err != nil {
		p.s.log.Warn("save served snapshot", "err", err)
	}
}

// history returns the history saved on disk while the FSM has not caught up with it, or nil.
func (p *publisher) history() *cachedHistory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.diskHistory
}

func (p *publisher) current() *mesh.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

func (p *publisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// servedWait bounds how long a write waits for its result to be served.
const servedWait = 5 * time.Second

// awaitServed waits, at most servedWait or until ctx ends, until the snapshot the FSM selects
// for serving is the one published. It returns early when nothing is to be served.
func (p *publisher) awaitServed(ctx context.Context, fsm *fsm) {
	timer := time.NewTimer(servedWait)
	defer timer.Stop()
	for {
		ch := p.changed()
		want := fsm.state().served
		if cur := p.current(); want == nil || cur != nil && cur.Version == want.Version && cur.Commit == want.Commit {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
}

// changed returns a channel closed at the next publication.
func (p *publisher) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(chan struct{})
	p.waiters = append(p.waiters, c)
	return c
}

// catchUpWait bounds how long a restarted server waits to learn the leader's index before it
// publishes what its own log holds.
const catchUpWait = 30 * time.Second

// learnCatchUp asks the leader how far the cluster's state is and holds publication until this
// server's state machine has got there. Leading itself, it has everything; with no leader to
// ask within catchUpWait, it publishes what it has.
func (s *Server) learnCatchUp(ctx context.Context) {
	defer s.fsm.poke()
	deadline := time.Now().Add(catchUpWait)
	for time.Now().Before(deadline) {
		if s.IsLeader() {
			s.pub.catchUp.Store(0)
			return
		}
		if addr := s.leaderHTTP(); addr != "" {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := s.peerClient(addr).Status(cctx)
			cancel()
			if err == nil && st.Leader != "" && st.Leader == st.Node {
				s.pub.catchUp.Store(st.AppliedCommand)
				s.log.Info("catching up with the leader before publishing", "leader", st.Node, "index", st.AppliedCommand)
				return
			}
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
	s.log.Warn("no leader told how far the cluster is; publishing what this server's log holds")
	s.pub.catchUp.Store(0)
}

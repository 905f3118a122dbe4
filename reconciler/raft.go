package reconciler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/atomicfile"
)

// applyTimeout bounds one Raft apply (enqueue and commit).
const applyTimeout = 10 * time.Second

// raftNode is the Raft instance with the stores and transport it owns.
type raftNode struct {
	raft     *raft.Raft
	trans    *raft.NetworkTransport
	stream   *tlsStreamLayer // nil: plaintext Raft
	store    *raftboltdb.BoltStore
	addr     raft.ServerAddress
	existing bool // the data directory held Raft state at start
	notify   chan bool
	lease    time.Duration // the configured leader lease timeout
	started  time.Time     // when Raft started (the tests measure the first election from it)
}

func raftConfig(s *Server) *raft.Config {
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(s.id)
	cfg.Logger = newHCLog(s.log, "raft")
	t := s.cfg.Raft
	if t.HeartbeatTimeout > 0 {
		cfg.HeartbeatTimeout = t.HeartbeatTimeout
	}
	if t.ElectionTimeout > 0 {
		cfg.ElectionTimeout = t.ElectionTimeout
	}
	if t.LeaderLeaseTimeout > 0 {
		cfg.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	}
	if t.CommitTimeout > 0 {
		cfg.CommitTimeout = t.CommitTimeout
	}
	// Every entry carries a whole compressed snapshot: snapshot often, keep a short log tail.
	cfg.SnapshotThreshold = 32
	cfg.TrailingLogs = 64
	cfg.SnapshotInterval = 30 * time.Second
	return cfg
}

// openRaft opens the transport and the stores, bootstraps a one-server cluster in an empty data
// directory (unless joining), and starts Raft. On error everything opened is closed again.
func openRaft(ctx context.Context, s *Server) (_ *raftNode, err error) {
	cfg := raftConfig(s)
	n := &raftNode{notify: make(chan bool, 16), lease: cfg.LeaderLeaseTimeout}
	cfg.NotifyCh = n.notify
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if n.trans, n.stream, err = newTransport(s, newHCLog(s.log, "raft-net")); err != nil {
		return nil, err
	}
	n.addr = n.trans.LocalAddr()

	snapStore, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, 2, newHCLog(s.log, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raft snapshot store: %w", err)
	}
	if err := checkSnapshots(s.cfg.DataDir, snapStore); err != nil {
		return nil, err
	}
	if err := n.openStore(ctx, s, cfg, snapStore); err != nil {
		return nil, err
	}
	guarded := guardLogStore{LogStore: healthLogStore{n.store, &s.storage}, applied: func() uint64 { return s.fsm.at().applied }, diverged: s.diverged}
	logs, err := raft.NewLogCache(64, guarded)
	if err != nil {
		return nil, err
	}
	stable := healthStableStore{n.store, &s.storage}
	snaps := healthSnapshotStore{snapStore, &s.storage}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.started = time.Now()
	err = recoverCorrupt(filepath.Join(s.cfg.DataDir, "raft.db"), func() (err error) {
		n.raft, err = raft.NewRaft(cfg, s.fsm, logs, stable, snaps, n.trans)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	if n.voters() == 1 && n.isVoter(cfg.LocalID) {
		if err := n.electNow(); err != nil {
			s.log.Warn("raft: the heartbeat timeout may be off its configured value", "err", err)
		}
	}
	return n, nil
}

// isVoter reports whether id is a voter of the latest Raft configuration.
func (n *raftNode) isVoter(id raft.ServerID) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == id {
			return srv.Suffrage == raft.Voter
		}
	}
	return false
}

// electNow makes a server that is the only voter of its configuration (a new one-server cluster,
// or one restarted) stand for election at once instead of waiting out its heartbeat timeout
// (1 to 2 s with the defaults) for a leader that cannot exist: nobody else can vote or lead.
// Lowering the heartbeat timeout through ReloadConfig wakes the follower loop, which finds no
// contact from any leader and starts the election; the configured timeout is restored right
// away, so the timeouts themselves never change, and a cluster of several voters is never
// touched (an early election there would only disrupt).
func (n *raftNode) electNow() error {
	rc := n.raft.ReloadableConfig()
	orig := rc.HeartbeatTimeout
	// The lease is not reloadable, and the heartbeat timeout may not go below it.
	rc.HeartbeatTimeout = max(n.lease, 5*time.Millisecond)
	if rc.HeartbeatTimeout >= orig {
		return nil // no lower value is valid: the election waits the configured timeout
	}
	if err := n.raft.ReloadConfig(rc); err != nil {
		return nil // nothing changed
	}
	rc.HeartbeatTimeout = orig
	return n.raft.ReloadConfig(rc) // valid a moment ago
}

// openStore opens raft.db, making it first if this server bootstraps. The first start is atomic:
// the bootstrap state (term, configuration, cluster id) is written to raft.db.init, which is
// renamed into place only once complete. A raft.db with a term but no configuration, as an older
// version's crash during its first start could leave, is repaired the same way.
func (n *raftNode) openStore(ctx context.Context, s *Server, cfg *raft.Config, snaps raft.SnapshotStore) error {
	path := filepath.Join(s.cfg.DataDir, "raft.db")
	os.Remove(path + ".init") // an interrupted first start
	have, err := snaps.List()
	if err != nil {
		return fmt.Errorf("raft snapshot store: %w", err)
	}
	_, statErr := os.Stat(path)
	if os.IsNotExist(statErr) && s.cfg.Join == "" && len(have) == 0 {
		if err := bootstrapFile(ctx, path, cfg, snaps, n); err != nil {
			return err
		}
		s.log.Info("bootstrapped a one-server cluster")
	}
	if n.store, err = openBolt(ctx, path); err != nil {
		return err
	}
	var id []byte
	var last uint64
	err = recoverCorrupt(path, func() (err error) {
		if id, err = n.store.Get(clusterIDKey); err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
			return err
		}
		if last, err = n.store.LastIndex(); err != nil {
			return err
		}
		n.existing, err = raft.HasExistingState(n.store, n.store, snaps)
		return err
	})
	if err != nil {
		return fmt.Errorf("raft state: %w", err)
	}
	half := n.existing && last == 0 && len(have) == 0 // a term, but no configuration
	switch {
	case half && len(id) == 0 && s.cfg.Join == "":
		s.log.Warn("repairing a data directory left half-initialised by a crash during its first start", "data", s.cfg.DataDir)
		if err := n.store.SetUint64([]byte("CurrentTerm"), 0); err != nil {
			return fmt.Errorf("raft store: %w", err)
		}
		n.existing = false
	case half && s.cfg.Join != "":
		n.existing = false // the join did not complete: join again
	}
	if !n.existing && s.cfg.Join == "" {
		if len(id) != 0 {
			return fmt.Errorf("%w: %s belongs to cluster %s but holds no Raft state: start this server with --join", ErrCorrupt, path, id)
		}
		if err := bootstrapInto(cfg, n.store, snaps, n); err != nil {
			return err
		}
		id, _ = n.store.Get(clusterIDKey)
		s.log.Info("bootstrapped a one-server cluster")
	}
	store := n.store
	s.cluster.start(string(id), func(id string) error {
		return s.storage.write("raft-stable", func() error { return store.Set(clusterIDKey, []byte(id)) })
	})
	return nil
}

// bootstrapFile writes a complete bootstrap state to path+".init" and renames it to path.
func bootstrapFile(ctx context.Context, path string, cfg *raft.Config, snaps raft.SnapshotStore, n *raftNode) error {
	tmp := path + ".init"
	st, err := openBolt(ctx, tmp)
	if err != nil {
		return err
	}
	err = bootstrapInto(cfg, st, snaps, n)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("raft bootstrap: %w", err)
	}
	return nil
}

// bootstrapInto writes a one-server configuration and a new cluster id into st.
func bootstrapInto(cfg *raft.Config, st *raftboltdb.BoltStore, snaps raft.SnapshotStore, n *raftNode) error {
	boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: cfg.LocalID, Address: n.addr}}}
	if err := raft.BootstrapCluster(cfg, st, st, snaps, n.trans, boot); err != nil {
		return fmt.Errorf("raft bootstrap: %w", err)
	}
	if err := st.Set(clusterIDKey, []byte(newClusterID())); err != nil {
		return fmt.Errorf("raft bootstrap: %w", err)
	}
	return nil
}

// openBolt opens a Bolt file without waiting on another process's lock for long, and turns a
// corrupt file (bbolt panics on some) into ErrCorrupt naming it.
func openBolt(ctx context.Context, path string) (st *raftboltdb.BoltStore, err error) {
	if err := checkBoltSize(path); err != nil {
		return nil, err
	}
	err = recoverCorrupt(path, func() (err error) {
		st, err = raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: 5 * time.Second}})
		return err
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("raft store %s: locked by another process", path)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %s: %v; %s", ErrCorrupt, path, err, recovery)
	}
	if err == nil && ctx.Err() != nil {
		st.Close()
		return nil, ctx.Err()
	}
	return st, err
}

// checkBoltSize refuses a Bolt file shorter than its own meta page says it is (a truncated file,
// which bbolt would read past the end of).
func checkBoltSize(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil // missing or new
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("raft store %s: locked by another process", path)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v; %s", ErrCorrupt, path, err, recovery)
	}
	defer db.Close()
	var size int64
	db.View(func(tx *bbolt.Tx) error { size = tx.Size(); return nil })
	if size > fi.Size() {
		return fmt.Errorf("%w: %s is truncated (%d bytes, its meta page says %d); %s", ErrCorrupt, path, fi.Size(), size, recovery)
	}
	return nil
}

// recoverCorrupt runs f, turning a panic (bbolt panics on some corrupt pages) into ErrCorrupt.
func recoverCorrupt(path string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v; %s", ErrCorrupt, path, r, recovery)
		}
	}()
	return f()
}

// checkSnapshots verifies the newest Raft snapshot's checksum (raft would otherwise fall back
// to an older one, whose following log entries may have been compacted away).
func checkSnapshots(dir string, snaps *raft.FileSnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("%w: raft snapshot %s: %v; %s", ErrCorrupt, filepath.Join(dir, "snapshots", list[0].ID, "state.bin"), err, recovery)
	}
	return rc.Close()
}

func (n *raftNode) isLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

func (n *raftNode) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}

// inConfiguration reports whether this server is a member of the Raft configuration it knows.
func (s *Server) inConfiguration() bool {
	f := s.node.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == raft.ServerID(s.id) {
			return true
		}
	}
	return false
}

// close shuts Raft down, then closes the transport and the store, in that order.
func (n *raftNode) close() error {
	var err error
	if n.raft != nil {
		err = n.raft.Shutdown().Error()
	}
	if n.trans != nil {
		err = errors.Join(err, n.trans.Close())
	}
	if n.store != nil {
		err = errors.Join(err, n.store.Close())
	}
	return err
}

// apply replicates one command and returns the FSM's verdict on it.
func (s *Server) apply(t cmdType, header any, blob []byte) error {
	b, err := encodeCommand(t, header, blob)
	if err != nil {
		return err
	}
	f := s.node.raft.Apply(b, applyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return fmt.Errorf("raft apply: %w", err)
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// applyCatalogBatch commits cs as one Raft entry (one command alone as a cmdCatalog entry) and
// returns each command's result.
func (s *Server) applyCatalogBatch(cs []catalog.Command) ([]error, error) {
	if len(cs) == 1 {
		return []error{s.apply(cmdCatalog, cs[0], nil)}, nil
	}
	b, err := encodeCommand(cmdCatalogBatch, cs, nil)
	if err != nil {
		return nil, err
	}
	f := s.node.raft.Apply(b, applyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	switch r := f.Response().(type) {
	case catalogBatchResult:
		return r, nil
	case error:
		return nil, r
	}
	return nil, fmt.Errorf("%w: no result for a catalog batch", ErrBadCommand)
}

// watchLeadership runs the leader's duties while this server leads, and stops them, waiting for
// them to end, as soon as it does not.
func (s *Server) watchLeadership(ctx context.Context) {
	var stopLead func()
	defer func() {
		if stopLead != nil {
			stopLead()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-s.node.notify:
			if stopLead != nil {
				stopLead()
				stopLead = nil
			}
			s.metrics.leaderChanges.Inc()
			if !leader {
				s.log.Info("lost leadership")
				continue
			}
			s.log.Info("gained leadership")
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); s.lead(lctx) }()
			stopLead = func() { cancel(); <-done }
		}
	}
}

// lead runs the leader's duties: catch up with the log, register this server's HTTP address,
// then reconcile Git until ctx ends.
func (s *Server) lead(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		err := s.node.raft.Barrier(applyTimeout).Error()
		if err == nil {
			break
		}
		s.log.Warn("raft barrier", "err", err)
		if !sleepCtx(ctx, backoff(attempt)) {
			return
		}
	}
	if s.fsm.state().clusterID == "" {
		// The cluster's first leader (or the first after an upgrade) records its identity.
		id := s.cluster.get()
		if id == "" {
			id = newClusterID()
		}
		if err := s.apply(cmdCluster, clusterCmd{ID: id}, nil); err != nil {
			s.log.Warn("record the cluster id", "err", err)
		}
	}
	if m, ok := s.fsm.state().servers[s.id]; !ok || m.HTTP != s.httpAdv {
		if err := s.apply(cmdServer, serverCmd{ID: s.id, HTTP: s.httpAdv}, nil); err != nil {
			s.log.Warn("register http address", "err", err)
		}
	}
	caDone := make(chan struct{})
	go func() { defer close(caDone); s.ca.Lead(ctx, s.trustDomain, time.Second) }()
	defer func() { <-caDone }()
	catDone := make(chan struct{})
	go func() { defer close(catDone); s.cat.Lead(ctx) }()
	defer func() { <-catDone }()
	s.reconcileLoop(ctx)
}

// addServer adds (or re-adds with a new address) a voter and records its HTTP address.
func (s *Server) addServer(id, raftAddr, httpAddr string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	f := s.node.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == raft.ServerID(id) && srv.Address == raft.ServerAddress(raftAddr) {
			goto registered
		}
		if srv.ID == raft.ServerID(id) || srv.Address == raft.ServerAddress(raftAddr) {
			if err := s.node.raft.RemoveServer(srv.ID, 0, applyTimeout).Error(); err != nil {
				return fmt.Errorf("remove stale server %s: %w", srv.ID, err)
			}
		}
	}
	// Over TLS, a voter must first show a server certificate of the cluster's CA on its Raft port.
	if err := s.node.probePeer(raftAddr); err != nil {
		return fmt.Errorf("%w: %v", ErrPeerRefused, err)
	}
	if err := s.node.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, applyTimeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
registered:
	return s.apply(cmdServer, serverCmd{ID: id, HTTP: httpAddr}, nil)
}

// removeServer removes a server from the cluster and forgets its HTTP address. A server that is
// not in the configuration is ErrUnknownServer, naming the ones that are.
func (s *Server) removeServer(id string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	var ids []string
	for _, srv := range s.servers() {
		if srv.ID == id {
			ids = nil
			break
		}
		ids = append(ids, srv.ID)
	}
	if ids != nil {
		return fmt.Errorf("%w: %q (the servers are %s)", ErrUnknownServer, id, strings.Join(ids, ", "))
	}
	if err := s.apply(cmdRemoveServer, serverCmd{ID: id}, nil); err != nil {
		return err
	}
	if err := s.node.raft.RemoveServer(raft.ServerID(id), 0, applyTimeout).Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	return nil
}

// join asks the cluster at cfg.Join to add this server, following redirects to the leader and
// retrying while the cluster has no leader, until ctx ends or a minute has passed.
func (s *Server) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := s.peerClient(s.cfg.Join)
	req := JoinRequest{ID: s.id, RaftAddress: string(s.node.addr), HTTPAddress: s.httpAdv}
	for attempt := 0; ; attempt++ {
		resp, err := c.join(ctx, req)
		if err == nil {
			// Publish nothing older than the cluster's state at the join: the log before it
			// holds the snapshots it has since replaced.
			s.pub.catchUp.Store(resp.Index)
			s.cluster.adopt(resp.ClusterID)
			s.fsm.poke() // the publisher looks again
			s.log.Info("joined the cluster", "via", s.cfg.Join, "catch_up_index", resp.Index)
			return nil
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrPeerRefused) || isTLSVerifyError(err) {
			return fmt.Errorf("join %s: %w", c.Addr, err)
		}
		s.log.Warn("join failed, retrying", "via", s.cfg.Join, "err", err)
		if !sleepCtx(ctx, backoff(attempt)) {
			return fmt.Errorf("join %s: %w", s.cfg.Join, err)
		}
	}
}

// backoff returns the wait before retry attempt (0-based): 100ms doubling to 30s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < attempt && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

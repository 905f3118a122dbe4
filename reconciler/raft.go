package reconciler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
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
}

func openRaft(s *Server) (n *raftNode, err error) {
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
	n = &raftNode{notify: make(chan bool, 16)}
	cfg.NotifyCh = n.notify

	defer func() {
		if err != nil {
			n.close()
		}
	}()
	var adv net.Addr
	if s.cfg.RaftAdvertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", s.cfg.RaftAdvertise); err != nil {
			return nil, fmt.Errorf("raft advertise address: %w", err)
		}
	}
	hl := newHCLog(s.log, "raft-net")
	if n.trans, n.stream, err = newTransport(s, adv, hl); err != nil {
		// An unspecified listening address (0.0.0.0) needs an advertise address.
		return nil, fmt.Errorf("raft transport on %s: %w", s.cfg.RaftAddr, err)
	}
	n.addr = n.trans.LocalAddr()
	if n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(s.cfg.DataDir, "raft.db")}); err != nil {
		return nil, fmt.Errorf("raft store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, 2, newHCLog(s.log, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raft snapshot store: %w", err)
	}
	logs, err := raft.NewLogCache(64, n.store)
	if err != nil {
		return nil, err
	}
	if n.existing, err = raft.HasExistingState(logs, n.store, snaps); err != nil {
		return nil, fmt.Errorf("raft state: %w", err)
	}
	if !n.existing && s.cfg.Join == "" {
		boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: cfg.LocalID, Address: n.addr}}}
		if err := raft.BootstrapCluster(cfg, logs, n.store, snaps, n.trans, boot); err != nil {
			return nil, fmt.Errorf("raft bootstrap: %w", err)
		}
		s.log.Info("bootstrapped a one-server cluster")
	}
	if n.raft, err = raft.NewRaft(cfg, s.fsm, logs, n.store, snaps, n.trans); err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	return n, nil
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
	if m, ok := s.fsm.state().servers[s.id]; !ok || m.HTTP != s.httpAdv {
		if err := s.apply(cmdServer, serverCmd{ID: s.id, HTTP: s.httpAdv}, nil); err != nil {
			s.log.Warn("register http address", "err", err)
		}
	}
	caDone := make(chan struct{})
	go func() { defer close(caDone); s.ca.Lead(ctx, s.trustDomain, time.Second) }()
	defer func() { <-caDone }()
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
		err := c.Join(ctx, req)
		if err == nil {
			s.log.Info("joined the cluster", "via", s.cfg.Join)
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

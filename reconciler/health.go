package reconciler

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Suspender is implemented by a Publisher that can stop serving (the xDS server): Suspend ends
// its streams and refuses new ones until Resume, so that proxies reconnect to another server.
type Suspender interface {
	Suspend(reason string)
	Resume()
}

// health tracks what makes this server stop serving xDS: removal from the cluster, or finding
// that a cluster it does not belong to counts it as a member.
type health struct {
	mu        sync.Mutex
	wasMember bool   // this process saw itself in the Raft configuration
	reason    string // why this server serves nothing; "" while it serves

	// What the other servers say, asked while this one knows no leader (a removed server may
	// never receive the configuration that removes it, and then campaigns forever).
	lastAsked    time.Time
	peersRemoved bool

	diverged string // set once this server's log would lose what its state machine applied
}

// diverged records that this server's log diverged from what its state machine applied: it
// serves nothing until it is wiped and rejoined.
func (s *Server) diverged(err error) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	if s.health.diverged == "" {
		s.health.diverged = err.Error()
	}
}

// conflictWindow is how long a refused connection from another cluster counts.
const conflictWindow = 30 * time.Second

// watchHealth checks, until ctx ends, whether this server may serve, and suspends or resumes the
// publisher when that changes.
func (s *Server) watchHealth(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s.checkHealth(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkHealth(ctx context.Context) {
	reason := s.unhealthyReason(ctx)
	s.health.mu.Lock()
	prev := s.health.reason
	s.health.reason = reason
	s.health.mu.Unlock()
	if reason == prev {
		return
	}
	sus, _ := s.cfg.Publisher.(Suspender)
	if reason != "" {
		s.log.Error("this server stops serving xDS: " + reason)
		if sus != nil {
			sus.Suspend(reason)
		}
		return
	}
	s.log.Info("this server serves xDS again")
	if sus != nil {
		sus.Resume()
	}
}

// unhealthyReason says why this server must not serve, or "".
func (s *Server) unhealthyReason(ctx context.Context) string {
	s.health.mu.Lock()
	div := s.health.diverged
	s.health.mu.Unlock()
	if div != "" {
		return div
	}
	if fid := s.fsm.state().clusterID; fid != "" && !s.cluster.adopt(fid) {
		return fmt.Sprintf("%v: the replicated state belongs to cluster %s, this server's data directory to cluster %s; %s",
			ErrClusterMismatch, fid, s.cluster.get(), recovery)
	}
	f := s.node.raft.GetConfiguration()
	if f.Error() != nil {
		return ""
	}
	servers := f.Configuration().Servers
	member := false
	for _, srv := range servers {
		member = member || srv.ID == raft.ServerID(s.id)
	}
	s.health.mu.Lock()
	s.health.wasMember = s.health.wasMember || member
	was := s.health.wasMember
	s.health.mu.Unlock()
	if len(servers) > 0 && !member && (was || s.node.existing) || s.peersSayRemoved(ctx) {
		return fmt.Sprintf("%v: this server is not in the cluster's Raft configuration (mesh servers remove); "+
			"to serve again, move its data directory away and start it with --join HTTP_ADDR of a server of the cluster", ErrRemoved)
	}
	if c := s.cluster.conflict.Load(); c != nil && c.Incoming && time.Since(c.Time) < conflictWindow && member && len(servers) == 1 {
		return fmt.Sprintf("%v: server %s of cluster %s counts this server as a member, but this server runs a one-server cluster %s of its own "+
			"(its data directory was probably lost and it bootstrapped anew); %s", ErrClusterMismatch, c.Peer, c.PeerCluster, s.cluster.get(), recovery)
	}
	return ""
}

// notServing returns why this server serves nothing, or "".
func (s *Server) notServing() string {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.reason
}

// peerAskInterval is how often a server without a leader asks the others about itself.
const peerAskInterval = 2 * time.Second

// peersSayRemoved reports whether, while this server knows no leader, a server of its cluster
// that does know one has a Raft configuration without this server.
func (s *Server) peersSayRemoved(ctx context.Context) bool {
	if _, lid := s.node.raft.LeaderWithID(); lid != "" {
		s.health.mu.Lock()
		s.health.peersRemoved = false
		s.health.mu.Unlock()
		return false
	}
	s.health.mu.Lock()
	if time.Since(s.health.lastAsked) < peerAskInterval {
		defer s.health.mu.Unlock()
		return s.health.peersRemoved
	}
	s.health.lastAsked = time.Now()
	s.health.mu.Unlock()

	removed := false
	asked := 0
	for id, m := range s.fsm.state().servers {
		if id == s.id || m.HTTP == "" || asked == 5 {
			continue
		}
		asked++
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := s.peerClient(m.HTTP).Status(cctx)
		cancel()
		if err != nil || st.Leader == "" || st.ClusterID != s.cluster.get() {
			continue
		}
		in := false
		for _, srv := range st.Servers {
			in = in || srv.ID == s.id
		}
		if !in {
			removed = true
			break
		}
	}
	s.health.mu.Lock()
	s.health.peersRemoved = removed
	s.health.mu.Unlock()
	return removed
}

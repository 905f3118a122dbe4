package reconciler

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// leaderAfterStart waits (polling every millisecond, at most 10 s) until s leads and returns how
// long after its Raft started that was.
func leaderAfterStart(t *testing.T, s *Server) time.Duration {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(s.node.started)
}

// checkTimeouts fails unless s's Raft runs with the heartbeat and election timeouts want.
func checkTimeouts(t *testing.T, s *Server, want RaftTiming) {
	t.Helper()
	rc := s.node.raft.ReloadableConfig()
	if rc.HeartbeatTimeout != want.HeartbeatTimeout || rc.ElectionTimeout != want.ElectionTimeout {
		t.Fatalf("%s: heartbeat timeout %s, election timeout %s; want %s and %s", s.NodeID(),
			rc.HeartbeatTimeout, rc.ElectionTimeout, want.HeartbeatTimeout, want.ElectionTimeout)
	}
}

// A one-server cluster, new or restarted, elects itself at once: with Raft's default timeouts
// (a heartbeat timeout of 1 s, randomised up to 2 s) it leads well within half a second of
// starting Raft, and keeps the default timeouts.
func TestOneServerElectsAtOnce(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.Raft = RaftTiming{} // hashicorp/raft's defaults
	def := raft.DefaultConfig()
	defaults := RaftTiming{HeartbeatTimeout: def.HeartbeatTimeout, ElectionTimeout: def.ElectionTimeout}
	const bound = 500 * time.Millisecond
	for _, run := range []string{"new", "restarted"} {
		s := startServer(t, cfg)
		if d := leaderAfterStart(t, s); d >= bound {
			t.Fatalf("%s one-server cluster: leader %s after Raft started, want < %s", run, d, bound)
		} else {
			t.Logf("%s one-server cluster: leader %s after Raft started", run, d)
		}
		checkTimeouts(t, s, defaults)
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// Once a second server joins, every server runs with the configured timeouts: the quick first
// election changes nothing a cluster of several voters relies on.
func TestJoinKeepsRaftTimeouts(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "initial", false)
	cfg1 := testConfig(t, repo.bare, nodeOpts{})
	s1 := startServer(t, cfg1)
	if d := leaderAfterStart(t, s1); d >= testTiming.HeartbeatTimeout {
		t.Fatalf("leader %s after Raft started, want < the heartbeat timeout %s", d, testTiming.HeartbeatTimeout)
	}
	s2 := startServer(t, testConfig(t, repo.bare, nodeOpts{join: s1.HTTPAddr()}))
	waitFor(t, 10*time.Second, "two voters", func() bool { return s1.node.voters() == 2 && s2.node.voters() == 2 })
	for _, s := range []*Server{s1, s2} {
		checkTimeouts(t, s, testTiming)
	}
	// Replication goes on under the configured timeouts: the second server serves the snapshot.
	v0 := versionOf(t, meshFiles(0))
	if !waitServed(s2, v0, 10*time.Second) {
		t.Fatalf("the joined server serves %q, want %s", servedVersion(s2), v0)
	}
	if !s1.IsLeader() {
		t.Fatal("the first server lost its leadership after the join")
	}
}

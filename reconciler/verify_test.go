package reconciler

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/xds"
)

// snapshotRecorder hands every snapshot and trust bundle on to the xDS server, and keeps the
// snapshots.
type snapshotRecorder struct {
	x   *xds.Server
	mu  sync.Mutex
	got []*mesh.Snapshot
}

func (r *snapshotRecorder) SetSnapshot(s *mesh.Snapshot) error {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
	return r.x.SetSnapshot(s)
}

func (r *snapshotRecorder) SetTrustBundle(pem []byte) error { return r.x.SetTrustBundle(pem) }

func (r *snapshotRecorder) published() []*mesh.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*mesh.Snapshot(nil), r.got...)
}

// A follower whose FSM builds a wrong snapshot from a delta (as a bug in mesh.Diff or Apply
// would) never hands it to xDS: it keeps serving the last good one, says so in its status and
// metrics, fetches the version whole from the leader, and then serves the leader's content,
// and applies the next delta to the repaired head.
func TestFollowerRefusesSnapshotThatDoesNotHashToItsVersion(t *testing.T) {
	var target atomic.Pointer[fsm]
	var corrupted atomic.Int32
	testCorruptDelta = func(f *fsm, d *mesh.Delta) {
		if f != target.Load() || d.Services == nil || !corrupted.CompareAndSwap(0, 1) {
			return
		}
		for k, svc := range d.Services.Set { // one service's port, off by one
			c := *svc
			c.Port++
			d.Services.Set[k] = &c
			return
		}
	}
	t.Cleanup(func() { testCorruptDelta = nil }) // after the servers close (cleanups run last first)

	repo := newTestRepo(t)
	f0, f1, f2 := meshFiles(0), meshFiles(1), meshFiles(2)
	v0, v1, v2 := versionOf(t, f0), versionOf(t, f1), versionOf(t, f2)
	repo.commit(f0, "v0", false)
	var nodes [3]*Server
	var xdss [3]*xds.Server
	var xdsAddrs [3]string
	var recs [3]*snapshotRecorder
	for i := range nodes {
		var o nodeOpts
		if i > 0 {
			o.join = nodes[0].HTTPAddr()
		}
		cfg := testConfig(t, repo.bare, o)
		xdss[i], xdsAddrs[i] = attachXDS(t, &cfg)
		recs[i] = &snapshotRecorder{x: xdss[i]}
		cfg.Publisher = recs[i]
		nodes[i] = startServer(t, cfg)
	}
	for _, n := range nodes {
		if !waitServed(n, v0, 10*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v0)
		}
	}
	li := leaderIndex(t, nodes[:])
	fi := (li + 1) % 3
	leader, follower := nodes[li], nodes[fi]
	dialXDS(t, xdsAddrs[fi], "web-f")
	waitFor(t, 20*time.Second, "the client on the follower to ACK v0", func() bool { return acked(xdss[fi], "web-f", v0) })

	target.Store(follower.fsm)
	repo.commit(f1, "v1", false)
	leader.Kick()
	if !waitServed(follower, v1, 10*time.Second) {
		t.Fatalf("follower serves %q, want %s (repaired); status: %+v", servedVersion(follower), v1, follower.Status())
	}
	if corrupted.Load() != 1 {
		t.Fatal("the test hook corrupted no delta")
	}
	want, err := leader.Served().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := follower.Served().Canonical(); !bytes.Equal(got, want) {
		t.Errorf("follower serves content other than the leader's under %s", v1)
	}
	if st := follower.fsm.state(); st.head != st.served {
		t.Error("the follower's head is not the repaired snapshot")
	}
	st := follower.Status()
	if !strings.Contains(st.VerifyError, ErrSnapshotMismatch.Error()) || !strings.Contains(st.VerifyError, v1) ||
		!strings.Contains(st.VerifyError, "replaced by the copy of "+leader.HTTPAddr()) {
		t.Errorf("status verifyError = %q, want the mismatch of %s and its repair from the leader", st.VerifyError, v1)
	}
	if n := testutil.ToFloat64(follower.metrics.verifyFailures); n != 1 {
		t.Errorf("mesh_snapshot_verify_failures_total = %v, want 1", n)
	}
	if n := testutil.ToFloat64(follower.metrics.snapshotRepairs); n != 1 {
		t.Errorf("mesh_snapshot_repairs_total = %v, want 1", n)
	}
	waitFor(t, 10*time.Second, "the client on the follower to ACK v1", func() bool { return acked(xdss[fi], "web-f", v1) })

	// The next delta applies to the repaired head: it verifies, and the error is cleared.
	repo.commit(f2, "v2", false)
	leader.Kick()
	for _, n := range nodes {
		if !waitServed(n, v2, 10*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v2)
		}
	}
	waitFor(t, 5*time.Second, "the verify error to clear", func() bool { return follower.Status().VerifyError == "" })
	if n := testutil.ToFloat64(follower.metrics.verifyFailures); n != 1 {
		t.Errorf("after v2: mesh_snapshot_verify_failures_total = %v, want 1", n)
	}
	waitFor(t, 10*time.Second, "the client on the follower to ACK v2", func() bool { return acked(xdss[fi], "web-f", v2) })

	// Nothing any server handed to xDS differs from the content its version names.
	for i, r := range recs {
		for _, s := range r.published() {
			if v, err := s.ComputeVersion(); err != nil || v != s.Version {
				t.Errorf("%s published content hashing to %s (%v) as %s", nodes[i].NodeID(), v, err, s.Version)
			}
		}
	}
}

// The served-snapshot cache is written off the publish path: while its write is stuck (a slow
// disk, a 10k-service snapshot), new commits are served; the snapshots published meanwhile are
// coalesced, and a clean close leaves the newest served one on disk for the next start.
func TestServedCacheWriteDoesNotHoldPublishing(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1, f2 := meshFiles(0), meshFiles(1), meshFiles(2)
	v0, v1, v2 := versionOf(t, f0), versionOf(t, f1), versionOf(t, f2)
	repo.commit(f0, "v0", false)
	release := make(chan struct{})
	var writes atomic.Int32
	o := nodeOpts{dir: t.TempDir()}
	cfg := testConfig(t, repo.bare, o)
	cfg.storageFault = func(op string) error {
		if op == "served-cache" {
			writes.Add(1)
			select { // bounded: the test releases it long before
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		return nil
	}
	s := startServer(t, cfg)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatal("v0 not served")
	}
	waitFor(t, 5*time.Second, "the cache write of v0 to start", func() bool { return writes.Load() == 1 })
	for _, c := range []struct {
		files map[string]string
		v     string
	}{{f1, v1}, {f2, v2}} {
		repo.commit(c.files, c.v, false)
		s.Kick()
		if !waitServed(s, c.v, 5*time.Second) {
			t.Fatalf("%s not served while the cache write is stuck", c.v)
		}
	}
	close(release)
	s.Close(t.Context())
	if n := writes.Load(); n > 3 {
		t.Errorf("%d cache writes for 3 snapshots", n)
	}
	b, err := os.ReadFile(filepath.Join(o.dir, "served.gob.gz"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := readCache(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Snapshot.Version != v2 {
		t.Errorf("cache holds %s after a clean close, want the last served %s", c.Snapshot.Version, v2)
	}
}

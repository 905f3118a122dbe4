package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/hashicorp/raft"

	mesh "github.com/meshgit/mesh"
)

// recorder is a Publisher that keeps every version it was given.
type recorder struct {
	mu       sync.Mutex
	versions []string
}

func (r *recorder) SetSnapshot(s *mesh.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.versions = append(r.versions, s.Version)
	return nil
}

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.versions)
}

// startCluster starts n servers on loopback (the first bootstraps, the others join it), each
// with a real xDS server, and returns their options for restarts.
func startCluster(t *testing.T, repo *testRepo, n int) ([]*Server, []nodeOpts, []string) {
	t.Helper()
	nodes := make([]*Server, n)
	opts := make([]nodeOpts, n)
	xdsAddrs := make([]string, n)
	for i := range nodes {
		opts[i].dir = t.TempDir()
		if i > 0 {
			opts[i].join = nodes[0].HTTPAddr()
		}
		cfg := testConfig(t, repo.bare, opts[i])
		_, xdsAddrs[i] = attachXDS(t, &cfg)
		nodes[i] = startServer(t, cfg)
		opts[i].httpAddr, opts[i].raftAddr = nodes[i].HTTPAddr(), nodes[i].RaftAddr()
	}
	return nodes, opts, xdsAddrs
}

// A server joining with an empty data directory publishes only the cluster's current snapshot,
// never the older ones still in the leader's log (their intentions may have been revoked).
func TestJoinPublishesOnlyCurrent(t *testing.T) {
	repo := newTestRepo(t)
	var versions []string
	for i := range 4 {
		versions = append(versions, versionOf(t, meshFiles(i)))
	}
	repo.commit(meshFiles(0), "v0", false)
	// The leader applies the pushes one by one, so its log holds every version.
	leader := startServer(t, testConfig(t, repo.bare, nodeOpts{}))
	for i := range 4 {
		if i > 0 {
			repo.commit(meshFiles(i), fmt.Sprintf("v%d", i), false)
		}
		if !waitServed(leader, versions[i], 10*time.Second) {
			t.Fatalf("leader serves %q, want %s", servedVersion(leader), versions[i])
		}
	}
	head := versions[3]
	if n := len(leader.Snapshots()); n < 4 {
		t.Fatalf("leader history has %d entries, want at least 4", n)
	}

	rec := &recorder{}
	cfg := testConfig(t, repo.bare, nodeOpts{join: leader.HTTPAddr()})
	cfg.Publisher = rec
	joiner := startServer(t, cfg)
	if !waitServed(joiner, head, 10*time.Second) {
		t.Fatalf("joiner serves %q, want %s", servedVersion(joiner), head)
	}
	time.Sleep(200 * time.Millisecond) // anything published late would show now
	if got := rec.published(); !slices.Equal(got, []string{head}) {
		t.Errorf("the joining server published %v, want only the current %s (history %v)", got, head, versions)
	}
}

// A follower restarted after missing several pushes serves its last snapshot from disk, then the
// cluster's current one, and none of those in between that its log replays.
func TestRestartedFollowerPublishesOnlyCurrent(t *testing.T) {
	repo := newTestRepo(t)
	var versions []string
	for i := range 5 {
		versions = append(versions, versionOf(t, meshFiles(i)))
	}
	repo.commit(meshFiles(0), "v0", false)
	nodes, opts, _ := startCluster(t, repo, 3)
	for _, n := range nodes {
		if !waitServed(n, versions[0], 10*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), versions[0])
		}
	}
	li := leaderIndex(t, nodes)
	fi := (li + 1) % 3
	nodes[fi].Close(t.Context())
	for i := 1; i < 5; i++ {
		repo.commit(meshFiles(i), fmt.Sprintf("v%d", i), false)
		if !waitServed(nodes[li], versions[i], 10*time.Second) {
			t.Fatalf("leader serves %q, want %s", servedVersion(nodes[li]), versions[i])
		}
	}
	rec := &recorder{}
	o := opts[fi]
	o.join = ""
	cfg := testConfig(t, repo.bare, o)
	cfg.Publisher = rec
	nodes[fi] = startServer(t, cfg)
	if !waitServed(nodes[fi], versions[4], 15*time.Second) {
		t.Fatalf("restarted follower serves %q, want %s", servedVersion(nodes[fi]), versions[4])
	}
	time.Sleep(200 * time.Millisecond)
	if got := rec.published(); !slices.Equal(got, []string{versions[0], versions[4]}) {
		t.Errorf("the restarted follower published %v, want its last %s then the current %s", got, versions[0], versions[4])
	}
}

// A server removed from the cluster says so in its status and stops serving xDS: its streams
// end and new ones are refused with Unavailable, so proxies go to another server.
func TestRemovedServerStopsServing(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	v0 := versionOf(t, f0)
	repo.commit(f0, "v0", false)
	nodes, _, xdsAddrs := startCluster(t, repo, 3)
	for _, n := range nodes {
		if !waitServed(n, v0, 10*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v0)
		}
	}
	li := leaderIndex(t, nodes)
	vi := (li + 1) % 3
	victim := nodes[vi]
	// A proxy on the victim gets its configuration first.
	if err := adsFirstResponse(t, xdsAddrs[vi], "web-removed"); err != nil {
		t.Fatalf("xDS on %s before removal: %v", victim.NodeID(), err)
	}
	if err := (&Client{Addr: nodes[li].HTTPAddr(), Token: testToken}).RemoveServer(t.Context(), victim.NodeID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the removed server to know it", func() bool {
		return strings.Contains(victim.Status().NotServing, "removed")
	})
	err := adsFirstResponse(t, xdsAddrs[vi], "web-after")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a new xDS stream on the removed server: %v, want Unavailable", err)
	}
	// The others serve on.
	other := nodes[(li+2)%3]
	if got := other.Status().NotServing; got != "" {
		t.Errorf("%s does not serve: %s", other.NodeID(), got)
	}
	if err := adsFirstResponse(t, xdsAddrs[(li+2)%3], "web-other"); err != nil {
		t.Errorf("xDS on a remaining server: %v", err)
	}
}

// adsFirstResponse opens an ADS stream to addr as a proxyless client of service web and
// returns the error of its first response (nil when the server answered with configuration).
func adsFirstResponse(t *testing.T, addr, nodeID string) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	err = st.Send(&discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: nodeID, Cluster: "web"},
		TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", ResourceNames: []string{"api"},
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = st.Recv() // after a failed Send too: Recv has the stream's status
	return err
}

// A server whose data directory is lost, restarted without --join, bootstraps a new cluster;
// its old cluster must not absorb it (its state machine would keep its own CA and history). The
// cluster ids differ, every Raft connection between the two is refused, the old cluster keeps
// its state, and the lost server says why it serves nothing. Wiped again and started with
// --join, it becomes a member with the cluster's CA and history.
func TestWipedServerIsNotAbsorbed(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1 := meshFiles(0), meshFiles(1)
	v0, v1 := versionOf(t, f0), versionOf(t, f1)
	repo.commit(f0, "v0", false)
	nodes, opts, _ := startCluster(t, repo, 3)
	for _, n := range nodes {
		if !waitServed(n, v0, 10*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v0)
		}
	}
	waitFor(t, 10*time.Second, "the CA on every server", func() bool {
		for _, n := range nodes {
			if _, err := n.CA().Bundle(); err != nil {
				return false
			}
		}
		return true
	})
	cluster := nodes[0].Status().ClusterID
	roots := bundle(t, nodes[1])
	for _, n := range nodes {
		n.Close(t.Context())
	}

	// The first server's data directory is lost; it restarts first, with its original
	// command, then the others.
	if err := os.RemoveAll(opts[0].dir); err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		o := opts[i]
		o.join, o.httpAddr = "", "127.0.0.1:0"
		cfg := testConfig(t, repo.bare, o)
		attachXDS(t, &cfg)
		nodes[i] = startServer(t, cfg)
	}
	wiped := nodes[0]
	waitFor(t, 15*time.Second, "the wiped server to notice the other cluster", func() bool {
		return strings.Contains(wiped.Status().NotServing, "another cluster")
	})
	if wiped.Status().ClusterID == cluster {
		t.Errorf("the wiped server kept cluster id %s", cluster)
	}
	// Nor does it sign certificates with its own CA.
	resp, err := http.Post("http://"+wiped.HTTPAddr()+"/v1/ca/sign", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the wiped server answers a signing request with %s, want 503", resp.Status)
	}
	survivors := nodes[1:]
	leaderIndex(t, survivors)
	repo.commit(f1, "v1", false)
	for _, n := range survivors {
		if !waitServed(n, v1, 15*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v1)
		}
		if got := n.Status(); got.ClusterID != cluster || got.NotServing != "" {
			t.Errorf("%s: cluster %s, not serving %q; want cluster %s, serving", n.NodeID(), got.ClusterID, got.NotServing, cluster)
		}
		if b := bundle(t, n); b != roots {
			t.Errorf("%s: CA roots changed", n.NodeID())
		}
	}
	time.Sleep(time.Second) // give an absorption the time it would take
	if wiped.Status().ClusterID == cluster || wiped.Status().NotServing == "" {
		t.Errorf("the wiped server was absorbed: %+v", wiped.Status())
	}

	// Recovery: wipe and --join.
	wiped.Close(t.Context())
	if err := os.RemoveAll(opts[0].dir); err != nil {
		t.Fatal(err)
	}
	o := opts[0]
	o.join, o.httpAddr = survivors[0].HTTPAddr(), "127.0.0.1:0"
	nodes[0] = startServer(t, testConfig(t, repo.bare, o))
	if !waitServed(nodes[0], v1, 15*time.Second) {
		t.Fatalf("the rejoined server serves %q, want %s", servedVersion(nodes[0]), v1)
	}
	waitFor(t, 10*time.Second, "the rejoined server to have the cluster's CA", func() bool {
		b, err := nodes[0].CA().Bundle()
		return err == nil && b.BundlePEM == roots
	})
	if got := nodes[0].Status(); got.ClusterID != cluster || got.NotServing != "" {
		t.Errorf("rejoined: cluster %s, not serving %q; want %s", got.ClusterID, got.NotServing, cluster)
	}
	if !slices.Equal(versionsOf(nodes[0].Snapshots()), versionsOf(survivors[0].Snapshots())) {
		t.Errorf("history %v, the cluster's %v", versionsOf(nodes[0].Snapshots()), versionsOf(survivors[0].Snapshots()))
	}
}

func bundle(t *testing.T, s *Server) string {
	t.Helper()
	b, err := s.CA().Bundle()
	if err != nil {
		t.Fatalf("%s: %v", s.NodeID(), err)
	}
	return b.BundlePEM
}

func versionsOf(infos []SnapshotInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Version+"@"+i.Commit)
	}
	return out
}

// A failing disk (here: writes to the Raft log fail with ENOSPC) shows in the status and the
// metrics; once writes succeed again the error clears and pushes are served.
func TestStorageErrorsReported(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1, f2 := meshFiles(0), meshFiles(1), meshFiles(2)
	repo.commit(f0, "v0", false)
	var full atomic.Bool
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.storageFault = func(op string) error {
		if full.Load() && op == "raft-log" {
			return syscall.ENOSPC
		}
		return nil
	}
	s := startServer(t, cfg)
	if !waitServed(s, versionOf(t, f0), 10*time.Second) {
		t.Fatal("v0 not served")
	}
	full.Store(true)
	repo.commit(f1, "v1", false)
	waitFor(t, 10*time.Second, "the storage error in the status", func() bool {
		for _, e := range s.Status().StorageErrors {
			if e.Op == "raft-log" && strings.Contains(e.Error, "no space left on device") {
				return true
			}
		}
		return false
	})
	m := get(t, "http://"+s.HTTPAddr()+"/metrics")
	for _, want := range []string{`mesh_storage_errors_total{op="raft-log"}`, `mesh_storage_failing{op="raft-log"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := servedVersion(s); got != versionOf(t, f0) {
		t.Errorf("serves %s while the log cannot be written, want %s", got, versionOf(t, f0))
	}

	full.Store(false)
	repo.commit(f2, "v2", false)
	if !waitServed(s, versionOf(t, f2), 15*time.Second) {
		t.Fatalf("serves %q after the disk recovered, want v2", servedVersion(s))
	}
	if errs := s.Status().StorageErrors; len(errs) != 0 {
		t.Errorf("storage errors after recovery: %+v", errs)
	}
}

// The log guard lets Raft compact applied entries from the start of the log and drop entries
// not yet applied from its end, but refuses to drop applied entries from its end (what an
// absorbed server's log would do under a state machine that already applied them).
func TestGuardLogStore(t *testing.T) {
	store := raft.NewInmemStore()
	for i := uint64(1); i <= 10; i++ {
		if err := store.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand}); err != nil {
			t.Fatal(err)
		}
	}
	var got error
	g := guardLogStore{LogStore: store, applied: func() uint64 { return 8 }, diverged: func(err error) { got = err }}
	if err := g.DeleteRange(1, 3); err != nil || got != nil {
		t.Errorf("compaction of applied entries refused: %v", err)
	}
	if err := g.DeleteRange(9, 10); err != nil || got != nil {
		t.Errorf("dropping entries not yet applied refused: %v", err)
	}
	if err := g.DeleteRange(6, 8); !errors.Is(err, ErrClusterMismatch) || got == nil {
		t.Errorf("dropping applied entries from the end: %v (reported %v), want ErrClusterMismatch", err, got)
	}
	if last, _ := store.LastIndex(); last != 8 {
		t.Errorf("last index %d after the refusal, want 8", last)
	}
}

package reconciler

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A one-server cluster on a real bare repository: a push is served within 2s, a broken commit
// keeps the last good version served and shows positioned errors, a fixed commit recovers.
func TestSingleNodeFollowsPushes(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	x, xdsAddr := attachXDS(t, &cfg)
	s := startServer(t, cfg)
	c := &Client{Addr: s.HTTPAddr()}
	ctx := context.Background()

	v0 := versionOf(t, f0)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatalf("initial version %s not served; serving %q", v0, servedVersion(s))
	}
	dialXDS(t, xdsAddr, "web-1")
	waitFor(t, 20*time.Second, "the gRPC xDS client to ACK v0", func() bool { return acked(x, "web-1", v0) })

	f1 := meshFiles(1)
	v1 := versionOf(t, f1)
	sha1 := repo.commit(f1, "change web port", false)
	start := time.Now()
	waitFor(t, 2*time.Second, "status to show the pushed version", func() bool {
		st, err := c.Status(ctx)
		return err == nil && st.Version == v1 && st.Commit == sha1
	})
	waitFor(t, 2*time.Second-time.Since(start), "the gRPC xDS client to ACK the pushed version", func() bool { return acked(x, "web-1", v1) })
	t.Logf("push served and ACKed after %v", time.Since(start))

	shaBad := repo.commit(merge(f1, brokenFile), "break it", false)
	var st *Status
	waitFor(t, 2*time.Second, "the broken commit to be recorded", func() bool {
		var err error
		st, err = c.Status(ctx)
		return err == nil && st.LastError != nil && st.LastError.Commit == shaBad
	})
	if st.Version != v1 || st.Commit != sha1 {
		t.Errorf("after a broken commit serving %s@%s, want %s@%s", st.Version, st.Commit, v1, sha1)
	}
	if len(st.LastError.Errors) == 0 {
		t.Fatal("lastError has no errors")
	}
	for _, e := range st.LastError.Errors {
		if e.Pos.File != "bad.cue" || e.Pos.Line != 3 || e.Msg == "" {
			t.Errorf("error %s: %s, want one at bad.cue:3", e.Pos, e.Msg)
		}
	}
	if got := servedVersion(s); got != v1 || !acked(x, "web-1", v1) {
		t.Errorf("after a broken commit the xDS server has %s, want %s ACKed", got, v1)
	}
	// The raw JSON carries positions as file:line:col.
	raw := get(t, "http://"+s.HTTPAddr()+"/v1/status")
	if !strings.Contains(raw, `"pos": "bad.cue:3:`) {
		t.Errorf("status JSON lacks a positioned error:\n%s", raw)
	}

	f2 := meshFiles(2)
	v2 := versionOf(t, f2)
	sha2 := repo.commit(f2, "fix it", false)
	waitFor(t, 2*time.Second, "the fixed commit to be served", func() bool {
		st, err := c.Status(ctx)
		return err == nil && st.Version == v2 && st.Commit == sha2 && st.LastError == nil
	})
	waitFor(t, 2*time.Second, "the gRPC xDS client to ACK the fixed version", func() bool { return acked(x, "web-1", v2) })
	if ps, err := c.Proxies(ctx); err != nil || len(ps) != 1 || ps[0].NodeID != "web-1" {
		t.Errorf("proxies = %+v, %v", ps, err)
	}

	snaps, err := c.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 || snaps[0].Version != v2 || !snaps[0].Served || snaps[2].Version != v0 {
		t.Errorf("snapshots = %+v, want v2, v1, v0", snaps)
	}
	metrics := get(t, "http://"+s.HTTPAddr()+"/metrics")
	for _, m := range []string{"mesh_compile_duration_seconds_count", "mesh_commit_to_apply_seconds_count", "mesh_last_success_timestamp_seconds", `mesh_raft_state{state="Leader"} 1`, `mesh_proxies{version="` + v2, `mesh_served_info{commit="` + sha2} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}

	// A force-push back to an older tree is followed and recorded as such.
	repo.git(repo.work, "reset", "-q", "--hard", sha1)
	sha3 := repo.commit(nil, "rewrite history", true)
	waitFor(t, 2*time.Second, "the force-pushed commit to be served", func() bool {
		st, err := c.Status(ctx)
		return err == nil && st.Commit == sha3 && st.Version == v1
	})
	snaps, _ = c.Snapshots(ctx)
	if !snaps[0].Forced || snaps[0].Commit != sha3 {
		t.Errorf("newest snapshot %+v, want the forced commit %s", snaps[0], sha3)
	}
}

// Pin serves an older version until unpinned; both need the token.
func TestPinUnpin(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1, f2 := meshFiles(0), meshFiles(1), meshFiles(2)
	v0, v1, v2 := versionOf(t, f0), versionOf(t, f1), versionOf(t, f2)
	repo.commit(f0, "v0", false)
	s := startServer(t, testConfig(t, repo.bare, nodeOpts{}))
	ctx := context.Background()
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatal("v0 not served")
	}
	repo.commit(f1, "v1", false)
	if !waitServed(s, v1, 5*time.Second) {
		t.Fatal("v1 not served")
	}

	for _, tok := range []string{"", "wrong-token", testToken + "x"} {
		c := &Client{Addr: s.HTTPAddr(), Token: tok}
		if err := c.Pin(ctx, v0); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("pin with token %q: %v, want unauthorized", tok, err)
		}
		if err := c.Unpin(ctx); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("unpin with token %q: %v, want unauthorized", tok, err)
		}
	}
	if servedVersion(s) != v1 || s.Status().Pin != "" {
		t.Fatal("an unauthorized pin changed something")
	}

	c := &Client{Addr: s.HTTPAddr(), Token: testToken}
	if err := c.Pin(ctx, "0123456789abcdef"); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("pin of an unknown version: %v, want ErrUnknownVersion", err)
	}
	if err := c.Pin(ctx, v0); err != nil {
		t.Fatal(err)
	}
	if !waitServed(s, v0, 5*time.Second) {
		t.Fatal("pinned v0 not served")
	}
	repo.commit(f2, "v2 while pinned", false)
	waitFor(t, 5*time.Second, "v2 to become the head while pinned", func() bool {
		st := s.Status()
		return st.Head != nil && st.Head.Version == v2
	})
	if st := s.Status(); st.Version != v0 || st.Pin != v0 {
		t.Errorf("while pinned: version %s pin %s, want %s", st.Version, st.Pin, v0)
	}
	if err := c.Unpin(ctx); err != nil {
		t.Fatal(err)
	}
	if !waitServed(s, v2, 5*time.Second) {
		t.Fatal("after unpin v2 not served")
	}
	if s.Status().Pin != "" {
		t.Error("pin still set after unpin")
	}
}

func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A Raft snapshot carries the whole FSM: a server restarted from it (without the served-snapshot
// cache) has the history, the pin and the last error back.
func TestRestartFromRaftSnapshot(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1 := meshFiles(0), meshFiles(1)
	v0, v1 := versionOf(t, f0), versionOf(t, f1)
	repo.commit(f0, "v0", false)
	o := nodeOpts{dir: t.TempDir()}
	s := startServer(t, testConfig(t, repo.bare, o))
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatal("v0 not served")
	}
	repo.commit(f1, "v1", false)
	if !waitServed(s, v1, 5*time.Second) {
		t.Fatal("v1 not served")
	}
	bad := repo.commit(merge(f1, brokenFile), "broken", false)
	waitFor(t, 5*time.Second, "the failure to be recorded", func() bool {
		e := s.Status().LastError
		return e != nil && e.Commit == bad
	})
	if err := (&Client{Addr: s.HTTPAddr(), Token: testToken}).Pin(t.Context(), v0); err != nil {
		t.Fatal(err)
	}
	if err := s.node.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	want := s.Status()
	o.httpAddr, o.raftAddr = s.HTTPAddr(), s.RaftAddr()
	s.Close(t.Context())

	if err := os.Remove(filepath.Join(o.dir, "served.gob.gz")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, repo.bare, o)
	s = startServer(t, cfg)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatalf("restored server serves %q, want the pinned %s", servedVersion(s), v0)
	}
	got := s.Status()
	if got.Pin != v0 || got.Head == nil || got.Head.Version != v1 || got.LastError == nil || got.LastError.Commit != bad ||
		len(got.LastError.Errors) != len(want.LastError.Errors) || len(s.Snapshots()) != 2 {
		t.Errorf("restored status %+v, want %+v", got, want)
	}
}

// TestOwnPolicyRejectsCommit: a commit that violates one of the mesh's own policies (its
// policies/ folder) is recorded with the violation's position and the last good version stays.
func TestOwnPolicyRejectsCommit(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	s := startServer(t, cfg)
	v0 := versionOf(t, f0)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatalf("initial version %s not served; serving %q", v0, servedVersion(s))
	}
	policy := map[string]string{"mesh/policies/ports.cue": `package policies

policy: "no-low-ports": {
	doc: "services listen on unprivileged ports"
	violations: [for name, s in input.services if s.port < 1024 {
		path:    s.path
		message: "service \(name) listens on privileged port \(s.port)"
	}]
}
`}
	low := merge(f0, policy, map[string]string{"mesh/low.cue": "package mesh\n\nservices: legacy: {protocol: \"tcp\", port: 80}\n"})
	sha := repo.commit(low, "a service on port 80", false)
	c := &Client{Addr: s.HTTPAddr()}
	var st *Status
	waitFor(t, 5*time.Second, "the violating commit to be recorded", func() bool {
		var err error
		st, err = c.Status(context.Background())
		return err == nil && st.LastError != nil && st.LastError.Commit == sha
	})
	if st.Version != v0 {
		t.Errorf("serving %s after a violating commit, want %s", st.Version, v0)
	}
	if len(st.LastError.Errors) != 1 || st.LastError.Errors[0].Pos.File != "low.cue" ||
		!strings.Contains(st.LastError.Errors[0].Msg, "policy no-low-ports: service legacy listens on privileged port 80") {
		t.Errorf("lastError = %+v, want the no-low-ports violation at low.cue", st.LastError.Errors)
	}
}

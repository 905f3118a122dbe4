package reconciler

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/xds"
)

// recordingPublisher passes every call on to a real xDS server and records their order.
type recordingPublisher struct {
	x     *xds.Server
	mu    sync.Mutex
	calls []string // "bundle" or "snapshot <version>"
}

func (r *recordingPublisher) SetSnapshot(s *mesh.Snapshot) error {
	r.mu.Lock()
	r.calls = append(r.calls, "snapshot "+s.Version)
	r.mu.Unlock()
	return r.x.SetSnapshot(s)
}

func (r *recordingPublisher) SetTrustBundle(pem []byte) error {
	r.mu.Lock()
	r.calls = append(r.calls, "bundle")
	r.mu.Unlock()
	return r.x.SetTrustBundle(pem)
}

func (r *recordingPublisher) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// A fresh server creates its CA before it applies its first snapshot, so that snapshot reaches
// the xDS server after the trust bundle: the proxies are rendered once, with their mTLS trust,
// and not again when the CA appears. /v1/status says ready only then, and a proxy that
// connects gets its configuration from the first snapshot.
func TestFirstSnapshotCarriesTrustBundle(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "initial", false)
	v0 := versionOf(t, meshFiles(0))
	cfg := testConfig(t, repo.bare, nodeOpts{})
	x, addr := attachXDS(t, &cfg)
	rec := &recordingPublisher{x: x}
	cfg.Publisher = rec
	s := startServer(t, cfg)
	if !waitServed(s, v0, 20*time.Second) {
		t.Fatalf("serves %q, want %s", servedVersion(s), v0)
	}
	waitFor(t, 10*time.Second, "the server to say it is ready", func() bool { return s.Status().Ready })
	dialXDS(t, addr, "web-1")
	waitFor(t, 20*time.Second, "the client to ACK v0", func() bool { return acked(x, "web-1", v0) })
	time.Sleep(1500 * time.Millisecond) // the CA's leader loop ticks every second: a late bundle would show now

	want := []string{"bundle", "snapshot " + v0}
	if got := rec.log(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("publisher calls %q, want %q: the first snapshot must be published once, after the trust bundle", got, want)
	}
	b, err := s.CA().Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if x.TrustPool() == nil || !x.TrustPool().Equal(poolOf(t, b.BundlePEM)) {
		t.Fatal("the xDS server does not hold the CA's trust bundle")
	}
	for _, p := range x.Proxies() {
		if p.NodeID == "web-1" && !strings.HasPrefix(p.Version, v0+"-") {
			t.Fatalf("the proxy runs %s, want the first snapshot %s", p.Version, v0)
		}
	}

	// A rotation changes the bundle: it is handed over again (the proxies get the new roots).
	if err := s.CA().Rotate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	var rotated string
	waitFor(t, 10*time.Second, "the rotated bundle handed over", func() bool {
		nb, err := s.CA().Bundle()
		rotated = nb.BundlePEM
		return err == nil && x.TrustPool().Equal(poolOf(t, nb.BundlePEM)) && len(rec.log()) == 3
	})
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Restarted, the server serves its snapshot from disk at once, with the bundle it served
	// (saved with it), and hands over no other bundle while Raft replays the CA's past. (The
	// snapshot may be handed over again once the FSM's catalog replaces the one from disk.)
	x2, addr2 := attachXDS(t, &cfg)
	rec2 := &recordingPublisher{x: x2}
	cfg.Publisher = rec2
	s2 := startServer(t, cfg)
	dialXDS(t, addr2, "web-2")
	waitFor(t, 20*time.Second, "the client of the restarted server to ACK v0", func() bool { return acked(x2, "web-2", v0) })
	waitFor(t, 10*time.Second, "the restarted server to lead", s2.IsLeader)
	time.Sleep(1500 * time.Millisecond)
	if got := rec2.log(); len(got) < 2 || got[0] != "bundle" || got[1] != want[1] || slices.Index(got[1:], "bundle") >= 0 {
		t.Fatalf("restarted: publisher calls %q, want the bundle once, before %q", got, want[1])
	}
	if !x2.TrustPool().Equal(poolOf(t, rotated)) || !s2.Status().Ready {
		t.Fatal("the restarted server does not serve the rotated bundle, or does not say ready")
	}
}

func poolOf(t *testing.T, pem string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(pem)) {
		t.Fatal("no certificate in the bundle")
	}
	return p
}

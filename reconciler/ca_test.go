package reconciler

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgit/mesh/ca"
)

// The CA lives in the FSM: the leader creates it once a snapshot names the trust domain, tokens
// and rotations are Raft entries, and a restarted server has the same roots and tokens.
func TestCAInFSM(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	var logs bytes.Buffer
	lw := &lockedWriter{w: &logs}
	cfg.Log = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startServer(t, cfg)
	waitFor(t, 20*time.Second, "the CA to be created", func() bool { return s.CA().State() != nil })
	if td := s.CA().State().TrustDomain; td != "test.mesh" {
		t.Fatalf("trust domain %q", td)
	}
	ctx := context.Background()
	op := &ca.Client{Addr: s.HTTPAddr(), Token: testToken}
	tr, err := op.CreateToken(ctx, ca.TokenRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&ca.Client{Addr: s.HTTPAddr(), Token: "wrong"}).CreateToken(ctx, ca.TokenRequest{Service: "web"}); err == nil {
		t.Fatal("token created with a wrong token")
	}
	a := &ca.Agent{Client: &ca.Client{Addr: s.HTTPAddr(), Token: tr.Token}, Service: "web", Dir: t.TempDir()}
	leaf, err := a.Issue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SPIFFEID != "spiffe://test.mesh/ns/default/dc/dc1/svc/web" {
		t.Fatalf("leaf %s", leaf.SPIFFEID)
	}
	if _, err := op.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := op.Roots(ctx)
	if len(before.Roots) != 2 {
		t.Fatalf("%d roots after rotation", len(before.Roots))
	}
	s.Close(ctx)

	s2 := startServer(t, cfg)
	// The restarted server restores its last Raft snapshot at once and applies the entries
	// after it (the rotation) once it leads again: until then it may hold the first root only.
	var after *ca.Bundle
	waitFor(t, 20*time.Second, "the CA state back, rotation included", func() bool {
		if s2.CA().State() == nil {
			return false
		}
		b, err := s2.CA().Bundle()
		if err != nil {
			t.Fatal(err)
		}
		after = b
		return after.BundlePEM == before.BundlePEM || len(after.Roots) > len(before.Roots)
	})
	if after.BundlePEM != before.BundlePEM {
		t.Fatal("the restarted server has other roots")
	}
	if _, err := s2.CA().Authorize(tr.Token, "web"); err != nil {
		t.Fatalf("the token is gone after a restart: %v", err)
	}
	s2.Close(ctx)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if !strings.Contains(logs.String(), "ca initialized") {
		t.Fatal("no CA log lines: is the search looking at the right log?")
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatal("the server logged a private key")
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

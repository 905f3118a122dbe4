package reconciler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/ca"
)

// TestAgentRefreshesPeerRoots: an agent of dc1 starts before dc2 is up, so its first ca.pem
// holds dc1's roots only. When dc2 comes up and the federation brings its roots, the agent
// rewrites ca.pem with them (a blocking query on GET /v1/ca/roots), long before its leaf's
// renewal; the leaf itself is not reissued for it. A rotation in dc2 reaches it too.
func TestAgentRefreshesPeerRoots(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(twoDCMesh, "two datacenters", false)
	h1, h2 := freeAddr(t), freeAddr(t)
	cfg1 := testConfig(t, repo.bare, nodeOpts{httpAddr: h1})
	cfg1.Federate = map[string]string{"dc2": "http://" + h2}
	s1 := startServer(t, cfg1)
	waitFor(t, 10*time.Second, "dc1's CA", func() bool { return s1.CA().State() != nil && s1.IsLeader() })

	dir := t.TempDir()
	issued := make(chan *ca.Leaf, 10)
	a := &ca.Agent{Client: &ca.Client{Addr: s1.HTTPAddr(), Token: testToken}, Service: "web", Dir: dir,
		OnIssue: func(l *ca.Leaf) { issued <- l }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-issued:
	case <-time.After(10 * time.Second):
		t.Fatal("no leaf")
	}
	caPEM := func() string { b, _ := os.ReadFile(filepath.Join(dir, ca.CAFile)); return string(b) }
	if got := caPEM(); !strings.Contains(got, s1.CA().LocalRootsPEM()) {
		t.Fatal("ca.pem lacks dc1's roots")
	}

	cfg2 := testConfig(t, repo.bare, nodeOpts{httpAddr: h2})
	cfg2.Datacenter = "dc2"
	s2 := startServer(t, cfg2)
	waitFor(t, 10*time.Second, "dc2's CA", func() bool { return s2.CA().State() != nil })
	waitFor(t, 15*time.Second, "dc2's roots in the agent's ca.pem", func() bool {
		got := caPEM()
		return strings.Contains(got, s2.CA().LocalRootsPEM()) && strings.Contains(got, s1.CA().LocalRootsPEM())
	})
	if len(issued) != 0 {
		t.Fatalf("the leaf was reissued %d times to refresh the roots", len(issued))
	}

	// A rotation in dc2 moves no catalog index, yet reaches dc1's agents at once.
	start := time.Now()
	if err := s2.CA().Rotate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	rotated := s2.CA().LocalRootsPEM()
	waitFor(t, 5*time.Second, "dc2's new root in dc1's agent's ca.pem", func() bool { return strings.Contains(caPEM(), rotated) })
	t.Logf("dc2's rotation reached dc1's agent in %v", time.Since(start).Round(time.Millisecond))
}

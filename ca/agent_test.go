package ca

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAgentExtraFiles(t *testing.T) {
	c := newTestCA(t, Config{})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
	dir := t.TempDir()
	sds := []byte(`{"resources":[]}`)
	a := &Agent{Client: &Client{Addr: srv.URL, Token: tok}, Service: "api", Dir: dir, ExtraFiles: map[string][]byte{"envoy-sds.json": sds}}
	if _, err := a.Issue(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "envoy-sds.json"))
	if err != nil || !bytes.Equal(got, sds) {
		t.Fatalf("extra file: %q, %v", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "envoy-sds.json")); fi.Mode().Perm() != 0o644 {
		t.Fatalf("extra file mode %v", fi.Mode())
	}
	for _, bad := range []string{"../x", KeyFile, "a/b"} {
		b := &Agent{Client: a.Client, Service: "api", Dir: dir, ExtraFiles: map[string][]byte{bad: nil}}
		if _, err := b.Issue(context.Background()); err == nil {
			t.Errorf("extra file %q accepted", bad)
		}
	}
	if k, _ := os.ReadFile(filepath.Join(dir, KeyFile)); !bytes.Contains(k, []byte("PRIVATE KEY")) {
		t.Fatal("an extra file overwrote the key")
	}
}

// TestAgentFollowsRoots: between renewals, a running agent rewrites ca.pem when the trust
// bundle changes (a rotation here; a federated peer's roots in a cluster), without a new
// leaf: a blocking query on GET /v1/ca/roots?hash= answers at the change.
func TestAgentFollowsRoots(t *testing.T) {
	c := newTestCA(t, Config{})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
	dir := t.TempDir()
	issued := make(chan *Leaf, 10)
	a := &Agent{Client: &Client{Addr: srv.URL, Token: tok}, Service: "api", Dir: dir, OnIssue: func(l *Leaf) { issued <- l }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-issued:
	case <-time.After(5 * time.Second):
		t.Fatal("no leaf")
	}
	before := c.LocalRootsPEM()
	// The agent's query is under way (or about to be): a rotation must wake it.
	time.Sleep(50 * time.Millisecond)
	if err := c.Rotate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	after := c.LocalRootsPEM()
	if after == before {
		t.Fatal("the rotation changed no root")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := os.ReadFile(filepath.Join(dir, CAFile))
		if string(got) == after {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ca.pem after the rotation:\n%s\nwant\n%s", got, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(issued) != 0 {
		t.Fatal("a new leaf was issued to refresh ca.pem")
	}
}

// TestRootsBlockingQuery: GET /v1/ca/roots?hash= waits while the bundle is unchanged and
// answers with the same bundle when ?wait ends; a bad wait is a 400.
func TestRootsBlockingQuery(t *testing.T) {
	c := newTestCA(t, Config{})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	cl := &Client{Addr: srv.URL}
	b, err := cl.Roots(context.Background())
	if err != nil || b.Hash != RootsHash([]byte(b.BundlePEM)) {
		t.Fatalf("roots: %+v, %v", b, err)
	}
	start := time.Now()
	same, err := cl.RootsAfter(context.Background(), b.Hash, 200*time.Millisecond)
	if err != nil || same.Hash != b.Hash || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("unchanged bundle answered after %v: %v, %v", time.Since(start), same, err)
	}
	if other, err := cl.RootsAfter(context.Background(), "other", time.Minute); err != nil || other.Hash != b.Hash {
		t.Fatalf("a stale hash is answered at once: %v, %v", other, err)
	}
	resp, err := http.Get(srv.URL + "/v1/ca/roots?hash=x&wait=-1s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wait=-1s: %s", resp.Status)
	}
}

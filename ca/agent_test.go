package ca

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
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

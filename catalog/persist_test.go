package catalog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAgentPersists: registrations through Register are kept in the data directory (owner-only)
// with their token and restored by a new agent on the same directory, before its first sync
// can remove them; a definition registered with RegisterRetrying (a configuration directory's)
// and a deregistered instance are not kept; a file that cannot be read back is an error naming it.
func TestAgentPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	newAgent := func(rec *recorder) *Agent {
		a := NewAgent(AgentConfig{Node: "n1", Address: "127.0.0.1", SyncInterval: time.Hour, Submit: rec.submit, DataDir: dir, Token: "agent"})
		if err := a.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		return a
	}
	rec := &recorder{}
	a := newAgent(rec)
	for _, id := range []string{"web/1", "web-2"} {
		if err := a.Register(ctx, "tok-"+id, &Instance{ID: id, Service: "web", Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.RegisterRetrying(ctx, "tok", &Instance{ID: "from-config", Service: "web", Port: 81}); err != nil {
		t.Fatal(err)
	}
	if err := a.Deregister(ctx, "tok-web-2", "web-2"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("data directory: %v, want the one kept registration", files)
	}
	for _, p := range []string{dir, files[0]} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: %v %v, want owner-only", p, fi.Mode(), err)
		}
	}

	rec = &recorder{}
	a = newAgent(rec)
	a.sync(ctx) // a sync at once: it must keep web/1, being restored
	waitUntil(t, 5*time.Second, "web/1 restored", func() bool { return len(a.Services()) == 1 })
	a.Close()
	rec.mu.Lock()
	var restored bool
	for _, c := range rec.cmds {
		if c.Op == OpSyncNode && !strings.Contains(strings.Join(c.Keep, ","), "web/1") {
			t.Errorf("a sync during the restore removes web/1: keep %v", c.Keep)
		}
		if c.Op == OpRegister && c.Instance.ID == "web/1" && c.Instance.Node == "n1" {
			restored = true
		}
	}
	rec.mu.Unlock()
	if !restored || a.Services()[0].ID != "web/1" {
		t.Fatalf("web/1 not registered again: %+v", rec.cmds)
	}

	// Concurrent registrations of one ID: the file ends with the one the agent holds.
	a = newAgent(&recorder{})
	var wg sync.WaitGroup
	for port := 1; port <= 20; port++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Register(ctx, "tok", &Instance{ID: "web/1", Service: "web", Port: port}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	a.Close()
	kept, err := a.store.load()
	if err != nil || len(kept) != 1 || kept[0].Instance.Port != a.Services()[0].Port {
		t.Fatalf("after concurrent registrations the file holds %+v (%v), the agent port %d", kept, err, a.Services()[0].Port)
	}

	if err := os.WriteFile(files[0], []byte("{junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := NewAgent(AgentConfig{Node: "n1", Submit: rec.submit, DataDir: dir})
	defer b.Close()
	if err := b.Restore(ctx); err == nil || !strings.Contains(err.Error(), files[0]) {
		t.Fatalf("restore from a corrupt file: %v, want an error naming it", err)
	}
}

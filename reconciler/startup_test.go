package reconciler

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// openErr opens a server on cfg, expecting it to fail, and returns the error.
func openErr(t *testing.T, cfg Config) error {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = s.Open(ctx)
	if err == nil {
		s.Close(context.Background())
		t.Fatal("Open succeeded")
	}
	return err
}

// A crash during the very first start may leave (with older versions, or a crash anywhere) an
// empty node-id file, a raft.db holding a term without the cluster configuration, or a
// half-written raft.db.init. Each starts, bootstraps and serves.
func TestHalfInitialisedDataDir(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "v0", false)
	v0 := versionOf(t, f0)

	cases := map[string]func(t *testing.T, dir string){
		"empty node-id": func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "node-id"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"term without configuration": func(t *testing.T, dir string) {
			st, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}
			st.Close()
		},
		"interrupted bootstrap file": func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "raft.db.init"), []byte("half a bolt file"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, prepare := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			prepare(t, dir)
			s := startServer(t, testConfig(t, repo.bare, nodeOpts{dir: dir}))
			if !waitServed(s, v0, 10*time.Second) {
				t.Fatalf("serves %q, want %s; status %+v", servedVersion(s), v0, s.Status())
			}
			if s.NodeID() == "" {
				t.Error("empty node id")
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "node-id")); strings.TrimSpace(string(b)) != s.NodeID() {
				t.Errorf("node-id file holds %q, want %q", b, s.NodeID())
			}
			if _, err := os.Stat(filepath.Join(dir, "raft.db.init")); !os.IsNotExist(err) {
				t.Errorf("raft.db.init left behind: %v", err)
			}
			if s.Status().ClusterID == "" {
				t.Error("no cluster id after bootstrap")
			}
		})
	}
}

// Corrupt files are refused with their name and the recovery step, never with a panic: a
// truncated raft.db, a bit-flipped Raft snapshot.
func TestCorruptDataDir(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1 := meshFiles(0), meshFiles(1)
	repo.commit(f0, "v0", false)

	// A data directory with a Raft snapshot and log entries after it.
	dir := t.TempDir()
	cfg := testConfig(t, repo.bare, nodeOpts{dir: dir})
	s := startServer(t, cfg)
	if !waitServed(s, versionOf(t, f0), 10*time.Second) {
		t.Fatal("v0 not served")
	}
	if err := s.node.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	repo.commit(f1, "v1", false)
	if !waitServed(s, versionOf(t, f1), 10*time.Second) {
		t.Fatal("v1 not served")
	}
	s.Close(context.Background())

	copyDir := func(t *testing.T) string {
		t.Helper()
		d := filepath.Join(t.TempDir(), "data")
		if err := os.CopyFS(d, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	check := func(t *testing.T, d, file string) {
		t.Helper()
		err := openErr(t, testConfig(t, repo.bare, nodeOpts{dir: d}))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("error %v, want ErrCorrupt", err)
		}
		for _, want := range []string{file, "--join", "docs/operations.md"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	}

	t.Run("truncated raft.db", func(t *testing.T) {
		d := copyDir(t)
		db := filepath.Join(d, "raft.db")
		// Cut within the pages in use (bbolt preallocates beyond them).
		bdb, err := bbolt.Open(db, 0o600, &bbolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var used int64
		bdb.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil })
		page := int64(bdb.Info().PageSize)
		bdb.Close()
		for _, size := range []int64{used - page, 2*page + 100, 100} {
			if err := os.Truncate(db, size); err != nil {
				t.Fatal(err)
			}
			check(t, d, db)
		}
	})
	t.Run("bit-flipped snapshot", func(t *testing.T) {
		d := copyDir(t)
		states, _ := filepath.Glob(filepath.Join(d, "snapshots", "*", "state.bin"))
		if len(states) == 0 {
			t.Fatal("no raft snapshot written")
		}
		b, err := os.ReadFile(states[0])
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x10
		if err := os.WriteFile(states[0], b, 0o600); err != nil {
			t.Fatal(err)
		}
		check(t, d, states[0])
	})
}

// After a restart, GET /v1/snapshots agrees at once with the version served from disk, before
// Raft has replayed its log.
func TestSnapshotsAfterRestart(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1 := meshFiles(0), meshFiles(1)
	repo.commit(f0, "v0", false)
	dir := t.TempDir()
	cfg := testConfig(t, repo.bare, nodeOpts{dir: dir})
	s := startServer(t, cfg)
	if !waitServed(s, versionOf(t, f0), 10*time.Second) {
		t.Fatal("v0 not served")
	}
	v1 := versionOf(t, f1)
	repo.commit(f1, "v1", false)
	if !waitServed(s, v1, 10*time.Second) {
		t.Fatal("v1 not served")
	}
	s.Close(context.Background())

	// Slow elections, so that the log is replayed well after Open returns.
	cfg = testConfig(t, repo.bare, nodeOpts{dir: dir})
	cfg.Raft = RaftTiming{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second, LeaderLeaseTimeout: time.Second}
	s = startServer(t, cfg)
	st, snaps := s.Status(), s.Snapshots()
	if st.Version != v1 {
		t.Fatalf("status version %q right after restart, want %s", st.Version, v1)
	}
	if len(snaps) != 2 || snaps[0].Version != v1 || !snaps[0].Served {
		t.Fatalf("snapshots right after restart: %+v, want v1 (served) then v0", snaps)
	}
}

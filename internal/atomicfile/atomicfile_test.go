package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "state.json")
	for i, c := range []struct {
		data string
		perm os.FileMode
	}{{"first", 0o600}, {"second, longer", 0o644}} {
		if err := Write(name, []byte(c.data), c.perm); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		b, err := os.ReadFile(name)
		if err != nil || string(b) != c.data {
			t.Fatalf("write %d: read %q, %v; want %q", i, b, err, c.data)
		}
		if fi, _ := os.Stat(name); fi.Mode().Perm() != c.perm {
			t.Errorf("write %d: mode %v, want %v", i, fi.Mode().Perm(), c.perm)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries in the directory, want only state.json: %v", len(ents), ents)
	}
}

func TestWriteFailureLeavesTargetAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "target")
	if err := Write(name, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory in the way: the rename fails.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(blocked, []byte("new"), 0o644); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("entries %v, want target and blocked only (no temporary file left)", ents)
	}
	if b, _ := os.ReadFile(name); string(b) != "old" {
		t.Errorf("target %q", b)
	}
}

package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGitCommitsWithTheTestIdentity(t *testing.T) {
	dir := t.TempDir()
	Git(t, dir, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "-q", "-m", "first")
	if got, want := Git(t, dir, "log", "-1", "--format=%an <%ae> / %cn <%ce> / %s"), GitName+" <"+GitEmail+"> / "+GitName+" <"+GitEmail+"> / first"; got != want {
		t.Errorf("commit: %q, want %q", got, want)
	}
}

func TestFreeAddrs(t *testing.T) {
	addrs := FreeAddrs(t, 3)
	if len(addrs) != 3 || addrs[0] == addrs[1] || addrs[1] == addrs[2] || addrs[0] == addrs[2] {
		t.Fatalf("FreeAddrs(3) = %v", addrs)
	}
}

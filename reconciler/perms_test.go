package reconciler

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestSecureDataDirWhileFilesComeAndGo: the server's background writers create temporary files
// and rename them while Open narrows the data directory's permissions (a restart failed with
// "data directory: lstat …catalog.json.gz.tmp…: no such file or directory").
func TestSecureDataDirWhileFilesComeAndGo(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("keep-%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1_000_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := filepath.Join(dir, fmt.Sprintf("catalog.json.gz.tmp%d", i%8))
			if err := os.WriteFile(tmp, []byte("x"), 0o644); err == nil {
				os.Rename(tmp, filepath.Join(dir, "catalog.json.gz"))
			}
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	var err error
	for n := 0; n < 2000 && time.Now().Before(deadline) && err == nil; n++ {
		err = secureDataDir(dir)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("secureDataDir while files come and go: %v", err)
	}
	if err := secureDataDir(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "keep-0"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("keep-0 is %v, want 0600", fi.Mode().Perm())
	}
}

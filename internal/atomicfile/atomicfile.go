// Package atomicfile replaces files so that a reader sees the old content or the new, never a
// part, and a crash after Write returns keeps the new one: the data goes to a temporary file
// beside the target, is synced, renamed over the target, and the directory is synced.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces name with data, mode perm. On error name is unchanged and no temporary file
// ("."+base(name)+".tmp…" in the same directory) is left behind.
func Write(name string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return SyncDir(filepath.Dir(name))
}

// SyncDir syncs a directory, so that the renames and creations in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

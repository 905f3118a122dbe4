//go:build !unix

package reconciler

import (
	"errors"
	"os"
)

// errLocked means another process holds the lock.
var errLocked = errors.New("locked")

// lockFile is a no-op where flock is not available: the data directory is not protected
// against a second server there.
func lockFile(f *os.File) error { return nil }

//go:build unix

package reconciler

import (
	"errors"
	"os"
	"syscall"
)

// errLocked means another process holds the lock.
var errLocked = syscall.EWOULDBLOCK

// lockFile takes an exclusive flock on f without waiting; the kernel releases it when the
// process ends, however it ends.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EAGAIN) {
		return errLocked
	}
	return err
}

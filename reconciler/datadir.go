package reconciler

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshgit/mesh/internal/atomicfile"
)

// The data directory holds, besides what Raft writes (raft.db, snapshots/):
//
//	LOCK            an flock held by the running mesh serve, holding its pid
//	node-id         this server's Raft id
//	served.gob.gz   the last snapshot served (served on the next start before Raft catches up;
//	                written in the background, the newest one, and on a clean close)
//
// Every file is written through a temporary file, fsync and rename, so a crash at any moment
// leaves either the old content or the new one.

// recovery is the recovery step named by every "data directory is broken" error.
const recovery = "stop this server, move its data directory away and start it again with --join HTTP_ADDR of a healthy server " +
	"(a one-server cluster: restore the data directory from a backup); see docs/operations.md, Recovery from faults"

// DirLock is the exclusive lock of a data directory, held while a server uses it.
type DirLock struct {
	f *os.File
}

// LockDataDir creates dir if needed and takes its lock, or fails at once with ErrDataDirInUse
// naming the pid of the process that holds it.
func LockDataDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	name := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := lockFile(f); err != nil {
		b, _ := os.ReadFile(name)
		f.Close()
		if errors.Is(err, errLocked) {
			pid := strings.TrimSpace(string(b))
			if _, perr := strconv.Atoi(pid); perr != nil {
				pid = "unknown"
			}
			return nil, inUseError{dir: dir, pid: pid}
		}
		return nil, fmt.Errorf("data directory lock %s: %w", name, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// inUseError is ErrDataDirInUse with the directory and the holder's pid.
type inUseError struct{ dir, pid string }

func (e inUseError) Error() string {
	return fmt.Sprintf("data directory %s is in use by another mesh serve (pid %s)", e.dir, e.pid)
}

func (e inUseError) Is(target error) bool { return target == ErrDataDirInUse }

// Release gives the lock up. The LOCK file stays: removing it would race with the next owner.
func (l *DirLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.f.Truncate(0)
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}

// nodeID returns the node id kept in dir, writing it on first start: want if set, else the
// hostname with a short hash of the data directory (so that several servers on one host differ
// and each keeps its id across restarts). An empty node-id file (left by a crash of an older
// version) counts as missing: the derived id is the same on every start.
func nodeID(dir, want string) (string, error) {
	file := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(file); err == nil && strings.TrimSpace(string(b)) != "" {
		have := strings.TrimSpace(string(b))
		if want != "" && want != have {
			return "", fmt.Errorf("%w: %s holds %q, --node-id is %q", ErrNodeID, dir, have, want)
		}
		return have, nil
	} else if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	id := want
	if id == "" {
		host, _ := os.Hostname()
		host = strings.Trim(nodeIDRe.ReplaceAllString(strings.ToLower(host), "-"), "-")
		if host == "" {
			host = "mesh"
		}
		abs, _ := filepath.Abs(dir)
		sum := sha256.Sum256([]byte(abs))
		id = host + "-" + hex.EncodeToString(sum[:3])
	}
	if err := atomicfile.Write(file, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

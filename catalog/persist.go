package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshgit/mesh/internal/atomicfile"
)

// An agent's registrations made through its API outlive it, as a Consul agent's do: each is a
// file of its data directory (the instance as registered and the token it was registered with),
// written atomically and readable by the owner only, removed when the instance is deregistered,
// and registered again when the agent starts. Definitions of a configuration directory are not
// kept there: the directory itself is their record.

// persisted is one file of the store.
type persisted struct {
	Token    string
	Instance *Instance
}

// store keeps persisted registrations in a directory, one file per instance ID.
type store struct{ dir string }

// openStore makes dir (0700) if needed and makes it owner-only.
func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("catalog data: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("catalog data: %w", err)
	}
	return &store{dir: dir}, nil
}

// path is the file of instance id: a hash, since an ID may hold any character.
func (s *store) path(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(s.dir, "service-"+hex.EncodeToString(sum[:16])+".json")
}

func (s *store) save(token string, in *Instance) error {
	b, err := json.Marshal(persisted{Token: token, Instance: in})
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path(in.ID), b, 0o600)
}

func (s *store) remove(id string) error {
	err := os.Remove(s.path(id))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// load returns every persisted registration, sorted by instance ID. A file that cannot be read
// back is an error naming it.
func (s *store) load() ([]persisted, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("catalog data: %w", err)
	}
	var out []persisted
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "service-") || !strings.HasSuffix(name, ".json") {
			continue // temporary files of an interrupted write, among others
		}
		path := filepath.Join(s.dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("catalog data: %w", err)
		}
		var p persisted
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("catalog data: %s: %w (move it away to start without it)", path, err)
		}
		if p.Instance == nil || p.Instance.ID == "" || path != s.path(p.Instance.ID) {
			return nil, fmt.Errorf("catalog data: %s: not a registration this agent wrote (move it away to start without it)", path)
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b persisted) int { return strings.Compare(a.Instance.ID, b.Instance.ID) })
	return out, nil
}

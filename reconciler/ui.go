package reconciler

import (
	"fmt"
	"net/http"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ui"
)

// The web UI (package ui) reads the server through these two methods; http.go mounts it at /ui/.

// SnapshotOf returns the snapshot of version from this server's history, or the one it serves
// when version is "" (nil while it serves nothing).
func (s *Server) SnapshotOf(version string) (*mesh.Snapshot, error) {
	if version == "" {
		return s.pub.current(), nil
	}
	if cur := s.pub.current(); cur != nil && cur.Version == version {
		return cur, nil
	}
	e := s.fsm.state().find(version)
	if e == nil {
		return nil, fmt.Errorf("%w: %s", ui.ErrUnknownVersion, version)
	}
	return decodeSnapshot(e.data)
}

// ServedChanged returns a channel closed the next time this server publishes a snapshot.
func (s *Server) ServedChanged() <-chan struct{} { return s.pub.changed() }

func (s *Server) uiHandler(api http.Handler) http.Handler {
	return ui.Handler(s, ui.Options{Repo: s.cfg.Repo, API: api, Log: s.log.With("component", "ui")})
}

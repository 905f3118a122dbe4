package reconciler

import (
	"fmt"
	"net/http"
	"sync"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ui"
)

// The web UI (package ui) reads the server through these methods (ui.Source and ui.Catalog);
// http.go mounts it at /ui/.

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
	return e.snapshot()
}

// ServedChanged returns a channel closed the next time this server publishes a snapshot.
func (s *Server) ServedChanged() <-chan struct{} { return s.pub.changed() }

// CatalogChanged returns a channel closed at the next change of the catalog this server holds.
func (s *Server) CatalogChanged() <-chan struct{} { return s.fsm.watch.Changed() }

// uiHandler returns the UI. Its event streams end when the HTTP server shuts down (Shutdown waits
// for active connections, and a stream would otherwise hold it until its deadline).
func (s *Server) uiHandler() http.Handler {
	stop := make(chan struct{})
	h := ui.Handler(s, ui.Options{Repo: s.cfg.Repo, Catalog: s, Stop: stop, Log: s.log.With("component", "ui")})
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			// s.httpSrv is set before it serves the first request.
			if s.httpSrv != nil {
				s.httpSrv.RegisterOnShutdown(func() { close(stop) })
			}
		})
		h.ServeHTTP(w, r)
	})
}

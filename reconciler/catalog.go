package reconciler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
)

// The catalog's hooks into the server: its commands are Raft entries (cmdCatalog), its API is
// mounted on the server's mux, and the publisher serves the snapshot with its instances.

// DefaultCatalogSync is how often a server's own agent syncs the instances registered on it.
const DefaultCatalogSync = 10 * time.Second

func (s *Server) openCatalog() {
	s.cat = catalog.NewServer(catalog.ServerConfig{
		State:    func() *catalog.State { return s.fsm.state().catalog },
		Watch:    s.fsm.watch,
		IsLeader: s.IsLeader,
		// Concurrent commands share Raft entries (each keeps its own result).
		Commit: catalog.NewBatcher(func(_ context.Context, cs []catalog.Command) ([]error, error) {
			errs, err := s.applyCatalogBatch(cs)
			if errors.Is(err, ErrNotLeader) {
				return nil, fmt.Errorf("%w: %v", catalog.ErrUnavailable, err)
			}
			for i, e := range errs {
				if errors.Is(e, ErrNotLeader) {
					errs[i] = fmt.Errorf("%w: %v", catalog.ErrUnavailable, e)
				}
			}
			return errs, err
		}, 0).Commit,
		Forward:   s.forwardCatalog,
		Authorize: s.authorizeCatalog,
		Declared: func(name string) bool {
			snap := s.Served()
			return snap != nil && snap.Services[name] != nil
		},
		Datacenter: func() string {
			if s.cfg.Datacenter != "" {
				return s.cfg.Datacenter
			}
			if snap := s.Served(); snap != nil {
				return snap.Mesh.Datacenter
			}
			return ""
		},
		DefaultCheck: s.gitCheck,
		Snapshot:     s.Served,
		Log:          s.log,
		Tick:         s.cfg.CatalogTick,
		Prober:       catalog.Prober{Allow: s.cfg.CheckAllow},
	})
	host, _, _ := net.SplitHostPort(s.httpAdv)
	s.agent = catalog.NewAgent(catalog.AgentConfig{
		Node: s.id, Address: host, SyncInterval: s.cfg.CatalogSync, Token: s.cfg.Token,
		Submit: s.cat.Submit, Authorize: s.authorizeCatalog, Log: s.log,
		DefaultCheck: func(_ context.Context, service string) (*mesh.HealthCheck, error) { return s.gitCheck(service), nil },
		Prober:       catalog.Prober{Allow: s.cfg.CheckAllow},
		DataDir:      filepath.Join(s.cfg.DataDir, "catalog-agent"), // its registrations outlive a restart
	})
}

func (s *Server) catalogAPI() *catalog.API {
	return &catalog.API{Agent: s.agent, Server: s.cat, Watch: s.fsm.watch, Log: s.log}
}

// authorizeCatalog checks a catalog write's token with the CA's tokens and the cluster token.
func (s *Server) authorizeCatalog(token, service string) error {
	if token == "" {
		return fmt.Errorf("%w: send it as X-Consul-Token or Authorization: Bearer", catalog.ErrUnauthorized)
	}
	_, err := s.ca.Authorize(token, service)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ca.ErrUnauthorized):
		return fmt.Errorf("%w: the token is not one this cluster issued", catalog.ErrUnauthorized)
	case errors.Is(err, ca.ErrForbidden):
		if service == "" {
			return fmt.Errorf("%w: this needs an operator token", catalog.ErrForbidden)
		}
		return fmt.Errorf("%w: the token may not write service %q (%v)", catalog.ErrForbidden, service, err)
	}
	return err
}

// forwardCatalog sends a catalog command to the leader with the caller's token.
func (s *Server) forwardCatalog(ctx context.Context, token string, c catalog.Command) error {
	addr := s.leaderHTTP()
	if addr == "" || s.IsLeader() {
		return fmt.Errorf("%w: %v", catalog.ErrUnavailable, ErrNoLeader)
	}
	return catalog.HTTPSubmitter(s.peerURL(addr), s.httpClient)(ctx, token, c)
}

// Catalog returns the catalog this server holds.
func (s *Server) Catalog() *catalog.State { return s.fsm.state().catalog }

// CatalogAgent returns this server's own agent (the node of instances registered on it).
func (s *Server) CatalogAgent() *catalog.Agent { return s.agent }

// overlay is what the xDS server serves: the snapshot with the catalog's instances.
func overlay(snap *mesh.Snapshot, cat *catalog.State) *mesh.Snapshot {
	return catalog.Overlay(snap, cat)
}

// gitCheck is the healthCheck the served snapshot gives service, or nil.
func (s *Server) gitCheck(service string) *mesh.HealthCheck {
	if snap := s.Served(); snap != nil && snap.Services[service] != nil {
		return snap.Services[service].HealthCheck
	}
	return nil
}

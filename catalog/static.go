package catalog

import (
	"context"
	"time"
)

// staticCheck is the leader's check of one Git endpoint.
type staticCheck struct {
	check  Check
	cancel context.CancelFunc
}

// syncStatic makes the running checks of Git endpoints match the served snapshot: every endpoint
// in the mesh's datacenter of a service with a healthCheck is probed by the leader, and its
// status transitions are committed (OpStaticHealth). Endpoints that left Git are forgotten.
// Endpoints of other datacenters are left to the servers there.
func (s *Server) syncStatic(ctx context.Context, running map[string]*staticCheck) {
	want := map[string]Check{}
	if s.cfg.Snapshot != nil {
		if snap := s.cfg.Snapshot(); snap != nil {
			for name, svc := range snap.Services {
				if svc.HealthCheck == nil {
					continue
				}
				for _, ep := range svc.Endpoints {
					if ep.Datacenter == snap.Mesh.Datacenter {
						key := StaticKey(name, ep.Address, ep.Port)
						want[key] = GitCheck(svc.HealthCheck, key, name, ep.Address, ep.Port)
					}
				}
			}
		}
	}
	for key, rc := range running {
		if w, ok := want[key]; !ok || !sameDefinition(w.CheckDefinition, rc.check.CheckDefinition) {
			rc.cancel()
			delete(running, key)
		}
	}
	for key, c := range want {
		if running[key] != nil {
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		running[key] = &staticCheck{check: c, cancel: cancel}
		go s.runStatic(cctx, key, c)
	}
	for _, key := range s.cfg.State().StaticKeys() {
		if _, ok := want[key]; !ok {
			if err := s.cfg.Commit(ctx, Command{Op: OpStaticHealth, ID: key}); err != nil {
				s.log.Warn("forget a Git endpoint's health", "endpoint", key, "err", err)
			}
		}
	}
}

func (s *Server) runStatic(ctx context.Context, key string, c Check) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status, output := s.cfg.Prober.probe(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if s.cfg.State().StaticHealth(key) != status {
			s.log.Info("Git endpoint health changed", "endpoint", key, "status", status, "output", output)
			if err := s.cfg.Commit(ctx, Command{Op: OpStaticHealth, ID: key, Status: status}); err != nil {
				s.log.Warn("record a Git endpoint's health", "endpoint", key, "err", err)
			}
		}
		t.Reset(c.Interval)
	}
}

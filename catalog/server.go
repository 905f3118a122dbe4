package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/notify"
)

// Watch tells readers that the catalog changed. The FSM calls Notify after every change;
// blocking queries wait on Changed.
type Watch = notify.Watch

// NewWatch returns a Watch.
func NewWatch() *Watch { return notify.New() }

// ServerConfig configures the catalog of a server.
type ServerConfig struct {
	State func() *State // the FSM's catalog (never nil)
	Watch *Watch
	// Commit replicates c through Raft; it works on the leader only.
	Commit   func(ctx context.Context, c Command) error
	IsLeader func() bool
	// Forward sends c with token to the leader (a follower's Submit).
	Forward func(ctx context.Context, token string, c Command) error
	// Authorize decides whether token may write service ("": operator-only), returning an
	// error that wraps ErrUnauthorized or ErrForbidden.
	Authorize func(token, service string) error
	// Declared reports whether the served snapshot declares service (for the undeclared flag).
	Declared func(service string) bool
	// Snapshot returns the served snapshot: the leader checks its endpoints that have a
	// healthCheck. Optional.
	Snapshot func() *mesh.Snapshot
	// DefaultCheck returns the healthCheck Git gives service, or nil.
	DefaultCheck func(service string) *mesh.HealthCheck
	// Datacenter names the datacenter in answers.
	Datacenter func() string
	Log        *slog.Logger
	// Tick is the period of the leader's liveness and reaping checks; default 1s.
	Tick time.Duration
	// Prober runs the checks of Git endpoints (and limits where they may connect).
	Prober Prober
}

// Server is the catalog of a mesh server: it authorizes writes, commits the ones that change
// something through Raft (on the leader; followers forward), and, on the leader, marks nodes
// that stopped syncing critical and reaps instances critical for longer than their
// DeregisterCriticalServiceAfter.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu       sync.Mutex
	seen     map[string]time.Time // node → last command from it (leader only, in memory)
	critical map[string]time.Time // node/ID → when the leader first saw it critical
	since    time.Time            // when this server's current term of leadership began
}

// NewServer returns the catalog of a server.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Declared == nil {
		cfg.Declared = func(string) bool { return true }
	}
	if cfg.DefaultCheck == nil {
		cfg.DefaultCheck = func(string) *mesh.HealthCheck { return nil }
	}
	if cfg.Datacenter == nil {
		cfg.Datacenter = func() string { return "" }
	}
	return &Server{cfg: cfg, log: cfg.Log.With("component", "catalog"), seen: map[string]time.Time{}, critical: map[string]time.Time{}}
}

// Declared reports whether the served snapshot declares service.
func (s *Server) Declared(service string) bool { return s.cfg.Declared(service) }

// State returns the current catalog.
func (s *Server) State() *State { return s.cfg.State() }

// Authorized checks that token may apply c to st.
func Authorized(st *State, authorize func(token, service string) error, token string, c Command) error {
	if token == "" {
		return fmt.Errorf("%w: send it as X-Consul-Token or Authorization: Bearer", ErrUnauthorized)
	}
	switch c.Op {
	case OpRegister:
		if c.Instance == nil {
			return fmt.Errorf("%w: no instance", ErrBadRequest)
		}
		if err := authorize(token, c.Instance.Service); err != nil {
			return err
		}
		if old := st.Instance(c.Instance.Node, c.Instance.ID); old != nil && old.Service != c.Instance.Service {
			return authorize(token, old.Service)
		}
		return nil
	case OpSyncNode:
		// Any valid token says the node is alive; removals are limited to what it covers
		// (Submit keeps the rest).
		if err := authorize(token, ""); errors.Is(err, ErrUnauthorized) {
			return err
		}
		return nil
	case OpDeregister, OpCheck:
		node := c.NodeName
		var service string
		if c.Op == OpDeregister {
			if in := st.Instance(node, c.ID); in != nil {
				service = in.Service
			}
		} else {
			in := st.CheckOwner(node, c.ID)
			if in == nil {
				return fmt.Errorf("%w: check %q on node %q", ErrNotFound, c.ID, node)
			}
			service = in.Service
		}
		if service == "" {
			// Nothing to remove: any valid token may learn that.
			if err := authorize(token, ""); errors.Is(err, ErrUnauthorized) {
				return err
			}
			return nil
		}
		return authorize(token, service)
	}
	return authorize(token, "")
}

// Submit applies c with token: authorized, written through Raft if it changes anything. A
// follower forwards it to the leader.
func (s *Server) Submit(ctx context.Context, token string, c Command) error {
	if !s.cfg.IsLeader() {
		return s.cfg.Forward(ctx, token, c)
	}
	st := s.cfg.State()
	if err := Authorized(st, s.cfg.Authorize, token, c); err != nil {
		return err
	}
	if c.Op == OpRegister {
		if err := validateInstance(c.Instance); err != nil {
			return err
		}
		if c.Node == nil || c.Node.Name == "" || c.Node.Name != c.Instance.Node {
			return fmt.Errorf("%w: Node: the instance's node is missing", ErrBadRequest)
		}
	}
	if c.Op == OpSyncNode {
		if c.Node == nil || c.Node.Name == "" {
			return fmt.Errorf("%w: Node: missing", ErrBadRequest)
		}
		// Instances the token may not remove stay.
		c.Keep = slices.Clone(c.Keep)
		for _, in := range st.NodeInstances(c.Node.Name) {
			if !slices.Contains(c.Keep, in.ID) && s.cfg.Authorize(token, in.Service) != nil {
				c.Keep = append(c.Keep, in.ID)
			}
		}
	}
	node := c.NodeName
	if c.Node != nil {
		node = c.Node.Name
	}
	s.mu.Lock()
	s.seen[node] = time.Now()
	s.mu.Unlock()
	if n := st.Node(node); n != nil && n.Health == StatusCritical && c.Op != OpNodeHealth {
		s.log.Info("node syncs again", "node", node)
		if err := s.cfg.Commit(ctx, Command{Op: OpNodeHealth, NodeName: node, Status: StatusPassing}); err != nil {
			return err
		}
	}
	if changes, err := st.Changes(c); err != nil {
		return err
	} else if !changes {
		return nil // changes nothing: no Raft write
	}
	return s.cfg.Commit(ctx, c)
}

// validateInstance checks an instance that arrives as a command (from an agent): the same rules
// as a registration.
func validateInstance(in *Instance) error {
	if in == nil || in.Node == "" {
		return fmt.Errorf("%w: Instance: missing or without a node", ErrBadRequest)
	}
	reg := Registration{ID: in.ID, Name: in.Service, Port: in.Port, Address: in.Address, Kind: in.Kind, Tags: in.Tags, Meta: in.Meta, Weights: &in.Weights}
	if _, err := reg.Instance(); err != nil {
		return err
	}
	for _, c := range in.Checks {
		if !validStatus(c.Status) || c.ID == "" {
			return fmt.Errorf("%w: Checks: check %q status %q", ErrBadRequest, c.ID, c.Status)
		}
	}
	return nil
}

// Lead runs the leader's duties until ctx ends: it checks Git's endpoints that have a
// healthCheck; every Tick, nodes with a sync interval that
// have not synced for 3 of them turn critical, and instances critical for longer than a check's
// DeregisterCriticalServiceAfter are deregistered.
func (s *Server) Lead(ctx context.Context) {
	s.mu.Lock()
	s.since = time.Now()
	s.seen = map[string]time.Time{}
	s.critical = map[string]time.Time{}
	s.mu.Unlock()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	static := map[string]*staticCheck{}
	defer func() {
		for _, rc := range static {
			rc.cancel()
		}
	}()
	for {
		s.syncStatic(ctx, static)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.expireNodes(ctx)
		s.reap(ctx)
	}
}

func (s *Server) expireNodes(ctx context.Context) {
	st := s.cfg.State()
	now := time.Now()
	for _, n := range st.Nodes() {
		if n.SyncInterval <= 0 || n.Health == StatusCritical {
			continue
		}
		s.mu.Lock()
		last := s.seen[n.Name]
		if last.Before(s.since) {
			last = s.since
		}
		s.mu.Unlock()
		if now.Sub(last) <= 3*n.SyncInterval {
			continue
		}
		s.log.Warn("node stopped syncing; its instances are critical", "node", n.Name, "lastSync", last.Round(time.Millisecond))
		if err := s.cfg.Commit(ctx, Command{Op: OpNodeHealth, NodeName: n.Name, Status: StatusCritical}); err != nil {
			s.log.Warn("mark node critical", "node", n.Name, "err", err)
		}
	}
}

func (s *Server) reap(ctx context.Context) {
	st := s.cfg.State()
	now := time.Now()
	live := map[string]bool{}
	for _, name := range st.ServiceNames() {
		for _, in := range st.Instances(name) {
			after := time.Duration(0)
			for _, c := range in.Checks {
				if d := c.DeregisterCriticalServiceAfter; d > 0 && (after == 0 || d < after) {
					after = d
				}
			}
			if after == 0 || in.Status(st.Node(in.Node)) != StatusCritical {
				continue
			}
			key := instanceKey(in.Node, in.ID)
			live[key] = true
			s.mu.Lock()
			first, ok := s.critical[key]
			if !ok {
				s.critical[key] = now
				first = now
			}
			s.mu.Unlock()
			if now.Sub(first) < after {
				continue
			}
			s.log.Info("deregistering an instance critical for too long", "node", in.Node, "id", in.ID, "service", in.Service, "after", after)
			if err := s.cfg.Commit(ctx, Command{Op: OpDeregister, NodeName: in.Node, ID: in.ID}); err != nil {
				s.log.Warn("deregister critical instance", "id", in.ID, "err", err)
			}
		}
	}
	s.mu.Lock()
	for k := range s.critical {
		if !live[k] {
			delete(s.critical, k)
		}
	}
	s.mu.Unlock()
}

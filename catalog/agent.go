package catalog

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	mesh "github.com/meshgit/mesh"
)

// Submitter sends a catalog command to the servers with the token of whoever asked for it. On a
// server it is the server itself (*Server.Submit); on a `mesh agent`, an HTTP client of one.
type Submitter func(ctx context.Context, token string, c Command) error

// AgentConfig configures an Agent.
type AgentConfig struct {
	Node         string            // the node's name (required)
	Address      string            // the node's address: the default address of its instances
	Meta         map[string]string // the node's meta
	SyncInterval time.Duration     // anti-entropy period; default 10s
	Submit       Submitter         // required
	// Token is the agent's own token, which says the node is alive and removes from the
	// servers the instances of this node the agent does not hold (those it covers).
	Token string
	// Authorize, when set, decides locally whether token may write service (a server's own
	// agent). Without it, a write with another token than the service was registered with is
	// sent to the servers, which decide.
	Authorize func(token, service string) error
	Log       *slog.Logger
	// DefaultCheck returns the healthCheck Git gives service (nil for none): the check of an
	// instance registered without any. Optional.
	DefaultCheck func(ctx context.Context, service string) (*mesh.HealthCheck, error)
	// Prober runs the HTTP, TCP and gRPC checks (and limits where they may connect).
	Prober Prober
	// DataDir, when set, keeps the instances registered through Register across restarts
	// (see Restore). Optional.
	DataDir string
}

// Agent is the catalog's view from one node: the instances registered on it, their checks
// (which it runs) and their statuses. Its view is authoritative for its node: it sends every
// registration and status transition to the servers at once, and all of it again every
// SyncInterval (anti-entropy), so that the servers converge after any failure and know the node
// is alive. Outputs of checks stay here.
type Agent struct {
	cfg AgentConfig
	log *slog.Logger

	mu       sync.Mutex
	services map[string]*localService // by instance ID
	pending  map[string]int           // IDs being registered: kept by a concurrent sync
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	kick     chan struct{}
	store    *store               // nil until Restore
	files    map[string]*fileLock // per instance ID: one write of its file at a time
}

// fileLock serializes the writes of one instance's file, outside a.mu (they fsync).
type fileLock struct {
	mu   sync.Mutex
	refs int
}

type localService struct {
	inst    *Instance // with the current statuses and outputs
	token   string    // the token it was registered with, used for its later writes
	cancel  context.CancelFunc
	ttl     map[string]*time.Timer // TTL checks' expiry
	pending bool                   // a transition failed to reach the servers
	kept    *Instance              // as registered through the API, kept in the data directory; nil if not kept
}

// NewAgent returns an agent; Run starts its anti-entropy loop.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: cfg.Log.With("component", "catalog-agent"), services: map[string]*localService{}, pending: map[string]int{}, kick: make(chan struct{}, 1),
		files: map[string]*fileLock{}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a
}

// NodeName returns the agent's node name.
func (a *Agent) NodeName() string { return a.cfg.Node }

func (a *Agent) node() *Node {
	return &Node{Name: a.cfg.Node, Address: a.cfg.Address, Meta: a.cfg.Meta, SyncInterval: a.cfg.SyncInterval}
}

// Register registers in on this node with token: the servers must accept it first. Its checks
// start running; an instance of the same ID is replaced. Once Restore has opened the data
// directory, the registration is kept there until Deregister.
func (a *Agent) Register(ctx context.Context, token string, in *Instance) error {
	return a.register(ctx, token, in, true)
}

func (a *Agent) register(ctx context.Context, token string, in *Instance, persist bool) error {
	in = in.clone()
	asGiven := in.clone() // what is kept on disk: Git's default check is looked up again
	in.Node = a.cfg.Node
	if in.Address == "" {
		in.Address = a.cfg.Address
	}
	if err := a.authorize(token, in.Service); err != nil {
		return err
	}
	if len(in.Checks) == 0 && a.cfg.DefaultCheck != nil {
		hc, err := a.cfg.DefaultCheck(ctx, in.Service)
		if err != nil {
			return err
		}
		if hc != nil {
			in.Checks = []Check{GitCheck(hc, in.ID, in.Service, in.Address, in.Port)}
		}
	}
	a.mu.Lock()
	for id, ls := range a.services {
		for _, c := range in.Checks {
			if id != in.ID && ls.inst.check(c.ID) != nil {
				a.mu.Unlock()
				return fmt.Errorf("%w: CheckID: %q is a check of instance %s on this node", ErrBadRequest, c.ID, id)
			}
		}
	}
	a.pending[in.ID]++
	a.mu.Unlock()
	err := a.cfg.Submit(ctx, token, Command{Op: OpRegister, Node: a.node(), Instance: in})
	a.mu.Lock()
	if a.pending[in.ID]--; a.pending[in.ID] == 0 {
		delete(a.pending, in.ID)
	}
	if err != nil {
		a.mu.Unlock()
		return err
	}
	if old := a.services[in.ID]; old != nil {
		old.stop()
	}
	ls := &localService{inst: in, token: token, ttl: map[string]*time.Timer{}}
	if persist {
		ls.kept = asGiven
	}
	a.services[in.ID] = ls
	a.start(ls)
	a.mu.Unlock()
	a.log.Info("instance registered", "id", in.ID, "service", in.Service, "address", in.Address, "port", in.Port, "checks", len(in.Checks))
	if err := a.writeFile(in.ID); err != nil {
		// Registered on the servers but not kept: say so, as the next restart would lose it.
		a.log.Error("keep the registration in the data directory", "id", in.ID, "err", err)
		return fmt.Errorf("registered, but not kept across restarts: %w", err)
	}
	return nil
}

func (a *Agent) authorize(token, service string) error {
	if a.cfg.Authorize != nil {
		return a.cfg.Authorize(token, service)
	}
	if token == "" {
		return fmt.Errorf("%w: send it as X-Consul-Token or Authorization: Bearer", ErrUnauthorized)
	}
	return nil
}

// mayWrite reports whether token may write ls without asking the servers.
func (a *Agent) mayWrite(token string, ls *localService) (bool, error) {
	if a.cfg.Authorize != nil {
		return true, a.cfg.Authorize(token, ls.inst.Service)
	}
	if token == "" {
		return false, fmt.Errorf("%w: send it as X-Consul-Token or Authorization: Bearer", ErrUnauthorized)
	}
	return subtle.ConstantTimeCompare([]byte(token), []byte(ls.token)) == 1, nil
}

// Deregister removes instance id of this node, with token.
func (a *Agent) Deregister(ctx context.Context, token, id string) error {
	a.mu.Lock()
	ls := a.services[id]
	a.mu.Unlock()
	if ls == nil {
		return fmt.Errorf("%w: no instance %q on node %s", ErrNotFound, id, a.cfg.Node)
	}
	if _, err := a.mayWrite(token, ls); err != nil {
		return err
	}
	if err := a.cfg.Submit(ctx, token, Command{Op: OpDeregister, NodeName: a.cfg.Node, ID: id}); err != nil {
		return err
	}
	a.mu.Lock()
	if a.services[id] == ls {
		ls.stop()
		delete(a.services, id)
	}
	a.mu.Unlock()
	a.log.Info("instance deregistered", "id", id, "service", ls.inst.Service)
	if err := a.writeFile(id); err != nil {
		a.log.Error("remove the registration from the data directory", "id", id, "err", err)
		return fmt.Errorf("deregistered, but still in the data directory: %w", err)
	}
	return nil
}

// UpdateTTL sets a TTL check's status and output, with token, and restarts its TTL.
func (a *Agent) UpdateTTL(ctx context.Context, token, checkID, status, output string) error {
	if !validStatus(status) {
		return fmt.Errorf("%w: Status: %q: want passing, warning or critical", ErrBadRequest, status)
	}
	a.mu.Lock()
	ls, c := a.findCheck(checkID)
	a.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: no check %q on node %s", ErrNotFound, checkID, a.cfg.Node)
	}
	if c.Type != CheckTTL {
		return fmt.Errorf("%w: check %q is a %s check, not a TTL check", ErrBadRequest, checkID, c.Type)
	}
	local, err := a.mayWrite(token, ls)
	if err != nil {
		return err
	}
	if !local {
		// Another token than the registration's: the servers decide, with this status.
		if err := a.cfg.Submit(ctx, token, Command{Op: OpCheck, NodeName: a.cfg.Node, ID: checkID, Status: status}); err != nil {
			return err
		}
	}
	a.mu.Lock()
	if t := ls.ttl[checkID]; t != nil {
		t.Reset(c.TTL)
	}
	a.mu.Unlock()
	return a.setStatus(ctx, ls, checkID, status, output)
}

// findCheck returns the service holding checkID and a copy of the check. Called with a.mu held.
func (a *Agent) findCheck(checkID string) (*localService, *Check) {
	for _, ls := range a.services {
		if c := ls.inst.check(checkID); c != nil {
			cc := *c
			return ls, &cc
		}
	}
	return nil, nil
}

// setStatus records a check's result: the output locally, a transition also on the servers.
func (a *Agent) setStatus(ctx context.Context, ls *localService, checkID, status, output string) error {
	a.mu.Lock()
	if a.services[ls.inst.ID] != ls {
		a.mu.Unlock()
		return nil // deregistered meanwhile
	}
	ni := ls.inst.clone()
	c := ni.check(checkID)
	if c == nil {
		a.mu.Unlock()
		return nil
	}
	changed := c.Status != status
	c.Status, c.Output = status, truncate(output, 4096)
	ls.inst = ni
	token := ls.token
	a.mu.Unlock()
	if !changed {
		return nil
	}
	a.log.Info("check status changed", "check", checkID, "service", ni.Service, "status", status)
	err := a.cfg.Submit(ctx, token, Command{Op: OpCheck, NodeName: a.cfg.Node, ID: checkID, Status: status})
	if err != nil {
		a.log.Warn("send check status; anti-entropy will retry", "check", checkID, "err", err)
		a.mu.Lock()
		ls.pending = true
		a.mu.Unlock()
		a.Kick()
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + " (truncated)"
}

// Services returns the instances of this node, sorted by ID, with their checks' outputs.
func (a *Agent) Services() []*Instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*Instance, 0, len(a.services))
	for _, id := range slices.Sorted(maps.Keys(a.services)) {
		out = append(out, a.services[id].inst)
	}
	return out
}

// Kick asks for an anti-entropy sync now.
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run syncs the node's instances to the servers every SyncInterval (and when kicked) until ctx
// ends or Close; then it stops every check.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.Close()
			return
		case <-a.ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
		a.sync(ctx)
	}
}

// sync sends every instance with its current statuses; the leader writes only what differs.
func (a *Agent) sync(ctx context.Context) {
	a.mu.Lock()
	type item struct {
		ls  *localService
		in  *Instance
		tok string
	}
	var items []item
	keep := slices.Sorted(maps.Keys(a.pending))
	for _, id := range slices.Sorted(maps.Keys(a.services)) {
		ls := a.services[id]
		items = append(items, item{ls, ls.inst, ls.token})
		keep = append(keep, id)
	}
	a.mu.Unlock()
	if a.cfg.Token != "" {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.SyncInterval)
		err := a.cfg.Submit(cctx, a.cfg.Token, Command{Op: OpSyncNode, Node: a.node(), Keep: keep})
		cancel()
		if err != nil {
			a.log.Warn("anti-entropy sync of the node", "err", err)
		}
	}
	for _, it := range items {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.SyncInterval)
		err := a.cfg.Submit(cctx, it.tok, Command{Op: OpRegister, Node: a.node(), Instance: it.in})
		cancel()
		if err != nil {
			a.log.Warn("anti-entropy sync", "instance", it.in.ID, "err", err)
			continue
		}
		a.mu.Lock()
		if it.ls.inst == it.in {
			it.ls.pending = false
		}
		a.mu.Unlock()
	}
}

// Close stops every check and the sync loop. Instances stay registered on the servers: a node
// that stops syncing turns critical there.
func (a *Agent) Close() {
	a.cancel()
	a.mu.Lock()
	for _, ls := range a.services {
		ls.stop()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// start starts ls's checks. Called with a.mu held.
func (a *Agent) start(ls *localService) {
	ctx, cancel := context.WithCancel(a.ctx)
	ls.cancel = cancel
	for _, c := range ls.inst.Checks {
		if c.Type == CheckTTL {
			id := c.ID
			ls.ttl[id] = time.AfterFunc(c.TTL, func() {
				a.setStatus(ctx, ls, id, StatusCritical, "TTL expired")
			})
			continue
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.runCheck(ctx, ls, c) }()
	}
}

func (ls *localService) stop() {
	if ls.cancel != nil {
		ls.cancel()
	}
	for _, t := range ls.ttl {
		t.Stop()
	}
}

// runCheck probes c every Interval and applies Consul's thresholds: SuccessBeforePassing
// consecutive successes to turn passing, FailuresBeforeCritical consecutive failures to turn
// critical (FailuresBeforeWarning, if set, to turn warning before that).
func (a *Agent) runCheck(ctx context.Context, ls *localService, c Check) {
	successes, failures := 0, 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status, output := a.cfg.Prober.probe(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if status == StatusCritical {
			successes, failures = 0, failures+1
			switch {
			case failures >= c.FailuresBeforeCritical:
				a.setStatus(ctx, ls, c.ID, status, output)
			case c.FailuresBeforeWarning > 0 && failures >= c.FailuresBeforeWarning:
				a.setStatus(ctx, ls, c.ID, StatusWarning, output)
			default:
				a.setOutput(ls, c.ID, output)
			}
		} else {
			successes, failures = successes+1, 0
			if successes >= c.SuccessBeforePassing {
				a.setStatus(ctx, ls, c.ID, status, output)
			} else {
				a.setOutput(ls, c.ID, output)
			}
		}
		t.Reset(c.Interval)
	}
}

func (a *Agent) setOutput(ls *localService, checkID, output string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ni := ls.inst.clone()
	if c := ni.check(checkID); c != nil {
		c.Output = truncate(output, 4096)
		ls.inst = ni
	}
}

// IsRefusal reports whether err is the servers refusing a request (as opposed to not answering).
func IsRefusal(err error) bool {
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrNotFound)
}

// RegisterRetrying registers in like Register, retrying while the servers cannot be reached,
// until it succeeds, they refuse it, or ctx ends. It is how an agent registers the definitions
// of its configuration directory at start; they are not kept in the data directory (the
// configuration directory is their record).
func (a *Agent) RegisterRetrying(ctx context.Context, token string, in *Instance) error {
	return a.registerRetrying(ctx, token, in, false)
}

func (a *Agent) registerRetrying(ctx context.Context, token string, in *Instance, persist bool) error {
	wait := 100 * time.Millisecond
	for {
		err := a.register(ctx, token, in, persist)
		if err == nil || IsRefusal(err) || ctx.Err() != nil {
			return err
		}
		a.log.Warn("register; retrying", "id", in.ID, "err", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// writeFile makes instance id's file in the data directory (if there is one) say what the
// agent holds now: its registration if it is kept, else no file. Writes of one ID take turns
// and each writes the state current when its turn comes, so the last one leaves the latest;
// other IDs, and everything else the agent does, do not wait for the disk.
func (a *Agent) writeFile(id string) error {
	a.mu.Lock()
	st := a.store
	if st == nil {
		a.mu.Unlock()
		return nil
	}
	l := a.files[id]
	if l == nil {
		l = &fileLock{}
		a.files[id] = l
	}
	l.refs++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(a.files, id)
		}
		a.mu.Unlock()
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	a.mu.Lock()
	var token string
	var kept *Instance
	if ls := a.services[id]; ls != nil {
		token, kept = ls.token, ls.kept
	}
	a.mu.Unlock()
	if kept == nil {
		return st.remove(id)
	}
	return st.save(token, kept)
}

// Restore opens the data directory (AgentConfig.DataDir; nothing to do without one) and
// registers again, in the background, every instance registered through Register before the
// agent stopped, with the token it was registered with, retrying while the servers cannot be
// reached. Until each is registered again, syncs keep it on the servers; one the servers refuse
// now (a revoked token) is dropped with a warning. It returns an error if the directory
// cannot be read; call it before the agent serves its API.
func (a *Agent) Restore(ctx context.Context) error {
	if a.cfg.DataDir == "" {
		return nil
	}
	st, err := openStore(a.cfg.DataDir)
	if err != nil {
		return err
	}
	kept, err := st.load()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.store = st
	for _, p := range kept {
		a.pending[p.Instance.ID]++
	}
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.ctx, cancel) // Close ends the retries
	var restoring sync.WaitGroup
	for _, p := range kept {
		a.wg.Add(1)
		restoring.Add(1)
		go func() {
			defer a.wg.Done()
			defer restoring.Done()
			defer a.unpend(p.Instance.ID)
			err := a.registerRetrying(ctx, p.Token, p.Instance, true)
			switch {
			case err == nil:
				a.log.Info("registration restored from the data directory", "id", p.Instance.ID, "service", p.Instance.Service)
			case IsRefusal(err):
				a.log.Warn("the servers refuse a kept registration now; dropping it", "id", p.Instance.ID, "err", err)
				if err := a.writeFile(p.Instance.ID); err != nil {
					a.log.Error("remove the registration from the data directory", "id", p.Instance.ID, "err", err)
				}
			}
		}()
	}
	go func() { restoring.Wait(); stop(); cancel() }()
	a.log.Info("data directory opened", "dir", a.cfg.DataDir, "registrations", len(kept))
	return nil
}

func (a *Agent) unpend(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending[id]--; a.pending[id] <= 0 {
		delete(a.pending, id)
	}
}

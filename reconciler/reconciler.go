// Package reconciler is the running control plane: it keeps a Raft-replicated history of compiled
// snapshots and serves the current one, and on the leader it watches a Git repository and turns
// every new commit of the tracked ref into a snapshot.
//
// What it guarantees:
//   - Every server serves what its FSM holds (the newest snapshot, or the pinned one), and a
//     restarted server serves the last snapshot it served from disk before it reaches Git or its
//     peers.
//   - Only the leader reads Git and compiles. A commit that does not compile, or whose signature
//     does not verify (Config.VerifyCommits), is recorded (commit, positioned errors) and changes
//     nothing served; a later good commit clears it. A repository or ref that cannot be read is
//     recorded too, and retried with backoff.
//   - The FSM is deterministic: an entry's effect depends only on its bytes and the previous state.
//   - Write endpoints need a token, compared in constant time: the server token may do every
//     write, an operator token every write but join, a service token none (it only signs its own
//     service's certificates); see write in http.go. The Git webhook needs its HMAC secret (or
//     GitLab token), compared in constant time. Anything else changes nothing.
//   - With Config.TLS, Raft runs over mutual TLS and accepts only peers presenting a server
//     certificate of the cluster's CA, on both ends; a joining server must show one on its Raft
//     port before it becomes a voter; the HTTP API is HTTPS and its redirects keep the scheme.
//   - The data directory and everything in it are owner-only once Open returns, and credentials
//     in a repository URL appear in no log line, error or status field.
//   - The cluster views (GET /v1/proxies, /v1/proxies/{node}/config, /v1/members) answer for every
//     server of the configuration, asking the peers; a peer that does not answer is named, never
//     left out silently (cluster_view.go).
//   - One server per data directory (DATA/LOCK). The first start is atomic; a file of the data
//     directory that cannot be read back is refused with its name and the recovery step
//     (ErrCorrupt), never a panic (raft.go, datadir.go).
//   - A server never joins, nor is absorbed into, another cluster than its own: every Raft
//     connection carries the cluster id (clusterid.go). A server removed from its cluster, or
//     counted as a member by another cluster, says so and serves no xDS and signs nothing
//     (health.go).
//   - A joining server publishes nothing older than the cluster's state when it joined.
//   - Failed writes to the data directory show in the status and metrics until one succeeds
//     (storage.go).
package reconciler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/prometheus/client_golang/prometheus"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/redact"
	"github.com/meshgit/mesh/internal/tlsutil"
	"github.com/meshgit/mesh/xds"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotLeader means a write reached a server that is not the Raft leader.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrNoLeader means the cluster has no leader at the moment (writes cannot proceed).
	ErrNoLeader = errors.New("no raft leader")
	// ErrUnknownVersion means a pin named a version not in the history.
	ErrUnknownVersion = errors.New("version not in history")
	// ErrSnapshotMismatch means a snapshot this server built by applying a Raft delta does not
	// hash to the version the leader gave it: it is not served (the last good one is), and the
	// server fetches that version whole from a peer.
	ErrSnapshotMismatch = errors.New("snapshot does not match its version")
	// ErrBadCommand means a Raft entry could not be decoded; the FSM ignores it.
	ErrBadCommand = errors.New("malformed raft command")
	// ErrUnauthorized means a write request had no token or an unknown one.
	ErrUnauthorized = errors.New("missing or wrong token")
	// ErrForbidden means a write request's token is known but does not cover the request.
	ErrForbidden = errors.New("token not allowed to do this")
	// ErrNodeID means the data directory belongs to another node id than the one requested.
	ErrNodeID = errors.New("node id does not match the data directory")
	// ErrDataDirInUse means another process holds the data directory's lock.
	ErrDataDirInUse = errors.New("data directory in use")
	// ErrCorrupt means a file of the data directory cannot be read back; the error names the
	// file and the recovery step.
	ErrCorrupt = errors.New("corrupt data directory")
	// ErrClusterMismatch means a Raft peer belongs to another cluster (another cluster id).
	ErrClusterMismatch = errors.New("raft peer of another cluster")
	// ErrRemoved means this server was removed from the cluster: it serves nothing.
	ErrRemoved = errors.New("removed from the cluster")
	// ErrUnknownServer means a request named a server that is not in the Raft configuration.
	ErrUnknownServer = errors.New("no such server in the cluster")
	// ErrPeerRefused means a server asking to join did not show a server certificate of the
	// cluster's CA on its Raft port.
	ErrPeerRefused = errors.New("raft peer refused")
)

// Publisher receives every snapshot a server is to serve (in practice the xDS server).
// SetSnapshot is called from one goroutine at a time, in order; it must not block for long.
type Publisher interface {
	SetSnapshot(*mesh.Snapshot) error
}

// TrustBundler is a Publisher that also serves the CA's trust bundle (the xds.Server does, as
// Envoy's ROOTCA secret): the server hands it the bundle whenever it changes, and before the
// snapshot that follows the CA's creation, so that proxies get both in their first
// configuration instead of being rendered again when the CA appears.
type TrustBundler interface {
	SetTrustBundle(pem []byte) error
}

// ProxyStatus is what the xDS server reports about one proxy (GET /v1/proxies, metrics).
type ProxyStatus = xds.ProxyStatus

// RaftTiming tunes Raft's timers; zero fields keep hashicorp/raft's defaults. Tests and
// benchmarks on loopback use shorter ones.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// Config configures a Server. Repo is required; the rest have defaults.
type Config struct {
	Repo string // a local repository path (work tree or bare) or a remote URL
	Ref  string // the branch (or ref) to follow; "" means the repository's HEAD
	Dir  string // the mesh directory inside the repository; "" is its root

	DataDir       string // default ./mesh-data
	HTTPAddr      string // default 127.0.0.1:8500
	HTTPAdvertise string // the HTTP address other servers use; default the listening address
	RaftAddr      string // default 127.0.0.1:8300
	RaftAdvertise string // default the listening address
	NodeID        string // default derived from the hostname and data directory, then kept in DataDir
	Join          string // the HTTP address (or URL) of a server of an existing cluster; "" bootstraps
	// TLS, when set, runs Raft over mutual TLS (peers must present a server certificate of its
	// CA) and the HTTP API over HTTPS; joins and redirects then use https.
	TLS *tlsutil.Material

	Token         string        // the server token (see write in http.go); empty: only operator tokens write
	WebhookSecret []byte        // empty refuses every webhook
	Poll          time.Duration // remote fetch interval and local safety-net poll; default 30s
	History       int           // snapshots kept; default 20
	GitAuth       transport.AuthMethod
	// VerifyCommits, when set, are the only keys whose signed commits are compiled and served:
	// a commit whose signature is missing, bad or by another key is refused (lastError, step
	// verify) and the last good snapshot stays served.
	VerifyCommits *commitsig.Keys

	// Datacenter, if set, is the datacenter this cluster serves: the snapshot is published
	// from its point of view (compiler.ForDatacenter: same version, chains resolved there),
	// the catalog's instances and gateways are in it and the CA's leaves name it. It must be
	// one of mesh.datacenters; "" serves mesh.datacenter.
	Datacenter string
	// Federate maps the other datacenters of the mesh to the HTTP API of their servers
	// (https://HOST:PORT, several comma-separated: tried in turn when one fails): this cluster
	// follows their gateways and healthy-instance counts (federation.go) and serves their
	// gateways to its proxies.
	Federate map[string]string

	// Publisher receives the snapshots to serve; in mesh serve, the xds.Server. Default: none.
	Publisher Publisher
	// Proxies lists the connected proxies; in mesh serve, (*xds.Server).Proxies. Default: none.
	Proxies func() []ProxyStatus
	// ProxyConfig returns what the xDS server set for a connected node; in mesh serve,
	// (*xds.Server).ProxyConfig. Default: none (GET /v1/proxies/{node}/config asks the peers).
	ProxyConfig func(nodeID string) (*xds.ProxyConfig, error)
	// Collectors are served on GET /metrics with the server's own; in mesh serve, the xDS
	// server's (*xds.Server).Collectors.
	Collectors []prometheus.Collector
	// Compile compiles a commit's mesh files with the mesh's own policy files (its policies/
	// folder); default compileWithPolicies with a compiler.Cache kept from one commit to the
	// next, so a push that changes a few files of a large mesh recompiles in a fraction of the
	// time.
	Compile func(ctx context.Context, files, policies []compiler.File) (*mesh.Snapshot, error)
	Log     *slog.Logger // default: discard
	Raft    RaftTiming
	// MaxWebhookBody bounds webhook bodies; default 1 MiB.
	MaxWebhookBody int64
	// CatalogSync is the anti-entropy period of the server's own catalog agent (default
	// DefaultCatalogSync); CatalogTick the period of the leader's node-liveness and reaping
	// checks (default 1s).
	CatalogSync time.Duration
	CatalogTick time.Duration
	// CheckAllow, when not empty, lists the only networks the server's health checks (of Git
	// endpoints and of instances registered with it) may connect to (catalog.Prober).
	CheckAllow []netip.Prefix
	// Lock is the data directory's lock if the caller took it (mesh serve takes it before
	// anything else); Open takes it otherwise. Close releases it either way.
	Lock *DirLock

	// storageFault, when set (tests), fails the data directory writes it returns an error for.
	storageFault func(op string) error
}

// Defaults of DESIGN.md.
const (
	DefaultHTTPAddr = "127.0.0.1:8500"
	DefaultXDSAddr  = "127.0.0.1:8502"
	DefaultRaftAddr = "127.0.0.1:8300"
	DefaultDataDir  = "mesh-data"
	DefaultPoll     = 30 * time.Second
	DefaultHistory  = 20
)

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = DefaultRaftAddr
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.Compile == nil {
		cache := compiler.NewCache()
		c.Compile = func(ctx context.Context, files, policies []compiler.File) (*mesh.Snapshot, error) {
			return compileWithPolicies(ctx, files, policies, cache)
		}
	}
	if c.Log == nil {
		c.Log = discardLogger()
	}
	if c.MaxWebhookBody <= 0 {
		c.MaxWebhookBody = 1 << 20
	}
	if c.CatalogSync <= 0 {
		c.CatalogSync = DefaultCatalogSync
	}
}

// Server is one mesh server: a Raft node with its FSM, the HTTP API, the publisher of served
// snapshots and, while it leads, the Git reconcile loop.
type Server struct {
	cfg     Config
	log     *slog.Logger
	id      string
	fsm     *fsm
	ca      *ca.CA
	cat     *catalog.Server
	agent   *catalog.Agent
	node    *raftNode
	metrics *metrics
	src     source

	httpLn     net.Listener
	httpSrv    *http.Server
	httpAdv    string
	httpClient *http.Client // this server's client of the others' HTTP API (join, registration)
	fedClient  *http.Client // httpClient without its timeout: blocking queries to federated peers
	fed        *federation  // nil without Config.Federate
	// httpStopping is closed when the HTTP server shuts down, which ends blocking queries.
	httpStopping chan struct{}

	kick     chan struct{} // wakes the reconcile loop: a ref changed, a webhook arrived
	webhooks *replayCache

	pub publisher

	lock    *DirLock
	cluster *clusterIdentity
	storage storageHealth
	health  health // removal and cluster conflicts: what stops this server serving

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	shutdownOnce sync.Once
	closeOnce    sync.Once
	closeErr     error
}

// New checks cfg and returns a Server; Open starts it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Repo == "" {
		return nil, errors.New("reconciler: no repository")
	}
	src, err := newSource(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Log,
		src:      src,
		kick:     make(chan struct{}, 1),
		webhooks: newReplayCache(1024),
	}
	for dc, u := range cfg.Federate {
		if dc == "" || dc == cfg.Datacenter {
			return nil, fmt.Errorf("federate: %q is not another datacenter", dc)
		}
		if len(peerURLs(u)) == 0 {
			return nil, fmt.Errorf("federate %s: no URL", dc)
		}
		for _, u := range peerURLs(u) {
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
				return nil, fmt.Errorf("federate %s: %q is not an http(s)://HOST:PORT URL", dc, redact.URL(u))
			}
		}
	}
	if len(cfg.Federate) > 0 {
		s.fed = newFederation(cfg.Federate)
	}
	s.httpStopping = make(chan struct{})
	s.fsm = newFSM(cfg.History, cfg.Log)
	s.storage.fault = cfg.storageFault
	s.ca = ca.New(ca.Config{Store: caStore{s}, OperatorToken: cfg.Token, Log: cfg.Log.With("component", "ca"),
		Settings:     func() ca.Settings { return ca.SettingsFrom(s.pub.view(s.Served())) },
		ExtraRoots:   func() string { return s.fed.roots() },
		RootsChanged: func() <-chan struct{} { return s.fsm.roots.Changed() },
		Stopping:     s.httpStopping})
	return s, nil
}

// Open starts the server: it serves the last snapshot it knows from disk, starts Raft (bootstrapping
// a one-server cluster, or joining one), the HTTP API and the publisher. It returns once the
// server listens; the cluster may elect its leader later.
func (s *Server) Open(ctx context.Context) (err error) {
	if s.lock = s.cfg.Lock; s.lock == nil {
		if s.lock, err = LockDataDir(s.cfg.DataDir); err != nil {
			return err
		}
	}
	if err := secureDataDir(s.cfg.DataDir); err != nil {
		s.lock.Release()
		return fmt.Errorf("data directory: %w", err)
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	s.id, err = nodeID(s.cfg.DataDir, s.cfg.NodeID)
	if err != nil {
		return err
	}
	s.log = s.log.With("node", s.id)
	s.cluster = newClusterIdentity(s.log)
	s.metrics = newMetrics(s)
	s.storage.count = func(op string) { s.metrics.storageErrors.WithLabelValues(op).Inc() }

	s.pub.init(s)
	s.pub.loadCache() // serve from disk before anything else can answer
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.pub.run(s.bgCtx) }()

	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	s.httpClient = &http.Client{Timeout: 30 * time.Second}
	if s.cfg.TLS != nil {
		s.httpLn = tls.NewListener(s.httpLn, s.cfg.TLS.ServerConfig())
		s.httpClient.Transport = &http.Transport{TLSClientConfig: s.cfg.TLS.ClientConfig(), ForceAttemptHTTP2: true}
	}
	s.fedClient = &http.Client{Transport: s.httpClient.Transport}
	if s.fed != nil {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.runFederation(s.bgCtx) }()
	}
	s.httpAdv = s.cfg.HTTPAdvertise
	if s.httpAdv == "" {
		s.httpAdv = s.httpLn.Addr().String()
	}
	if s.cfg.Join != "" {
		// Until the join tells how far the cluster is, what Raft replicates is its past.
		s.pub.catchUp.Store(math.MaxUint64)
	}
	if s.node, err = openRaft(ctx, s); err != nil {
		return err
	}
	if s.node.existing {
		s.pub.catchUp.Store(0)
		if s.node.voters() > 1 {
			// A restarted member of a cluster: its log may be far behind, and what it replays
			// is the cluster's past; it serves its last snapshot from disk until it has caught
			// up with the leader.
			s.pub.catchUp.Store(math.MaxUint64)
			s.bg.Add(1)
			go func() { defer s.bg.Done(); s.learnCatchUp(s.bgCtx) }()
		}
	}
	if err := secureDataDir(s.cfg.DataDir); err != nil { // and what Raft just created in it
		return fmt.Errorf("data directory: %w", err)
	}
	s.openCatalog()
	if err := s.agent.Restore(s.bgCtx); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.agent.Run(s.bgCtx) }()
	s.httpSrv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.httpSrv.RegisterOnShutdown(func() { close(s.httpStopping) }) // ends blocking queries
	s.bg.Add(3)
	go func() { defer s.bg.Done(); s.watchHealth(s.bgCtx) }()
	go func() {
		defer s.bg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "err", err)
		}
	}()
	go func() { defer s.bg.Done(); s.watchLeadership(s.bgCtx) }()
	if host, _, _ := net.SplitHostPort(s.httpAdv); host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		s.log.Warn("the HTTP API listens on an unspecified address: set an advertise address so that other servers can reach it", "http", s.httpAdv)
	}
	s.log.Info("mesh server started", "http", s.peerURL(s.httpAdv), "raft", s.node.addr, "tls", s.cfg.TLS != nil,
		"data", s.cfg.DataDir, "repo", redactURL(s.cfg.Repo), "ref", s.cfg.Ref, "dir", s.cfg.Dir)

	switch {
	case s.cfg.Join != "" && !s.node.existing:
		if err := s.join(ctx); err != nil {
			return err
		}
	case s.cfg.Join != "":
		s.log.Info("resuming the cluster recorded in the data directory; --join ignored", "join", s.cfg.Join)
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.keepRegistered(s.bgCtx) }()
	return nil
}

// keepRegistered makes sure the cluster knows this server's HTTP address (it may have changed
// across a restart), asking the leader until the FSM holds the new one. The leader registers
// itself.
func (s *Server) keepRegistered(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		if !sleepCtx(ctx, min(backoff(attempt), 5*time.Second)) {
			return
		}
		// Only a changed address is corrected: a server without an entry may have been removed,
		// and must not add itself back.
		m, ok := s.fsm.state().servers[s.id]
		if ok && m.HTTP == s.httpAdv {
			return
		}
		if !ok {
			continue
		}
		leader := s.leaderHTTP()
		if leader == "" || s.IsLeader() || !s.inConfiguration() {
			continue
		}
		c := s.peerClient(leader)
		err := c.Join(ctx, JoinRequest{ID: s.id, RaftAddress: string(s.node.addr), HTTPAddress: s.httpAdv})
		if err != nil {
			s.log.Warn("register http address with the leader", "leader", leader, "err", err)
		}
	}
}

// Shutdown stops accepting: the HTTP API stops and the reconcile loop ends. Raft keeps running
// (and this server keeps serving its snapshot through the publisher) until Close.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.shutdownOnce.Do(func() {
		if s.httpSrv != nil {
			if err = s.httpSrv.Shutdown(ctx); err != nil {
				s.httpSrv.Close()
			}
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		if s.node != nil && s.node.isLeader() && s.node.voters() > 1 {
			// Hand leadership over now rather than make the others wait for an election.
			if e := s.node.raft.LeadershipTransfer().Error(); e != nil {
				s.log.Warn("leadership transfer", "err", e)
			}
		}
		if s.bgCancel != nil {
			s.bgCancel()
		}
	})
	return err
}

// Close shuts the server down in order: stop accepting (Shutdown), stop the loops, shut Raft down
// and close its stores.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.Shutdown(ctx)
		s.bg.Wait()
		if s.node != nil {
			err = errors.Join(err, s.node.close())
		}
		err = errors.Join(err, s.lock.Release())
		s.closeErr = err
		s.log.Info("mesh server stopped")
	})
	return s.closeErr
}

// scheme is the HTTP API's URL scheme.
func (s *Server) scheme() string {
	if s.cfg.TLS != nil {
		return "https"
	}
	return "http"
}

// peerURL turns another server's HTTP address into a URL of this cluster's scheme; a URL is kept.
func (s *Server) peerURL(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return s.scheme() + "://" + addr
}

// peerClient is a client of another server's HTTP API, verifying it against the cluster's CA
// when TLS is on.
func (s *Server) peerClient(addr string) *Client {
	return &Client{Addr: s.peerURL(addr), Token: s.cfg.Token, HTTP: s.httpClient}
}

// NodeID returns this server's Raft id.
func (s *Server) NodeID() string { return s.id }

// HTTPAddr returns the address the HTTP API listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// RaftAddr returns the address Raft listens on.
func (s *Server) RaftAddr() string { return string(s.node.addr) }

// Served returns the snapshot this server serves now, or nil.
func (s *Server) Served() *mesh.Snapshot { return s.pub.current() }

// IsLeader reports whether this server is the Raft leader.
func (s *Server) IsLeader() bool { return s.node != nil && s.node.isLeader() }

// Kick asks the reconcile loop (if this server leads) to look at Git now.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

var nodeIDRe = regexp.MustCompile(`[^a-z0-9-]+`)

// caStore keeps the CA's state in the FSM: its commands are Raft entries.
type caStore struct{ s *Server }

func (c caStore) State() *ca.State { return c.s.fsm.state().ca }

func (c caStore) Commit(_ context.Context, cmd ca.Command) error { return c.s.apply(cmdCA, cmd, nil) }

// CA returns this server's certificate authority (it signs on every server; writes need the leader).
func (s *Server) CA() *ca.CA { return s.ca }

func (s *Server) trustDomain() string {
	if snap := s.Served(); snap != nil {
		return snap.Mesh.TrustDomain
	}
	return ""
}

// compileWithPolicies compiles files and enforces the built-in policies the mesh enables and its
// own policies. Analysis warnings are not the server's business: review and validate show them.
func compileWithPolicies(ctx context.Context, files, policies []compiler.File, cache *compiler.Cache) (*mesh.Snapshot, error) {
	snap, _, err := compiler.CompileWithReport(ctx, files, compiler.Options{PolicyFiles: policies, Cache: cache})
	return snap, err
}

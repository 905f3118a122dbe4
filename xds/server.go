// Package xds renders a compiled mesh.Snapshot into the configuration of each proxy and serves
// it over xDS: state-of-the-world and delta ADS with its own servers (sotwserver.go,
// deltaserver.go), the per-type services with go-control-plane's.
//
// Guarantees:
//
//   - Rendering is pure: RenderWithBundle(snapshot, proxy, trust bundle) depends on nothing
//     else, and every proxy of the same service, shape (and, for Envoy, certificate directory)
//     gets the same resources. One function per resource type
//     (listeners.go, routes.go, clusters.go, endpoints.go, rbac.go, secrets.go).
//   - Intentions are enforced with RBAC derived from Snapshot.Inbound, the evaluator's own
//     ordering, so that what proxies enforce equals mesh.Authorize (see rbac.go). An Envoy
//     sidecar takes its inbound RBAC as an extension config (ECDS) that public_listener's RBAC
//     filter names, with a deny-all default: an intention change sends that resource alone and
//     leaves every listener byte for byte as it was, over state of the world as over delta
//     (extensions.go). Proxyless gRPC keeps it inline in its server listeners.
//   - Transparent sidecars (mesh.Service.Transparent) reach what mesh.Reachable says, one
//     filter chain per service matched by its virtual IP on one outbound listener (Envoy), or
//     by name (gRPC); see transparent.go.
//   - Rendering costs what differs, not proxies × upstreams: resources that depend only on an
//     upstream or a service are built, validated and hashed once per snapshot and shared by
//     every proxy using them, and byte for byte what each proxy would get alone (shared.go).
//     Each distinct resource is marshalled once, and every stream is sent those bytes, equal
//     to go-control-plane's own marshal of it (wire.go). A change of the default intention or
//     of intentions alone rebuilds only inbound listeners: outbound ones are kept.
//     Rendering runs on every core (a pool of GOMAXPROCS goroutines), outside the lock that
//     streams need; the proxies of one group that connect together render it once. What a
//     change affects is worked out from deps that groups with the same upstreams share.
//   - Serving costs what changed (cache.go): the server's own implementation of
//     go-control-plane's cache answers what its SnapshotCache answers, but a new snapshot of a
//     node looks only at the watches of the types that changed, a wildcard delta watch is
//     answered from the difference of the type's old and new resources (computed once for
//     every node of a group), and each resource's wire bytes are shared by every response.
//     A state-of-the-world or delta response's bytes are encoded once for every stream that
//     sends the same resources, and only its nonce per stream (sotwserver.go, deltaserver.go,
//     with GRPCServerOptions); a delta stream in sync with its node holds a pointer to what it
//     was sent per type, not a version per resource.
//     Delta resource versions on the wire are the ones the server tracks (go-control-plane
//     sends a hash of the bytes but tracks the snapshot's version map), so a delta client that
//     reconnects with initial_resource_versions is sent only what it lacks.
//   - Nothing inconsistent is served: every resource passes ValidateAll, and every per-proxy
//     snapshot passes a reference check stricter than go-control-plane's Consistent (it looks
//     inside API listeners; the golden tests hold Envoy-shaped snapshots to Consistent itself).
//     If any proxy's configuration fails, SetSnapshot returns the error and nothing served
//     changes.
//   - A proxy whose resources did not change is not pushed: the versions on the wire are, per
//     resource type, the mesh Snapshot version in which that content last changed and a hash
//     of it, so they change only with the content; a new mesh snapshot re-renders only the
//     proxies that the change can affect. The version reported for a proxy (Proxies) is the
//     current mesh Snapshot version and the hash of all its content: a proxy that ACKed its
//     content is reported up to date as of every later snapshot that leaves it unchanged.
//   - A NACKed configuration is recorded (version, error, time) and not resent: the proxy keeps
//     its last good configuration until the next change.
//   - A node that names an unknown service, or no node at all, gets an error on its stream and a
//     log line (also when its service disappears later, or when it connected before the first
//     snapshot); it never receives another service's configuration. Malformed requests never
//     panic and never affect other streams.
//   - No private key is logged, rendered, or written to golden files, and the server never holds
//     one of a proxy: Envoy's SDS leaf names the files `mesh agent` writes beside it, and the
//     trust bundle (SetTrustBundle, pushed again on every CA rotation) is public certificates.
//   - With WithPeerAuthentication (and ServerCredentials on the gRPC server), a stream is served
//     only to a peer whose verified client certificate's SPIFFE service is its node.cluster.
package xds

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	extensionservice "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mesh "github.com/meshgit/mesh"
)

// disconnectedTTL is how long a node that closed all its streams stays in Proxies().
const disconnectedTTL = 10 * time.Minute

// Server serves rendered snapshots over xDS (ADS state-of-the-world and delta, and the
// per-type discovery services). It is safe for concurrent use.
type Server struct {
	log   *slog.Logger
	cache nodeCache
	xds   serverv3.Server
	// delta serves DeltaAggregatedResources (deltaserver.go); nil when go-control-plane's
	// server does (WithControlPlaneDeltaServer, WithSnapshotCache).
	delta    *deltaServer
	cplDelta bool
	ctx      context.Context
	cancel   context.CancelFunc

	setMu sync.Mutex // serialises SetSnapshot
	// pubOld and pubRendered are publish's maps, kept (empty) between publishes so that a
	// mesh-wide change does not allocate them afresh; under setMu.
	pubOld, pubRendered map[Proxy]*group
	// pubWork and pubTodo are publish's lists of proxies, kept (empty) likewise.
	pubWork, pubTodo []Proxy

	mu        sync.Mutex
	closed    bool
	suspended string // Suspend's reason; "" while serving
	snap      *mesh.Snapshot
	memo      *memo // the resources shared by the proxies of snap (shared.go)
	groups    map[Proxy]*group
	nodes     map[string]*node
	// connected counts, per proxy, the nodes that have a stream (kept by nodeFor and
	// streamClosed), so that a publish finds the proxies to render without a walk of nodes.
	connected map[Proxy]int
	streams   map[int64]*streamState
	// rendering holds the groups groupFor is rendering outside s.mu, so that the proxies of
	// a group connecting together wait for one rendering rather than each render it.
	rendering map[Proxy]*inflight
	// renderSlots bounds the groups groupFor renders at once to GOMAXPROCS: a thousand proxies
	// connecting together render on every core, not a thousand goroutines' worth of garbage.
	renderSlots chan struct{}

	metrics *metrics
	// listenerOnly counts the renders that re-rendered listeners alone (render, inboundOnly).
	listenerOnly atomic.Int64

	cplSotw bool        // WithControlPlaneSotW
	sotw    *sotwServer // serves state-of-the-world ADS (sotwserver.go); nil with cplSotw

	authPeers bool         // WithPeerAuthentication
	bundle    *trustBundle // SetTrustBundle; nil before

	// renderWorkers bounds the goroutines that render a new snapshot's groups; 0 means
	// GOMAXPROCS (tests set 1 to render serially).
	renderWorkers int

	// testHookResources, when set (by tests only), alters rendered resources before they are
	// checked, to provoke NACKs with configuration that is valid for Envoy but not for gRPC.
	testHookResources func(Proxy, *Resources)
}

// nodeCache is what the server needs of a go-control-plane cache: watchCache (cache.go), or
// go-control-plane's own SnapshotCache (WithSnapshotCache).
type nodeCache interface {
	cachev3.Cache
	SetSnapshot(ctx context.Context, node string, snapshot cachev3.ResourceSnapshot) error
	ClearSnapshot(node string)
}

// WithSnapshotCache serves from go-control-plane's SnapshotCache instead of the server's own
// watch cache (cache.go), which answers the same at a cost that follows what changed. It is
// kept for comparison (TestWatchCacheMatchesSnapshotCache, benchmarks).
func WithSnapshotCache() Option {
	return func(s *Server) {
		// ads=false: gRPC clients ask for subsets of each type (one xDS client per target plus
		// one for the server, same node id), and an ADS-mode cache answers only complete
		// requests.
		s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, cplLogger{s.log})
	}
}

// WithControlPlaneDeltaServer serves DeltaAggregatedResources with go-control-plane's delta
// server over the watch cache instead of the server's own (deltaserver.go), which answers the
// same with per-stream state that does not grow with the resources a stream holds, and encodes
// each distinct response once. It is kept for comparison (TestDeltaServerMatchesControlPlane,
// benchmarks). WithSnapshotCache implies it.
func WithControlPlaneDeltaServer() Option {
	return func(s *Server) { s.cplDelta = true }
}

// group is the rendered configuration shared by every proxy of one service and shape.
type group struct {
	proxy       Proxy
	snap        *mesh.Snapshot // rendered from
	bundle      *trustBundle   // rendered with
	deps        *deps          // what the content was rendered from
	hash        string         // of all the content
	typeHash    typeHashes
	typeVersion typeHashes // the version of each type, as typeHash
	cs          *cachev3.Snapshot
	res         *Resources // what cs holds (never modified)
	err         error      // why it could not be rendered (unknown service)
}

type node struct {
	id           string
	proxy        Proxy
	streams      map[int64]bool
	served       *cachev3.Snapshot // what the cache holds for it
	ackedVersion string            // reported when the content was last fully ACKed
	ackedCS      *cachev3.Snapshot // what was fully ACKed
	lastNack     *Nack
	connectedAt  time.Time
	lastSeen     time.Time
	closedAt     time.Time
	lastErr      string
}

type streamState struct {
	kill   context.CancelCauseFunc // ends an ADS stream with an error; nil for others
	peer   *peerIdentity           // from the stream's TLS connection
	nodeID string
	delta  bool
	sent   map[string]sentResponse // type URL → latest response
	acked  map[string]string       // type URL → last ACKed version
	nacked map[string]*Nack        // type URL → the NACK of the latest response, until an ACK; nil before the first NACK
}

// newStreamState returns the state of a stream that has been sent nothing yet.
func newStreamState(delta bool) *streamState {
	return &streamState{sent: map[string]sentResponse{}, acked: map[string]string{}, delta: delta}
}

type sentResponse struct {
	nonce, version string
}

// Nack is a configuration a proxy rejected.
type Nack struct {
	TypeURL string    `json:"typeUrl"`
	Version string    `json:"version"`
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
}

// ProxyStatus is what GET /v1/proxies reports for one xDS node.
type ProxyStatus struct {
	NodeID    string `json:"nodeId"`
	Service   string `json:"service"`
	Shape     Shape  `json:"shape"`
	Connected bool   `json:"connected"`
	Streams   int    `json:"streams"`
	// Version is the configuration the node should run, <mesh snapshot version>-<content hash>;
	// AckedVersion the last one it ACKed for every resource type it subscribes to (equal to
	// Version when it is up to date). Acked has the wire versions, per type.
	Version      string            `json:"version"`
	AckedVersion string            `json:"ackedVersion"`
	Acked        map[string]string `json:"acked,omitempty"` // resource type → ACKed version
	LastNack     *Nack             `json:"lastNack,omitempty"`
	// Sync is SYNCED when the node ACKed everything it should run, NACK when it rejected the
	// latest configuration of a type, STALE otherwise (sent and not ACKed yet, or not sent yet),
	// DISCONNECTED when it has no stream. Types has the same per resource type (proxystate.go).
	Sync        string               `json:"sync"`
	Types       map[string]TypeState `json:"types,omitempty"`
	Error       string               `json:"error,omitempty"`
	ConnectedAt time.Time            `json:"connectedAt"`
	LastSeen    time.Time            `json:"lastSeen"`
}

// NewServer returns a server with no snapshot: nodes may connect and get their configuration
// when the first snapshot is set.
func NewServer(log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:       log.With("component", "xds"),
		groups:    map[Proxy]*group{},
		nodes:     map[string]*node{},
		connected: map[Proxy]int{},
		streams:   map[int64]*streamState{},

		renderSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	for _, o := range opts {
		o(s)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metrics = newMetrics(s)
	if s.cache == nil {
		s.cache = newWatchCache() // cache.go
	}
	s.xds = serverv3.NewServer(s.ctx, s.cache, (*callbacks)(s))
	if c, ok := s.cache.(*watchCache); ok && !s.cplSotw {
		s.sotw = newSotwServer(s.ctx, c, (*callbacks)(s))
	}
	if c, ok := s.cache.(*watchCache); ok && !s.cplDelta {
		s.delta = newDeltaServer(s.ctx, c, (*callbacks)(s))
	}
	return s
}

// Register registers the aggregated (SotW and delta) and per-type discovery services on g
// (extension configurations included: Envoy sidecars fetch their RBAC over ADS, see
// extensions.go).
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, ads{s})
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
	extensionservice.RegisterExtensionConfigDiscoveryServiceServer(g, s.xds)
}

// Close ends every xDS stream. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
}

// Suspend ends every ADS stream and refuses new streams and fetches with codes.Unavailable
// and reason, until Resume: a server that must not serve (it was removed from its cluster) makes
// its proxies reconnect to another server.
func (s *Server) Suspend(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason == "" {
		reason = "suspended"
	}
	s.suspended = reason
	err := status.Error(codes.Unavailable, "xDS suspended: "+reason)
	for _, n := range s.nodes {
		s.killNode(n, err)
	}
}

// Resume serves again after Suspend.
func (s *Server) Resume() {
	s.mu.Lock()
	s.suspended = ""
	s.mu.Unlock()
}

// Snapshot returns the snapshot being served, or nil.
func (s *Server) Snapshot() *mesh.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// SetSnapshot renders snap for every known node and pushes only the nodes whose resources
// changed. When any proxy's configuration fails validation or consistency, it returns the error
// and nothing served changes. The ADS streams of nodes whose service is not in snap end with
// NotFound (the proxies keep their last configuration; reconnecting, they get NotFound again).
func (s *Server) SetSnapshot(snap *mesh.Snapshot) error {
	if snap == nil {
		return fmt.Errorf("xds: nil snapshot")
	}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	bundle := s.bundle
	s.mu.Unlock()
	return s.publish(snap, bundle)
}

// SetTrustBundle sets the trust bundle: the PEM certificates of every root of the mesh CA that
// is not retired ((*ca.CA).Bundle().BundlePEM). Envoy sidecars receive it as the SecretRoots
// secret, and it is pushed again to every Envoy proxy when it changes (a CA rotation adds a
// root, a retirement removes one); TrustPool returns it for ServerCredentials. Anything but
// CA certificates (a private key, garbage) is refused and changes nothing. Call it whenever the
// CA's state changes; an unchanged bundle pushes nothing.
func (s *Server) SetTrustBundle(pems []byte) error {
	tb, err := parseBundle(pems)
	if err != nil {
		return err
	}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.bundle != nil && bytes.Equal(s.bundle.pem, tb.pem) {
		s.mu.Unlock()
		return nil
	}
	snap := s.snap
	if snap == nil {
		s.bundle = tb
		s.mu.Unlock()
		s.log.Info("trust bundle set", "roots", tb.n)
		return nil
	}
	s.mu.Unlock()
	if err := s.publish(snap, tb); err != nil {
		return err
	}
	s.log.Info("trust bundle set", "roots", tb.n)
	return nil
}

// TrustPool returns the trust bundle as a certificate pool (nil before SetTrustBundle); it is
// the roots function of ServerCredentials. The pool is never modified: SetTrustBundle makes a
// new one.
func (s *Server) TrustPool() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bundle == nil {
		return nil
	}
	return s.bundle.pool
}

// trustBundle is a parsed trust bundle; it is never modified.
type trustBundle struct {
	pem  []byte // the certificates only, re-encoded
	pool *x509.CertPool
	n    int
}

func parseBundle(pems []byte) (*trustBundle, error) {
	tb := &trustBundle{pool: x509.NewCertPool()}
	rest := pems
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			// Never quote the block: it may be a key.
			return nil, fmt.Errorf("%w: a %q PEM block; only CERTIFICATE blocks belong in a trust bundle", ErrBadBundle, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("%w: certificate %q is not a CA", ErrBadBundle, c.Subject.String())
		}
		tb.pool.AddCert(c)
		tb.pem = append(tb.pem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		tb.n++
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: trailing data that is not PEM", ErrBadBundle)
	}
	if tb.n == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrBadBundle)
	}
	return tb, nil
}

// current reports whether g is p's configuration under the served snapshot and bundle. Called
// with s.mu held.
func (s *Server) current(p Proxy, g *group) bool {
	return g != nil && g.snap == s.snap && (p.Shape != ShapeEnvoy || g.bundle == s.bundle)
}

// publish renders snap with bundle for every connected node, pushes the nodes whose resources
// changed and makes both the served ones; nothing changes when a proxy's configuration fails.
// Called with s.setMu held.
//
// Rendering happens outside s.mu, on every core, with the resources proxies share built once
// (shared.go); s.mu is held only to swap in the result, and the cache's snapshots are set after
// it is released, so streams are served meanwhile and the first proxies get their configuration
// while later ones are still being set. No group is handed to the cache before every group
// rendered and passed its checks: a snapshot that fails for one proxy changes nothing for any
// (TestRefusedSnapshotChangesNothing), which is worth more than pushing the first groups
// while the last render (the CPU is the same: on a busy machine, the last ACK comes no
// sooner).
func (s *Server) publish(snap *mesh.Snapshot, bundle *trustBundle) error {
	s.mu.Lock()
	prev, prevBundle, m := s.snap, s.bundle, s.memo
	work := s.pubWork[:0]
	for p := range s.connected {
		work = append(work, p)
	}
	if s.pubOld == nil {
		s.pubOld, s.pubRendered = map[Proxy]*group{}, map[Proxy]*group{}
	}
	old, rendered := s.pubOld, s.pubRendered
	todo := s.pubTodo[:0]
	defer func() {
		clear(old) // holds no group past the publish
		clear(rendered)
		clear(work[:cap(work)])
		clear(todo[:cap(todo)])
		s.pubWork, s.pubTodo = work[:0], todo[:0]
	}()
	for _, p := range work {
		old[p] = s.groups[p]
	}
	s.mu.Unlock()
	// The memo holds what was rendered from snap: it lives as long as snap is served (the trust
	// bundle goes into secrets, which are never shared). Any other input of shared resources
	// (the catalog's instances, for load assignments) must start a new memo when it changes.
	if prev != snap || m == nil {
		m = newMemo(snap, m)
	}

	start := time.Now()
	ch := diff(prev, snap)
	// unaffected reports whether g, rendered from prev and prevBundle, is also p's configuration
	// under snap and bundle.
	unaffected := func(p Proxy, g *group) bool {
		if g == nil || g.snap != prev {
			return false
		}
		if p.Shape == ShapeEnvoy && g.bundle != bundle {
			return false
		}
		if p.Kind == mesh.KindMeshGateway {
			return false // a gateway depends on every service of its datacenter
		}
		return !ch.affects(p.Service, g.deps)
	}
	// Nodes may connect while we render: their groups are missing or were rendered from prev.
	// Each round renders, unlocked, what the last look under s.mu found missing; whether a
	// proxy is affected at all, and what of it is rendered again, is worked out by the
	// goroutine that renders it. The proxies examined are the keys of old.
	for round := 0; ; round++ {
		todo = todo[:0]
		for _, p := range work {
			if _, ok := rendered[p]; ok {
				continue
			}
			if g := old[p]; g != nil && g.snap == snap && (p.Shape != ShapeEnvoy || g.bundle == bundle) {
				continue
			}
			todo = append(todo, p)
		}
		if err := s.renderAll(snap, prev, bundle, m, ch, todo, old, rendered, unaffected); err != nil {
			return err
		}
		s.mu.Lock()
		work = work[:0]
		for p := range s.connected {
			if _, ok := old[p]; !ok {
				work = append(work, p)
				old[p] = s.groups[p]
			}
		}
		if len(work) == 0 || round == 3 {
			break // with s.mu held
		}
		s.mu.Unlock()
	}
	// Still new nodes after a few rounds: render them under the lock, rather than loop.
	for _, p := range work {
		g := old[p]
		if g != nil && g.snap == snap && (p.Shape != ShapeEnvoy || g.bundle == bundle) || unaffected(p, g) {
			continue
		}
		ng, err := s.rerender(snap, prev, bundle, m, p, g, scopeOf(ch, p, g, prev, bundle))
		if err != nil {
			s.mu.Unlock()
			return err
		}
		rendered[p] = ng
	}
	sets := s.swap(snap, bundle, m, rendered, old)
	s.mu.Unlock()

	for _, x := range sets {
		if err := s.cache.SetSnapshot(s.ctx, x.id, x.cs); err != nil {
			s.log.Error("set node snapshot", "node", x.id, "err", err)
		}
	}
	s.metrics.pushes.Add(float64(len(sets)))
	s.metrics.setSnapshot.Observe(time.Since(start).Seconds())
	s.log.Info("snapshot set", "version", snap.Version, "commit", snap.Commit, "bundleChanged", bundle != prevBundle,
		"rendered", len(rendered), "pushed", len(sets), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// nodeSet is a cache snapshot to set for a node.
type nodeSet struct {
	id string
	cs *cachev3.Snapshot
}

// renderAll renders the proxies of todo that the change ch affects, in parallel, into
// rendered, each as much as ch requires (scopeOf).
func (s *Server) renderAll(snap, prev *mesh.Snapshot, bundle *trustBundle, m *memo, ch *change, todo []Proxy, old, rendered map[Proxy]*group,
	unaffected func(Proxy, *group) bool) error {
	groups := make([]*group, len(todo))
	errs := make([]error, len(todo))
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := s.renderWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for range min(workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
				p, g := todo[i], old[todo[i]]
				if unaffected(p, g) {
					continue // groups[i] stays nil
				}
				groups[i], errs[i] = s.rerender(snap, prev, bundle, m, p, g, scopeOf(ch, p, g, prev, bundle))
			}
		}()
	}
	wg.Wait()
	for i, p := range todo {
		if errs[i] != nil {
			return errs[i]
		}
		if groups[i] != nil {
			rendered[p] = groups[i]
		}
	}
	return nil
}

// swap makes snap, bundle and the rendered groups the served ones and returns the nodes whose
// cache snapshot is to be set (recorded as served already). examined holds (as keys) every
// proxy checked against the change. Groups no connected node used when it was examined are
// dropped; so are those whose last node swap forgets. Called with s.mu held.
func (s *Server) swap(snap *mesh.Snapshot, bundle *trustBundle, m *memo, rendered, examined map[Proxy]*group) []nodeSet {
	s.snap, s.bundle, s.memo = snap, bundle, m
	for p, g := range rendered {
		s.groups[p] = g
		if g.err != nil {
			s.log.Warn("proxies name a service that is not in the snapshot; ending their streams",
				"service", p.Service, "shape", p.Shape, "version", snap.Version)
		}
	}
	for p, g := range s.groups {
		if _, ok := rendered[p]; ok {
			continue
		}
		if _, ok := examined[p]; !ok {
			// No node of it is connected, so it was not checked against the change: drop it,
			// a node that reconnects gets its configuration rendered afresh.
			delete(s.groups, p)
			continue
		}
		g.snap, g.bundle = snap, bundle // unaffected: same content
	}
	sets := make([]nodeSet, 0, len(s.nodes))
	now := time.Now()
	forgot := false
	for id, n := range s.nodes {
		if len(n.streams) == 0 && now.Sub(n.closedAt) > disconnectedTTL {
			delete(s.nodes, id)
			forgot = true
			continue
		}
		if len(n.streams) == 0 {
			continue
		}
		g := s.groups[n.proxy]
		if g == nil {
			continue
		}
		if g.err != nil {
			n.lastErr = g.err.Error()
			s.killNode(n, status.Error(codes.NotFound, fmt.Sprintf("node %q: %v", n.id, g.err)))
			continue
		}
		n.lastErr = ""
		if n.served != g.cs {
			n.served = g.cs
			sets = append(sets, nodeSet{id: id, cs: g.cs})
		}
	}
	if forgot {
		s.gcGroups()
	}
	return sets
}

// killNode ends the node's ADS streams with err. Called with s.mu held.
func (s *Server) killNode(n *node, err error) {
	for id := range n.streams {
		if st := s.streams[id]; st != nil && st.kill != nil {
			s.log.Warn("ending xDS stream", "node", n.id, "stream", id, "err", err)
			st.kill(err)
		}
	}
}

// addStream records that a stream serves nd. Called with s.mu held.
func (s *Server) addStream(nd *node, streamID int64) {
	if nd.streams[streamID] {
		return
	}
	if len(nd.streams) == 0 {
		s.connected[nd.proxy]++
	}
	nd.streams[streamID] = true
}

// removeStream records that a stream no longer serves nd. Called with s.mu held.
func (s *Server) removeStream(nd *node, streamID int64) {
	if !nd.streams[streamID] {
		return
	}
	delete(nd.streams, streamID)
	if len(nd.streams) == 0 {
		if s.connected[nd.proxy]--; s.connected[nd.proxy] <= 0 {
			delete(s.connected, nd.proxy)
		}
	}
}

func (s *Server) groupOf(p Proxy) *group {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groups[p]
}

// gcGroups drops groups no node uses any more. Called with s.mu held.
func (s *Server) gcGroups() {
	used := map[Proxy]bool{}
	for _, n := range s.nodes {
		used[n.proxy] = true
	}
	for p := range s.groups {
		if !used[p] {
			delete(s.groups, p)
		}
	}
}

// render renders p from snap into a group, reusing old's versions (and its cache snapshot)
// for content that did not change. An unknown service is not an error of the snapshot: the
// group records it. Invalid or inconsistent resources are.
//
// With inboundOnly (the change alters nothing of p's but the RBAC of its service: see
// change.inboundOnly), only the listeners are rendered again and old's other resources are
// kept, with what is known of them (old's memo facts): the cost of an authorization change
// does not grow with what the proxy reaches.
func (s *Server) render(snap *mesh.Snapshot, bundle *trustBundle, m *memo, p Proxy, old *group, inboundOnly bool) (*group, error) {
	s.metrics.renders.Inc()
	var pems []byte
	if bundle != nil {
		pems = bundle.pem
	}
	var res *Resources
	var err error
	partial := inboundOnly && old != nil && old.res != nil && old.err == nil && old.cs != nil && snap.Services[p.Service] != nil
	if partial {
		m.carryListenerSet(p)
		res, err = rerenderListeners(snap, p, m, old.res)
		s.listenerOnly.Add(1)
	} else {
		res, err = renderShared(snap, p, pems, m)
	}
	if err != nil {
		if errorsIsUnknown(err) {
			g := &group{proxy: p, snap: snap, bundle: bundle, err: err}
			if old != nil { // keep serving what it had
				g.hash, g.typeHash, g.typeVersion, g.cs = old.hash, old.typeHash, old.typeVersion, old.cs
			}
			return g, nil
		}
		return nil, err
	}
	if s.testHookResources != nil {
		res = res.clone() // shared resources are never altered
		s.testHookResources(p, res)
	}
	// Only the listeners (gRPC) or the extension configs (Envoy) are new when the RBAC alone was
	// rendered again: if the listeners name the same routes and clusters as old's, the rest
	// was checked, hashed and found consistent before.
	var keep map[resourcev3.Type]bool
	d := old.depsIf(partial)
	if partial {
		keep = keptTypes(old.res, res, m)
	}
	byType := res.byType() // once: validated, hashed and shared below
	var facts groupFacts
	gf := m.factsOf(&facts, byType, keep) // looked up once for validation and hashing both
	if err := validateByType(byType, m, keep, gf); err != nil {
		return nil, fmt.Errorf("%w: snapshot %s, proxy %s: %w", ErrInvalidResource, snap.Version, p, err)
	}
	if keep == nil {
		if err := res.consistent(m); err != nil {
			return nil, fmt.Errorf("%w: snapshot %s, proxy %s: %w", ErrInconsistent, snap.Version, p, err)
		}
	} else if !keep[resourcev3.ListenerType] || !sameExtensionNames(old.res.Extensions, res.Extensions) {
		// The same listeners name the same extension configs: old's were found consistent.
		if errs := extensionsConsistent(res.Listeners, res.Extensions, m); len(errs) > 0 {
			return nil, fmt.Errorf("%w: snapshot %s, proxy %s: %w", ErrInconsistent, snap.Version, p, errors.Join(errs...))
		}
	}
	typeHash, hash, versionMap, err := hashByType(byType, m, keep, old, gf)
	if err != nil {
		return nil, err
	}
	if d == nil {
		d = m.dependencies(snap, p.Service)
	}
	if old != nil && old.err == nil && old.hash == hash {
		ng := *old
		ng.snap, ng.bundle, ng.deps, ng.res = snap, bundle, d, res
		return &ng, nil
	}
	g := &group{proxy: p, snap: snap, bundle: bundle, deps: d, res: res, hash: hash, typeHash: typeHash}
	cs := &cachev3.Snapshot{}
	g.typeVersion = typeVersions(snap.Version, &typeHash)
	for i, t := range resourceTypes {
		if old != nil && old.typeHash[i] == typeHash[i] && old.cs != nil {
			g.typeVersion[i] = old.typeVersion[i] // unchanged type: same version, not resent
			cs.Resources[cachev3.GetResponseType(t)] = old.cs.Resources[cachev3.GetResponseType(t)]
			if vm := old.cs.VersionMap[t]; vm != nil {
				versionMap[t] = vm // the same content: share old's rather than keep a copy
			}
			continue
		}
		// Shared with every group of the same content of t (cacheshare.go).
		cs.Resources[cachev3.GetResponseType(t)], versionMap[t] = m.sharedResources(t, typeHash[i], g.typeVersion[i], byType[t], versionMap[t], gf.list(i))
	}
	// go-control-plane's cs.Consistent() is not called: res.consistent above checks more (API
	// listeners, unreferenced routes, load assignments without clusters), reading each shared
	// filter once, where cs.Consistent would unmarshal every filter of every proxy again (a
	// tenth of the CPU of a change in a dense mesh). TestRenderGolden holds the two together.
	// The delta version map, from the hashes just computed (go-control-plane would marshal
	// every resource again); with it set, the snapshot is read-only once shared by nodes.
	cs.VersionMap = versionMap
	g.cs = cs
	return g, nil
}

// typeVersions returns the version of each type whose content hashes are h in snapshot sv:
// sv-<the hash's first 8 digits>, all six cut from one string (one allocation per group).
func typeVersions(sv string, h *typeHashes) (out typeHashes) {
	n := len(sv) + 1 + 8
	var b strings.Builder
	b.Grow(n * len(h))
	for i := range h {
		b.WriteString(sv)
		b.WriteByte('-')
		b.WriteString(h[i][:8])
	}
	all := b.String()
	for i := range out {
		out[i] = all[i*n : (i+1)*n]
	}
	return out
}

// keptTypes returns the types of res, re-rendered for its RBAC alone from old, that are old's
// (checked, hashed and found consistent before), or nil when its listeners name other routes or
// clusters. An Envoy sidecar's listeners are kept as they were (its RBAC is in ECDS): nothing
// of them is read again, however many filter chains they have.
func keptTypes(old, res *Resources, m *memo) map[resourcev3.Type]bool {
	kept := sameList(old.Listeners, res.Listeners)
	if !kept {
		if same, err := sameRefs(old.Listeners, res.Listeners, m); err != nil || !same {
			return nil
		}
	}
	return map[resourcev3.Type]bool{resourcev3.RouteType: true, resourcev3.ClusterType: true,
		resourcev3.EndpointType: true, resourcev3.SecretType: true, resourcev3.ListenerType: kept}
}

// depsIf returns g's deps when partial (a change that leaves them as they were), else nil.
func (g *group) depsIf(partial bool) *deps {
	if !partial || g == nil {
		return nil
	}
	return g.deps
}

// sameList reports whether a and b are the same list of the same messages.
func sameList(a, b []*listenerv3.Listener) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// sameExtensionNames reports whether two sorted lists of extension configs have the same names
// and types.
func sameExtensionNames(a, b []*corev3.TypedExtensionConfig) bool {
	return slices.EqualFunc(a, b, func(x, y *corev3.TypedExtensionConfig) bool {
		return x.Name == y.Name && extensionTypeURL(x) == extensionTypeURL(y)
	})
}

// sameRefs reports whether two lists of listeners name the same route configurations and
// clusters.
func sameRefs(a, b []*listenerv3.Listener, m *memo) (bool, error) {
	ar, ac, err := listenersRefs(a, m)
	if err != nil {
		return false, err
	}
	br, bc, err := listenersRefs(b, m)
	if err != nil {
		return false, err
	}
	return slices.Equal(ar, br) && slices.Equal(ac, bc), nil
}

// Proxies reports every node that is connected or disconnected recently, sorted by node id.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		ps := ProxyStatus{
			NodeID:       n.id,
			Service:      n.proxy.Service,
			Shape:        n.proxy.Shape,
			Connected:    len(n.streams) > 0,
			Streams:      len(n.streams),
			AckedVersion: n.ackedVersion,
			LastNack:     n.lastNack,
			Error:        n.lastErr,
			ConnectedAt:  n.connectedAt,
			LastSeen:     n.lastSeen,
		}
		if g := s.groups[n.proxy]; g != nil && g.cs != nil && n.served == g.cs && s.snap != nil {
			ps.Version = nodeVersion(s.snap, g)
			if n.ackedCS == g.cs {
				ps.AckedVersion = ps.Version
			}
		}
		for id := range n.streams {
			st := s.streams[id]
			if st == nil {
				continue
			}
			for t, v := range st.acked {
				if ps.Acked == nil {
					ps.Acked = map[string]string{}
				}
				ps.Acked[shortType(t)] = v
			}
		}
		if ps.LastNack != nil {
			cp := *ps.LastNack
			ps.LastNack = &cp
		}
		ps.Types, ps.Sync = s.typeStates(n)
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// nodeFor registers the node of a stream on its first request, renders its configuration if
// there is a snapshot, and sets it in the cache before the request's watch is created. Called
// with s.mu held (released while it renders: see groupFor).
func (s *Server) nodeFor(streamID int64, n *corev3.Node, delta bool) (*node, error) {
	if s.suspended != "" {
		return nil, status.Error(codes.Unavailable, "xDS suspended: "+s.suspended)
	}
	st := s.streams[streamID]
	if st == nil {
		st = newStreamState(delta)
		s.streams[streamID] = st
	}
	if st.nodeID != "" {
		if nd := s.nodes[st.nodeID]; nd != nil {
			nd.lastSeen = time.Now()
			return nd, nil
		}
	}
	p, err := ProxyFromNode(n)
	if err != nil {
		s.log.Warn("rejecting xDS stream", "stream", streamID, "err", err)
		s.metrics.rejected.WithLabelValues("bad_node").Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.authorizePeer(st.peer, n, p, streamID); err != nil {
		return nil, err
	}
	if s.snap != nil && s.snap.Services[p.Service] == nil && p.Kind != mesh.KindMeshGateway {
		err := fmt.Errorf("%w: node %q names service %q (node.cluster), which is not in mesh snapshot %s",
			ErrUnknownService, n.GetId(), p.Service, s.snap.Version)
		s.log.Warn("rejecting xDS stream", "stream", streamID, "node", n.GetId(), "service", p.Service, "err", err)
		s.metrics.rejected.WithLabelValues("unknown_service").Inc()
		return nil, status.Error(codes.NotFound, err.Error())
	}
	now := time.Now()
	nd := s.nodes[n.GetId()]
	if nd == nil || len(nd.streams) == 0 {
		nd = &node{id: n.GetId(), proxy: p, streams: map[int64]bool{}, connectedAt: now}
		if old := s.nodes[n.GetId()]; old != nil {
			nd.lastNack = old.lastNack
		}
		s.nodes[n.GetId()] = nd
		s.log.Info("proxy connected", "node", nd.id, "service", p.Service, "shape", p.Shape, "stream", streamID)
	} else if nd.proxy != p {
		err := fmt.Errorf("%w: node %q is connected as %s and cannot also be %s", ErrBadNode, nd.id, nd.proxy, p)
		s.log.Warn("rejecting xDS stream", "stream", streamID, "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.addStream(nd, streamID)
	nd.lastSeen = now
	st.nodeID = nd.id
	if s.snap == nil {
		return nd, nil
	}
	g, err := s.groupFor(p)
	if err != nil {
		s.log.Error("render for new proxy", "node", nd.id, "err", err)
		return nil, status.Error(codes.Internal, "cannot render configuration: "+err.Error())
	}
	if s.suspended != "" {
		return nil, status.Error(codes.Unavailable, "xDS suspended: "+s.suspended)
	}
	if s.nodes[nd.id] != nd || !nd.streams[streamID] {
		return nil, status.Error(codes.Canceled, "stream closed")
	}
	if g.cs != nil && nd.served != g.cs {
		if err := s.cache.SetSnapshot(s.ctx, nd.id, g.cs); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		nd.served = g.cs
	}
	return nd, nil
}

// groupFor returns p's configuration under the served snapshot, rendering it if needed. Called
// with s.mu held, which it releases while it renders, so that a thousand proxies connecting at
// once are rendered on every core and streams are served meanwhile; anything may change in the
// meantime (the caller checks its node again), and a snapshot set meanwhile is rendered for
// under the lock. Proxies of the same group connecting together render it once: the first
// renders, the others wait for its result (see rendering).
func (s *Server) groupFor(p Proxy) (*group, error) {
	g := s.groups[p]
	if s.current(p, g) {
		return g, nil
	}
	snap, bundle, m := s.snap, s.bundle, s.memo
	if r := s.rendering[p]; r != nil && r.snap == snap && r.bundle == bundle {
		s.mu.Unlock()
		<-r.done
		s.mu.Lock()
		if r.err != nil {
			return nil, r.err
		}
		if cur := s.groups[p]; s.current(p, cur) {
			return cur, nil
		}
		return s.settle(p, r.g, snap, bundle)
	}
	r := &inflight{snap: snap, bundle: bundle, done: make(chan struct{})}
	if s.rendering == nil {
		s.rendering = map[Proxy]*inflight{}
	}
	s.rendering[p] = r
	s.mu.Unlock()
	s.renderSlots <- struct{}{} // as many renderings at once as cores, however many connect
	r.g, r.err = s.render(snap, bundle, m, p, g, false)
	<-s.renderSlots
	s.mu.Lock()
	if s.rendering[p] == r {
		delete(s.rendering, p)
	}
	close(r.done)
	if r.err != nil {
		return nil, r.err
	}
	if cur := s.groups[p]; s.current(p, cur) {
		return cur, nil // rendered meanwhile by a publish
	}
	return s.settle(p, r.g, snap, bundle)
}

// settle makes ng, rendered for p from snap and bundle, p's group, rendering it again under
// the lock if another snapshot or bundle is served by now. Called with s.mu held.
func (s *Server) settle(p Proxy, ng *group, snap *mesh.Snapshot, bundle *trustBundle) (*group, error) {
	if s.snap != snap || s.bundle != bundle {
		var err error
		if ng, err = s.render(s.snap, s.bundle, s.memo, p, s.groups[p], false); err != nil {
			return nil, err
		}
	}
	s.groups[p] = ng
	return ng, nil
}

// inflight is a group being rendered by groupFor, outside s.mu, for snap and bundle; done is
// closed when g and err are set.
type inflight struct {
	snap   *mesh.Snapshot
	bundle *trustBundle
	done   chan struct{}
	g      *group
	err    error
}

// recordAck records an ACK or NACK of the response with nonce on a stream. It returns the
// version that was NACKed, or "" for an ACK or a stale nonce. Called with s.mu held.
func (s *Server) recordAck(streamID int64, nd *node, typeURL, nonce string, errDetail *rpcstatus.Status) string {
	st := s.streams[streamID]
	if st == nil || nonce == "" {
		return ""
	}
	sent, ok := st.sent[typeURL]
	if !ok || sent.nonce != nonce {
		return "" // stale or unknown nonce: the server ignores it too
	}
	if errDetail != nil {
		n := &Nack{TypeURL: typeURL, Version: sent.version, Error: truncate(errDetail.GetMessage(), maxNackError), Time: time.Now()}
		if p := nd.lastNack; p == nil || p.Version != n.Version || p.Error != n.Error || p.TypeURL != n.TypeURL {
			s.log.Warn("proxy rejected configuration", "node", nd.id, "service", nd.proxy.Service,
				"type", shortType(typeURL), "version", sent.version, "error", n.Error)
		}
		nd.lastNack = n
		if st.nacked == nil {
			st.nacked = map[string]*Nack{}
		}
		st.nacked[typeURL] = n
		s.metrics.nacks.WithLabelValues(metricType(typeURL)).Inc()
		return sent.version
	}
	st.acked[typeURL] = sent.version
	delete(st.nacked, typeURL)
	s.metrics.ack(typeURL)
	s.updateAcked(nd)
	return ""
}

// updateAcked sets the node's acked version when every type each of its streams subscribes to
// is ACKed at the version it should run. Called with s.mu held.
func (s *Server) updateAcked(nd *node) {
	g := s.groups[nd.proxy]
	if g == nil || g.cs == nil || nd.served != g.cs || nd.ackedCS == g.cs {
		return // nothing to run, or up to date already: nothing changes
	}
	for id := range nd.streams {
		st := s.streams[id]
		if st == nil {
			continue
		}
		for t := range st.sent {
			if st.acked[t] != g.typeVersion.get(t) {
				return
			}
		}
	}
	if nd.ackedCS != g.cs && s.snap != nil {
		nd.ackedCS, nd.ackedVersion = g.cs, nodeVersion(s.snap, g)
		if s.log.Enabled(s.ctx, slog.LevelDebug) { // the arguments would cost allocations
			s.log.Debug("proxy up to date", "node", nd.id, "version", nd.ackedVersion)
		}
	}
}

func (s *Server) streamClosed(streamID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[streamID]
	delete(s.streams, streamID)
	if st == nil || st.nodeID == "" {
		return
	}
	nd := s.nodes[st.nodeID]
	if nd == nil {
		return
	}
	s.removeStream(nd, streamID)
	if len(nd.streams) == 0 {
		nd.closedAt = time.Now()
		nd.served = nil
		s.cache.ClearSnapshot(nd.id)
		s.log.Info("proxy disconnected", "node", nd.id, "service", nd.proxy.Service)
		return
	}
	// A stream that closes after its node's other streams ACKed everything (a proxy that
	// reconnected: its old stream ends on the server after the new one is up to date) was what
	// kept the node from being up to date.
	s.updateAcked(nd)
}

// maxNackError bounds the NACK detail kept and logged: clients quote whole resources in it.
const maxNackError = 2048

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// nodeVersion is the version reported for a proxy running g's content under snap.
func nodeVersion(snap *mesh.Snapshot, g *group) string {
	return snap.Version + "-" + g.hash[:8]
}

// Package ca is the mesh's built-in certificate authority: it issues SPIFFE X.509 leaves to
// services, rotates its root without breaking a handshake, and decides who may ask.
//
// What it guarantees:
//   - A leaf's only SAN is spiffe://<trustDomain>/ns/default/dc/<dc>/svc/<service>, where the
//     service is the one the caller's token authorizes. The CA sets it; a request that asks for any
//     other identity or name is refused.
//   - The CA never sees a workload's private key (it signs CSRs), and no API response, log line or
//     error message of this package carries a private key. The active authority's signing key is
//     the one private key in State, and so the one in the Raft log of a cluster holding it.
//   - Tokens are stored as SHA-256 hashes only and compared in constant time; a token is shown
//     once, when it is made.
//   - Rotation is hitless: the new authority is cross-signed by the old one, and both stay in the
//     trust bundle until every leaf the old one signed has expired; only then is it retired.
//   - Signing is rate-limited before any cryptography, so a storm of requests cannot take the CPU
//     that Raft and xDS need.
//
// The state (State) is a plain value changed only by Commands applied through a Store: MemStore
// for a standalone CA, a Raft FSM in a cluster. Leaf signing reads the state and writes nothing,
// so it costs Raft nothing and any server can sign.
package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/notify"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotInitialized means the CA has no authority yet (the leader has not bootstrapped it).
	ErrNotInitialized = errors.New("ca not initialized")
	// ErrInitialized means Init found an existing CA; it is harmless and changes nothing.
	ErrInitialized = errors.New("ca already initialized")
	// ErrBadCommand means a Command is malformed or not applicable to the state.
	ErrBadCommand = errors.New("bad ca command")
	// ErrNotFound means a command named an authority or token that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBadCSR means a certificate request was refused (parse, signature, key, SANs).
	ErrBadCSR = errors.New("certificate request refused")
	// ErrBadRequest means a request was malformed in another way (a bad service name).
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthorized means a request had no token or one the CA does not know.
	ErrUnauthorized = errors.New("missing or unknown token")
	// ErrForbidden means the token is valid but its scope does not cover the request.
	ErrForbidden = errors.New("token not allowed to do this")
	// ErrRateLimited means the signing rate limit is exhausted; retry later.
	ErrRateLimited = errors.New("signing rate limit exceeded")
	// ErrRotating means a rotation was asked for while the previous one is still in progress
	// (its old root has not retired): a peer that trusts only the oldest root could not follow
	// two cross-signatures, so rotations do not overlap.
	ErrRotating = errors.New("a rotation is in progress: the previous root has not retired yet")
)

// Defaults.
const (
	DefaultLeafTTL     = 72 * time.Hour
	DefaultRetireGrace = time.Minute
	// DefaultRate and DefaultBurst bound signing; with MaxConcurrent's default (half the cores)
	// a storm costs at most about one core of two, leaving the rest to Raft and xDS (see
	// BenchmarkSignHTTP for the numbers).
	DefaultRate  = 2000
	DefaultBurst = 200
)

// Store holds the State and replicates Commands. In a cluster Commit proposes c to Raft and
// returns once this server's FSM applied it (or with the FSM's error); followers return their
// "not the leader" error. State must return the latest applied state, which callers never modify.
type Store interface {
	State() *State
	Commit(ctx context.Context, c Command) error
}

// MemStore is a Store in memory, for a standalone CA and tests.
type MemStore struct {
	mu sync.Mutex
	st atomic.Pointer[State]
}

// NewMemStore returns a store holding st (nil: not initialized).
func NewMemStore(st *State) *MemStore {
	m := &MemStore{}
	m.st.Store(st)
	return m
}

// State returns the current state.
func (m *MemStore) State() *State { return m.st.Load() }

// Commit applies c.
func (m *MemStore) Commit(_ context.Context, c Command) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.st.Load().Apply(c)
	if err != nil {
		return err
	}
	m.st.Store(n)
	return nil
}

// notifyingStore wakes the roots' blocking queries after each commit (a standalone CA: no other
// server changes its state).
type notifyingStore struct {
	Store
	w *notify.Watch
}

func (n notifyingStore) Commit(ctx context.Context, c Command) error {
	defer n.w.Notify()
	return n.Store.Commit(ctx, c)
}

// Settings are the mesh-wide parameters of leaves, which come from the served snapshot.
type Settings struct {
	Datacenter string
	LeafTTL    time.Duration
}

// SettingsFrom returns the settings a snapshot asks for (zero fields where it says nothing).
func SettingsFrom(snap *mesh.Snapshot) Settings {
	if snap == nil {
		return Settings{}
	}
	return Settings{Datacenter: snap.Mesh.Datacenter, LeafTTL: snap.Mesh.CA.LeafTTL.D()}
}

// Config configures a CA.
type Config struct {
	Store Store // default: an empty MemStore

	// Datacenter and LeafTTL are the defaults; Settings, when set, is asked on every signature and
	// its non-zero fields win (the reconciler passes the served snapshot's).
	Datacenter string        // default "dc1"
	LeafTTL    time.Duration // default DefaultLeafTTL
	Settings   func() Settings
	// ExtraRoots, when set, returns PEM roots of other datacenters' CAs (federation): appended to
	// every trust bundle this CA hands out (leaves' ca.pem, Bundle), never used to sign, so that
	// workloads of federated datacenters with their own CAs trust each other.
	ExtraRoots func() string
	// RootsChanged, when set, returns a channel closed when the trust bundle may have changed
	// after the call (the Store's state applied by another server, ExtraRoots): GET
	// /v1/ca/roots?hash= waits on it. Nil: the CA's own commits (Init, Rotate, Tidy) notify.
	RootsChanged func() <-chan struct{}
	// Stopping, when set, is closed when the HTTP server shuts down: blocking queries answer.
	Stopping <-chan struct{}

	// OperatorToken is accepted as an operator token (mesh serve --token-file); compared in
	// constant time. Empty: only operator tokens in the state.
	OperatorToken string

	// Rate (leaves per second) and Burst of the signing limiter; defaults DefaultRate and
	// DefaultBurst, a negative Rate disables it.
	Rate  float64
	Burst int
	// MaxConcurrent bounds the signatures in progress at once, so that a burst takes at most
	// that many cores; default half of GOMAXPROCS (at least 1), negative means no bound.
	MaxConcurrent int

	// RetireGrace is added to the leaf TTL to decide when a rotated-out authority retires: it
	// covers clock skew and a follower signing with the old key until it applies the rotation.
	RetireGrace time.Duration

	Log *slog.Logger     // default: discard
	Now func() time.Time // default time.Now
}

// CA signs leaves and manages the state through its Store. It is safe for concurrent use.
type CA struct {
	cfg     Config
	limiter *Limiter
	sem     chan struct{} // nil: no bound
	cache   atomic.Pointer[cachedSigner]
	log     *slog.Logger
	roots   *notify.Watch // without Config.RootsChanged: notified after this CA's commits
}

type cachedSigner struct {
	st *State
	s  *signer
}

// New returns a CA; it does not create an authority (see Init).
func New(cfg Config) *CA {
	if cfg.Store == nil {
		cfg.Store = NewMemStore(nil)
	}
	if cfg.Datacenter == "" {
		cfg.Datacenter = "dc1"
	}
	if cfg.LeafTTL <= 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.RetireGrace <= 0 {
		cfg.RetireGrace = DefaultRetireGrace
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &CA{cfg: cfg, limiter: NewLimiter(cfg.Rate, cfg.Burst), log: cfg.Log, roots: notify.New()}
	if c.cfg.RootsChanged == nil {
		c.cfg.Store = notifyingStore{cfg.Store, c.roots}
		c.cfg.RootsChanged = c.roots.Changed
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if cfg.MaxConcurrent > 0 {
		c.sem = make(chan struct{}, cfg.MaxConcurrent)
	}
	return c
}

// State returns the current state (nil before Init). It holds the signing key: do not render it.
func (c *CA) State() *State { return c.cfg.Store.State() }

func (c *CA) settings() Settings {
	s := Settings{Datacenter: c.cfg.Datacenter, LeafTTL: c.cfg.LeafTTL}
	if c.cfg.Settings != nil {
		o := c.cfg.Settings()
		if o.Datacenter != "" {
			s.Datacenter = o.Datacenter
		}
		if o.LeafTTL > 0 {
			s.LeafTTL = o.LeafTTL
		}
	}
	return s
}

// Init creates the CA for trustDomain with authority a, or with a new generated root when a is nil
// (EC P-256, RootTTL). On a CA that exists it returns ErrInitialized and changes nothing: the
// leader calls it at every start.
func (c *CA) Init(ctx context.Context, trustDomain string, a *Authority) error {
	if c.State() != nil {
		return ErrInitialized
	}
	if _, err := url.Parse("spiffe://" + trustDomain); err != nil || !validTrustDomain(trustDomain) {
		return fmt.Errorf("%w: trust domain %q", ErrBadRequest, trustDomain)
	}
	now := c.cfg.Now()
	if a == nil {
		var err error
		if a, err = newRoot(trustDomain, now); err != nil {
			return err
		}
	}
	if err := c.cfg.Store.Commit(ctx, Command{Op: OpInit, Time: now.UTC(), TrustDomain: trustDomain, Authority: a}); err != nil {
		return err
	}
	c.log.Info("ca initialized", "trustDomain", trustDomain, "authority", a.ID)
	return nil
}

func validTrustDomain(td string) bool {
	if td == "" || len(td) > 255 {
		return false
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

func (c *CA) signer() (*signer, *State, error) {
	st := c.State()
	if st == nil {
		return nil, nil, ErrNotInitialized
	}
	if cs := c.cache.Load(); cs != nil && cs.st == st {
		return cs.s, st, nil
	}
	s, err := parseSigner(st.Active())
	if err != nil {
		return nil, nil, err
	}
	c.cache.Store(&cachedSigner{st: st, s: s})
	return s, st, nil
}

// Leaf is a signed certificate with what a workload needs next to it.
type Leaf struct {
	SPIFFEID  string    `json:"spiffeId"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// CertPEM is the leaf followed by the certificates a peer needs to reach a root (intermediates,
	// and during a rotation the cross-signed new authority): the content of cert.pem.
	CertPEM string `json:"certPEM"`
	// BundlePEM is the trust bundle: every root not retired (ca.pem).
	BundlePEM string `json:"bundlePEM"`
}

// SPIFFEID returns the identity of service in datacenter dc of this CA's trust domain.
func (c *CA) SPIFFEID(dc, service string) (string, error) {
	st := c.State()
	if st == nil {
		return "", ErrNotInitialized
	}
	return mesh.SpiffeID(st.TrustDomain, dc, service), nil
}

// Sign issues a leaf for service from csrPEM. It does not authenticate and is not rate-limited:
// callers do that first (the HTTP handler does both, see Authorize and Allow). It signs
// mesh.ServerService too: the servers call it in process for their own serving certificate,
// while Authorize refuses that name to every token of the API.
func (c *CA) Sign(service string, csrPEM []byte) (*Leaf, error) {
	if !ValidName(service) {
		return nil, fmt.Errorf("%w: service name %q", ErrBadRequest, service)
	}
	s, st, err := c.signer()
	if err != nil {
		return nil, err
	}
	set := c.settings()
	id := mesh.SpiffeID(st.TrustDomain, set.Datacenter, service)
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	csr, err := CheckCSR(csrPEM, id)
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	der, leaf, err := issue(s, csr, u, set.LeafTTL, now)
	if err != nil {
		return nil, err
	}
	out := &Leaf{SPIFFEID: id, Serial: leaf.SerialNumber.Text(16), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		CertPEM: string(append(certPEM(der), s.chain...)), BundlePEM: string(bundlePEM(st)) + c.extraRoots()}
	c.log.Debug("leaf signed", "service", service, "spiffeId", id, "serial", out.Serial, "notAfter", out.NotAfter, "authority", s.id)
	return out, nil
}

// Allow takes a token from the signing limiter; when there is none it returns ErrRateLimited and
// how long to wait.
func (c *CA) Allow() (time.Duration, error) {
	if ok, wait := c.limiter.Allow(); !ok {
		return wait, ErrRateLimited
	}
	return 0, nil
}

// SignLimited is Sign behind the signing limits: the rate limiter (ErrRateLimited and how long
// to wait when it is empty), then at most MaxConcurrent signatures at once (waiting for a slot
// until ctx ends). The HTTP handler signs through it.
func (c *CA) SignLimited(ctx context.Context, service string, csrPEM []byte) (*Leaf, time.Duration, error) {
	if wait, err := c.Allow(); err != nil {
		return nil, wait, err
	}
	if c.sem != nil {
		select {
		case c.sem <- struct{}{}:
			defer func() { <-c.sem }()
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	l, err := c.Sign(service, csrPEM)
	return l, 0, err
}

// Authorize checks that tok may act for service ("" for operator-only actions). It returns the
// token's record (for the operator token of Config, a record with ScopeOperator and no ID),
// ErrUnauthorized for a missing or unknown token, ErrForbidden for one whose scope does not cover
// the request.
//
// No token covers mesh.ServerService, the servers' own identity: the servers sign their serving
// certificates in process (Sign), and a leaf for that name from the API would let its holder pose
// as a server to every proxy.
func (c *CA) Authorize(tok, service string) (TokenRecord, error) {
	if tok == "" {
		return TokenRecord{}, ErrUnauthorized
	}
	var r TokenRecord
	if op := c.cfg.OperatorToken; op != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(op)) == 1 {
		r = TokenRecord{Scope: ScopeOperator}
	} else {
		var records []TokenRecord
		if st := c.State(); st != nil {
			records = st.Tokens
		}
		var ok bool
		if r, ok = lookupToken(records, tok); !ok {
			return TokenRecord{}, ErrUnauthorized
		}
	}
	switch {
	case service == mesh.ServerService:
		return r, fmt.Errorf("%w: %q is the servers' own identity, signed by no token", ErrForbidden, service)
	case r.Scope == ScopeOperator:
		return r, nil
	case service == "" || r.Service != service:
		return r, fmt.Errorf("%w: token %s is for service %q", ErrForbidden, r.ID, r.Service)
	}
	return r, nil
}

// CreateToken makes a token for service (ScopeService) or an operator token (ScopeOperator,
// service ""), stores its hash, and returns the token: the only time it is ever available.
func (c *CA) CreateToken(ctx context.Context, scope Scope, service string) (string, TokenRecord, error) {
	switch {
	case scope == ScopeService && !ValidName(service):
		return "", TokenRecord{}, fmt.Errorf("%w: service name %q", ErrBadRequest, service)
	case scope == ScopeService && service == mesh.ServerService:
		return "", TokenRecord{}, fmt.Errorf("%w: %q is the servers' own identity, reserved", ErrBadRequest, service)
	case scope == ScopeOperator && service != "":
		return "", TokenRecord{}, fmt.Errorf("%w: an operator token has no service", ErrBadRequest)
	case scope != ScopeService && scope != ScopeOperator:
		return "", TokenRecord{}, fmt.Errorf("%w: scope %q", ErrBadRequest, scope)
	}
	tok, rec := NewToken(scope, service, c.cfg.Now())
	if err := c.cfg.Store.Commit(ctx, Command{Op: OpAddToken, Time: rec.Created, Token: &rec}); err != nil {
		return "", TokenRecord{}, err
	}
	c.log.Info("token created", "id", rec.ID, "scope", scope, "service", service)
	return tok, rec, nil
}

// TokenInfo is a token as the CA lists it: what it is for and when it was made, never the token
// nor its hash.
type TokenInfo struct {
	ID      string    `json:"id"`
	Scope   Scope     `json:"scope"`
	Service string    `json:"service,omitempty"`
	Created time.Time `json:"created"`
}

// Tokens lists the tokens of the state, oldest first (the server's own --token-file token is
// not one of them).
func (c *CA) Tokens() []TokenInfo {
	out := []TokenInfo{}
	if st := c.State(); st != nil {
		for _, t := range st.Tokens {
			out = append(out, TokenInfo{ID: t.ID, Scope: t.Scope, Service: t.Service, Created: t.Created})
		}
	}
	return out
}

// RevokeToken removes the token with the given ID.
func (c *CA) RevokeToken(ctx context.Context, id string) error {
	if err := c.cfg.Store.Commit(ctx, Command{Op: OpRevokeToken, Time: c.cfg.Now().UTC(), ID: id}); err != nil {
		return err
	}
	c.log.Info("token revoked", "id", id)
	return nil
}

// Rotate makes next (a new generated root when nil) the active authority, cross-signed by the
// current one. The current one stays in the bundle until every leaf it may have signed has expired
// (now + leaf TTL + RetireGrace); Tidy retires it then.
func (c *CA) Rotate(ctx context.Context, next *Authority) error {
	cur, st, err := c.signer()
	if err != nil {
		return err
	}
	if len(st.Authorities) > 1 {
		return fmt.Errorf("%w (retires after %s)", ErrRotating, st.Authorities[0].RetireAfter.Format(time.RFC3339))
	}
	now := c.cfg.Now()
	if next == nil {
		if next, err = newRoot(st.TrustDomain, now); err != nil {
			return err
		}
	} else {
		n := *next
		next = &n
	}
	cross, err := crossSign(cur, next, now)
	if err != nil {
		return err
	}
	// A peer that trusts only the current root needs the current intermediates too.
	next.CrossSignedPEM = cross + st.Active().ChainPEM
	next.CrossSignedBy = cur.id
	retire := now.Add(c.settings().LeafTTL + c.cfg.RetireGrace).UTC()
	if err := c.cfg.Store.Commit(ctx, Command{Op: OpRotate, Time: now.UTC(), Authority: next, RetireAfter: retire}); err != nil {
		return err
	}
	c.log.Info("ca rotated", "from", cur.id, "to", next.ID, "retireAfter", retire)
	return nil
}

// Tidy retires every authority whose RetireAfter has passed, and returns their IDs. In a cluster
// only the leader runs it.
func (c *CA) Tidy(ctx context.Context) ([]string, error) {
	st := c.State()
	if st == nil {
		return nil, nil
	}
	now := c.cfg.Now()
	var out []string
	for _, a := range st.Authorities[:len(st.Authorities)-1] {
		if a.RetireAfter.IsZero() || now.Before(a.RetireAfter) {
			continue
		}
		if err := c.cfg.Store.Commit(ctx, Command{Op: OpRetire, Time: now.UTC(), ID: a.ID}); err != nil {
			return out, err
		}
		c.log.Info("ca authority retired", "authority", a.ID)
		out = append(out, a.ID)
	}
	return out, nil
}

// Run calls Tidy every interval until ctx ends (in a cluster: while this server leads).
func (c *CA) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := c.Tidy(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("ca tidy", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Lead runs the leader's CA duties until ctx ends: as soon as trustDomain returns one (in a
// server: once the first snapshot is served), it creates the CA if there is none; then it
// retires authorities whose time has come. Call it on the leader only, for as long as it leads.
func (c *CA) Lead(ctx context.Context, trustDomain func() string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if st := c.State(); st == nil {
			if td := trustDomain(); td != "" {
				if err := c.Init(ctx, td, nil); err != nil && !errors.Is(err, ErrInitialized) && ctx.Err() == nil {
					c.log.Warn("ca init", "err", err)
				}
			}
		} else {
			if td := trustDomain(); td != "" && td != st.TrustDomain {
				c.log.Warn("the mesh's trust domain differs from the CA's; leaves keep the CA's", "mesh", td, "ca", st.TrustDomain)
			}
			if _, err := c.Tidy(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("ca tidy", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RootInfo describes one authority of the bundle, without its key.
type RootInfo struct {
	ID          string    `json:"id"`
	Active      bool      `json:"active"`
	Created     time.Time `json:"created"`
	NotAfter    time.Time `json:"notAfter"`
	RetireAfter time.Time `json:"retireAfter,omitzero"`
	RootPEM     string    `json:"rootPEM"`
}

// Bundle is the public view of the CA: GET /v1/ca/roots.
type Bundle struct {
	TrustDomain string     `json:"trustDomain"`
	Roots       []RootInfo `json:"roots"`
	BundlePEM   string     `json:"bundlePEM"`
	// Hash is RootsHash(BundlePEM): GET /v1/ca/roots?hash=H waits until the bundle's differs.
	Hash string `json:"hash"`
}

// RootsHash identifies a trust bundle (PEM) in blocking queries on GET /v1/ca/roots; an agent
// computes it from its ca.pem.
func RootsHash(bundlePEM []byte) string {
	h := sha256.Sum256(bundlePEM)
	return hex.EncodeToString(h[:16])
}

// Bundle returns the trust bundle.
func (c *CA) Bundle() (*Bundle, error) {
	st := c.State()
	if st == nil {
		return nil, ErrNotInitialized
	}
	b := &Bundle{TrustDomain: st.TrustDomain, BundlePEM: string(bundlePEM(st)) + c.extraRoots(), Roots: []RootInfo{}}
	b.Hash = RootsHash([]byte(b.BundlePEM))
	for i, a := range st.Authorities {
		ri := RootInfo{ID: a.ID, Active: i == len(st.Authorities)-1, Created: a.Created, RetireAfter: a.RetireAfter, RootPEM: a.RootPEM}
		if certs, err := parseCerts([]byte(a.RootPEM)); err == nil {
			ri.NotAfter = certs[0].NotAfter
		}
		b.Roots = append(b.Roots, ri)
	}
	return b, nil
}

// BundlePEM returns the trust bundle's PEM (Bundle().BundlePEM) without parsing anything, ""
// before the CA exists: cheap enough to compare at every state change.
func (c *CA) BundlePEM() string {
	st := c.State()
	if st == nil {
		return ""
	}
	return string(bundlePEM(st)) + c.extraRoots()
}

// LocalRootsPEM returns this CA's own roots not retired (without ExtraRoots): what it offers
// federated datacenters to trust.
func (c *CA) LocalRootsPEM() string {
	st := c.State()
	if st == nil {
		return ""
	}
	return string(bundlePEM(st))
}

func (c *CA) extraRoots() string {
	if c.cfg.ExtraRoots == nil {
		return ""
	}
	return c.cfg.ExtraRoots()
}

func bundlePEM(st *State) []byte {
	var b []byte
	for _, a := range st.Authorities {
		b = append(b, a.RootPEM...)
	}
	return b
}

// RenewAt returns when a leaf valid from notBefore to notAfter should be renewed: a uniformly
// random point between 60% and 90% of its life, so that a fleet issued together does not renew
// together.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	f := 0.6 + 0.3*mrand.Float64()
	return notBefore.Add(time.Duration(float64(life) * f))
}

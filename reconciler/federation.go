package reconciler

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/httpjson"
	"github.com/meshgit/mesh/internal/redact"
)

// Federation between the clusters of a mesh's datacenters (mesh serve --federate dc=URL): each
// cluster keeps a current view of every peer's mesh gateways and healthy-instance counts with
// blocking queries on the peer's GET /v1/federation/state (an answer only when the peer's catalog
// changed, or when the wait ends), and serves the peers' gateways to its proxies. A peer that
// cannot be reached keeps its last view: a partitioned datacenter keeps serving local traffic,
// and traffic through gateways whose addresses it last knew.

// FederationState is what GET /v1/federation/state answers: this cluster's datacenter, its
// mesh gateways and, per service, the instances in it that are not critical.
type FederationState struct {
	Datacenter string         `json:"datacenter"`
	Index      uint64         `json:"index"`
	Gateways   []mesh.Gateway `json:"gateways"`
	Healthy    map[string]int `json:"healthy"`
	// Roots are this cluster's CA roots (PEM certificates, public): the peers' workloads trust
	// them, so that mTLS works across datacenters whose CAs differ.
	Roots string `json:"roots,omitempty"`
}

// PeerStatus is one federated datacenter as /v1/status shows it.
type PeerStatus struct {
	Datacenter  string         `json:"datacenter"`
	URL         string         `json:"url"`
	State       string         `json:"state"` // connecting, connected, failing
	Error       string         `json:"error,omitempty"`
	LastContact time.Time      `json:"lastContact,omitzero"`
	Index       uint64         `json:"index"`
	Gateways    int            `json:"gateways"`
	Healthy     map[string]int `json:"healthy,omitempty"`
}

// Peer states.
const (
	PeerConnecting = "connecting"
	PeerConnected  = "connected"
	PeerFailing    = "failing"
)

// federationWait is how long a blocking query waits at most (the peer answers sooner on change).
const federationWait = 5 * time.Minute

type federation struct {
	mu      sync.Mutex
	peers   map[string]*peerView // by datacenter
	changed chan struct{}        // capacity 1: a peer's gateways changed
	wait    time.Duration
}

type peerView struct {
	status PeerStatus
	state  *FederationState // the last good answer
	urls   []string         // the peer's servers
	cur    int              // the one followed now (the others are tried in turn when it fails)
}

// peerURLs splits a Config.Federate value: one URL, or several comma-separated.
func peerURLs(v string) []string {
	var out []string
	for u := range strings.SplitSeq(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, strings.TrimSuffix(u, "/"))
		}
	}
	return out
}

func newFederation(peers map[string]string) *federation {
	f := &federation{peers: map[string]*peerView{}, changed: make(chan struct{}, 1), wait: federationWait}
	for dc, u := range peers {
		urls := peerURLs(u)
		f.peers[dc] = &peerView{status: PeerStatus{Datacenter: dc, URL: redact.URL(urls[0]), State: PeerConnecting}, urls: urls}
	}
	return f
}

// url returns the peer server followed now.
func (f *federation) url(dc string) (string, bool) {
	if f == nil {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peers[dc]
	if p == nil {
		return "", false
	}
	return p.urls[p.cur], true
}

// gateways returns the peers' gateways by datacenter, from their last good answers.
func (f *federation) gateways() map[string][]mesh.Gateway {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]mesh.Gateway{}
	for dc, p := range f.peers {
		if p.state != nil && len(p.state.Gateways) > 0 {
			out[dc] = p.state.Gateways
		}
	}
	return out
}

// healthy returns the peers' healthy-instance counts by datacenter, from their last answers.
func (f *federation) healthy() map[string]map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[string]int{}
	for dc, p := range f.peers {
		if p.state != nil {
			out[dc] = p.state.Healthy
		}
	}
	return out
}

// roots returns the peers' CA roots (PEM), in datacenter order.
func (f *federation) roots() string {
	if f == nil {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, dc := range slices.Sorted(maps.Keys(f.peers)) {
		if p := f.peers[dc]; p.state != nil {
			b.WriteString(p.state.Roots)
		}
	}
	return b.String()
}

// statuses returns the peers' states, sorted by datacenter.
func (f *federation) statuses() []PeerStatus {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PeerStatus, 0, len(f.peers))
	for _, p := range f.peers {
		out = append(out, p.status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Datacenter < out[j].Datacenter })
	return out
}

// run follows every peer until ctx ends.
func (s *Server) runFederation(ctx context.Context) {
	var wg sync.WaitGroup
	for dc := range s.cfg.Federate {
		wg.Add(1)
		go func() { defer wg.Done(); s.followPeer(ctx, dc) }()
	}
	wg.Wait()
}

// followPeer runs blocking queries against one peer, backing off (up to 10s) while it fails.
// The first query, and the first after a failure, asks without an index: answered at once, it
// tells whether the peer is back. A failure moves on to the peer's next server, if it has
// several: any server of a cluster answers with the cluster's replicated state.
func (s *Server) followPeer(ctx context.Context, dc string) {
	f := s.fed
	var index uint64
	known := false // index is the last answer's: block on it
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		f.mu.Lock()
		var roots string
		p := f.peers[dc]
		if p.state != nil {
			roots = p.state.Roots
		}
		base := p.urls[p.cur]
		f.mu.Unlock()
		st, err := s.fetchPeer(ctx, base, index, known, roots, f.wait)
		if ctx.Err() != nil {
			return
		}
		if err == nil && st.Datacenter != dc {
			err = fmt.Errorf("the peer serves datacenter %q, not %q", st.Datacenter, dc)
		}
		if err == nil {
			err = checkRoots(st.Roots)
		}
		f.mu.Lock()
		if err != nil {
			p.status.State, p.status.Error = PeerFailing, redact.Error(err).Error()
			p.cur = (p.cur + 1) % len(p.urls)
		} else {
			rootsChanged := p.state == nil || p.state.Roots != st.Roots
			changed := rootsChanged || !gatewaysEqual(p.state.Gateways, st.Gateways) || !maps.Equal(p.state.Healthy, st.Healthy)
			p.state, index, known = st, st.Index, true
			p.status = PeerStatus{Datacenter: dc, URL: redact.URL(base), State: PeerConnected, LastContact: time.Now(),
				Index: st.Index, Gateways: len(st.Gateways), Healthy: st.Healthy}
			if st.Roots == "" { // connected means cross-trusted: not yet
				p.status.State, p.status.Error = PeerConnecting, "the peer has no CA yet"
			}
			if changed {
				select {
				case f.changed <- struct{}{}:
				default:
				}
			}
			if rootsChanged {
				s.fsm.roots.Notify() // the CA's trust bundle changed: wake the agents' queries
			}
		}
		f.mu.Unlock()
		// A peer without a CA yet answers the next query when it has one (?roots).
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		known = false
		s.log.Warn("federation: peer unreachable; keeping its last view", "datacenter", dc, "err", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func gatewaysEqual(a, b []mesh.Gateway) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *Server) fetchPeer(ctx context.Context, base string, index uint64, block bool, roots string, wait time.Duration) (*FederationState, error) {
	u := base + "/v1/federation/state"
	if block {
		u += "?index=" + strconv.FormatUint(index, 10) + "&wait=" + url.QueryEscape(wait.String()) +
			"&roots=" + ca.RootsHash([]byte(roots))
	}
	rctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.fedClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /v1/federation/state: %s: %s", resp.Status, b)
	}
	var st FederationState
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSnapshotJSON)).Decode(&st); err != nil {
		return nil, fmt.Errorf("GET /v1/federation/state: %w", err)
	}
	return &st, nil
}

// handleFederationState answers GET /v1/federation/state: at once without ?index, else when the
// catalog's index passes it, the CA roots' hash differs from ?roots (ca.RootsHash: a rotation
// reaches the peers at once), or ?wait (default 5m, at most 10m) ends.
func (s *Server) handleFederationState(w http.ResponseWriter, r *http.Request) {
	var index uint64
	blocking := r.URL.Query().Has("index")
	if v := r.URL.Query().Get("index"); blocking {
		var err error
		if index, err = strconv.ParseUint(v, 10, 64); err != nil {
			http.Error(w, "index: not a number", http.StatusBadRequest)
			return
		}
	}
	wait := federationWait
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			http.Error(w, "wait: not a positive duration", http.StatusBadRequest)
			return
		}
		wait = min(d, 10*time.Minute)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	roots := r.URL.Query().Get("roots")
	for {
		changed, rootsChanged := s.CatalogChanged(), s.fsm.roots.Changed()
		cat := s.Catalog()
		if !blocking || cat.Index() > index || roots != "" && ca.RootsHash([]byte(s.ca.LocalRootsPEM())) != roots {
			break
		}
		select {
		case <-changed:
		case <-rootsChanged:
		case <-timer.C:
			s.writeFederationState(w, cat)
			return
		case <-r.Context().Done():
			return
		case <-s.httpStopping:
			s.writeFederationState(w, cat)
			return
		}
	}
	s.writeFederationState(w, s.Catalog())
}

func (s *Server) writeFederationState(w http.ResponseWriter, cat *catalog.State) {
	st := s.federationState(cat)
	if st == nil {
		http.Error(w, "no snapshot served yet", http.StatusServiceUnavailable)
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}

// federationState is this cluster's state for its peers: the catalog's gateways and, from the
// served snapshot with the catalog's instances, the endpoints in this datacenter not critical;
// nil before a snapshot is served.
func (s *Server) federationState(cat *catalog.State) *FederationState {
	snap := s.pub.view(s.Served())
	if snap == nil {
		return nil
	}
	st := &FederationState{Index: cat.Index(), Healthy: map[string]int{}, Gateways: []mesh.Gateway{}, Roots: s.ca.LocalRootsPEM()}
	dc := snap.Mesh.Datacenter
	st.Datacenter = dc
	st.Gateways = append(st.Gateways, catalog.Gateways(cat, dc)...)
	over := catalog.Overlay(snap, cat)
	for name, svc := range over.Services {
		for _, ep := range svc.Endpoints {
			if ep.Datacenter == dc && ep.Health != mesh.HealthCritical {
				st.Healthy[name]++
			}
		}
	}
	return st
}

// errNoPathToDatacenter is Consul's answer to ?dc= naming a datacenter it does not federate.
const errNoPathToDatacenter = "No path to datacenter"

// forwardDC passes catalog and health reads with ?dc= naming a federated datacenter to that
// datacenter's servers, as Consul does (agent endpoints stay local); an unknown datacenter is a
// 500 "No path to datacenter", Consul's answer.
func (s *Server) forwardDC(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dc := r.URL.Query().Get("dc")
		if dc == "" || dc == s.datacenter() ||
			!strings.HasPrefix(r.URL.Path, "/v1/catalog/") && !strings.HasPrefix(r.URL.Path, "/v1/health/") {
			next.ServeHTTP(w, r)
			return
		}
		base, ok := s.fed.url(dc)
		if !ok {
			http.Error(w, errNoPathToDatacenter, http.StatusInternalServerError)
			return
		}
		target, err := url.Parse(base)
		if err != nil {
			http.Error(w, errNoPathToDatacenter, http.StatusInternalServerError)
			return
		}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = target.Host
			},
			Transport: s.fedClient.Transport,
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				http.Error(w, fmt.Sprintf("datacenter %s: %v", dc, redact.Error(err)), http.StatusBadGateway)
			},
		}
		rp.ServeHTTP(w, r)
	})
}

// datacenter is the datacenter this cluster serves.
func (s *Server) datacenter() string {
	if s.cfg.Datacenter != "" {
		return s.cfg.Datacenter
	}
	if snap := s.Served(); snap != nil {
		return snap.Mesh.Datacenter
	}
	return ""
}

// checkRoots accepts PEM holding CA certificates only (a peer's roots become trusted here).
func checkRoots(p string) error {
	rest := []byte(p)
	for n := 0; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 || n > 16 {
				return errors.New("the peer's roots are not PEM certificates (at most 16)")
			}
			return nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil || !c.IsCA {
			return errors.New("the peer's roots hold something else than CA certificates")
		}
	}
}

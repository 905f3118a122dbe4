package reconciler

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/httpjson"
)

// Status is the answer of GET /v1/status: what this server serves, and the cluster around it.
type Status struct {
	Node      string `json:"node"`
	RaftState string `json:"raftState"`
	// Ready is set while this server serves a snapshot and the CA's trust bundle over xDS: a
	// proxy that connects gets its whole configuration, mTLS trust included, and can get its
	// certificate. It is false before, and while the server refuses xDS (NotServing).
	Ready bool `json:"ready"`
	// Version and Commit are what this server serves now (the pinned snapshot while pinned).
	Version string `json:"version"`
	Commit  string `json:"commit"`
	// Leader is the leader's node id, LeaderAddress its HTTP address ("" while there is none).
	Leader        string         `json:"leader"`
	LeaderAddress string         `json:"leaderAddress,omitempty"`
	Servers       []ServerStatus `json:"servers"`
	// LastError is why the newest commit is not served, if no good commit came after it: it did
	// not verify, compile or pass the cluster's checks, or the repository or ref could not be
	// read (then its commit is "" and it says when the leader retries).
	LastError *Failure `json:"lastError"`
	Pin       string   `json:"pin"`
	// PinnedBy names who pinned (the token's kind and ID, as mesh token list shows it: "server
	// token", "operator token 0123456789abcdef"), PinnedAt when; empty when not pinned.
	PinnedBy string    `json:"pinnedBy,omitempty"`
	PinnedAt time.Time `json:"pinnedAt,omitzero"`
	// Head is the newest snapshot applied from Git (differs from Version while pinned).
	Head         *Entry `json:"head,omitempty"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// AppliedCommand is the Raft index of the last command the state machine applied (Raft's own
	// entries aside): a restarted or joining server publishes nothing older than the leader's.
	AppliedCommand uint64 `json:"appliedCommand"`
	// PublishError is why the xDS server refused the FSM's snapshot, if it did (this server then
	// keeps serving Version).
	PublishError string `json:"publishError,omitempty"`
	// VerifyError says that a snapshot this server built from a Raft delta did not hash to its
	// version, so it is not served, and how its repair from a peer went.
	VerifyError string `json:"verifyError,omitempty"`
	// Catalog counts the live instances by health, and flags undeclared services.
	Catalog *catalog.Summary `json:"catalog,omitempty"`
	// ClusterID is the cluster's identity ("" until known).
	ClusterID string `json:"clusterId,omitempty"`
	// NotServing says why this server refuses xDS (it was removed from the cluster, or a server
	// of another cluster counts it as a member); "" while it serves.
	NotServing string `json:"notServing,omitempty"`
	// ClusterConflict is the last Raft peer of another cluster met.
	ClusterConflict *ClusterConflict `json:"clusterConflict,omitempty"`
	// StorageErrors are the failing writes to the data directory (a full disk...).
	StorageErrors []StorageError `json:"storageErrors,omitempty"`
	// Federation is the state of each federated datacenter (mesh serve --federate).
	Federation []PeerStatus `json:"federation,omitempty"`
}

// ServerStatus is one server of the Raft configuration.
type ServerStatus struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raftAddress"`
	HTTPAddress string `json:"httpAddress,omitempty"`
	Suffrage    string `json:"suffrage"`
	Leader      bool   `json:"leader"`
}

// SnapshotInfo is one entry of GET /v1/snapshots, newest first.
type SnapshotInfo struct {
	Entry
	Served bool `json:"served"`
	Pinned bool `json:"pinned"`
	// PinnedBy and PinnedAt say who pinned the pinned version, and when (Status's).
	PinnedBy string    `json:"pinnedBy,omitempty"`
	PinnedAt time.Time `json:"pinnedAt,omitzero"`
}

// JoinRequest is the body of POST /v1/join.
type JoinRequest struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raftAddress"`
	HTTPAddress string `json:"httpAddress"`
}

// JoinResponse is the answer to POST /v1/join.
type JoinResponse struct {
	Status string `json:"status"`
	// Index is the leader's FSM index once the server was added: the joining server publishes
	// nothing older.
	Index     uint64 `json:"index"`
	ClusterID string `json:"clusterId,omitempty"`
}

// PinRequest is the body of POST /v1/pin.
type PinRequest struct {
	Version string `json:"version"`
}

// Status returns this server's status.
func (s *Server) Status() Status {
	st := s.fsm.state()
	out := Status{Node: s.id, RaftState: s.node.raft.State().String(), LastError: st.lastError, Pin: st.pin,
		PinnedBy: st.pinBy, PinnedAt: st.pinTime,
		AppliedIndex: s.node.raft.AppliedIndex(), AppliedCommand: s.fsm.at().applied, Servers: s.servers(),
		Federation: s.fed.statuses()}
	if snap := s.pub.current(); snap != nil {
		out.Version, out.Commit = snap.Version, snap.Commit
	}
	if err := s.pub.err(); err != nil {
		out.PublishError = err.Error()
	}
	out.VerifyError = s.pub.verifyError()
	out.ClusterID, out.NotServing, out.ClusterConflict = s.cluster.get(), s.notServing(), s.cluster.conflict.Load()
	out.Ready = out.NotServing == "" && s.pub.ready()
	out.StorageErrors = s.storage.errors()
	if h := st.headEntry(); h != nil {
		e := h.Entry
		out.Head = &e
	}
	_, lid := s.node.raft.LeaderWithID()
	out.Leader = string(lid)
	out.LeaderAddress = st.servers[out.Leader].HTTP
	if s.cat != nil {
		sum := catalog.Summarize(st.catalog, s.cat.Declared)
		out.Catalog = &sum
	}
	return out
}

func (s *Server) servers() []ServerStatus {
	f := s.node.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	meta := s.fsm.state().servers
	_, lid := s.node.raft.LeaderWithID()
	var out []ServerStatus
	for _, srv := range f.Configuration().Servers {
		out = append(out, ServerStatus{ID: string(srv.ID), RaftAddress: string(srv.Address),
			HTTPAddress: meta[string(srv.ID)].HTTP, Suffrage: srv.Suffrage.String(), Leader: srv.ID == lid})
	}
	return out
}

// Snapshots returns the history, newest first. Until the FSM has caught up with the snapshot
// served from disk after a restart, it is the history saved with that snapshot.
func (s *Server) Snapshots() []SnapshotInfo {
	if h := s.pub.history(); h != nil {
		out := make([]SnapshotInfo, 0, len(h.Entries))
		for i := len(h.Entries) - 1; i >= 0; i-- {
			e := h.Entries[i]
			out = append(out, SnapshotInfo{Entry: e, Served: e.Version == h.Served, Pinned: e.Version == h.Pin})
		}
		return out
	}
	st := s.fsm.state()
	served := ""
	if st.served != nil {
		served = st.served.Version
	}
	out := make([]SnapshotInfo, 0, len(st.history))
	for i := len(st.history) - 1; i >= 0; i-- {
		e := st.history[i]
		info := SnapshotInfo{Entry: e.Entry, Served: e.Version == served, Pinned: e.Version == st.pin}
		if info.Pinned {
			info.PinnedBy, info.PinnedAt = st.pinBy, st.pinTime
		}
		out = append(out, info)
	}
	return out
}

func (s *Server) leaderHTTP() string {
	_, lid := s.node.raft.LeaderWithID()
	if lid == "" {
		return ""
	}
	return s.fsm.state().servers[string(lid)].HTTP
}

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, http.StatusOK, s.Status()) })
	mux.HandleFunc("GET /v1/snapshots", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]any{"snapshots": s.Snapshots()})
	})
	mux.HandleFunc("GET /v1/snapshots/{version}", s.handleSnapshot)
	mux.HandleFunc("GET /{$}", s.handleRoot)
	mux.HandleFunc("GET /v1/proxies", s.handleProxies)                   // cluster_view.go
	mux.HandleFunc("GET /v1/proxies/{node}/config", s.handleProxyConfig) // cluster_view.go
	mux.HandleFunc("GET /v1/members", s.handleMembers)                   // cluster_view.go
	mux.HandleFunc("GET /v1/federation/state", s.handleFederationState)  // federation.go
	mux.HandleFunc("GET /v1/servers", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]any{"servers": s.servers()})
	})
	mux.HandleFunc("POST /v1/pin", s.write(operatorWrite, s.handlePin))
	mux.HandleFunc("POST /v1/unpin", s.write(operatorWrite, func(w http.ResponseWriter, r *http.Request) {
		err := s.apply(cmdUnpin, pinCmd{Time: time.Now().UTC()}, nil)
		if err == nil {
			s.pub.awaitServed(r.Context(), s.fsm)
		}
		s.respond(w, err, "unpinned")
	}))
	mux.HandleFunc("POST /v1/join", s.write(serverWrite, s.handleJoin))
	mux.HandleFunc("DELETE /v1/servers/{id}", s.write(operatorWrite, func(w http.ResponseWriter, r *http.Request) {
		s.respond(w, s.removeServer(r.PathValue("id")), "removed")
	}))
	mux.HandleFunc("POST /v1/reconcile", s.write(operatorWrite, func(w http.ResponseWriter, r *http.Request) {
		s.Kick()
		httpjson.Write(w, http.StatusAccepted, map[string]string{"status": "reconcile scheduled"})
	}))
	mux.HandleFunc("POST /v1/webhook/git", s.handleWebhook)
	caAPI := s.ca.Handler() // signs and answers roots on any server; its writes go to the leader
	mux.HandleFunc("POST /v1/ca/sign", func(w http.ResponseWriter, r *http.Request) {
		// A server that must not serve (removed, or in a cluster of its own) signs nothing: its
		// CA may not be the cluster's.
		if why := s.notServing(); why != "" {
			httpjson.Error(w, http.StatusServiceUnavailable, "this server does not sign: %s", why)
			return
		}
		caAPI.ServeHTTP(w, r)
	})
	mux.Handle("GET /v1/ca/roots", caAPI)
	mux.HandleFunc("POST /v1/ca/rotate", s.write(operatorWrite, caAPI.ServeHTTP))
	mux.HandleFunc("POST /v1/tokens", s.write(operatorWrite, caAPI.ServeHTTP))
	mux.HandleFunc("DELETE /v1/tokens/{id}", s.write(operatorWrite, caAPI.ServeHTTP))
	mux.Handle("GET /v1/tokens", caAPI) // operator token (the CA checks it); reads this server's state
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.catalogAPI().Register(mux)      // Consul's agent, catalog and health endpoints
	mux.Handle("/ui/", s.uiHandler()) // ui.go
	return s.forwardDC(mux)
}

// Who may write. The model is Consul's ACLs reduced to three kinds of token, all given as
// "Authorization: Bearer TOKEN":
//
//   - the server token (mesh serve --token-file; like Consul's initial management token) may do
//     everything; the servers use it among themselves;
//   - an operator token (mesh token create --operator) may do every write but join: pin and unpin,
//     reconcile, remove a server, create and revoke tokens, rotate the CA, and ask for any service's
//     certificate. Joining is for the server token only because a server that joins receives the
//     replicated state, the CA's signing key included, which no operator API ever returns (Consul
//     servers join by their gossip key and TLS, not by an ACL token);
//   - a service token (mesh token create --service S) may only ask for S's certificates
//     (POST /v1/ca/sign, checked by the CA).
//
// No token or an unknown one is 401; a known token whose kind does not cover the request, 403.
// Tokens are compared in constant time (the server token here, the others by the CA).
type access int

const (
	operatorWrite access = iota // the server token or an operator token
	serverWrite                 // the server token only
)

// write guards a write endpoint: the token first, then leadership (a follower redirects to the
// leader with 307, so the client repeats the same request there).
func (s *Server) write(need access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.authorize(r, need); err != nil {
			code := http.StatusForbidden
			if errors.Is(err, ErrUnauthorized) {
				code = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="mesh"`)
			}
			httpjson.Error(w, code, "%v", err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !s.IsLeader() {
			addr := s.leaderHTTP()
			if addr == "" {
				httpjson.Error(w, http.StatusServiceUnavailable, "%v", ErrNoLeader)
				return
			}
			w.Header().Set("Location", s.peerURL(addr)+r.URL.RequestURI())
			httpjson.Error(w, http.StatusTemporaryRedirect, "%v: the leader is %s", ErrNotLeader, addr)
			return
		}
		h(w, r)
	}
}

// authorize says whether the request's token may do a write that needs need: nil,
// ErrUnauthorized (no token or an unknown one) or ErrForbidden.
func (s *Server) authorize(r *http.Request, need access) error {
	tok := ca.BearerToken(r)
	switch {
	case tok == "":
		return ErrUnauthorized
	case s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1:
		return nil
	}
	rec, err := s.ca.Authorize(tok, "")
	switch {
	case errors.Is(err, ca.ErrUnauthorized):
		return ErrUnauthorized
	case err != nil:
		return fmt.Errorf("%w: token %s is service %q's: it may only ask for that service's certificates", ErrForbidden, rec.ID, rec.Service)
	case need == serverWrite:
		return fmt.Errorf("%w: only the server token (mesh serve --token-file) may join a server", ErrForbidden)
	}
	return nil
}

// writer names who makes a write by its token's kind and, for a token the CA issued, its ID (the
// first 16 hex digits of its SHA-256, as mesh token list shows it): never the token itself. The
// write has been authorized already.
func (s *Server) writer(r *http.Request) string {
	tok := ca.BearerToken(r)
	if s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1 {
		return "server token"
	}
	rec, err := s.ca.Authorize(tok, "")
	if err != nil || rec.ID == "" {
		return ""
	}
	return string(rec.Scope) + " token " + rec.ID
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	v := r.PathValue("version")
	e := s.fsm.state().find(v)
	if e == nil {
		httpjson.Error(w, http.StatusNotFound, "%v: %s", ErrUnknownVersion, v)
		return
	}
	snap, err := e.snapshot()
	if err == nil {
		// A snapshot built from a delta is checked before it leaves this server, as before it
		// is served: a peer repairing its own copy must not get a bad one.
		err, _ = e.check.verify(snap)
	}
	if err != nil {
		httpjson.Error(w, http.StatusInternalServerError, "%v", err)
		return
	}
	httpjson.Write(w, http.StatusOK, snap)
}

func (s *Server) handlePin(w http.ResponseWriter, r *http.Request) {
	var req PinRequest
	if err := decodeBody(r, &req); err != nil || req.Version == "" {
		httpjson.Error(w, http.StatusBadRequest, `want {"version": "..."}`)
		return
	}
	err := s.apply(cmdPin, pinCmd{Version: req.Version, Time: time.Now().UTC(), By: s.writer(r)}, nil)
	if err == nil {
		// Answer once this server serves the pinned snapshot, so that a status read right
		// after the pin shows it.
		s.pub.awaitServed(r.Context(), s.fsm)
	}
	s.respond(w, err, "pinned")
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if err := decodeBody(r, &req); err != nil || req.ID == "" || req.RaftAddress == "" {
		httpjson.Error(w, http.StatusBadRequest, `want {"id", "raftAddress", "httpAddress"}`)
		return
	}
	s.log.Info("join request", "id", req.ID, "raft", req.RaftAddress, "http", req.HTTPAddress)
	if err := s.addServer(req.ID, req.RaftAddress, req.HTTPAddress); err != nil {
		s.respond(w, err, "")
		return
	}
	httpjson.Write(w, http.StatusOK, JoinResponse{Status: "joined", Index: s.fsm.at().applied, ClusterID: s.cluster.get()})
}

func (s *Server) respond(w http.ResponseWriter, err error, ok string) {
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, map[string]string{"status": ok})
	case errors.Is(err, ErrUnknownVersion), errors.Is(err, ErrUnknownServer):
		httpjson.Error(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrPeerRefused):
		httpjson.Error(w, http.StatusForbidden, "%v", err)
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		httpjson.Error(w, http.StatusServiceUnavailable, "%v", err)
	default:
		httpjson.Error(w, http.StatusInternalServerError, "%v", err)
	}
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

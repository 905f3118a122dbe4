package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshgit/mesh/internal/httpjson"
	"github.com/meshgit/mesh/xds"
)

// The cluster views: GET /v1/proxies, /v1/proxies/{node}/config and /v1/members answer for the
// whole cluster. The server asked answers for itself and asks each peer (its HTTP address from
// the FSM) for the same view with ?local=1, concurrently and with peerTimeout each; a peer that
// does not answer is reported as such, never left out silently.

// peerTimeout bounds one request to a peer for a cluster view.
const peerTimeout = 3 * time.Second

// ClusterProxy is one proxy of GET /v1/proxies, as the server holding its xDS streams reports it.
type ClusterProxy struct {
	Server string `json:"server"`
	ProxyStatus
}

// ProxiesView is the answer of GET /v1/proxies: the proxies of every server that answered, by
// node id, and the servers that did not.
type ProxiesView struct {
	Proxies     []ClusterProxy `json:"proxies"`
	Unreachable []PeerError    `json:"unreachable,omitempty"`
}

// PeerError is a server that did not answer a cluster view.
type PeerError struct {
	Server  string `json:"server"`
	Address string `json:"address"`
	Error   string `json:"error"`
}

// Member is one server of GET /v1/members: its place in the Raft configuration (as the server
// asked knows it) and what the server itself reports, when it answers.
type Member struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raftAddress"`
	HTTPAddress string `json:"httpAddress,omitempty"`
	Suffrage    string `json:"suffrage"`
	// Alive is whether the server answered; the fields below are its own answer.
	Alive     bool   `json:"alive"`
	Error     string `json:"error,omitempty"`
	RaftState string `json:"raftState,omitempty"`
	Leader    string `json:"leader,omitempty"` // the leader it knows
	// LastContact is how long ago it last heard from the leader ("0s" on the leader itself;
	// "never" before any contact).
	LastContact  string `json:"lastContact,omitempty"`
	AppliedIndex uint64 `json:"appliedIndex"`
	LastLogIndex uint64 `json:"lastLogIndex"`
	Term         uint64 `json:"term"`
}

// MembersView is the answer of GET /v1/members.
type MembersView struct {
	Members []Member `json:"members"`
	Leader  string   `json:"leader"` // as the server asked knows it
	// Voters and AliveVoters count the voters of the configuration and those that answered;
	// the cluster has quorum while AliveVoters >= Quorum.
	Voters      int `json:"voters"`
	AliveVoters int `json:"aliveVoters"`
	Quorum      int `json:"quorum"`
}

// peer is another server of the configuration.
type peer struct{ id, http string }

func (s *Server) peers() []peer {
	var out []peer
	for _, srv := range s.servers() {
		if srv.ID != s.id {
			out = append(out, peer{srv.ID, srv.HTTPAddress})
		}
	}
	return out
}

// askPeers asks every peer for path (GET) concurrently, decoding each answer into a new T, and
// returns the answers and the peers that failed.
func askPeers[T any](s *Server, ctx context.Context, path string) (map[string]*T, []PeerError) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  = map[string]*T{}
		errs []PeerError
	)
	for _, p := range s.peers() {
		if p.http == "" {
			errs = append(errs, PeerError{Server: p.id, Error: "its HTTP address is not known yet"})
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			v := new(T)
			err := s.peerClient(p.http).do(ctx, http.MethodGet, path, nil, v)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, PeerError{Server: p.id, Address: p.http, Error: err.Error()})
				return
			}
			out[p.id] = v
		})
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Server < errs[j].Server })
	return out, errs
}

func isLocal(r *http.Request) bool { return r.URL.Query().Get("local") != "" }

func (s *Server) localProxies() []ClusterProxy {
	out := []ClusterProxy{}
	if s.cfg.Proxies != nil {
		for _, p := range s.cfg.Proxies() {
			out = append(out, ClusterProxy{Server: s.id, ProxyStatus: p})
		}
	}
	return out
}

func (s *Server) handleProxies(w http.ResponseWriter, r *http.Request) {
	view := ProxiesView{Proxies: s.localProxies()}
	if !isLocal(r) {
		answers, errs := askPeers[ProxiesView](s, r.Context(), "/v1/proxies?local=1")
		for _, a := range answers {
			view.Proxies = append(view.Proxies, a.Proxies...)
		}
		view.Unreachable = errs
	}
	sort.Slice(view.Proxies, func(i, j int) bool {
		a, b := view.Proxies[i], view.Proxies[j]
		return a.NodeID < b.NodeID || a.NodeID == b.NodeID && a.Server < b.Server
	})
	httpjson.Write(w, http.StatusOK, view)
}

// ProxyConfigView is the answer of GET /v1/proxies/{node}/config: what the server holding the
// node's streams last set for it, by type (protojson of each resource). Secrets name files and
// never carry a key.
type ProxyConfigView struct {
	Server    string                       `json:"server"`
	NodeID    string                       `json:"nodeId"`
	Service   string                       `json:"service"`
	Shape     xds.Shape                    `json:"shape"`
	Version   string                       `json:"version"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

func (s *Server) handleProxyConfig(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	types := xds.ShortTypes
	if t := r.URL.Query().Get("type"); t != "" {
		if !slices.Contains(xds.ShortTypes, t) {
			httpjson.Error(w, http.StatusBadRequest, "type %q: want one of %s", t, strings.Join(xds.ShortTypes, ", "))
			return
		}
		types = []string{t}
	}
	view, err := s.localProxyConfig(node, types)
	switch {
	case err == nil:
		httpjson.Write(w, http.StatusOK, view)
		return
	case !errors.Is(err, xds.ErrUnknownNode):
		httpjson.Error(w, http.StatusInternalServerError, "%v", err)
		return
	case isLocal(r):
		httpjson.Error(w, http.StatusNotFound, "%v", err)
		return
	}
	q := url.Values{"local": {"1"}}
	if len(types) == 1 {
		q.Set("type", types[0])
	}
	answers, errs := askPeers[ProxyConfigView](s, r.Context(), "/v1/proxies/"+url.PathEscape(node)+"/config?"+q.Encode())
	for _, id := range sortedIDs(answers) {
		httpjson.Write(w, http.StatusOK, answers[id])
		return
	}
	msg := fmt.Sprintf("proxy %q is not connected to any server", node)
	if len(errs) > 0 {
		var names []string
		for _, e := range errs {
			names = append(names, e.Server)
		}
		msg += fmt.Sprintf(" that answered (no answer from %s)", strings.Join(names, ", "))
	}
	httpjson.Error(w, http.StatusNotFound, "%s", msg)
}

func sortedIDs[T any](m map[string]*T) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *Server) localProxyConfig(node string, types []string) (*ProxyConfigView, error) {
	if s.cfg.ProxyConfig == nil {
		return nil, fmt.Errorf("%w: %q (this server serves no xDS)", xds.ErrUnknownNode, node)
	}
	pc, err := s.cfg.ProxyConfig(node)
	if err != nil {
		return nil, err
	}
	view := &ProxyConfigView{Server: s.id, NodeID: pc.NodeID, Service: pc.Service, Shape: pc.Shape, Version: pc.Version,
		Resources: map[string][]json.RawMessage{}}
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, t := range types {
		list := []json.RawMessage{}
		for _, res := range pc.Resources[t] {
			b, err := opts.Marshal(res.(proto.Message))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t, err)
			}
			list = append(list, b)
		}
		view.Resources[t] = list
	}
	return view, nil
}

// self is this server's own Member fields, from its Raft node.
func (s *Server) self() Member {
	r := s.node.raft
	m := Member{ID: s.id, Alive: true, RaftState: r.State().String(), AppliedIndex: r.AppliedIndex(),
		LastLogIndex: r.LastIndex(), Term: r.CurrentTerm()}
	_, lid := r.LeaderWithID()
	m.Leader = string(lid)
	switch lc := r.LastContact(); {
	case r.State() == raft.Leader:
		m.LastContact = "0s"
	case lc.IsZero():
		m.LastContact = "never"
	default:
		m.LastContact = time.Since(lc).Round(time.Millisecond).String()
	}
	return m
}

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	if isLocal(r) {
		httpjson.Write(w, http.StatusOK, s.self())
		return
	}
	answers, errs := askPeers[Member](s, r.Context(), "/v1/members?local=1")
	failed := map[string]string{}
	for _, e := range errs {
		failed[e.Server] = e.Error
	}
	view := MembersView{Members: []Member{}}
	_, lid := s.node.raft.LeaderWithID()
	view.Leader = string(lid)
	for _, srv := range s.servers() {
		m := Member{Error: failed[srv.ID]}
		switch {
		case srv.ID == s.id:
			m = s.self()
		case answers[srv.ID] != nil && answers[srv.ID].ID == srv.ID:
			m = *answers[srv.ID]
			m.Alive = true
		case answers[srv.ID] != nil:
			m.Error = fmt.Sprintf("%s answers as %q", srv.HTTPAddress, answers[srv.ID].ID)
		}
		m.ID, m.RaftAddress, m.HTTPAddress, m.Suffrage = srv.ID, srv.RaftAddress, srv.HTTPAddress, srv.Suffrage
		if srv.Suffrage == raft.Voter.String() {
			view.Voters++
			if m.Alive {
				view.AliveVoters++
			}
		}
		view.Members = append(view.Members, m)
	}
	view.Quorum = view.Voters/2 + 1
	httpjson.Write(w, http.StatusOK, view)
}

package xds

import (
	"fmt"
	"slices"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// The sync states of a proxy and of each resource type it subscribes to, as istioctl
// proxy-status names them.
const (
	SyncSynced       = "SYNCED"       // ACKed the version it should run
	SyncStale        = "STALE"        // sent and not ACKed yet, or a newer version not sent yet
	SyncNack         = "NACK"         // rejected the latest version (Error says why)
	SyncDisconnected = "DISCONNECTED" // no stream open
)

// TypeState is what one resource type of a proxy is at: the wire version last sent on its
// streams, the last one ACKed, and the state.
type TypeState struct {
	Sent  string `json:"sent"`
	Acked string `json:"acked,omitempty"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// rank orders the states: a type (and a proxy) is as bad as its worst stream (and type).
func rank(state string) int {
	switch state {
	case SyncNack:
		return 2
	case SyncStale:
		return 1
	}
	return 0
}

// typeStates returns the state of each type the node's streams subscribe to, keyed by short
// type name, and the node's overall state. Called with s.mu held.
func (s *Server) typeStates(n *node) (map[string]TypeState, string) {
	if len(n.streams) == 0 {
		return nil, SyncDisconnected
	}
	var want *typeHashes // the versions the node should run, when known
	if g := s.groups[n.proxy]; g != nil && g.cs != nil && n.served == g.cs {
		want = &g.typeVersion
	}
	out := map[string]TypeState{}
	overall := SyncSynced
	for id := range n.streams {
		st := s.streams[id]
		if st == nil {
			continue
		}
		for t, sent := range st.sent {
			ts := TypeState{Sent: sent.version, Acked: st.acked[t], State: SyncSynced}
			switch nk := st.nacked[t]; {
			case nk != nil && nk.Version == sent.version:
				ts.State, ts.Error = SyncNack, nk.Error
			case ts.Acked != sent.version:
				ts.State = SyncStale
			case want != nil && want.get(t) != "" && want.get(t) != sent.version:
				ts.State = SyncStale // the server holds newer configuration than it sent
			}
			name := shortType(t)
			if prev, ok := out[name]; !ok || rank(ts.State) > rank(prev.State) {
				out[name] = ts
			}
			if rank(ts.State) > rank(overall) {
				overall = ts.State
			}
		}
	}
	if len(out) == 0 {
		overall = SyncStale // connected, nothing sent yet
	}
	return out, overall
}

// ProxyConfig is what the server last set for one node: the resources of its current
// configuration, by short type name (listeners, routes, clusters, endpoints, secrets, and
// extensions: the filter configurations of ECDS, where an Envoy sidecar's RBAC is), in name
// order. It never holds a private key: secrets name the files `mesh agent` writes (see secrets),
// and ProxyConfig refuses any secret that carries key material inline.
type ProxyConfig struct {
	NodeID    string
	Service   string
	Shape     Shape
	Version   string
	Resources map[string][]types.Resource
}

// ShortTypes are the resource type names ProxyConfig and ProxyStatus.Types use, in the order of
// the xDS flow (CDS, LDS, EDS, RDS, SDS are their discovery services).
var ShortTypes = []string{"clusters", "listeners", "endpoints", "routes", "secrets", "extensions"}

// ProxyConfig returns the configuration the server holds for the connected node nodeID
// (ErrUnknownNode when no such node is connected).
func (s *Server) ProxyConfig(nodeID string) (*ProxyConfig, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[nodeID]
	if n == nil || len(n.streams) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, nodeID)
	}
	g := s.groups[n.proxy]
	if n.served == nil || g == nil || g.cs == nil {
		return nil, fmt.Errorf("%w: %q has been sent nothing yet", ErrUnknownNode, nodeID)
	}
	pc := &ProxyConfig{NodeID: n.id, Service: n.proxy.Service, Shape: n.proxy.Shape, Resources: map[string][]types.Resource{}}
	if s.snap != nil && n.served == g.cs {
		pc.Version = nodeVersion(s.snap, g)
	}
	for _, t := range resourceTypes {
		res := n.served.GetResources(t)
		list := make([]types.Resource, 0, len(res))
		for _, name := range sortedKeys(res) {
			r := typed(res[name])
			if err := noKeyMaterial(r); err != nil {
				return nil, err
			}
			list = append(list, r)
		}
		pc.Resources[shortType(t)] = list
	}
	return pc, nil
}

// noKeyMaterial refuses a TLS certificate secret whose private key is anything but a file name.
func noKeyMaterial(r types.Resource) error {
	sec, ok := r.(*tlsv3.Secret)
	if !ok {
		return nil
	}
	tc := sec.GetTlsCertificate()
	if tc == nil || tc.GetPrivateKey() == nil {
		return nil
	}
	if tc.GetPrivateKey().GetFilename() == "" || tc.GetPrivateKeyProvider() != nil {
		return fmt.Errorf("%w: secret %q", ErrKeyMaterial, sec.GetName())
	}
	return nil
}

func sortedKeys(m map[string]types.Resource) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

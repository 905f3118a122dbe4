package proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// state is the clusters and endpoint assignments the proxy runs with; it is replaced whole.
type state struct {
	clusters  map[string]*cluster
	endpoints map[string]*assignment // by EDS service name
}

// edsNames returns the EDS service names of the clusters, sorted.
func (s *state) edsNames() []string {
	set := map[string]bool{}
	for _, c := range s.clusters {
		if c.eds != "" {
			set[c.eds] = true
		}
	}
	return sortedKeys(set)
}

// cluster is what the proxy honours of a Cluster.
type cluster struct {
	name    string
	eds     string      // EDS service name; "" for a static cluster
	static  *assignment // a STATIC cluster's load assignment
	timeout time.Duration
	tls     *upstreamTLS // nil: plaintext
	// matches are transport_socket_matches: an endpoint whose envoy.transport_socket_match
	// metadata holds every field of a match uses its TLS context (a failover target's SNI).
	matches []tlsMatch
	policy  clusterv3.Cluster_LbPolicy
	next    atomic.Uint64 // round robin
}

type tlsMatch struct {
	match map[string]string
	tls   *upstreamTLS
}

// tlsFor returns the TLS context for an endpoint with transport socket match metadata meta.
func (c *cluster) tlsFor(meta map[string]string) *upstreamTLS {
	for _, m := range c.matches {
		ok := true
		for k, v := range m.match {
			if meta[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return m.tls
		}
	}
	return c.tls
}

// upstreamTLS is an upstream TLS context: the SNI to send and the SPIFFE IDs to accept.
type upstreamTLS struct {
	sni  string
	sans map[string]bool
}

// assignment is a ClusterLoadAssignment: endpoints by priority, each with its health.
type assignment struct {
	byPriority [][]endpoint // index = priority
}

type endpoint struct {
	addr    string
	healthy bool
	match   map[string]string // envoy.transport_socket_match metadata
}

// pick returns the addresses to choose from: the healthy endpoints of the lowest priority that
// has any; with none healthy anywhere, every endpoint of the lowest priority (Envoy's panic mode).
func (a *assignment) pick() []endpoint {
	if a == nil {
		return nil
	}
	for _, eps := range a.byPriority {
		var out []endpoint
		for _, e := range eps {
			if e.healthy {
				out = append(out, e)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	for _, eps := range a.byPriority {
		if len(eps) > 0 {
			return eps
		}
	}
	return nil
}

// choose picks one address by the cluster's policy. Without a hash key (L4), ring_hash and maglev
// pick at random, as Envoy's tcp_proxy does; least_request is approximated by random too (two
// random choices would need per-endpoint counters the proxy does not keep).
func (c *cluster) choose(addrs []endpoint) endpoint {
	if len(addrs) == 0 {
		return endpoint{}
	}
	if c.policy == clusterv3.Cluster_ROUND_ROBIN {
		return addrs[int(c.next.Add(1)-1)%len(addrs)]
	}
	return addrs[rand.IntN(len(addrs))]
}

func (p *Proxy) applyClusters(resp *discoveryv3.DiscoveryResponse) error {
	next := &state{clusters: map[string]*cluster{}, endpoints: p.state.Load().endpoints}
	for _, r := range resp.GetResources() {
		var c clusterv3.Cluster
		if err := r.UnmarshalTo(&c); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		pc, err := parseCluster(&c)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.GetName(), err)
		}
		next.clusters[pc.name] = pc
	}
	p.state.Store(next)
	return nil
}

func parseCluster(c *clusterv3.Cluster) (*cluster, error) {
	pc := &cluster{name: c.GetName(), timeout: c.GetConnectTimeout().AsDuration(), policy: c.GetLbPolicy()}
	if pc.timeout <= 0 {
		pc.timeout = 5 * time.Second
	}
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		pc.eds = c.GetEdsClusterConfig().GetServiceName()
		if pc.eds == "" {
			pc.eds = c.GetName()
		}
	case clusterv3.Cluster_STATIC:
		a, err := parseAssignment(c.GetLoadAssignment())
		if err != nil {
			return nil, err
		}
		pc.static = a
	default:
		return nil, fmt.Errorf("%w: discovery type %s", ErrUnsupported, c.GetType())
	}
	if ts := c.GetTransportSocket(); ts != nil {
		var utc tlsv3.UpstreamTlsContext
		if err := ts.GetTypedConfig().UnmarshalTo(&utc); err != nil {
			return nil, fmt.Errorf("%w: transport socket %s (want an UpstreamTlsContext): %v", ErrUnsupported, ts.GetName(), err)
		}
		t, err := parseUpstreamTLS(&utc)
		if err != nil {
			return nil, err
		}
		pc.tls = t
	}
	for _, m := range c.GetTransportSocketMatches() {
		var utc tlsv3.UpstreamTlsContext
		if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
			return nil, fmt.Errorf("%w: transport socket match %s (want an UpstreamTlsContext): %v", ErrUnsupported, m.GetName(), err)
		}
		t, err := parseUpstreamTLS(&utc)
		if err != nil {
			return nil, fmt.Errorf("transport socket match %s: %w", m.GetName(), err)
		}
		tm := tlsMatch{match: map[string]string{}, tls: t}
		for k, v := range m.GetMatch().GetFields() {
			sv, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("%w: transport socket match %s: a non-string field %s", ErrUnsupported, m.GetName(), k)
			}
			tm.match[k] = sv.StringValue
		}
		pc.matches = append(pc.matches, tm)
	}
	return pc, nil
}

// parseUpstreamTLS reads the SNI and the URI SANs to verify. The certificates are the agent's
// files whatever the SDS names say; a validation rule the proxy would not enforce is refused.
func parseUpstreamTLS(utc *tlsv3.UpstreamTlsContext) (*upstreamTLS, error) {
	t := &upstreamTLS{sni: utc.GetSni(), sans: map[string]bool{}}
	common := utc.GetCommonTlsContext()
	var vc *tlsv3.CertificateValidationContext
	switch v := common.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
	case nil:
	default:
		return nil, fmt.Errorf("%w: validation context %T", ErrUnsupported, v)
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI || m.GetMatcher().GetExact() == "" {
			return nil, fmt.Errorf("%w: subject alt name matcher %v (only exact URI SANs)", ErrUnsupported, m)
		}
		t.sans[m.GetMatcher().GetExact()] = true
	}
	for _, m := range vc.GetMatchSubjectAltNames() {
		if m.GetExact() == "" {
			return nil, fmt.Errorf("%w: subject alt name matcher %v (only exact URI SANs)", ErrUnsupported, m)
		}
		t.sans[m.GetExact()] = true
	}
	if len(t.sans) == 0 {
		return nil, fmt.Errorf("%w: an upstream TLS context that names no SPIFFE ID to verify", ErrUnsupported)
	}
	return t, nil
}

func (p *Proxy) applyEndpoints(resp *discoveryv3.DiscoveryResponse) error {
	cur := p.state.Load()
	next := &state{clusters: cur.clusters, endpoints: map[string]*assignment{}}
	for _, r := range resp.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if err := r.UnmarshalTo(&cla); err != nil {
			return fmt.Errorf("endpoints: %w", err)
		}
		a, err := parseAssignment(&cla)
		if err != nil {
			return fmt.Errorf("endpoints %s: %w", cla.GetClusterName(), err)
		}
		next.endpoints[cla.GetClusterName()] = a
	}
	p.state.Store(next)
	return nil
}

func parseAssignment(cla *endpointv3.ClusterLoadAssignment) (*assignment, error) {
	a := &assignment{}
	for _, loc := range cla.GetEndpoints() {
		prio := int(loc.GetPriority())
		if prio > 128 {
			return nil, fmt.Errorf("%w: priority %d", ErrUnsupported, prio)
		}
		for len(a.byPriority) <= prio {
			a.byPriority = append(a.byPriority, nil)
		}
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil || sa.GetPortValue() == 0 {
				return nil, fmt.Errorf("%w: an endpoint without a socket address and port", ErrUnsupported)
			}
			hs := lb.GetHealthStatus()
			ep := endpoint{
				addr:    net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
				healthy: hs == corev3.HealthStatus_UNKNOWN || hs == corev3.HealthStatus_HEALTHY,
			}
			if md := lb.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"]; md != nil {
				ep.match = map[string]string{}
				for k, v := range md.GetFields() {
					ep.match[k] = v.GetStringValue()
				}
			}
			a.byPriority[prio] = append(a.byPriority[prio], ep)
		}
	}
	return a, nil
}

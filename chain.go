package mesh

import "strings"

// TotalWeight is the sum of the weights of a route's splits: weights are in hundredths of a
// percent, as Envoy's weighted clusters take them.
const TotalWeight = 10000

// Chain is a service's resolved discovery chain: router → splitter → resolver flattened into
// routes whose splits name targets. xDS renders chains; it never resolves them.
type Chain struct {
	Service  string `json:"service"`
	Protocol string `json:"protocol"`
	// Datacenter is the datacenter the chain is resolved in when it is not the mesh's own: the
	// chain of an upstream that names another datacenter (Snapshot.UpstreamChain).
	Datacenter string `json:"datacenter,omitempty"`
	// Routes are tried in order; the last one has no match and catches everything else. A tcp
	// chain has exactly that one route.
	Routes []ChainRoute `json:"routes"`
	// Targets holds every target reachable from Routes, including failover targets, by ID.
	Targets map[string]*Target `json:"targets"`
}

// ChainRoute is one route of a resolved chain.
type ChainRoute struct {
	Match          *HTTPMatch     `json:"match,omitempty"`
	Splits         []TargetWeight `json:"splits"` // weights sum to TotalWeight
	PrefixRewrite  string         `json:"prefixRewrite,omitempty"`
	RequestTimeout Duration       `json:"requestTimeout,omitempty"`
	NumRetries     int            `json:"numRetries,omitempty"`
	RetryOn        []string       `json:"retryOn,omitempty"`
}

// TargetWeight is a share of a route's traffic sent to one target.
type TargetWeight struct {
	Target string `json:"target"`
	Weight int    `json:"weight"`
}

// Target is one subset of one service in one datacenter: an xDS cluster.
type Target struct {
	ID         string            `json:"id"` // subset.service.dc, or service.dc without a subset
	Service    string            `json:"service"`
	Subset     string            `json:"subset,omitempty"`
	Datacenter string            `json:"datacenter"`
	Filter     map[string]string `json:"filter,omitempty"`
	// SNI names the target's cluster and is what its TLS connections ask for.
	SNI            string   `json:"sni"`
	ConnectTimeout Duration `json:"connectTimeout"`
	LoadBalancer   string   `json:"loadBalancer"`
	// Failover lists the targets that take over, in order, when this one has no healthy endpoint.
	Failover []string `json:"failover,omitempty"`
}

// TargetID returns the ID of the target for subset (may be empty) of service in datacenter.
func TargetID(subset, service, datacenter string) string {
	if subset == "" {
		return service + "." + datacenter
	}
	return subset + "." + service + "." + datacenter
}

// SNI returns the TLS server name and cluster name of a target, as Consul names them.
func SNI(subset, service, datacenter, trustDomain string) string {
	var b strings.Builder
	if subset != "" {
		b.WriteString(subset)
		b.WriteByte('.')
	}
	b.WriteString(service)
	b.WriteString(".default.")
	b.WriteString(datacenter)
	b.WriteString(".internal.")
	b.WriteString(trustDomain)
	return b.String()
}

// SpiffeID returns the SPIFFE identity of a service.
func SpiffeID(trustDomain, datacenter, service string) string {
	return "spiffe://" + trustDomain + "/ns/default/dc/" + datacenter + "/svc/" + service
}

// Endpoints returns the endpoints of t: those of its service in its datacenter whose meta holds
// every key of its subset filter. The order is the snapshot's (sorted).
func (s *Snapshot) Endpoints(t *Target) []Endpoint {
	svc := s.Services[t.Service]
	if svc == nil {
		return nil
	}
	var out []Endpoint
	for _, ep := range svc.Endpoints {
		if ep.Datacenter != t.Datacenter || !SubsetMatches(t.Filter, ep.Meta) {
			continue
		}
		out = append(out, ep)
	}
	return out
}

// SubsetMatches reports whether meta has every key of filter with the same value.
func SubsetMatches(filter, meta map[string]string) bool {
	for k, v := range filter {
		if mv, ok := meta[k]; !ok || mv != v {
			return false
		}
	}
	return true
}

// RemoteChainKey is the key in Snapshot.RemoteChains of service's chain resolved in dc.
func RemoteChainKey(service, dc string) string { return service + "@" + dc }

// ChainKey is the key of the chain an upstream u follows: its service, or RemoteChainKey when it
// names another datacenter than the mesh's.
func (s *Snapshot) ChainKey(u *Upstream) string {
	if u.Datacenter != "" && u.Datacenter != s.Mesh.Datacenter {
		return RemoteChainKey(u.Service, u.Datacenter)
	}
	return u.Service
}

// ChainByKey returns the chain with a key of ChainKey, or nil.
func (s *Snapshot) ChainByKey(key string) *Chain {
	if c := s.Chains[key]; c != nil {
		return c
	}
	return s.RemoteChains[key]
}

// UpstreamChain is the discovery chain a caller's upstream u follows: the chain of u.Service,
// resolved in u.Datacenter when the upstream names another datacenter (as Consul's upstream
// datacenter: the routers, splitters and resolvers of the mesh, with the targets' default
// datacenter that one).
func (s *Snapshot) UpstreamChain(u *Upstream) *Chain { return s.ChainByKey(s.ChainKey(u)) }
